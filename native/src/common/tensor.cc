// @file tensor.cc
// @brief Tensor storage, shapes and views; host copies for both backends.
#include "facecuda/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "facecuda/cuda.h"
#include "facecuda/error.h"

namespace fc {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

// Host memory. Blocks of 1 MiB and more are rounded to 2 MiB, kept on free in a size-keyed cache and
// reused: glibc maps such blocks fresh on every malloc and the first touch of each page then faults,
// which costs a large GEMM output tens of milliseconds per call. The cache holds at most
// FACECUDA_CPU_CACHE_LIMIT bytes (default 1 GiB; 0 disables it).
constexpr size_t kLargeBlock = size_t(1) << 20;
constexpr size_t kLargeRound = size_t(2) << 20;

size_t host_rounded(size_t bytes) {
  if (bytes < kLargeBlock) return std::max<size_t>(64, (bytes + 63) / 64 * 64);
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

class HostCache {
 public:
  HostCache() {
    const char* env = std::getenv("FACECUDA_CPU_CACHE_LIMIT");
    if (env && *env) {
      char* end = nullptr;
      unsigned long long v = std::strtoull(env, &end, 10);
      if (end && *end == '\0') limit_ = static_cast<size_t>(v);
    }
  }
  void* get(size_t rounded) {
    if (rounded >= kLargeBlock) {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= rounded;
        return p;
      }
    }
    void* p = std::aligned_alloc(rounded >= kLargeBlock ? kLargeRound : 64, rounded);
    if (p && rounded >= kLargeBlock) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; failure is harmless
    return p;
  }
  void put(void* p, size_t rounded) {
    if (rounded >= kLargeBlock) {
      std::lock_guard<std::mutex> lk(mu_);
      if (cached_ + rounded <= limit_) {
        free_.emplace(rounded, p);
        cached_ += rounded;
        return;
      }
    }
    std::free(p);
  }
  size_t release() {
    std::lock_guard<std::mutex> lk(mu_);
    size_t n = cached_;
    for (auto& kv : free_) std::free(kv.second);
    free_.clear();
    cached_ = 0;
    return n;
  }
  size_t cached() {
    std::lock_guard<std::mutex> lk(mu_);
    return cached_;
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
  size_t limit_ = size_t(1) << 30;
};

HostCache& host_cache() {
  static HostCache* cache = new HostCache();  // leaked: storage may be freed during static destruction
  return *cache;
}

}  // namespace

size_t host_cache_release() { return host_cache().release(); }
size_t host_cache_bytes() { return host_cache().cached(); }

std::shared_ptr<Storage> Storage::allocate(const Device& device, size_t bytes) {
  void* p = nullptr;
  if (device.is_cpu()) {
    p = host_cache().get(host_rounded(bytes));
    FC_CHECK(p != nullptr, OutOfMemory, "could not allocate ", bytes, " bytes of host memory");
  } else {
    p = cuda::device_alloc(device.index, bytes);  // throws OUT_OF_MEMORY / CUDA_UNAVAILABLE
  }
  return std::shared_ptr<Storage>(new Storage(device, p, bytes));
}

Storage::~Storage() {
  if (!data_) return;
  if (device_.is_cpu()) {
    host_cache().put(data_, host_rounded(bytes_));
  } else {
    try {
      cuda::device_free(device_.index, data_);
    } catch (...) {
      // Destructors never throw; the allocator reports its own failures in memory_stats.
    }
  }
}

namespace {
int64_t checked_numel(const std::vector<int64_t>& shape) {
  FC_CHECK(shape.size() <= static_cast<size_t>(kMaxRank), InvalidArgument, "Expected a shape of rank <= ", kMaxRank,
           " but received rank ", shape.size(), " ", shape_str(shape));
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    FC_CHECK(shape[i] >= 0, InvalidArgument, "Expected non-negative dimensions for shape but received ", shape_str(shape));
    FC_CHECK(shape[i] == 0 || n <= (int64_t(1) << 50) / shape[i], InvalidArgument, "shape ", shape_str(shape),
             " is too large");
    n *= shape[i];
  }
  return n;
}
}  // namespace

Tensor Tensor::empty(const std::vector<int64_t>& shape, DType dtype, const Device& device) {
  int64_t n = checked_numel(shape);
  Tensor t;
  t.storage_ = Storage::allocate(device, static_cast<size_t>(n) * dtype_size(dtype));
  t.device_ = device;
  t.dtype_ = dtype;
  t.rank_ = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int i = t.rank_ - 1; i >= 0; --i) {
    t.shape_[i] = shape[i];
    t.strides_[i] = stride;
    stride *= shape[i];
  }
  return t;
}

Tensor Tensor::from_host(const void* src, size_t bytes, const std::vector<int64_t>& shape, DType dtype,
                         const Device& device) {
  int64_t n = checked_numel(shape);
  FC_CHECK(static_cast<size_t>(n) * dtype_size(dtype) == bytes, ShapeMismatch, "data of ", bytes,
           " bytes does not match shape ", shape_str(shape), " of ", dtype_name(dtype), " (",
           static_cast<size_t>(n) * dtype_size(dtype), " bytes)");
  Tensor t = empty(shape, dtype, device);
  if (bytes == 0) return t;
  if (device.is_cpu()) std::memcpy(t.data(), src, bytes);
  else cuda::copy_h2d(device.index, t.data(), src, bytes);
  return t;
}

int64_t Tensor::size(int axis) const {
  FC_CHECK(axis >= 0 && axis < rank_, OutOfRange, "Expected an axis in [0, ", rank_, ") but received ", axis);
  return shape_[axis];
}

int64_t Tensor::stride(int axis) const {
  FC_CHECK(axis >= 0 && axis < rank_, OutOfRange, "Expected an axis in [0, ", rank_, ") but received ", axis);
  return strides_[axis];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= shape_[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t stride = 1;
  for (int i = rank_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != stride) return false;
    stride *= shape_[i];
  }
  return true;
}

void* Tensor::data() const {
  FC_CHECK(storage_ != nullptr, Disposed, "tensor has no storage (disposed or never allocated)");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::reshape(const std::vector<int64_t>& shape) const {
  FC_CHECK(is_contiguous(), InvalidArgument, "reshape needs a contiguous tensor; ", describe(), " is a strided view");
  std::vector<int64_t> s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      FC_CHECK(infer < 0, InvalidArgument, "Expected at most one -1 in shape but received ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      FC_CHECK(s[i] >= 0, InvalidArgument, "Expected non-negative dimensions for shape but received ", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    FC_CHECK(known > 0 && numel() % known == 0, ShapeMismatch, "cannot reshape ", describe(), " to ", shape_str(shape));
    s[infer] = numel() / known;
  }
  FC_CHECK(checked_numel(s) == numel(), ShapeMismatch, "cannot reshape ", describe(), " to ", shape_str(shape));
  Tensor t = *this;
  t.rank_ = static_cast<int>(s.size());
  int64_t stride = 1;
  for (int i = t.rank_ - 1; i >= 0; --i) {
    t.shape_[i] = s[i];
    t.strides_[i] = stride;
    stride *= s[i];
  }
  return t;
}

Tensor Tensor::narrow(int axis, int64_t start, int64_t length) const {
  FC_CHECK(axis >= 0 && axis < rank_, OutOfRange, "Expected an axis in [0, ", rank_, ") but received ", axis);
  FC_CHECK(start >= 0 && length >= 0 && start + length <= shape_[axis], OutOfRange, "Expected start + length <= ",
           shape_[axis], " for narrow on axis ", axis, " but received start ", start, ", length ", length);
  Tensor t = *this;
  t.offset_ += start * strides_[axis];
  t.shape_[axis] = length;
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  FC_CHECK(a >= 0 && a < rank_ && b >= 0 && b < rank_, OutOfRange, "Expected axes in [0, ", rank_, ") but received ", a,
           " and ", b);
  Tensor t = *this;
  std::swap(t.shape_[a], t.shape_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::expand(const std::vector<int64_t>& shape) const {
  FC_CHECK(static_cast<int>(shape.size()) == rank_, ShapeMismatch, "Expected a shape of rank ", rank_,
           " to expand ", describe(), " to but received ", shape_str(shape));
  Tensor t = *this;
  for (int i = 0; i < rank_; ++i) {
    if (shape[i] == shape_[i]) continue;
    FC_CHECK(shape_[i] == 1 && shape[i] >= 0, ShapeMismatch, "Expected axis ", i, " of ", describe(),
             " to have size 1 to expand it to ", shape_str(shape));
    t.shape_[i] = shape[i];
    t.strides_[i] = 0;
  }
  return t;
}

namespace {
// Strided host copy into contiguous dst, element by element over the last axis.
void gather_strided(const char* base, const int64_t* shape, const int64_t* strides, int rank, size_t esize, char* dst) {
  if (rank == 0) {
    std::memcpy(dst, base, esize);
    return;
  }
  int64_t outer = 1;
  for (int i = 0; i < rank - 1; ++i) outer *= shape[i];
  int64_t inner = shape[rank - 1];
  int64_t idx[kMaxRank] = {0};
  for (int64_t o = 0; o < outer; ++o) {
    int64_t off = 0;
    for (int i = 0; i < rank - 1; ++i) off += idx[i] * strides[i];
    const char* src = base + off * static_cast<int64_t>(esize);
    if (strides[rank - 1] == 1) {
      std::memcpy(dst, src, static_cast<size_t>(inner) * esize);
      dst += inner * static_cast<int64_t>(esize);
    } else {
      for (int64_t j = 0; j < inner; ++j) {
        std::memcpy(dst, src + j * strides[rank - 1] * static_cast<int64_t>(esize), esize);
        dst += esize;
      }
    }
    for (int i = rank - 2; i >= 0; --i) {
      if (++idx[i] < shape[i]) break;
      idx[i] = 0;
    }
  }
}
}  // namespace

void Tensor::copy_to_host(void* dst) const {
  if (numel() == 0) return;
  if (device_.is_cpu()) {
    if (is_contiguous()) std::memcpy(dst, data(), nbytes());
    else gather_strided(static_cast<const char*>(data()), shape_.data(), strides_.data(), rank_, dtype_size(dtype_),
                        static_cast<char*>(dst));
    return;
  }
  FC_CHECK(is_contiguous(), NotImplemented, "copying a strided CUDA view to the host is not supported yet (",
           describe(), ")");
  cuda::copy_d2h(device_.index, dst, data(), nbytes());
}

Tensor Tensor::to(const Device& device) const {
  Tensor out = Tensor::empty(shape(), dtype_, device);
  if (numel() == 0) return out;
  if (device_.is_cpu()) {
    if (device.is_cpu()) {
      copy_to_host(out.data());
    } else if (is_contiguous()) {
      cuda::copy_h2d(device.index, out.data(), data(), nbytes());
    } else {
      std::vector<char> staging(nbytes());
      copy_to_host(staging.data());
      cuda::copy_h2d(device.index, out.data(), staging.data(), nbytes());
    }
    return out;
  }
  if (device.is_cpu()) {
    copy_to_host(out.data());
  } else if (device.index == device_.index && is_contiguous()) {
    cuda::copy_d2d(device.index, out.data(), data(), nbytes());
  } else {
    std::vector<char> staging(nbytes());
    copy_to_host(staging.data());
    cuda::copy_h2d(device.index, out.data(), staging.data(), nbytes());
  }
  return out;
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape()) + " on " + device_.str();
}

}  // namespace fc
