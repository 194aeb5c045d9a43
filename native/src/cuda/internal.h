// @file internal.h
// @brief What the CUDA backend's translation units share, and nothing outside native/src/cuda/ (and
// the native tests) sees: CUDA status -> fc::Error, the current-device guard, the per-device stream,
// the compiled-architecture check, the memory-size parser of FACECUDA_CUDA_MEMORY_LIMIT and the
// caching pool (with its driver interface, so its logic is tested without a GPU).
//
// Contracts
// - Every CUDA runtime call goes through FC_CUDA_CHECK (or an explicit check): a failure becomes an
//   fc::Error whose message names the call, the status name and string and what was being done;
//   cudaErrorMemoryAllocation becomes OUT_OF_MEMORY, everything else CUDA_ERROR. Nothing aborts.
// - stream(d) is THE stream of device d: one per device, created on first use (a mutex guards the
//   creation only), never destroyed (the driver reclaims it at exit; destroying CUDA objects from
//   static destructors races the runtime's own teardown). All device work of the engine is ordered on
//   it, which is what makes the caching allocator's immediate reuse of freed blocks safe.
// - DeviceGuard makes `device` current on the calling thread (nothing to do when it already is), so
//   the functions here may be called from any thread. It does not restore the previous device: every
//   CUDA call of the engine sets its device first, and "restoring" the default device 0 of a thread
//   that never chose one would create a context on GPU 0 (cudaSetDevice initializes the context).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "facecuda/cuda.h"
#include "facecuda/error.h"

namespace fc {
namespace cuda {
namespace detail {

// "cudaErrorInvalidValue (invalid argument)".
std::string cuda_error_text(cudaError_t err);
// Throws fc::Error: "<call> failed: <name> (<string>) [<context>]" plus a note for sticky errors.
[[noreturn]] void throw_cuda(cudaError_t err, const char* call, const std::string& context);

class DeviceGuard {
 public:
  explicit DeviceGuard(int device);  // throws CUDA_ERROR when the device cannot be made current
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

// The device's one stream (require_device is checked first; created lazily).
cudaStream_t stream(int device);

// Empty when a kernel image in `archs` (the FACECUDA_CUDA_ARCHS define: CMake tokens such as
// "90-real 90-virtual", "80", "90a-real", "all-major") runs on compute capability major.minor;
// otherwise the reason, naming both sides and how to rebuild.
std::string arch_mismatch(const std::string& archs, int major, int minor);
// "sm_90 compute_90" from "90-real 90-virtual" (unknown tokens are kept as they are).
std::string format_archs(const std::string& archs);

// Parses a byte count: "1073741824", "512M", "1.5GiB", "64 KiB"; K/M/G/T (and KB/MB/..., KiB/MiB/...)
// are all powers of 1024; case-insensitive; "0" means no limit. Returns false with *why on a bad value.
bool parse_memory_size(const std::string& text, size_t* out, std::string* why);

// "1.50 GiB" style, for messages.
std::string format_bytes(size_t bytes);

// ---- the caching allocator's pool (allocator.cc): the logic, over a driver that tests can fake

// What a pool asks of the device. The real one calls cudaMalloc/cudaFree/cudaDeviceSynchronize/
// cudaMemGetInfo with the device made current (and clears the runtime's last error after a failure).
class PoolDriver {
 public:
  virtual ~PoolDriver() = default;
  virtual cudaError_t malloc(void** p, size_t bytes) = 0;
  virtual cudaError_t free(void* p) = 0;
  virtual cudaError_t synchronize() = 0;                    // all queued work on the device is done
  virtual bool mem_info(size_t* free_b, size_t* total_b) = 0;  // for out-of-memory messages
};

// One device's stream-ordered caching pool; the contract is in allocator.cc's header. Thread-safe.
// `config_error` (an invalid FACECUDA_CUDA_MEMORY_LIMIT) makes alloc throw INVALID_ARGUMENT until
// set_limit is called.
class CachingPool {
 public:
  CachingPool(int device, std::unique_ptr<PoolDriver> driver, size_t limit, std::string config_error);
  void* alloc(size_t bytes);
  void free(void* ptr);
  MemoryStats stats();
  void set_limit(size_t bytes);
  void reset_peak();
  size_t empty_cache();

 private:
  using FreeSet = std::set<std::pair<size_t, void*>>;  // (size, address): smallest fitting block first
  void* take_cached(size_t size);
  size_t cached_bytes() const;
  size_t release_cached();
  [[noreturn]] void throw_oom(size_t bytes, size_t size, const std::string& cause);

  int device_;
  std::unique_ptr<PoolDriver> driver_;
  std::mutex mu_;
  FreeSet free_small_, free_large_;
  std::unordered_map<void*, size_t> live_;  // block -> rounded size
  MemoryStats stats_;
  std::string config_error_;
};

// Fills C (rows x cols, row stride ldc, device memory) with beta * C (beta == 0: zeros, C not read),
// on `s`. Used by sgemm when alpha == 0 or K == 0 (BLAS: A and B are then not read).
void scale_matrix(float* c, int64_t ldc, int64_t rows, int64_t cols, float beta, cudaStream_t s);

}  // namespace detail
}  // namespace cuda
}  // namespace fc

// FC_CUDA_CHECK(call, context pieces...): throws fc::Error unless call returns cudaSuccess.
#define FC_CUDA_CHECK(call, ...)                                                         \
  do {                                                                                   \
    cudaError_t fc_cuda_err_ = (call);                                                   \
    if (fc_cuda_err_ != cudaSuccess)                                                     \
      ::fc::cuda::detail::throw_cuda(fc_cuda_err_, #call, ::fc::str(__VA_ARGS__));       \
  } while (0)
