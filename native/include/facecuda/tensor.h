// @file tensor.h
// @brief Tensor: dtype, shape (rank 0..5), strides, device and reference-counted storage.
//
// Storage is shared between a tensor and its views (reshape of a contiguous tensor, narrow on the
// first axis, transpose of two axes); the bytes are freed when the last reference goes. CUDA storage
// comes from the device's caching allocator and is returned to it, never to the driver directly.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "facecuda/device.h"
#include "facecuda/dtype.h"

namespace fc {

constexpr int kMaxRank = 5;

class Storage {
 public:
  // Allocates `bytes` on `device` (64-byte aligned on the CPU). Throws OUT_OF_MEMORY.
  static std::shared_ptr<Storage> allocate(const Device& device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }

 private:
  Storage(Device d, void* p, size_t n) : device_(d), data_(p), bytes_(n) {}
  Device device_;
  void* data_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;
  // New contiguous tensor with uninitialized contents.
  static Tensor empty(const std::vector<int64_t>& shape, DType dtype, const Device& device);
  // New contiguous CPU tensor holding a copy of `src` (bytes must equal numel * dtype size).
  static Tensor from_host(const void* src, size_t bytes, const std::vector<int64_t>& shape, DType dtype,
                          const Device& device);

  bool defined() const { return static_cast<bool>(storage_); }
  DType dtype() const { return dtype_; }
  const Device& device() const { return device_; }
  int rank() const { return rank_; }
  int64_t size(int axis) const;
  int64_t stride(int axis) const;
  std::vector<int64_t> shape() const { return std::vector<int64_t>(shape_.begin(), shape_.begin() + rank_); }
  std::vector<int64_t> strides() const { return std::vector<int64_t>(strides_.begin(), strides_.begin() + rank_); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  int64_t offset() const { return offset_; }  // in elements

  void* data() const;
  template <typename T>
  T* data_as() const { return static_cast<T*>(data()); }

  // Views (share storage).
  Tensor reshape(const std::vector<int64_t>& shape) const;  // contiguous only; one -1 allowed
  Tensor narrow(int axis, int64_t start, int64_t length) const;
  Tensor transpose(int a, int b) const;
  // The same rank with every size-1 axis of this tensor broadcast to shape[axis] (stride 0); other
  // axes must keep their size. A read-only view: no op writes through a stride-0 axis.
  Tensor expand(const std::vector<int64_t>& shape) const;

  // Copies the contents into contiguous host memory `dst` of nbytes(). Runs on the caller's thread:
  // call it from the device's queue thread (CUDA: synchronous D2H on the device stream).
  void copy_to_host(void* dst) const;
  // A contiguous copy of this tensor on `device` (same dtype). Caller's thread, as above.
  Tensor to(const Device& device) const;

  std::string describe() const;  // "float32[2, 3] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  Device device_;
  DType dtype_ = DType::F32;
  int rank_ = 0;
  int64_t offset_ = 0;
  std::array<int64_t, kMaxRank> shape_{};
  std::array<int64_t, kMaxRank> strides_{};
};

// Host blocks of >= 1 MiB are cached on free for reuse (FACECUDA_CPU_CACHE_LIMIT bytes, default
// 1 GiB). Returns the cached bytes to the system / reports how many are cached.
size_t host_cache_release();
size_t host_cache_bytes();

// Formats a shape as "[2, 3]".
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace fc
