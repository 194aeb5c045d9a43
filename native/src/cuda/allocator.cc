// @file allocator.cc
// @brief The stream-ordered caching allocator: one pool per device, after PyTorch's, without block
// splitting.
//
// - Sizes are rounded up: requests <= 1 MiB to a multiple of 512 B ("small"), larger ones to a
//   multiple of 2 MiB ("large"). Each block is one cudaMalloc of its rounded size.
// - device_free puts the block in a free set ordered by (size, address); device_alloc takes the
//   smallest cached block that fits and wastes little (small: at most 2x the rounded size; large: at
//   most 25% more), else calls cudaMalloc. All device work of the engine runs on the device's one
//   stream (internal.h), so a block freed on the host is reused by work enqueued later on that same
//   stream: stream order makes the reuse safe without events. The caller must not free a block while
//   work that uses it is still to be enqueued (the tensor's reference count covers that).
// - Accounting: `allocated` counts the rounded sizes of live blocks, `reserved` every block held from
//   the driver (live + cached), `peak_allocated` the high-water mark of `allocated`; `num_allocs`
//   counts allocations served, `num_driver_allocs` those that needed cudaMalloc. A 0-byte request
//   returns nullptr and counts nothing; device_free(nullptr) does nothing.
// - Cap: set_memory_limit, or FACECUDA_CUDA_MEMORY_LIMIT read when the pool is created (bytes or with
//   K/M/G/T, KB/MB/..., KiB/MiB/... suffixes, all powers of 1024; 0 = none). The cap bounds
//   `reserved`. An invalid FACECUDA_CUDA_MEMORY_LIMIT is not ignored: every device_alloc throws
//   INVALID_ARGUMENT naming the value until set_memory_limit replaces it (a typo in a cap must not
//   silently let the process take the whole GPU).
// - Out of memory: when the cap would be exceeded or cudaMalloc fails, the cache is released (device
//   synchronized, cached blocks cudaFree'd) and the allocation retried once; then OUT_OF_MEMORY with
//   the request, allocated/reserved/limit and the device's free/total memory in the message.
// - empty_cache synchronizes the device and returns every cached block to the driver.
// - Thread-safe: one mutex per pool. device_free makes no CUDA call, so any thread (a JS finalizer)
//   may free. Pools are never destroyed: the driver reclaims device memory at process exit, and
//   cudaFree from static destructors would race the runtime's teardown.
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda/internal.h"
#include "facecuda/cuda.h"

namespace fc {
namespace cuda {

namespace detail {

bool parse_memory_size(const std::string& text, size_t* out, std::string* why) {
  size_t i = 0, n = text.size();
  while (i < n && (text[i] == ' ' || text[i] == '\t')) ++i;
  while (n > i && (text[n - 1] == ' ' || text[n - 1] == '\t')) --n;
  std::string s = text.substr(i, n - i);
  if (s.empty()) {
    *why = "empty value";
    return false;
  }
  size_t k = 0;
  long double value = 0;
  bool digits = false;
  while (k < s.size() && s[k] >= '0' && s[k] <= '9') {
    value = value * 10 + (s[k] - '0');
    digits = true;
    ++k;
  }
  if (k < s.size() && s[k] == '.') {
    ++k;
    long double scale = 0.1L;
    while (k < s.size() && s[k] >= '0' && s[k] <= '9') {
      value += (s[k] - '0') * scale;
      scale /= 10;
      digits = true;
      ++k;
    }
  }
  if (!digits) {
    *why = str("\"", text, "\" is not a number of bytes (examples: 1073741824, 512M, 1.5GiB)");
    return false;
  }
  while (k < s.size() && s[k] == ' ') ++k;
  std::string unit;
  for (; k < s.size(); ++k) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(s[k])));
  long double mult = 1;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1024.0L;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1024.0L * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1024.0L * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib") mult = 1024.0L * 1024 * 1024 * 1024;
  else {
    *why = str("\"", text, "\" has an unknown unit \"", unit, "\" (use K, M, G, T, KiB, MiB, GiB or TiB)");
    return false;
  }
  long double bytes = value * mult;
  if (bytes >= 18446744073709551615.0L) {  // 2^64 - 1: beyond size_t
    *why = str("\"", text, "\" is too large");
    return false;
  }
  if (unit.empty() && s.find('.') != std::string::npos && bytes != static_cast<long double>(static_cast<size_t>(bytes))) {
    *why = str("\"", text, "\" is a fractional number of bytes");
    return false;
  }
  *out = static_cast<size_t>(bytes);
  return true;
}

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0) std::snprintf(buf, sizeof(buf), "%zu B", bytes);
  else std::snprintf(buf, sizeof(buf), "%.2f %s", v, units[u]);
  return buf;
}

namespace {

constexpr size_t kSmallMax = size_t(1) << 20;    // requests up to 1 MiB are "small"
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;  // 2 MiB

size_t round_size(size_t bytes) {
  if (bytes <= kSmallMax) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

}  // namespace

CachingPool::CachingPool(int device, std::unique_ptr<PoolDriver> driver, size_t limit, std::string config_error)
    : device_(device), driver_(std::move(driver)), config_error_(std::move(config_error)) {
  stats_.limit = limit;
}

void* CachingPool::take_cached(size_t size) {
  FreeSet& set = size <= kSmallMax ? free_small_ : free_large_;
  auto it = set.lower_bound({size, nullptr});
  if (it == set.end()) return nullptr;
  size_t max_ok = size <= kSmallMax ? size * 2 : size + size / 4;
  if (it->first > max_ok) return nullptr;
  void* ptr = it->second;
  size_t block = it->first;
  set.erase(it);
  live_[ptr] = block;
  stats_.allocated += block;
  if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
  ++stats_.num_allocs;
  return ptr;
}

size_t CachingPool::cached_bytes() const {
  size_t n = 0;
  for (const auto& b : free_small_) n += b.first;
  for (const auto& b : free_large_) n += b.first;
  return n;
}

size_t CachingPool::release_cached() {
  if (free_small_.empty() && free_large_.empty()) return 0;
  cudaError_t e = driver_->synchronize();
  if (e != cudaSuccess) {
    throw_cuda(e, "cudaDeviceSynchronize",
               str("releasing the CUDA memory cache of cuda:", device_, " (the error may come from an earlier asynchronous operation)"));
  }
  size_t released = 0;
  cudaError_t first = cudaSuccess;
  for (FreeSet* set : {&free_small_, &free_large_}) {
    for (const auto& b : *set) {
      cudaError_t fe = driver_->free(b.second);
      if (fe != cudaSuccess && first == cudaSuccess) first = fe;
      released += b.first;
    }
    set->clear();
  }
  stats_.reserved -= released;
  if (first != cudaSuccess) throw_cuda(first, "cudaFree", str("releasing the cache of cuda:", device_));
  return released;
}

void CachingPool::throw_oom(size_t bytes, size_t size, const std::string& cause) {
  std::string device_mem;
  size_t free_b = 0, total_b = 0;
  if (driver_->mem_info(&free_b, &total_b)) {
    device_mem = str("; the device has ", format_bytes(free_b), " free of ", format_bytes(total_b));
  }
  fail(Code::OutOfMemory,
       str("CUDA out of memory on cuda:", device_, ": tried to allocate ", format_bytes(size), " (", bytes,
           " bytes requested): ", cause, "; allocated ", format_bytes(stats_.allocated), ", reserved ",
           format_bytes(stats_.reserved), " (", format_bytes(cached_bytes()), " cached), limit ",
           stats_.limit ? format_bytes(stats_.limit) : std::string("none"), device_mem));
}

void* CachingPool::alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (!config_error_.empty()) fail(Code::InvalidArgument, config_error_);
  if (bytes > SIZE_MAX - kLargeRound) throw_oom(bytes, bytes, "the request is larger than any device");
  size_t size = round_size(bytes);
  if (void* ptr = take_cached(size)) return ptr;

  if (stats_.limit && stats_.reserved + size > stats_.limit) {
    release_cached();
    if (stats_.reserved + size > stats_.limit) {
      throw_oom(bytes, size, "it would exceed the memory limit (set_memory_limit or FACECUDA_CUDA_MEMORY_LIMIT)");
    }
  }
  void* ptr = nullptr;
  cudaError_t e = driver_->malloc(&ptr, size);
  if (e == cudaErrorMemoryAllocation) {
    release_cached();
    e = driver_->malloc(&ptr, size);
    if (e == cudaErrorMemoryAllocation) {
      throw_oom(bytes, size, str("cudaMalloc failed: ", cuda_error_text(e), " even after the cache was released"));
    }
  }
  if (e != cudaSuccess) throw_cuda(e, "cudaMalloc", str("device_alloc cuda:", device_, " ", size, " bytes"));
  stats_.reserved += size;
  ++stats_.num_driver_allocs;
  ++stats_.num_allocs;
  live_[ptr] = size;
  stats_.allocated += size;
  if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
  return ptr;
}

void CachingPool::free(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  FC_CHECK(it != live_.end(), InvalidArgument, "device_free: ", ptr, " was not allocated by device_alloc on cuda:", device_,
           " (or was already freed)");
  size_t size = it->second;
  live_.erase(it);
  stats_.allocated -= size;
  (size <= kSmallMax ? free_small_ : free_large_).insert({size, ptr});
}

MemoryStats CachingPool::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingPool::set_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.limit = bytes;
  config_error_.clear();
}

void CachingPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
}

size_t CachingPool::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  return release_cached();
}

}  // namespace detail

namespace {

// The real driver of a device's pool: the CUDA runtime, with the device made current per call (frees
// and empty_cache may come from any thread).
class CudaPoolDriver final : public detail::PoolDriver {
 public:
  explicit CudaPoolDriver(int device) : device_(device) {}
  cudaError_t malloc(void** p, size_t bytes) override {
    detail::DeviceGuard g(device_);
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) (void)cudaGetLastError();  // out of memory is not sticky; clear it
    return e;
  }
  cudaError_t free(void* p) override {
    detail::DeviceGuard g(device_);
    return cudaFree(p);
  }
  cudaError_t synchronize() override {
    detail::DeviceGuard g(device_);
    return cudaDeviceSynchronize();
  }
  bool mem_info(size_t* free_b, size_t* total_b) override {
    detail::DeviceGuard g(device_);
    if (cudaMemGetInfo(free_b, total_b) == cudaSuccess) return true;
    (void)cudaGetLastError();
    return false;
  }

 private:
  int device_;
};

struct Pools {
  std::once_flag once;
  std::vector<std::unique_ptr<detail::CachingPool>> pools;
};

detail::CachingPool& pool(int device) {
  require_device(device);  // CUDA_UNAVAILABLE with the reason, or an index that does not exist
  static Pools* ps = new Pools();  // leaked on purpose (see the file header)
  std::call_once(ps->once, [] {
    size_t n = status().devices.size();
    size_t limit = 0;
    std::string error;
    if (const char* env = std::getenv("FACECUDA_CUDA_MEMORY_LIMIT")) {
      std::string why;
      if (!detail::parse_memory_size(env, &limit, &why)) {
        limit = 0;
        error = str("FACECUDA_CUDA_MEMORY_LIMIT is invalid: ", why,
                    "; fix or unset it, or call set_memory_limit, before allocating CUDA memory");
      }
    }
    for (size_t i = 0; i < n; ++i) {
      int d = static_cast<int>(i);
      ps->pools.push_back(std::make_unique<detail::CachingPool>(d, std::make_unique<CudaPoolDriver>(d), limit, error));
    }
  });
  return *ps->pools[static_cast<size_t>(device)];
}

}  // namespace

void* device_alloc(int device, size_t bytes) {
  return pool(device).alloc(bytes);  // CUDA_UNAVAILABLE first, even for 0 bytes (as in the no-CUDA build)
}

void device_free(int device, void* ptr) {
  if (!ptr) return;
  pool(device).free(ptr);
}

MemoryStats memory_stats(int device) { return pool(device).stats(); }

void set_memory_limit(int device, size_t bytes) { pool(device).set_limit(bytes); }

void reset_peak(int device) { pool(device).reset_peak(); }

size_t empty_cache(int device) { return pool(device).empty_cache(); }

}  // namespace cuda
}  // namespace fc
