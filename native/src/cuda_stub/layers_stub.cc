// @file layers_stub.cc
// @brief The CUDA layer ops (common/layers_cuda.h) of a build without nvcc. No CUDA tensor can exist
// in such a build (allocation throws first), so these are never reached through fc::nn; each throws
// CUDA_UNAVAILABLE with the stub's reason (cuda::require_device) should anything call one directly.
#include "common/layers_cuda.h"
#include "facecuda/cuda.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {
void unavailable() { cuda::require_device(0); }
}  // namespace

void conv2d_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&,
                    const ExecOptions&) {
  unavailable();
}
void conv2d_backward_data(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&, bool,
                          const ExecOptions&) {
  unavailable();
}
void conv2d_backward_filter(const Tensor&, const Tensor&, const Tensor&, const Conv2dParams&, const ExecOptions&) {
  unavailable();
}
void conv2d_backward_bias(const Tensor&, const Tensor&) { unavailable(); }

void batch_norm_forward_train(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const BatchNormOptions&) {
  unavailable();
}
void batch_norm_forward_eval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const BatchNormOptions&) {
  unavailable();
}
void batch_norm_backward_train(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const Tensor&, const Tensor&, const BatchNormOptions&) {
  unavailable();
}
void batch_norm_backward_eval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const BatchNormOptions&) {
  unavailable();
}
void fold_batch_norm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                     const Tensor&, const Tensor&) {
  unavailable();
}

void batch_norm_prelu_forward_train(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const BatchNormOptions&) {
  unavailable();
}
void batch_norm_prelu_forward_eval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const BatchNormOptions&) {
  unavailable();
}
void batch_norm_prelu_backward_train(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     const Tensor&, const BatchNormOptions&) {
  unavailable();
}
void batch_norm_prelu_backward_eval(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const BatchNormOptions&) {
  unavailable();
}

void prelu_forward(const Tensor&, const Tensor&, const Tensor&) { unavailable(); }
void prelu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) { unavailable(); }
void relu_forward(const Tensor&, const Tensor&) { unavailable(); }
void relu_backward(const Tensor&, const Tensor&, const Tensor&) { unavailable(); }
void dropout_forward(const Tensor&, const Tensor&, const DropoutParams&, bool) { unavailable(); }
void dropout_backward(const Tensor&, const Tensor&, const DropoutParams&, bool) { unavailable(); }
void linear_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const ExecOptions&) { unavailable(); }
void linear_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                     const ExecOptions&) {
  unavailable();
}
void add(const Tensor&, const Tensor&, const Tensor&) { unavailable(); }

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
