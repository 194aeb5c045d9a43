// @file layers_ext_cuda.h
// @brief The CUDA implementations of the ops of facecuda/layers_ext.h, as the CPU entry points
// (cpu/layers_ext.cc) hand them over AFTER their argument checks: native/src/cuda/layers_ext.cu with
// nvcc, native/src/cuda_stub/layers_ext_stub.cc (CUDA_UNAVAILABLE) without. Same contract as
// common/layers_cuda.h: every tensor on one CUDA device, float32, contiguous, of the checked shapes;
// nothing is validated again; work is enqueued on the device's stream. The shapes arrive resolved:
// (O, C, I) is the LayerNorm / layer-scale view (element (o, c, i) at (o·C + c)·I + i; tokens: O = R,
// I = 1; NCHW: O = N, I = S), (N, C, S) the GAP / channel-multiply view.
#pragma once

#include <cstdint>

#include "facecuda/layers.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

void activation_forward(Activation a, const Tensor& x, const Tensor& y);
void activation_backward(Activation a, const Tensor& dy, const Tensor& x, const Tensor& dx);

void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        const Tensor& save_mean, const Tensor& save_invstd, double eps, int64_t O, int64_t C,
                        int64_t I);
void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                         int64_t O, int64_t C, int64_t I);

void layer_scale_forward(const Tensor& x, const Tensor& gamma, const Tensor& y, int64_t O, int64_t C, int64_t I);
void layer_scale_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& dx,
                          const Tensor& dgamma, int64_t O, int64_t C, int64_t I);

// out = kept(n) ? in·scale : 0 per sample n, kept(n) = rng_uniform(key, n) >= p, key = rng_key(seed,
// kDropPathStream, step). The caller passes p = 0, scale = 1 for the identity (eval, p == 0) and any
// scale for p == 1 (nothing is kept). `in` (N, ...) with `per` = numel/N values per sample; out may
// be in itself.
void drop_path_apply(const Tensor& in, const Tensor& out, double p, uint64_t key, float scale, int64_t N,
                     int64_t per);

void global_avg_pool_forward(const Tensor& x, const Tensor& y, int64_t N, int64_t C, int64_t S);
void global_avg_pool_backward(const Tensor& dy, const Tensor& dx, bool accumulate, int64_t N, int64_t C, int64_t S);
void channel_mul_forward(const Tensor& x, const Tensor& g, const Tensor& y, int64_t N, int64_t C, int64_t S);
void channel_mul_backward(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& dx, const Tensor& dg,
                          int64_t N, int64_t C, int64_t S);

// The strided ops: a view of rank <= 5 as sizes and element strides (src, dst); sum_batch sums axis 0
// of src into the contiguous dst (the other axes in row-major order).
struct StridedView {
  int rank = 0;
  int64_t size[kMaxRank] = {0}, src[kMaxRank] = {0}, dst[kMaxRank] = {0};
};
void strided_copy(const Tensor& src, const Tensor& dst, const StridedView& v, float alpha, bool accumulate);
void sum_batch(const Tensor& src, const Tensor& dst, const StridedView& v, bool accumulate);

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
