// @file layers_ext_stub.cc
// @brief The CUDA ops of common/layers_ext_cuda.h in a build without nvcc: never reached through
// fc::nn (no CUDA tensor can exist), each throws CUDA_UNAVAILABLE with the stub's reason.
#include "common/layers_ext_cuda.h"
#include "facecuda/cuda.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {
void unavailable() { cuda::require_device(0); }
}  // namespace

void activation_forward(Activation, const Tensor&, const Tensor&) { unavailable(); }
void activation_backward(Activation, const Tensor&, const Tensor&, const Tensor&) { unavailable(); }
void layer_norm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        double, int64_t, int64_t, int64_t) {
  unavailable();
}
void layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         const Tensor&, const Tensor&, int64_t, int64_t, int64_t) {
  unavailable();
}
void layer_scale_forward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t) { unavailable(); }
void layer_scale_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t,
                          int64_t) {
  unavailable();
}
void drop_path_apply(const Tensor&, const Tensor&, double, uint64_t, float, int64_t, int64_t) { unavailable(); }
void global_avg_pool_forward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t) { unavailable(); }
void global_avg_pool_backward(const Tensor&, const Tensor&, bool, int64_t, int64_t, int64_t) { unavailable(); }
void channel_mul_forward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t) { unavailable(); }
void channel_mul_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t,
                          int64_t) {
  unavailable();
}
void strided_copy(const Tensor&, const Tensor&, const StridedView&, float, bool) { unavailable(); }
void sum_batch(const Tensor&, const Tensor&, const StridedView&, bool) { unavailable(); }

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
