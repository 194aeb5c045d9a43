// @file layers_cuda.h
// @brief The CUDA implementations of the layer ops (facecuda/layers.h), as the CPU entry points hand
// them over: native/src/cuda/layers_*.{cc,cu} with nvcc, native/src/cuda_stub/layers_stub.cc
// (CUDA_UNAVAILABLE) without.
//
// Contract: called only from the public fc::nn functions AFTER their argument checks
// (cpu/layers_internal.h), with every tensor on the same CUDA device, float32, contiguous, of the
// checked shapes. The arguments and their meaning are those of layers.h; these functions validate
// nothing again. Work is enqueued on the device's stream (asynchronous, like cuda::sgemm); call from
// the device's queue thread. Thread counts (ExecOptions::max_threads) do not apply on a GPU, so only
// the ops that use precision or workspace take the ExecOptions.
#pragma once

#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const Conv2dParams& p,
                    const ExecOptions& ex);
void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, const Conv2dParams& p, bool accumulate,
                          const ExecOptions& ex);
void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Conv2dParams& p,
                            const ExecOptions& ex);
void conv2d_backward_bias(const Tensor& dy, const Tensor& db);

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& y, const Tensor& save_mean,
                              const Tensor& save_invstd, const BatchNormOptions& o);
void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const Tensor& y, const BatchNormOptions& o);
void batch_norm_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                               const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                               const BatchNormOptions& o);
void batch_norm_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                              const BatchNormOptions& o);
void fold_batch_norm(const Tensor& w, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                     const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& w_out,
                     const Tensor& b_out);

void batch_norm_prelu_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                    const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                    const Tensor& save_mean, const Tensor& save_invstd, const BatchNormOptions& o);
void batch_norm_prelu_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                   const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                   const BatchNormOptions& o);
void batch_norm_prelu_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     const Tensor& alpha, const Tensor& save_mean, const Tensor& save_invstd,
                                     const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                     const BatchNormOptions& o);
void batch_norm_prelu_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                    const Tensor& alpha, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                    const BatchNormOptions& o);

void prelu_forward(const Tensor& x, const Tensor& alpha, const Tensor& y);
void prelu_backward(const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& dx, const Tensor& dalpha);
void relu_forward(const Tensor& x, const Tensor& y);
void relu_backward(const Tensor& dy, const Tensor& y, const Tensor& dx);
void dropout_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training);
void dropout_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training);
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ExecOptions& ex);
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor& dw,
                     const Tensor& db, const ExecOptions& ex);
void add(const Tensor& a, const Tensor& b, const Tensor& y);

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
