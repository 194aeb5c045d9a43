// @file layers_attn_stub.cc
// @brief The CUDA attention ops (common/layers_attn_cuda.h) of a build without nvcc: never reached
// through fc::nn (no CUDA tensor can exist), each throws CUDA_UNAVAILABLE (cuda::require_device).
#include "common/layers_attn_cuda.h"
#include "facecuda/cuda.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {
void unavailable() { cuda::require_device(0); }
}  // namespace

void attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, float,
                       const ExecOptions&) {
  unavailable();
}
void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, const Tensor&, float, const ExecOptions&) {
  unavailable();
}
void xca_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                 const Tensor&, const Tensor&, const ExecOptions&) {
  unavailable();
}
void xca_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                  const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                  const ExecOptions&) {
  unavailable();
}

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
