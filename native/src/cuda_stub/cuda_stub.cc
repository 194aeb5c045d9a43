// @file cuda_stub.cc
// @brief The CUDA API of facecuda/cuda.h for builds without nvcc: status() says why there is no CUDA
// backend, libraries() lists the libraries as not searched, and every other call throws
// CUDA_UNAVAILABLE with that reason (device_free(nullptr) excepted: freeing nothing is a no-op).
#include "common/head_kernels.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"

namespace fc {
namespace cuda {

namespace {

const char* const kReason =
    "facecuda was built without the CUDA backend (nvcc was not found at build time); rebuild with nvcc on PATH";

[[noreturn]] void unavailable() { fail(Code::CudaUnavailable, str("CUDA is not available: ", kReason)); }

}  // namespace

const Status& status() {
  static const Status* s = [] {
    Status* st = new Status();  // never destroyed: read from any thread until exit
    st->compiled = false;
    st->available = false;
    st->reason = kReason;
    return st;
  }();
  return *s;
}

std::vector<LibraryInfo> libraries() {
  std::vector<LibraryInfo> out;
  for (const char* name : {"cublas", "cublasLt", "cudnn"}) {
    LibraryInfo li;
    li.name = name;
    li.found = false;
    li.error = "not searched: built without CUDA";
    out.push_back(li);
  }
  return out;
}

void require_device(int) { unavailable(); }

void* device_alloc(int, size_t) { unavailable(); }
void device_free(int, void* ptr) {
  if (ptr) unavailable();
}
MemoryStats memory_stats(int) { unavailable(); }
void set_memory_limit(int, size_t) { unavailable(); }
void reset_peak(int) { unavailable(); }
size_t empty_cache(int) { unavailable(); }

void copy_h2d(int, void*, const void*, size_t) { unavailable(); }
void copy_d2h(int, void*, const void*, size_t) { unavailable(); }
void copy_d2d(int, void*, const void*, size_t) { unavailable(); }
void memset_zero(int, void*, size_t) { unavailable(); }
void synchronize(int) { unavailable(); }

void sgemm(int, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
           float*, int64_t, MathMode) {
  unavailable();
}

}  // namespace cuda

namespace heads {
std::unique_ptr<Kernels> make_cuda_kernels(const Device&, GemmPrecision) { cuda::unavailable(); }
}  // namespace heads
}  // namespace fc
