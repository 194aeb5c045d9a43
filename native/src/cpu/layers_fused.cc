// @file layers_fused.cc
// @brief The fused BatchNorm + PReLU ops (facecuda/layers.h) on the CPU, and their hand-over to CUDA.
//
// The CPU versions ARE the compositions of the unfused ops, so they equal them by construction:
//   forward  batch_norm_forward_* into y, then prelu_forward in place on y (two passes over y; the
//            fusion's gain is on the GPU, where it is one pass);
//   backward z recomputed from x into a scratch tensor by batch_norm_forward_eval with the per-channel
//            scale k and shift beta: in eval k comes from the running statistics exactly as the
//            forward computed it; in training k[c] = float(gamma[c]·save_invstd[c]) is passed as
//            "gamma" with running_var = 0 and eps = 1 (so the eval scale is float(k/sqrt(1)) = k
//            exactly); then prelu_backward(dy, z) into dz (dx itself when defined, else scratch) and
//            batch_norm_backward_*(dz, x) in place.
// The checks are the unfused ops' (layers_internal.h) plus alpha/dalpha; they run before anything is
// written, on every device.
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/layers_cuda.h"
#include "cpu/layers_internal.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;

// The backward checks of the pair: BatchNorm's, beta, alpha, dalpha and dx against alpha.
NCS fused_backward_checks(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& alpha, const Tensor& stat_a, const char* stat_a_name, const Tensor& stat_b,
                          const char* stat_b_name, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                          const Tensor& dalpha, const BatchNormOptions& o, const ExecOptions& ex) {
  const NCS s = check_bn_backward(dy, x, gamma, stat_a, stat_a_name, stat_b, stat_b_name, dx, dgamma, dbeta, o, ex);
  check_channel_opt(beta, "beta", s.C);
  check_alpha(alpha, s.C);
  check_dalpha(dalpha, alpha, dy, x, dx);
  check_alias(dalpha, "dalpha", dgamma, "dgamma", false);
  check_alias(dalpha, "dalpha", dbeta, "dbeta", false);
  check_alias(dx, "dx", alpha, "alpha", false);
  return s;
}

// dz = prelu_backward(dy, z) with z = batch_norm_forward_eval(x, ...) as the file comment says;
// returns dz (dx when defined, else a scratch tensor).
Tensor prelu_grad_through(const Tensor& dy, const Tensor& x, const Tensor& k, const Tensor& beta, const Tensor& mean,
                          const Tensor& var, const BatchNormOptions& ko, const Tensor& alpha, const Tensor& dx,
                          const Tensor& dalpha, const ExecOptions& ex) {
  Tensor z = Tensor::empty(x.shape(), DType::F32, Device::cpu());
  batch_norm_forward_eval(x, k, beta, mean, var, z, ko, ex);
  Tensor dz = dx.defined() ? dx : Tensor::empty(x.shape(), DType::F32, Device::cpu());
  prelu_backward(dy, z, alpha, dz, dalpha, ex);
  return dz;
}

}  // namespace

void batch_norm_prelu_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                    const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                    const Tensor& save_mean, const Tensor& save_invstd, const BatchNormOptions& o,
                                    const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = bn_train_forward_checks(x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, o, ex);
  check_alpha(alpha, s.C);
  check_alias(y, "y", alpha, "alpha", false);
  if (dev.cuda()) {
    return cuda_nn::batch_norm_prelu_forward_train(x, gamma, beta, alpha, running_mean, running_var, y, save_mean,
                                                   save_invstd, o);
  }
  batch_norm_forward_train(x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, o, ex);
  prelu_forward(y, alpha, y, ex);
}

void batch_norm_prelu_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                   const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                   const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = bn_eval_forward_checks(x, gamma, beta, running_mean, running_var, y, o, ex);
  check_alpha(alpha, s.C);
  check_alias(y, "y", alpha, "alpha", false);
  if (dev.cuda()) return cuda_nn::batch_norm_prelu_forward_eval(x, gamma, beta, alpha, running_mean, running_var, y, o);
  batch_norm_forward_eval(x, gamma, beta, running_mean, running_var, y, o, ex);
  prelu_forward(y, alpha, y, ex);
}

void batch_norm_prelu_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     const Tensor& alpha, const Tensor& save_mean, const Tensor& save_invstd,
                                     const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                     const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = fused_backward_checks(dy, x, gamma, beta, alpha, save_mean, "save_mean", save_invstd, "save_invstd", dx,
                                      dgamma, dbeta, dalpha, o, ex);
  check_bn_training_count(s, x);
  if (dev.cuda()) {
    return cuda_nn::batch_norm_prelu_backward_train(dy, x, gamma, beta, alpha, save_mean, save_invstd, dx, dgamma,
                                                    dbeta, dalpha, o);
  }
  // k = float(gamma·save_invstd) as "gamma" of an eval BatchNorm with var 0 and eps 1 (exactly k).
  Tensor k = Tensor::empty({s.C}, DType::F32, Device::cpu());
  Tensor zero = Tensor::empty({s.C}, DType::F32, Device::cpu());
  const float* is = save_invstd.data_as<float>();
  for (int64_t c = 0; c < s.C; ++c) {
    const double g = gamma.defined() ? gamma.data_as<float>()[c] : 1.0;
    k.data_as<float>()[c] = static_cast<float>(g * static_cast<double>(is[c]));
    zero.data_as<float>()[c] = 0.0f;
  }
  BatchNormOptions unit;
  unit.eps = 1.0;
  const Tensor dz = prelu_grad_through(dy, x, k, beta, save_mean, zero, unit, alpha, dx, dalpha, ex);
  batch_norm_backward_train(dz, x, gamma, save_mean, save_invstd, dx, dgamma, dbeta, o, ex);
}

void batch_norm_prelu_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                    const Tensor& alpha, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                    const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  fused_backward_checks(dy, x, gamma, beta, alpha, running_mean, "running_mean", running_var, "running_var", dx,
                        dgamma, dbeta, dalpha, o, ex);
  if (dev.cuda()) {
    return cuda_nn::batch_norm_prelu_backward_eval(dy, x, gamma, beta, alpha, running_mean, running_var, dx, dgamma,
                                                   dbeta, dalpha, o);
  }
  const Tensor dz = prelu_grad_through(dy, x, gamma, beta, running_mean, running_var, o, alpha, dx, dalpha, ex);
  batch_norm_backward_eval(dz, x, gamma, running_mean, running_var, dx, dgamma, dbeta, o, ex);
}

}  // namespace nn
}  // namespace fc
