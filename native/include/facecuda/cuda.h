// @file cuda.h
// @brief The CUDA backend as the rest of the engine sees it: no CUDA headers here.
//
// Built two ways: native/src/cuda/ (nvcc present; cudart linked statically, cuBLAS/cuBLASLt/cuDNN
// opened at run time with dlopen) or native/src/cuda_stub/ (no nvcc; status() says why and every
// other call throws CUDA_UNAVAILABLE). Probing never aborts: a missing driver, no device, an old
// driver or missing libraries all end up as `reason` strings and a CPU fallback decided in JS.
//
// Threading: everything that touches a device (allocations excepted, which take a lock) runs on that
// device's WorkQueue thread, which owns its stream and library handles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "facecuda/gemm.h"

namespace fc {
namespace cuda {

struct LibraryInfo {
  std::string name;                // "cublas", "cublasLt", "cudnn"
  bool found = false;
  std::string path;                // absolute path of the file that loaded
  std::string version;             // e.g. "13.0.2" / "9.10.2", empty when not found
  std::vector<std::string> tried;  // every candidate tried, in order, with the dlerror for failures
  std::string error;               // why it was not found / not usable
};

struct DeviceInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  size_t free_memory = 0;  // 0 in status(): probing creates no CUDA context on any device
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  std::string pci_bus_id;
};

struct Status {
  bool compiled = false;       // built with the CUDA backend
  bool available = false;      // at least one usable device
  std::string reason;          // why not available (empty when available)
  int runtime_version = 0;     // cudart the addon was built with, e.g. 13000
  int driver_version = 0;      // 0 when no driver
  std::string compiled_archs;  // e.g. "sm_90 compute_90"
  std::vector<DeviceInfo> devices;
};

// Probes once (thread-safe) and caches; later calls return the cached result.
const Status& status();
// Probes cuBLAS, cuBLASLt and cuDNN (opening them if not yet open). Cached after the first call.
std::vector<LibraryInfo> libraries();

// Throws CUDA_UNAVAILABLE with the reason unless device `index` is usable.
void require_device(int index);

// ---- memory: a stream-ordered caching allocator per device
struct MemoryStats {
  size_t allocated = 0;       // bytes in live tensors
  size_t reserved = 0;        // bytes held from the driver (live + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  size_t limit = 0;           // cap on `reserved` (0 = none)
  uint64_t num_allocs = 0;    // allocations served
  uint64_t num_driver_allocs = 0;  // of which went to cudaMalloc
};
// The cap comes from set_memory_limit or FACECUDA_CUDA_MEMORY_LIMIT (bytes, or with K/M/G suffix);
// an unparsable FACECUDA_CUDA_MEMORY_LIMIT makes device_alloc throw INVALID_ARGUMENT until
// set_memory_limit is called.
void* device_alloc(int device, size_t bytes);  // throws OUT_OF_MEMORY (message has sizes and stats)
void device_free(int device, void* ptr);       // back to the cache (safe: one stream per device)
MemoryStats memory_stats(int device);
void set_memory_limit(int device, size_t bytes);
void reset_peak(int device);
size_t empty_cache(int device);  // returns cached blocks to the driver; returns the bytes released

// ---- copies and sync, on the device's stream. copy_h2d and copy_d2h return once the host buffer
// is no longer needed (d2h: the data has arrived); copy_d2d and memset_zero are asynchronous on the
// stream (ordered with later work on it).
void copy_h2d(int device, void* dst, const void* src, size_t bytes);
void copy_d2h(int device, void* dst, const void* src, size_t bytes);
void copy_d2d(int device, void* dst, const void* src, size_t bytes);
void memset_zero(int device, void* dst, size_t bytes);
void synchronize(int device);

// ---- GEMM through cuBLAS (row-major, same contract as fc::sgemm).
enum class MathMode { F32 = 0, TF32 = 1, BF16 = 2, F16 = 3 };  // F16: fp16-rounded inputs, fp32 accumulate
void sgemm(int device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
           MathMode mode);

}  // namespace cuda
}  // namespace fc
