// @file layers_kernels.cu
// @brief The layer ops on CUDA that are our own kernels (common/layers_cuda.h): BatchNorm (training
// and eval, forward and backward), the fused BatchNorm+PReLU, PReLU, ReLU, Dropout, residual add,
// Linear (cuBLAS through fc::cuda::sgemm, plus bias kernels), fold_batch_norm, the conv bias gradient
// and the casts cuda/layers_conv.cc needs. The arguments arrive validated (layers_cuda.h).
//
// Layout of the work
// - Elementwise passes: one thread per element, grid-stride (grid_for), int64 indices; the channel of
//   flat index i of an (N, C, S) tensor is (i / S) % C.
// - Per-channel reductions (BatchNorm statistics and gradients, dalpha, bias gradients): two levels.
//   (1) channel_partials: the M = N·S values of channel c are cut into P contiguous ranges of L
//   values (P = min(kMaxParts, ceil(M / kPartElems)), L = ceil(M / P): functions of the sizes only);
//   one block per (c, range) (grid-stride over blocks, so any C fits a 1-D grid); thread t adds the
//   values t, t + 256, ... of the range in double, the block combines its 8 warps by a butterfly
//   (xor) shuffle tree and then the warp totals in warp order. (2) channel_finalize: one thread per
//   channel adds its P partials in order and applies the op's per-channel formula. No atomics: the
//   result depends on the sizes only (not on the GPU, the run or the stream timing).
// - Elementwise formulas are the CPU's float operations (layers.cc), written with __fadd_rn /
//   __fmul_rn / __fsub_rn so nvcc does not contract them into FMAs: given the same per-channel
//   statistics, an element is bitwise the CPU's. Statistics agree with the CPU's within rounding (the
//   CPU sums float lanes of 32 elements in double; here every term is added in double).
// - Selections copy the CPU's exactly, NaN included: max(x, 0) is (x < 0 ? 0 : x), min(x, 0) is
//   (0 < x ? 0 : x), as std::max/std::min.
// Scratch (per-channel vectors, partials) comes from the caching allocator and is released when the
// call returns: the pool is stream-ordered, so queued kernels still own it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/layers_cuda.h"
#include "common/margin_math.h"
#include "cuda/common.cuh"
#include "cuda/internal.h"
#include "cuda/layers_internal.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {

using fc::cuda::detail::grid_for;

#include "cuda/layers_common.cuh"

// (N, C, S) view: channel axis 1.
struct Ncs {
  int64_t N, C, S;
  int64_t M() const { return N * S; }
  int64_t numel() const { return N * C * S; }
};
Ncs ncs(const Tensor& x) {
  Ncs v{x.size(0), x.size(1), 1};
  for (int a = 2; a < x.rank(); ++a) v.S *= x.size(a);
  return v;
}

// ---- device helpers

__device__ __forceinline__ int64_t channel_of(int64_t i, int64_t C, int64_t S) { return (i / S) % C; }
__device__ __forceinline__ float relu_max(float x) { return x < 0.0f ? 0.0f : x; }  // std::max(x, 0.0f)
__device__ __forceinline__ float relu_min(float x) { return 0.0f < x ? 0.0f : x; }  // std::min(x, 0.0f)
// prelu_forward's max(x, 0) + a·min(x, 0).
__device__ __forceinline__ float prelu_value(float x, float a) {
  return __fadd_rn(relu_max(x), __fmul_rn(a, relu_min(x)));
}
// (x − m)·k + b, the normalize of layers.cc.
__device__ __forceinline__ float affine(float x, float m, float k, float b) {
  return __fadd_rn(__fmul_rn(__fsub_rn(x, m), k), b);
}

// ---- two-level per-channel reduction (see the file comment)

// f(idx, c, acc) adds element idx of channel c into acc[V]; g(c, sums) finalizes channel c.
template <int V, class F, class G>
void channel_reduce(const Ncs& s, const F& f, const G& g, int dev, cudaStream_t st) {
  if (s.C == 0) return;
  const int64_t M = s.M();
  const int64_t P = std::max<int64_t>(1, std::min<int64_t>(kMaxParts, ceil_div(M, kPartElems)));
  const int64_t L = ceil_div(M, P);
  Tensor part = scratch_f64(dev, s.C * P * V);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(s.C * P, kMaxBlocks));
  channel_partials<V><<<blocks, kThreads, 0, st>>>(s.N, s.C, s.S, P, L, f, f64(part));
  FC_LAUNCH_CHECK("channel_partials", "C=", s.C, " M=", M, " P=", P);
  channel_finalize<V><<<grid_for(s.C, kThreads), kThreads, 0, st>>>(s.C, P, f64(part), g);
  FC_LAUNCH_CHECK("channel_finalize", "C=", s.C, " P=", P);
}

// ---- element functors of the reductions

struct SumX {  // Σ x
  const float* x;
  __device__ void operator()(int64_t i, int64_t, double* acc) const { acc[0] += x[i]; }
};

struct SumSqDev {  // Σ (x − mf)², the difference and square in float (layers.cc)
  const float* x;
  const float* mf;
  __device__ void operator()(int64_t i, int64_t c, double* acc) const {
    const float d = __fsub_rn(x[i], mf[c]);
    acc[0] += __fmul_rn(d, d);
  }
};

struct BnGradSums {  // Σ dy, Σ dy·(x − m)
  const float* dy;
  const float* x;
  const float* m;
  __device__ void operator()(int64_t i, int64_t c, double* acc) const {
    const float g = dy[i];
    acc[0] += g;
    acc[1] += __fmul_rn(g, __fsub_rn(x[i], m[c]));
  }
};

// The pair's backward: z = (x − m)·k + b recomputed; dz = z > 0 ? dy : a·dy;
// Σ dz, Σ dz·(x − m), Σ min(z, 0)·dy.
struct BnPreluGradSums {
  const float* dy;
  const float* x;
  const float* m;
  const float* k;
  const float* b;
  const float* alpha;
  int64_t as;
  __device__ void operator()(int64_t i, int64_t c, double* acc) const {
    const float g = dy[i], xv = x[i];
    const float z = affine(xv, m[c], k[c], b[c]);
    const float dz = z > 0.0f ? g : __fmul_rn(alpha[c * as], g);
    acc[0] += dz;
    acc[1] += __fmul_rn(dz, __fsub_rn(xv, m[c]));
    acc[2] += __fmul_rn(relu_min(z), g);
  }
};

struct PreluAlphaSums {  // Σ min(x, 0)·dy
  const float* dy;
  const float* x;
  __device__ void operator()(int64_t i, int64_t, double* acc) const { acc[0] += __fmul_rn(relu_min(x[i]), dy[i]); }
};

struct SumDy {
  const float* dy;
  __device__ void operator()(int64_t i, int64_t, double* acc) const { acc[0] += dy[i]; }
};

// ---- per-channel finalizers

struct MeanFin {  // mean in double (kept), save_mean = float(mean)
  double M;
  double* mean;
  float* save_mean;
  __device__ void operator()(int64_t c, const double* sum) const {
    const double v = sum[0] / M;
    mean[c] = v;
    save_mean[c] = static_cast<float>(v);
  }
};

// layers.cc's statistics: var = max(0, Σ(x − mf)²/M − (mean − mf)²), invstd = 1/sqrt(var + eps),
// scale = float(γ·invstd), shift = β; running statistics with the unbiased variance.
struct VarFin {
  double M, eps, momentum;
  const double* mean;
  const float* mf;
  const float* gamma;
  const float* beta;
  float* save_invstd;
  float* running_mean;
  float* running_var;
  float* scale;
  float* shift;
  __device__ void operator()(int64_t c, const double* sum) const {
    const double dm = mean[c] - static_cast<double>(mf[c]);
    const double var = fmax(0.0, sum[0] / M - dm * dm);
    const double invstd = 1.0 / sqrt(var + eps);
    save_invstd[c] = static_cast<float>(invstd);
    const double g = gamma ? gamma[c] : 1.0;
    scale[c] = static_cast<float>(g * invstd);
    shift[c] = beta ? beta[c] : 0.0f;
    if (running_mean) {
      const double unbiased = var * M / (M - 1.0);
      running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
      running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
};

// The BatchNorm backward's parameter gradients and dx = A·dz + (B·(x − m) + Cc) coefficients
// (layers.cc's bn_backward); V == 3 also keeps the per-channel dalpha sum.
template <int V>
struct BnGradFin {
  bool train;
  double M;
  const float* gamma;
  const float* is;
  float* dgamma;
  float* dbeta;
  float* A;
  float* B;
  float* Cc;
  double* alpha_part;
  __device__ void operator()(int64_t c, const double* sum) const {
    const double sdy = sum[0], sdyx = sum[1];
    if (dbeta) dbeta[c] += static_cast<float>(sdy);
    if (dgamma) dgamma[c] += static_cast<float>(sdyx * is[c]);
    const double g = gamma ? gamma[c] : 1.0, iv = is[c];
    A[c] = static_cast<float>(g * iv);
    B[c] = train ? static_cast<float>(-g * iv * iv * iv * sdyx / M) : 0.0f;
    Cc[c] = train ? static_cast<float>(-g * iv * sdy / M) : 0.0f;
    if (V == 3) alpha_part[c] = sum[V - 1];
  }
};

struct KeepFin {  // part[c] = the channel's sum
  double* out;
  __device__ void operator()(int64_t c, const double* sum) const { out[c] = sum[0]; }
};

struct AddFin {  // out[c] += float(sum)
  float* out;
  __device__ void operator()(int64_t c, const double* sum) const { out[c] += static_cast<float>(sum[0]); }
};

// dalpha[c] += float(part[c]) (alpha per channel) or dalpha[0] += float(Σ_c part[c]) in channel order.
__global__ void __launch_bounds__(kThreads) apply_dalpha(int64_t C, int64_t as, const double* __restrict__ part,
                                                         float* __restrict__ dalpha) {
  if (as) {
    for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x)
      dalpha[c] += static_cast<float>(part[c]);
  } else if (blockIdx.x == 0 && threadIdx.x == 0) {
    double t = 0.0;
    for (int64_t c = 0; c < C; ++c) t += part[c];
    dalpha[0] += static_cast<float>(t);
  }
}

void launch_apply_dalpha(int64_t C, int64_t as, const double* part, float* dalpha, cudaStream_t s) {
  apply_dalpha<<<as ? grid_for(C, kThreads) : 1u, kThreads, 0, s>>>(C, as, part, dalpha);
  FC_LAUNCH_CHECK("apply_dalpha", "C=", C);
}

// ---- per-channel parameters

enum class ParamMode : int {
  EvalScale = 0,    // k = float(γ / sqrt(running_var + eps)), shift = β (batch_norm_forward_eval)
  EvalInvstd = 1,   // is = float(1 / sqrt(running_var + eps)) (batch_norm_backward_eval)
  SavedScale = 2,   // k = float(γ·save_invstd), shift = β (the pair's training backward)
};

__global__ void __launch_bounds__(kThreads)
    channel_params(ParamMode mode, int64_t C, const float* gamma, const float* beta, const float* var_or_is, double eps,
                   float* out, float* shift) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const double g = gamma ? gamma[c] : 1.0;
    if (mode == ParamMode::EvalScale) {
      out[c] = static_cast<float>(g / sqrt(static_cast<double>(var_or_is[c]) + eps));
    } else if (mode == ParamMode::EvalInvstd) {
      out[c] = static_cast<float>(1.0 / sqrt(static_cast<double>(var_or_is[c]) + eps));
    } else {
      out[c] = static_cast<float>(g * static_cast<double>(var_or_is[c]));
    }
    if (shift) shift[c] = beta ? beta[c] : 0.0f;
  }
}

void launch_channel_params(ParamMode mode, int64_t C, const float* gamma, const float* beta, const float* v,
                           double eps, float* out, float* shift, cudaStream_t s) {
  if (C == 0) return;
  channel_params<<<grid_for(C, kThreads), kThreads, 0, s>>>(mode, C, gamma, beta, v, eps, out, shift);
  FC_LAUNCH_CHECK("channel_params", "C=", C);
}

// ---- elementwise kernels

// y = (x − m)·k + b, then PReLU when alpha is given.
__global__ void __launch_bounds__(kThreads)
    normalize(int64_t n, int64_t C, int64_t S, const float* x, const float* m, const float* k, const float* b,
              const float* alpha, int64_t as, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, C, S);
    const float z = affine(x[i], m[c], k[c], b[c]);
    y[i] = alpha ? prelu_value(z, alpha[c * as]) : z;
  }
}

void launch_normalize(const Ncs& s, const float* x, const float* m, const float* k, const float* b, const float* alpha,
                      int64_t as, float* y, cudaStream_t st) {
  const int64_t n = s.numel();
  if (n == 0) return;
  normalize<<<grid_for(n, kThreads), kThreads, 0, st>>>(n, s.C, s.S, x, m, k, b, alpha, as, y);
  FC_LAUNCH_CHECK("normalize", "n=", n);
}

// dx = A·dz + (B·(x − m) + Cc), dz = dy, or the pair's dz when alpha is given (z recomputed with k, b).
__global__ void __launch_bounds__(kThreads)
    bn_dx(int64_t n, int64_t C, int64_t S, const float* dy, const float* x, const float* m, const float* A,
          const float* B, const float* Cc, const float* k, const float* b, const float* alpha, int64_t as, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(i, C, S);
    const float xv = x[i];
    float g = dy[i];
    if (alpha) {
      const float z = affine(xv, m[c], k[c], b[c]);
      g = z > 0.0f ? g : __fmul_rn(alpha[c * as], g);
    }
    dx[i] = __fadd_rn(__fmul_rn(A[c], g), __fadd_rn(__fmul_rn(B[c], __fsub_rn(xv, m[c])), Cc[c]));
  }
}

__global__ void __launch_bounds__(kThreads)
    prelu_fwd(int64_t n, int64_t C, int64_t S, const float* x, const float* alpha, int64_t as, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = prelu_value(x[i], alpha[channel_of(i, C, S) * as]);
}

__global__ void __launch_bounds__(kThreads)
    prelu_dx(int64_t n, int64_t C, int64_t S, const float* dy, const float* x, const float* alpha, int64_t as,
             float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = dy[i];
    dx[i] = x[i] > 0.0f ? g : __fmul_rn(alpha[channel_of(i, C, S) * as], g);
  }
}

__global__ void __launch_bounds__(kThreads) relu_fwd(int64_t n, const float* x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = relu_max(x[i]);
}

__global__ void __launch_bounds__(kThreads) relu_bwd(int64_t n, const float* dy, const float* y, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// out[i] = uniform53(key, i) >= p ? in[i]·scale : 0 (layers.cc's mask, margin_math.h's generator).
__global__ void __launch_bounds__(kThreads)
    dropout_apply(int64_t n, uint64_t key, double p, float scale, const float* in, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = margin::rng_uniform(key, static_cast<uint64_t>(i)) >= p ? __fmul_rn(in[i], scale) : 0.0f;
}

__global__ void __launch_bounds__(kThreads) add_kernel(int64_t n, const float* a, const float* b, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(a[i], b[i]);
}

// y[i] += b[(i / S) % C]: a conv bias (S = OH·OW) or a Linear bias (S = 1, C = out).
__global__ void __launch_bounds__(kThreads) bias_add(int64_t n, int64_t C, int64_t S, const float* b, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], b[channel_of(i, C, S)]);
}

// db[j] += float(Σ_n dy[n, j]), rows in order in double (Linear's bias gradient; coalesced over j).
__global__ void __launch_bounds__(kThreads) column_sums(int64_t N, int64_t out, const float* dy, float* db) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < out; j += int64_t(gridDim.x) * blockDim.x) {
    double t = 0.0;
    for (int64_t r = 0; r < N; ++r) t += dy[r * out + j];
    db[j] += static_cast<float>(t);
  }
}

// fold_batch_norm: s = γ/sqrt(var + eps) in double; w_out = float(w·s); b_out = float(β + (bias − mean)·s).
__device__ __forceinline__ double fold_scale(int64_t c, const float* gamma, const float* var, double eps) {
  return (gamma ? static_cast<double>(gamma[c]) : 1.0) / sqrt(static_cast<double>(var[c]) + eps);
}

__global__ void __launch_bounds__(kThreads)
    fold_w(int64_t n, int64_t per, const float* w, const float* gamma, const float* var, double eps, float* w_out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    w_out[i] = static_cast<float>(w[i] * fold_scale(i / per, gamma, var, eps));
}

__global__ void __launch_bounds__(kThreads)
    fold_b(int64_t C, const float* bias, const float* gamma, const float* beta, const float* mean, const float* var,
           double eps, float* b_out) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const double bt = beta ? beta[c] : 0.0, b0 = bias ? bias[c] : 0.0;
    b_out[c] = static_cast<float>(bt + (b0 - mean[c]) * fold_scale(c, gamma, var, eps));
  }
}

__global__ void __launch_bounds__(kThreads) to_16bit(int64_t n, const float* in, bool half, uint16_t* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = half ? __half_as_ushort(__float2half_rn(in[i])) : __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
}

__global__ void __launch_bounds__(kThreads)
    from_16bit(int64_t n, const uint16_t* in, bool half, bool accumulate, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = half ? __half2float(__ushort_as_half(in[i])) : __bfloat162float(__ushort_as_bfloat16(in[i]));
    out[i] = accumulate ? __fadd_rn(out[i], v) : v;
  }
}

// ---- BatchNorm drivers (shared by the plain and the fused ops)

// Training statistics: save_mean, save_invstd, running statistics, and the scale/shift of the
// normalize (returned in k, b: C floats each).
void bn_train_stats(const On& on, const Ncs& s, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                    const Tensor& save_invstd, const BatchNormOptions& o, const Tensor& k, const Tensor& b) {
  const double M = static_cast<double>(s.M());
  Tensor mean = scratch_f64(on.dev, s.C);
  channel_reduce<1>(s, SumX{x.data_as<float>()}, MeanFin{M, f64(mean), save_mean.data_as<float>()}, on.dev, on.s);
  VarFin vf{M,
            o.eps,
            o.momentum,
            f64(mean),
            save_mean.data_as<float>(),
            opt(gamma),
            opt(beta),
            save_invstd.data_as<float>(),
            opt_mut(running_mean),
            opt_mut(running_var),
            k.data_as<float>(),
            b.data_as<float>()};
  channel_reduce<1>(s, SumSqDev{x.data_as<float>(), save_mean.data_as<float>()}, vf, on.dev, on.s);
}

// The backward of BatchNorm (alpha undefined) or of the pair (alpha given; k, b the z recompute's
// scale and shift). m, is: the statistics (batch or running). Parameter gradients accumulated, dx
// written (may be dy).
void bn_backward(const On& on, const Ncs& s, bool train, const Tensor& dy, const Tensor& x, const Tensor& gamma,
                 const float* m, const float* is, const float* k, const float* b, const Tensor& alpha,
                 const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                 const BatchNormOptions& o) {
  const int64_t as = alpha.defined() && alpha.size(0) != 1 ? 1 : 0;
  Tensor A = scratch_f32(on.dev, s.C), B = scratch_f32(on.dev, s.C), Cc = scratch_f32(on.dev, s.C);
  Tensor apart = alpha.defined() ? scratch_f64(on.dev, s.C) : Tensor();
  float* dg = (dgamma.defined() && !o.freeze_gamma) ? dgamma.data_as<float>() : nullptr;
  const double M = static_cast<double>(s.M());
  if (alpha.defined()) {
    BnGradFin<3> fin{train, M, opt(gamma), is, dg, opt_mut(dbeta), A.data_as<float>(), B.data_as<float>(),
                     Cc.data_as<float>(), f64(apart)};
    channel_reduce<3>(s, BnPreluGradSums{dy.data_as<float>(), x.data_as<float>(), m, k, b, alpha.data_as<float>(), as},
                      fin, on.dev, on.s);
    if (dalpha.defined()) launch_apply_dalpha(s.C, as, f64(apart), dalpha.data_as<float>(), on.s);
  } else {
    BnGradFin<2> fin{train, M, opt(gamma), is, dg, opt_mut(dbeta), A.data_as<float>(), B.data_as<float>(),
                     Cc.data_as<float>(), nullptr};
    channel_reduce<2>(s, BnGradSums{dy.data_as<float>(), x.data_as<float>(), m}, fin, on.dev, on.s);
  }
  const int64_t n = s.numel();
  if (!dx.defined() || n == 0) return;
  bn_dx<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, s.C, s.S, dy.data_as<float>(), x.data_as<float>(), m,
                                                       A.data_as<float>(), B.data_as<float>(), Cc.data_as<float>(), k,
                                                       b, opt(alpha), as, dx.data_as<float>());
  FC_LAUNCH_CHECK("bn_dx", "n=", n);
}

int64_t alpha_stride(const Tensor& alpha) { return alpha.size(0) == 1 ? 0 : 1; }

// out = kernel(a, b) elementwise over a's elements (a, b, out of one shape).
template <typename Kernel>
void binary(Kernel kernel, const char* name, const Tensor& a, const Tensor& b, const Tensor& out) {
  const On on(a);
  const int64_t n = a.numel();
  if (n == 0) return;
  kernel<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, a.data_as<float>(), b.data_as<float>(),
                                                        out.data_as<float>());
  FC_CUDA_CHECK(cudaGetLastError(), "launching ", name, " n=", n);
}

}  // namespace

// ---- casts and bias for cuda/layers_conv.cc

namespace detail {

void cast_to_16bit(const float* in, void* out, int64_t n, bool half, cudaStream_t s) {
  if (n == 0) return;
  to_16bit<<<grid_for(n, kThreads), kThreads, 0, s>>>(n, in, half, static_cast<uint16_t*>(out));
  FC_LAUNCH_CHECK("to_16bit", "n=", n, " half=", half);
}

void widen_16bit(const void* in, float* out, int64_t n, bool half, bool accumulate, cudaStream_t s) {
  if (n == 0) return;
  from_16bit<<<grid_for(n, kThreads), kThreads, 0, s>>>(n, static_cast<const uint16_t*>(in), half, accumulate, out);
  FC_LAUNCH_CHECK("from_16bit", "n=", n, " half=", half);
}

void add_channel_bias(float* y, const float* b, int64_t N, int64_t C, int64_t S, cudaStream_t s) {
  const int64_t n = N * C * S;
  if (n == 0) return;
  bias_add<<<grid_for(n, kThreads), kThreads, 0, s>>>(n, C, S, b, y);
  FC_LAUNCH_CHECK("bias_add", "n=", n);
}

}  // namespace detail

// ---- BatchNorm

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& y, const Tensor& save_mean,
                              const Tensor& save_invstd, const BatchNormOptions& o) {
  cuda_nn::batch_norm_prelu_forward_train(x, gamma, beta, Tensor(), running_mean, running_var, y, save_mean,
                                          save_invstd, o);
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const Tensor& y, const BatchNormOptions& o) {
  cuda_nn::batch_norm_prelu_forward_eval(x, gamma, beta, Tensor(), running_mean, running_var, y, o);
}

void batch_norm_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                               const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                               const BatchNormOptions& o) {
  const On on(x);
  bn_backward(on, ncs(x), true, dy, x, gamma, save_mean.data_as<float>(), save_invstd.data_as<float>(), nullptr,
              nullptr, Tensor(), dx, dgamma, dbeta, Tensor(), o);
}

void batch_norm_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                              const BatchNormOptions& o) {
  cuda_nn::batch_norm_prelu_backward_eval(dy, x, gamma, Tensor(), Tensor(), running_mean, running_var, dx, dgamma,
                                          dbeta, Tensor(), o);
}

void fold_batch_norm(const Tensor& w, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                     const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& w_out,
                     const Tensor& b_out) {
  const On on(w);
  const int64_t C = w.size(0), n = w.numel();
  if (C == 0) return;
  const int64_t per = n / C;
  if (n > 0) {
    fold_w<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, per, w.data_as<float>(), opt(gamma),
                                                         running_var.data_as<float>(), eps, w_out.data_as<float>());
    FC_LAUNCH_CHECK("fold_w", "n=", n);
  }
  fold_b<<<grid_for(C, kThreads), kThreads, 0, on.s>>>(C, opt(bias), opt(gamma), opt(beta),
                                                       running_mean.data_as<float>(), running_var.data_as<float>(),
                                                       eps, b_out.data_as<float>());
  FC_LAUNCH_CHECK("fold_b", "C=", C);
}

// ---- fused BatchNorm + PReLU (alpha undefined: plain BatchNorm)

void batch_norm_prelu_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                    const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                    const Tensor& save_mean, const Tensor& save_invstd, const BatchNormOptions& o) {
  const On on(x);
  const Ncs s = ncs(x);
  Tensor k = scratch_f32(on.dev, s.C), b = scratch_f32(on.dev, s.C);
  bn_train_stats(on, s, x, gamma, beta, running_mean, running_var, save_mean, save_invstd, o, k, b);
  launch_normalize(s, x.data_as<float>(), save_mean.data_as<float>(), k.data_as<float>(), b.data_as<float>(),
                   opt(alpha), alpha.defined() ? alpha_stride(alpha) : 0, y.data_as<float>(), on.s);
}

void batch_norm_prelu_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                   const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                   const BatchNormOptions& o) {
  const On on(x);
  const Ncs s = ncs(x);
  Tensor k = scratch_f32(on.dev, s.C), b = scratch_f32(on.dev, s.C);
  launch_channel_params(ParamMode::EvalScale, s.C, opt(gamma), opt(beta), running_var.data_as<float>(), o.eps,
                        k.data_as<float>(), b.data_as<float>(), on.s);
  launch_normalize(s, x.data_as<float>(), running_mean.data_as<float>(), k.data_as<float>(), b.data_as<float>(),
                   opt(alpha), alpha.defined() ? alpha_stride(alpha) : 0, y.data_as<float>(), on.s);
}

void batch_norm_prelu_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     const Tensor& alpha, const Tensor& save_mean, const Tensor& save_invstd,
                                     const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                     const BatchNormOptions& o) {
  const On on(x);
  const Ncs s = ncs(x);
  Tensor k = scratch_f32(on.dev, s.C), b = scratch_f32(on.dev, s.C);
  launch_channel_params(ParamMode::SavedScale, s.C, opt(gamma), opt(beta), save_invstd.data_as<float>(), o.eps,
                        k.data_as<float>(), b.data_as<float>(), on.s);
  bn_backward(on, s, true, dy, x, gamma, save_mean.data_as<float>(), save_invstd.data_as<float>(), k.data_as<float>(),
              b.data_as<float>(), alpha, dx, dgamma, dbeta, dalpha, o);
}

void batch_norm_prelu_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                    const Tensor& alpha, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                    const BatchNormOptions& o) {
  const On on(x);
  const Ncs s = ncs(x);
  Tensor is = scratch_f32(on.dev, s.C);
  launch_channel_params(ParamMode::EvalInvstd, s.C, opt(gamma), nullptr, running_var.data_as<float>(), o.eps,
                        is.data_as<float>(), nullptr, on.s);
  Tensor k, b;
  if (alpha.defined()) {
    k = scratch_f32(on.dev, s.C);
    b = scratch_f32(on.dev, s.C);
    launch_channel_params(ParamMode::EvalScale, s.C, opt(gamma), opt(beta), running_var.data_as<float>(), o.eps,
                          k.data_as<float>(), b.data_as<float>(), on.s);
  }
  bn_backward(on, s, false, dy, x, gamma, running_mean.data_as<float>(), is.data_as<float>(), opt(k), opt(b), alpha,
              dx, dgamma, dbeta, dalpha, o);
}

// ---- conv bias gradient

void conv2d_backward_bias(const Tensor& dy, const Tensor& db) {
  const On on(dy);
  channel_reduce<1>(ncs(dy), SumDy{dy.data_as<float>()}, AddFin{db.data_as<float>()}, on.dev, on.s);
}

// ---- PReLU, ReLU

void prelu_forward(const Tensor& x, const Tensor& alpha, const Tensor& y) {
  const On on(x);
  const Ncs s = ncs(x);
  const int64_t n = s.numel();
  if (n == 0) return;
  prelu_fwd<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, s.C, s.S, x.data_as<float>(), alpha.data_as<float>(),
                                                           alpha_stride(alpha), y.data_as<float>());
  FC_LAUNCH_CHECK("prelu_fwd", "n=", n);
}

void prelu_backward(const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& dx, const Tensor& dalpha) {
  const On on(x);
  const Ncs s = ncs(x);
  const int64_t as = alpha_stride(alpha);
  // dalpha first: dx may overwrite dy in place (stream order).
  if (dalpha.defined()) {
    Tensor part = scratch_f64(on.dev, s.C);
    channel_reduce<1>(s, PreluAlphaSums{dy.data_as<float>(), x.data_as<float>()}, KeepFin{f64(part)}, on.dev, on.s);
    if (s.C > 0) launch_apply_dalpha(s.C, as, f64(part), dalpha.data_as<float>(), on.s);
  }
  const int64_t n = s.numel();
  if (!dx.defined() || n == 0) return;
  prelu_dx<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, s.C, s.S, dy.data_as<float>(), x.data_as<float>(),
                                                          alpha.data_as<float>(), as, dx.data_as<float>());
  FC_LAUNCH_CHECK("prelu_dx", "n=", n);
}

void relu_forward(const Tensor& x, const Tensor& y) {
  const On on(x);
  const int64_t n = x.numel();
  if (n == 0) return;
  relu_fwd<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, x.data_as<float>(), y.data_as<float>());
  FC_LAUNCH_CHECK("relu_fwd", "n=", n);
}

void relu_backward(const Tensor& dy, const Tensor& y, const Tensor& dx) { binary(relu_bwd, "relu_bwd", dy, y, dx); }

// ---- Dropout

namespace {

void dropout_run(const Tensor& in, const Tensor& out, const DropoutParams& d, bool training) {
  const On on(in);
  const int64_t n = in.numel();
  if (n == 0) return;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (!training || d.p == 0.0) {
    if (out.data() != in.data()) fc::cuda::copy_d2d(on.dev, out.data(), in.data(), bytes);
    return;
  }
  if (d.p == 1.0) {
    fc::cuda::memset_zero(on.dev, out.data(), bytes);
    return;
  }
  const uint64_t key = margin::rng_key(d.seed, kDropoutStream, d.step);
  const float scale = static_cast<float>(1.0 / (1.0 - d.p));
  dropout_apply<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, key, d.p, scale, in.data_as<float>(),
                                                               out.data_as<float>());
  FC_LAUNCH_CHECK("dropout_apply", "n=", n);
}

}  // namespace

void dropout_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training) {
  dropout_run(x, y, d, training);
}

void dropout_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training) {
  dropout_run(dy, dx, d, training);
}

// ---- Linear (fc::cuda::sgemm: cuBLAS, row-major, the CPU calls' arguments)

namespace {

fc::cuda::MathMode math_mode(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::TF32: return fc::cuda::MathMode::TF32;
    case GemmPrecision::BF16: return fc::cuda::MathMode::BF16;
    case GemmPrecision::F16: return fc::cuda::MathMode::F16;
    default: return fc::cuda::MathMode::F32;
  }
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ExecOptions& ex) {
  const On on(x);
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  if (N == 0 || out == 0) return;
  fc::cuda::sgemm(on.dev, false, true, N, out, in, 1.0f, x.data_as<float>(), std::max<int64_t>(in, 1),
                  w.data_as<float>(), std::max<int64_t>(in, 1), 0.0f, y.data_as<float>(), out, math_mode(ex.precision));
  if (bias.defined()) detail::add_channel_bias(y.data_as<float>(), bias.data_as<float>(), N, out, 1, on.s);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor& dw,
                     const Tensor& db, const ExecOptions& ex) {
  const On on(x);
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  const fc::cuda::MathMode mode = math_mode(ex.precision);
  const float* g = dy.data_as<float>();
  if (dx.defined() && N > 0 && in > 0) {
    fc::cuda::sgemm(on.dev, false, false, N, in, out, 1.0f, g, std::max<int64_t>(out, 1), w.data_as<float>(), in,
                    0.0f, dx.data_as<float>(), in, mode);
  }
  if (dw.defined() && out > 0 && in > 0 && N > 0) {
    fc::cuda::sgemm(on.dev, true, false, out, in, N, 1.0f, g, out, x.data_as<float>(), in, 1.0f, dw.data_as<float>(),
                    in, mode);
  }
  if (db.defined() && out > 0 && N > 0) {
    column_sums<<<grid_for(out, kThreads), kThreads, 0, on.s>>>(N, out, g, db.data_as<float>());
    FC_LAUNCH_CHECK("column_sums", "N=", N, " out=", out);
  }
}

// ---- add

void add(const Tensor& a, const Tensor& b, const Tensor& y) { binary(add_kernel, "add_kernel", a, b, y); }

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
