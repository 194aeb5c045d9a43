// @file layers_ext.cu
// @brief The ops of facecuda/layers_ext.h on CUDA (common/layers_ext_cuda.h): elementwise activations,
// LayerNorm (tokens and NCHW), layer scale, drop path, global average pooling and the SE channel
// multiply. The arguments arrive validated by cpu/layers_ext.cc.
//
// Layout of the work
// - Elementwise passes: one thread per element, grid-stride, int64 indices; the scalar formulas are
//   common/activation_math.h's (the CPU's float operations, no FMA contraction).
// - LayerNorm rows: tokens (I = 1): one warp per row, lane l takes c = l, l + 32, ...; NCHW (I > 1):
//   one thread per row (consecutive threads = consecutive positions i, so reads coalesce). Row sums are
//   double; a warp combines its lanes by a xor-butterfly and takes lane 0's total (broadcast), so every
//   lane uses the same value. Two passes (mean, then Σ(x − mean)²), as the CPU.
// - Per-channel parameter gradients over the (O, C, I) view, no atomics, order fixed by the shapes:
//   tokens: blocks of 32 channels × 8 row lanes over P contiguous row ranges, the 8 lanes combined in
//   order; NCHW: one block per (channel, range of the O·I values), 256 threads, warps combined in order.
//   Then one thread per channel adds its P partials in order and accumulates into the float gradient.
// - GAP and the SE dg: one warp per (n, c) row of S contiguous values, double, lane 0's total.
// Scratch comes from the caching allocator (stream-ordered) and is released when the call returns.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/activation_math.h"
#include "common/layers_ext_cuda.h"
#include "common/margin_math.h"
#include "cuda/common.cuh"
#include "cuda/internal.h"
#include "facecuda/error.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {

using fc::cuda::detail::grid_for;

#include "cuda/layers_common.cuh"

unsigned blocks_for_warps(int64_t rows) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(rows, kWarps), kMaxBlocks)));
}

__device__ __forceinline__ double warp_total(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return __shfl_sync(0xffffffffu, v, 0);  // lane 0's association, for every lane
}

// ---- activations

template <Activation A>
__global__ void __launch_bounds__(kThreads) act_fwd(int64_t n, const float* __restrict__ x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = act::forward<A>(x[i]);
}

template <Activation A>
__global__ void __launch_bounds__(kThreads) act_bwd(int64_t n, const float* dy, const float* __restrict__ x,
                                                     float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = act::backward<A>(dy[i], x[i]);
}

template <Activation A>
void launch_act(bool fwd, int64_t n, const float* a, const float* b, float* out, cudaStream_t s) {
  if (fwd) {
    act_fwd<A><<<grid_for(n, kThreads), kThreads, 0, s>>>(n, a, out);
  } else {
    act_bwd<A><<<grid_for(n, kThreads), kThreads, 0, s>>>(n, a, b, out);
  }
  FC_LAUNCH_CHECK("activation", "n=", n);
}

void dispatch_act(Activation a, bool fwd, int64_t n, const float* p, const float* q, float* out, cudaStream_t s) {
  switch (a) {
    case Activation::kReLU6: return launch_act<Activation::kReLU6>(fwd, n, p, q, out, s);
    case Activation::kHardSigmoid: return launch_act<Activation::kHardSigmoid>(fwd, n, p, q, out, s);
    case Activation::kHardSigmoidKeras: return launch_act<Activation::kHardSigmoidKeras>(fwd, n, p, q, out, s);
    case Activation::kHardSwish: return launch_act<Activation::kHardSwish>(fwd, n, p, q, out, s);
    case Activation::kSiLU: return launch_act<Activation::kSiLU>(fwd, n, p, q, out, s);
    case Activation::kSigmoid: return launch_act<Activation::kSigmoid>(fwd, n, p, q, out, s);
    case Activation::kGELU: return launch_act<Activation::kGELU>(fwd, n, p, q, out, s);
  }
}

// ---- LayerNorm rows

struct LnFwd {
  const float* x;
  const float* gamma;
  const float* beta;
  float* y;
  float* save_mean;
  float* save_invstd;
  double eps;
  int64_t O, C, I;
};

// Tokens: one warp per row of C contiguous values.
__global__ void __launch_bounds__(kThreads) ln_fwd_tokens(LnFwd p) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5); r < p.O; r += warps) {
    const float* xr = p.x + r * p.C;
    float* yr = p.y + r * p.C;
    double s = 0.0;
    for (int64_t c = lane; c < p.C; c += 32) s += xr[c];
    const double mean = warp_total(s) / static_cast<double>(p.C);
    double ss = 0.0;
    for (int64_t c = lane; c < p.C; c += 32) {
      const double d = xr[c] - mean;
      ss += d * d;
    }
    const double var = warp_total(ss) / static_cast<double>(p.C);
    const float mf = static_cast<float>(mean), isf = static_cast<float>(1.0 / sqrt(var + p.eps));
    if (lane == 0 && p.save_mean) {
      p.save_mean[r] = mf;
      p.save_invstd[r] = isf;
    }
    __syncwarp();
    for (int64_t c = lane; c < p.C; c += 32) {
      const float xh = __fmul_rn(__fsub_rn(xr[c], mf), isf);
      yr[c] = __fadd_rn(__fmul_rn(xh, p.gamma ? p.gamma[c] : 1.0f), p.beta ? p.beta[c] : 0.0f);
    }
  }
}

// NCHW: one thread per row (o, i), channels I apart.
__global__ void __launch_bounds__(kThreads) ln_fwd_strided(LnFwd p) {
  const int64_t R = p.O * p.I;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < R; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = r / p.I, i = r % p.I;
    const float* xr = p.x + o * p.C * p.I + i;
    float* yr = p.y + o * p.C * p.I + i;
    double s = 0.0;
    for (int64_t c = 0; c < p.C; ++c) s += xr[c * p.I];
    const double mean = s / static_cast<double>(p.C);
    double ss = 0.0;
    for (int64_t c = 0; c < p.C; ++c) {
      const double d = xr[c * p.I] - mean;
      ss += d * d;
    }
    const double var = ss / static_cast<double>(p.C);
    const float mf = static_cast<float>(mean), isf = static_cast<float>(1.0 / sqrt(var + p.eps));
    if (p.save_mean) {
      p.save_mean[r] = mf;
      p.save_invstd[r] = isf;
    }
    for (int64_t c = 0; c < p.C; ++c) {
      const float xh = __fmul_rn(__fsub_rn(xr[c * p.I], mf), isf);
      yr[c * p.I] = __fadd_rn(__fmul_rn(xh, p.gamma ? p.gamma[c] : 1.0f), p.beta ? p.beta[c] : 0.0f);
    }
  }
}

struct LnBwd {
  const float* dy;
  const float* x;
  const float* gamma;
  const float* mean;
  const float* invstd;
  float* dx;
  int64_t O, C, I;
};

__device__ __forceinline__ float ln_xhat(float x, float m, float is) { return __fmul_rn(__fsub_rn(x, m), is); }

__global__ void __launch_bounds__(kThreads) ln_dx_tokens(LnBwd p) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  const double invC = 1.0 / static_cast<double>(p.C);
  for (int64_t r = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5); r < p.O; r += warps) {
    const float* gr = p.dy + r * p.C;
    const float* xr = p.x + r * p.C;
    float* dr = p.dx + r * p.C;
    const float m = p.mean[r], is = p.invstd[r];
    double sg = 0.0, sgx = 0.0;
    for (int64_t c = lane; c < p.C; c += 32) {
      const float g = __fmul_rn(gr[c], p.gamma ? p.gamma[c] : 1.0f);
      sg += g;
      sgx += static_cast<double>(g) * ln_xhat(xr[c], m, is);
    }
    sg = warp_total(sg) * invC;
    sgx = warp_total(sgx) * invC;
    for (int64_t c = lane; c < p.C; c += 32) {
      const float g = __fmul_rn(gr[c], p.gamma ? p.gamma[c] : 1.0f);
      const float xh = ln_xhat(xr[c], m, is);
      dr[c] = static_cast<float>(static_cast<double>(is) * (g - sg - xh * sgx));
    }
  }
}

__global__ void __launch_bounds__(kThreads) ln_dx_strided(LnBwd p) {
  const int64_t R = p.O * p.I;
  const double invC = 1.0 / static_cast<double>(p.C);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < R; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = r / p.I, i = r % p.I, off = o * p.C * p.I + i;
    const float m = p.mean[r], is = p.invstd[r];
    double sg = 0.0, sgx = 0.0;
    for (int64_t c = 0; c < p.C; ++c) {
      const float g = __fmul_rn(p.dy[off + c * p.I], p.gamma ? p.gamma[c] : 1.0f);
      sg += g;
      sgx += static_cast<double>(g) * ln_xhat(p.x[off + c * p.I], m, is);
    }
    sg *= invC;
    sgx *= invC;
    for (int64_t c = 0; c < p.C; ++c) {
      const float g = __fmul_rn(p.dy[off + c * p.I], p.gamma ? p.gamma[c] : 1.0f);
      const float xh = ln_xhat(p.x[off + c * p.I], m, is);
      p.dx[off + c * p.I] = static_cast<float>(static_cast<double>(is) * (g - sg - xh * sgx));
    }
  }
}

// ---- per-channel reductions over the (O, C, I) view (file comment)

// Tokens (I == 1): block (32 channels, 8 row lanes) per (channel tile, row range).
template <int V, class F>
__global__ void __launch_bounds__(kThreads)
    col_partials(int64_t O, int64_t C, int64_t P, int64_t L, F f, double* __restrict__ part) {
  __shared__ double sh[kWarps][32][V];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t tiles = (C + 31) / 32;
  for (int64_t b = blockIdx.x; b < tiles * P; b += gridDim.x) {
    const int64_t tile = b % tiles, p = b / tiles;
    const int64_t c = tile * 32 + tx;
    const int64_t r0 = p * L, r1 = min(O, r0 + L);
    double acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0.0;
    if (c < C)
      for (int64_t r = r0 + ty; r < r1; r += kWarps) f(r * C + c, c, acc);
#pragma unroll
    for (int v = 0; v < V; ++v) sh[ty][tx][v] = acc[v];
    __syncthreads();
    if (ty == 0 && c < C) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
        double t = 0.0;
        for (int w = 0; w < kWarps; ++w) t += sh[w][tx][v];
        part[(c * P + p) * V + v] = t;
      }
    }
    __syncthreads();
  }
}

// out_v[c] += float(sum_v) for the defined outputs (channel_finalize's g).
template <int V>
struct AddSums {
  float* out0;
  float* out1;
  __device__ void operator()(int64_t c, const double* sum) const {
    if (out0) out0[c] += static_cast<float>(sum[0]);
    if (V > 1 && out1) out1[c] += static_cast<float>(sum[V > 1 ? 1 : 0]);
  }
};

template <int V, class F>
void channel_grads(int64_t O, int64_t C, int64_t I, const F& f, float* out0, float* out1, const On& on) {
  if (C == 0) return;
  const int64_t M = O * I;
  int64_t P;
  Tensor part;
  if (I == 1) {
    // Row ranges of at least 64 rows per lane group; enough blocks to fill the GPU.
    P = std::max<int64_t>(1, std::min<int64_t>(kMaxParts, ceil_div(O, 512)));
    const int64_t L = ceil_div(std::max<int64_t>(O, 1), P);
    part = scratch_f64(on.dev, C * P * V);
    const int64_t blocks = ceil_div(C, 32) * P;
    col_partials<V><<<static_cast<unsigned>(std::min(blocks, kMaxBlocks)), kThreads, 0, on.s>>>(O, C, P, L, f,
                                                                                                 f64(part));
    FC_LAUNCH_CHECK("col_partials", "O=", O, " C=", C, " P=", P);
  } else {
    P = std::max<int64_t>(1, std::min<int64_t>(kMaxParts, ceil_div(M, kPartElems)));
    const int64_t L = ceil_div(std::max<int64_t>(M, 1), P);
    part = scratch_f64(on.dev, C * P * V);
    // NCHW (I > 1): one block per (channel, range of its O·I values).
    channel_partials<V><<<static_cast<unsigned>(std::min(C * P, kMaxBlocks)), kThreads, 0, on.s>>>(O, C, I, P, L,
                                                                                                    f, f64(part));
    FC_LAUNCH_CHECK("channel_partials", "C=", C, " M=", M, " P=", P);
  }
  channel_finalize<V><<<grid_for(C, kThreads), kThreads, 0, on.s>>>(C, P, f64(part), AddSums<V>{out0, out1});
  FC_LAUNCH_CHECK("channel_finalize", "C=", C, " P=", P);
}

struct LnParamSums {  // Σ dy·x̂, Σ dy
  const float* dy;
  const float* x;
  const float* mean;
  const float* invstd;
  int64_t C, I;
  __device__ void operator()(int64_t idx, int64_t, double* acc) const {
    const int64_t o = idx / (C * I), r = o * I + idx % I;
    const float g = dy[idx];
    acc[0] += static_cast<double>(g) * ln_xhat(x[idx], mean[r], invstd[r]);
    acc[1] += g;
  }
};

struct ProductSum {  // Σ dy·x
  const float* dy;
  const float* x;
  __device__ void operator()(int64_t idx, int64_t, double* acc) const {
    acc[0] += static_cast<double>(dy[idx]) * x[idx];
  }
};

// ---- elementwise per-channel scale, drop path, GAP

// out[i] = in[i]·s[(i / I) % C] (layer scale: s = γ; channel multiply: C = 1 row per (n, c), I = S).
__global__ void __launch_bounds__(kThreads)
    scale_by(int64_t n, int64_t C, int64_t I, const float* in, const float* __restrict__ s, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __fmul_rn(in[i], s[(i / I) % C]);
}

void launch_scale_by(int64_t n, int64_t C, int64_t I, const float* in, const float* s, float* out, cudaStream_t st) {
  if (n == 0) return;
  scale_by<<<grid_for(n, kThreads), kThreads, 0, st>>>(n, C, I, in, s, out);
  FC_LAUNCH_CHECK("scale_by", "n=", n, " C=", C, " I=", I);
}

__global__ void __launch_bounds__(kThreads)
    drop_path_kernel(int64_t n, int64_t per, uint64_t key, double p, float scale, const float* in, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = margin::rng_uniform(key, static_cast<uint64_t>(i / per)) >= p ? __fmul_rn(in[i], scale) : 0.0f;
}

// One warp per row of S contiguous values: out[r] = float(f-sum · mul).
template <class F>
__global__ void __launch_bounds__(kThreads) row_sums(int64_t R, int64_t S, F f, double mul, float* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + (threadIdx.x >> 5); r < R; r += warps) {
    double s = 0.0;
    for (int64_t i = lane; i < S; i += 32) s += f(r * S + i);
    s = warp_total(s);
    if (lane == 0) out[r] = static_cast<float>(s * mul);
  }
}

struct ValueOf {
  const float* x;
  __device__ double operator()(int64_t i) const { return x[i]; }
};
struct ProductOf {
  const float* a;
  const float* b;
  __device__ double operator()(int64_t i) const { return static_cast<double>(a[i]) * b[i]; }
};

__global__ void __launch_bounds__(kThreads)
    gap_bwd(int64_t n, int64_t S, double inv, bool accumulate, const float* __restrict__ dy, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = static_cast<float>(dy[i / S] * inv);
    dx[i] = accumulate ? __fadd_rn(dx[i], v) : v;
  }
}

}  // namespace

// ======================================================================== entry points

void activation_forward(Activation a, const Tensor& x, const Tensor& y) {
  const On on(x);
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_act(a, true, n, x.data_as<float>(), nullptr, y.data_as<float>(), on.s);
}

void activation_backward(Activation a, const Tensor& dy, const Tensor& x, const Tensor& dx) {
  const On on(x);
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_act(a, false, n, dy.data_as<float>(), x.data_as<float>(), dx.data_as<float>(), on.s);
}

void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        const Tensor& save_mean, const Tensor& save_invstd, double eps, int64_t O, int64_t C,
                        int64_t I) {
  const On on(x);
  const int64_t R = O * I;
  if (R == 0) return;
  const LnFwd p{x.data_as<float>(), opt(gamma), opt(beta), y.data_as<float>(), opt_mut(save_mean),
                opt_mut(save_invstd), eps, O, C, I};
  if (I == 1) {
    ln_fwd_tokens<<<blocks_for_warps(R), kThreads, 0, on.s>>>(p);
    FC_LAUNCH_CHECK("ln_fwd_tokens", "R=", R, " C=", C);
  } else {
    ln_fwd_strided<<<grid_for(R, kThreads), kThreads, 0, on.s>>>(p);
    FC_LAUNCH_CHECK("ln_fwd_strided", "R=", R, " C=", C);
  }
}

void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                         int64_t O, int64_t C, int64_t I) {
  const On on(x);
  const int64_t R = O * I;
  if (R == 0) return;
  // Parameter gradients first: dx may overwrite dy (stream order).
  if (dgamma.defined() || dbeta.defined()) {
    channel_grads<2>(O, C, I,
                     LnParamSums{dy.data_as<float>(), x.data_as<float>(), save_mean.data_as<float>(),
                                 save_invstd.data_as<float>(), C, I},
                     opt_mut(dgamma), opt_mut(dbeta), on);
  }
  if (!dx.defined()) return;
  const LnBwd p{dy.data_as<float>(), x.data_as<float>(), opt(gamma), save_mean.data_as<float>(),
                save_invstd.data_as<float>(), dx.data_as<float>(), O, C, I};
  if (I == 1) {
    ln_dx_tokens<<<blocks_for_warps(R), kThreads, 0, on.s>>>(p);
    FC_LAUNCH_CHECK("ln_dx_tokens", "R=", R, " C=", C);
  } else {
    ln_dx_strided<<<grid_for(R, kThreads), kThreads, 0, on.s>>>(p);
    FC_LAUNCH_CHECK("ln_dx_strided", "R=", R, " C=", C);
  }
}

void layer_scale_forward(const Tensor& x, const Tensor& gamma, const Tensor& y, int64_t O, int64_t C, int64_t I) {
  const On on(x);
  launch_scale_by(x.numel(), C, I, x.data_as<float>(), gamma.data_as<float>(), y.data_as<float>(), on.s);
}

void layer_scale_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& dx,
                          const Tensor& dgamma, int64_t O, int64_t C, int64_t I) {
  const On on(dy);
  if (dgamma.defined() && O * I > 0) {
    channel_grads<1>(O, C, I, ProductSum{dy.data_as<float>(), x.data_as<float>()}, dgamma.data_as<float>(), nullptr,
                     on);
  }
  if (dx.defined()) {
    launch_scale_by(dy.numel(), C, I, dy.data_as<float>(), gamma.data_as<float>(), dx.data_as<float>(), on.s);
  }
}

void drop_path_apply(const Tensor& in, const Tensor& out, double p, uint64_t key, float scale, int64_t N,
                     int64_t per) {
  const On on(in);
  const int64_t n = in.numel();
  if (n == 0) return;
  drop_path_kernel<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, per, key, p, scale, in.data_as<float>(),
                                                                  out.data_as<float>());
  FC_LAUNCH_CHECK("drop_path_kernel", "n=", n, " N=", N);
}

void global_avg_pool_forward(const Tensor& x, const Tensor& y, int64_t N, int64_t C, int64_t S) {
  const On on(x);
  const int64_t R = N * C;
  if (R == 0) return;
  row_sums<<<blocks_for_warps(R), kThreads, 0, on.s>>>(R, S, ValueOf{x.data_as<float>()},
                                                        1.0 / static_cast<double>(S), y.data_as<float>());
  FC_LAUNCH_CHECK("row_sums", "R=", R, " S=", S);
}

void global_avg_pool_backward(const Tensor& dy, const Tensor& dx, bool accumulate, int64_t N, int64_t C, int64_t S) {
  const On on(dy);
  const int64_t n = N * C * S;
  if (n == 0) return;
  gap_bwd<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, S, 1.0 / static_cast<double>(S), accumulate,
                                                         dy.data_as<float>(), dx.data_as<float>());
  FC_LAUNCH_CHECK("gap_bwd", "n=", n);
}

void channel_mul_forward(const Tensor& x, const Tensor& g, const Tensor& y, int64_t N, int64_t C, int64_t S) {
  const On on(x);
  // g is (N, C): one factor per row of S values, i.e. (i / S) % (N·C).
  launch_scale_by(x.numel(), N * C, S, x.data_as<float>(), g.data_as<float>(), y.data_as<float>(), on.s);
}

void channel_mul_backward(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& dx, const Tensor& dg,
                          int64_t N, int64_t C, int64_t S) {
  const On on(dy);
  const int64_t R = N * C;
  if (R == 0) return;
  if (dg.defined()) {  // first: dx may overwrite dy
    if (S == 0) {
      FC_CUDA_CHECK(cudaMemsetAsync(dg.data(), 0, static_cast<size_t>(R) * sizeof(float), on.s), "zeroing dg");
    } else {
      row_sums<<<blocks_for_warps(R), kThreads, 0, on.s>>>(R, S, ProductOf{dy.data_as<float>(), x.data_as<float>()},
                                                            1.0, dg.data_as<float>());
      FC_LAUNCH_CHECK("row_sums", "R=", R, " S=", S);
    }
  }
  if (dx.defined()) {
    launch_scale_by(dy.numel(), R, S, dy.data_as<float>(), g.data_as<float>(), dx.data_as<float>(), on.s);
  }
}

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
