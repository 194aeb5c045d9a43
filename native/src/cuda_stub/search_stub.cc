// @file search_stub.cc
// @brief The CUDA search entry points of facecuda/search.h for builds without nvcc: every call throws
// CUDA_UNAVAILABLE with the reason fc::cuda::status() gives.
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/search.h"

namespace fc {
namespace search {

namespace {
[[noreturn]] void unavailable() { fail(Code::CudaUnavailable, str("CUDA is not available: ", cuda::status().reason)); }
}  // namespace

DeviceGallery::DeviceGallery(int device, const Store&) : device_(device), n_(0), dim_(0), storage_(Storage::F32) {
  unavailable();
}
DeviceGallery::~DeviceGallery() = default;

void topk_cuda(const DeviceGallery&, const float*, int64_t, int64_t, int64_t*, float*, const uint64_t*) { unavailable(); }

}  // namespace search
}  // namespace fc
