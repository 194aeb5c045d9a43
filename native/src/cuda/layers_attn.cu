// @file layers_attn.cu
// @brief The attention ops (facecuda/layers_attn.h) on CUDA: multi-head self-attention and EdgeNeXt's
// XCA. The arguments arrive validated (common/layers_attn_cuda.h).
//
// Work
// - Matrix products: cuBLAS strided-batched GEMMs (cublasGemmStridedBatchedEx), one call per product
//   over all N·H slices; row-major operands on column-major cuBLAS as in cuda/gemm.cc (C^T = op(B)^T ·
//   op(A)^T: operands swapped, same leading dimensions). Compute type from ExecOptions::precision (F32 =
//   CUBLAS_COMPUTE_32F, no TF32; TF32, BF16, F16 the fast fp32 modes), fp32 in and out.
// - Row softmax (forward) and its backward dS = P ⊙ (dP − rowsum(dP ⊙ P)): one warp per row, fp32,
//   max-subtracted, the row's sums by a butterfly shuffle tree (lane order fixed: deterministic). The
//   logit multiplier (XCA's temperature[h]) is applied inside the softmax kernel, so a single batched
//   GEMM computes q̂ᵀk̂ for every head.
// - XCA's per-channel L2 norms over the tokens and their backward: one warp per (slice, channel)
//   column, double sums; q̂/k̂ are written to scratch for the GEMMs.
// - dtemperature: the softmax-backward kernel leaves Σ_j dS_ij·A_ij per row (double); one thread per
//   head then adds its N·D rows in order and accumulates into dtemperature.
// Memory: MHSA materializes only P (the caller's probs, or a [N·H, T, T] scratch in inference) and, in
// the backward, one [N·H, T, T] scratch for dP/dS; XCA a few [N, H, T, D] and [N, H, D, D] scratch
// tensors. Scratch comes from the caching allocator (stream-ordered, released when the call returns).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "common/layers_attn_cuda.h"
#include "cuda/common.cuh"
#include "cuda/cublas_api.h"
#include "cuda/internal.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/layers_attn.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {

namespace blas = fc::cuda::blas;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = int64_t(65535) * 8;

// The op's device, current for the whole call, and its stream.
struct On {
  int dev;
  cudaStream_t s;
  fc::cuda::detail::DeviceGuard guard;
  explicit On(const Tensor& t) : dev(t.device().index), s(fc::cuda::detail::stream(dev)), guard(dev) {}
};

Tensor scratch_f32(int dev, int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::cuda(dev));
}
// n doubles (stored as int64 words).
Tensor scratch_f64(int dev, int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::I64, Device::cuda(dev));
}

unsigned warp_blocks(int64_t rows) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((rows + kWarps - 1) / kWarps, kMaxBlocks)));
}

blas::ComputeType compute_type(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::TF32: return blas::kCompute32FFastTF32;
    case GemmPrecision::BF16: return blas::kCompute32FFast16BF;
    case GemmPrecision::F16: return blas::kCompute32FFast16F;
    default: return blas::kCompute32F;
  }
}

// Row-major C_b = alpha·op(A_b)·op(B_b) + beta·C_b for b < batch, slice b of X at X + b·sX. M, N, K >= 1.
void bgemm(const On& on, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           int64_t sA, const float* B, int64_t ldb, int64_t sB, float beta, float* C, int64_t ldc, int64_t sC,
           int64_t batch, GemmPrecision prec) {
  const int64_t lim = INT_MAX;
  FC_CHECK(M <= lim && N <= lim && K <= lim && batch <= lim && lda <= lim && ldb <= lim && ldc <= lim, InvalidArgument,
           "Expected attention GEMM sizes <= ", lim, " but received M=", M, " N=", N, " K=", K, " batch=", batch);
  const blas::Api& api = blas::api();
  blas::Handle h = blas::handle(on.dev);
  fc::cuda::detail::DeviceGuard g(on.dev);
  const blas::Status st = api.gemm_strided_batched_ex(
      h, tb ? blas::kOpT : blas::kOpN, ta ? blas::kOpT : blas::kOpN, static_cast<int>(N), static_cast<int>(M),
      static_cast<int>(K), &alpha, B, CUDA_R_32F, static_cast<int>(ldb), sB, A, CUDA_R_32F, static_cast<int>(lda), sA,
      &beta, C, CUDA_R_32F, static_cast<int>(ldc), sC, static_cast<int>(batch), compute_type(prec),
      blas::kGemmDefault);
  if (st != blas::kStatusSuccess) {
    blas::throw_status(st, "cublasGemmStridedBatchedEx",
                       str("attention cuda:", on.dev, " M=", M, " N=", N, " K=", K, " batch=", batch, " ta=", ta,
                           " tb=", tb));
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row softmax in place of `rows` rows of `cols` logits·mult; mult = head_mult[(row / rows_per_slice)
// % H] when head_mult is given, else `mult`.
__global__ void __launch_bounds__(kThreads)
    softmax_rows(float* __restrict__ p, int64_t rows, int64_t cols, const float* __restrict__ head_mult,
                 int64_t rows_per_slice, int64_t H, float mult) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < rows; r += int64_t(gridDim.x) * kWarps) {
    float* row = p + r * cols;
    const float k = head_mult ? head_mult[(r / rows_per_slice) % H] : mult;
    float m = -INFINITY;
    for (int64_t j = lane; j < cols; j += 32) m = fmaxf(m, __fmul_rn(row[j], k));
    m = warp_max(m);
    float s = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) s += expf(__fmul_rn(row[j], k) - m);
    s = warp_sum(s);
    const float inv = 1.0f / s;
    for (int64_t j = lane; j < cols; j += 32) row[j] = expf(__fmul_rn(row[j], k) - m) * inv;
  }
}

// dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place in dp; with a: part[row] = Σ_j dS_ij·a_ij (double).
__global__ void __launch_bounds__(kThreads)
    softmax_backward_rows(const float* __restrict__ p, float* __restrict__ dp, int64_t rows, int64_t cols,
                          const float* __restrict__ a, double* __restrict__ part) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < rows; r += int64_t(gridDim.x) * kWarps) {
    const float* pr = p + r * cols;
    float* g = dp + r * cols;
    double s = 0.0;
    for (int64_t j = lane; j < cols; j += 32) s += static_cast<double>(g[j]) * pr[j];
    const float sf = static_cast<float>(warp_sum(s));
    double acc = 0.0;
    for (int64_t j = lane; j < cols; j += 32) {
      const float v = pr[j] * (g[j] - sf);
      g[j] = v;
      if (a) acc += static_cast<double>(v) * a[r * cols + j];
    }
    if (a) {
      acc = warp_sum(acc);
      if (lane == 0) part[r] = acc;
    }
  }
}

// dt[h] += Σ_{n, i} part[(n·H + h)·D + i], in order.
__global__ void sum_dtemperature(const double* __restrict__ part, int64_t N, int64_t H, int64_t D,
                                 float* __restrict__ dt) {
  const int64_t h = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (h >= H) return;
  double acc = 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < D; ++i) acc += part[(n * H + h) * D + i];
  dt[h] += static_cast<float>(acc);
}

// Per column (slice s, channel i) of x [S, T, D]: nrm = max(‖x[s, :, i]‖, eps), xh = x / nrm.
__global__ void __launch_bounds__(kThreads)
    column_norms(const float* __restrict__ x, int64_t S, int64_t T, int64_t D, float* __restrict__ nrm,
                 float* __restrict__ xh) {
  const int lane = threadIdx.x & 31;
  for (int64_t c = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); c < S * D; c += int64_t(gridDim.x) * kWarps) {
    const int64_t s = c / D, i = c % D;
    const float* col = x + s * T * D + i;
    double acc = 0.0;
    for (int64_t t = lane; t < T; t += 32) acc += static_cast<double>(col[t * D]) * col[t * D];
    acc = warp_sum(acc);
    const float n = fmaxf(static_cast<float>(sqrt(acc)), kXcaNormEps);
    if (lane == 0) nrm[c] = n;
    for (int64_t t = lane; t < T; t += 32) xh[s * T * D + t * D + i] = col[t * D] / n;
  }
}

// xh[s, t, i] = x[s, t, i] / nrm[s, i] (the saved norms).
__global__ void divide_columns(const float* __restrict__ x, const float* __restrict__ nrm, int64_t S, int64_t T,
                               int64_t D, float* __restrict__ xh) {
  const int64_t n = S * T * D;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = e / (T * D), i = e % D;
    xh[e] = x[e] / nrm[s * D + i];
  }
}

// dx[:, i] = τ_h·(g[:, i] − xh[:, i]·(xh[:, i]·g[:, i])) / nrm[i] per column, just τ_h·g/nrm where the
// forward clamped the norm (re-derived from x).
__global__ void __launch_bounds__(kThreads)
    normalize_backward(const float* __restrict__ g, const float* __restrict__ xh, const float* __restrict__ nrm,
                       const float* __restrict__ x, const float* __restrict__ tau, int64_t S, int64_t H, int64_t T,
                       int64_t D, float* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  for (int64_t c = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); c < S * D; c += int64_t(gridDim.x) * kWarps) {
    const int64_t s = c / D, i = c % D;
    const int64_t base = s * T * D + i;
    double dot = 0.0, n2 = 0.0;
    for (int64_t t = lane; t < T; t += 32) {
      dot += static_cast<double>(xh[base + t * D]) * g[base + t * D];
      n2 += static_cast<double>(x[base + t * D]) * x[base + t * D];
    }
    dot = warp_sum(dot);
    n2 = warp_sum(n2);
    const bool clamped = static_cast<float>(sqrt(n2)) < kXcaNormEps;
    const float d = clamped ? 0.0f : static_cast<float>(dot);
    const float k = tau[s % H] / nrm[c];
    for (int64_t t = lane; t < T; t += 32) dx[base + t * D] = k * (g[base + t * D] - xh[base + t * D] * d);
  }
}

void launch_softmax(const On& on, float* p, int64_t rows, int64_t cols, const float* head_mult, int64_t rows_per_slice,
                    int64_t H, float mult) {
  softmax_rows<<<warp_blocks(rows), kThreads, 0, on.s>>>(p, rows, cols, head_mult, rows_per_slice, H, mult);
  FC_LAUNCH_CHECK("softmax_rows", "rows=", rows, " cols=", cols);
}

void launch_softmax_backward(const On& on, const float* p, float* dp, int64_t rows, int64_t cols, const float* a,
                             double* part) {
  softmax_backward_rows<<<warp_blocks(rows), kThreads, 0, on.s>>>(p, dp, rows, cols, a, part);
  FC_LAUNCH_CHECK("softmax_backward_rows", "rows=", rows, " cols=", cols);
}

struct Dims {
  int64_t N, H, T, D;
  int64_t S() const { return N * H; }
};
Dims dims(const Tensor& q) { return Dims{q.size(0), q.size(1), q.size(2), q.size(3)}; }

float* mut(const Tensor& t) { return t.data_as<float>(); }
const float* cst(const Tensor& t) { return t.data_as<float>(); }

}  // namespace

// ---- Multi-head self-attention

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& probs,
                       float scale, const ExecOptions& ex) {
  const On on(q);
  const Dims d = dims(q);
  if (d.S() == 0 || d.T == 0) return;
  const int64_t TT = d.T * d.T, TD = d.T * d.D;
  Tensor tmp;
  float* P;
  if (probs.defined()) {
    P = mut(probs);
  } else {
    tmp = scratch_f32(on.dev, d.S() * TT);
    P = mut(tmp);
  }
  if (d.D == 0) {  // logits 0: a uniform P, an empty out
    if (probs.defined()) {
      FC_CUDA_CHECK(cudaMemsetAsync(P, 0, static_cast<size_t>(d.S() * TT) * sizeof(float), on.s), "attention probs");
      launch_softmax(on, P, d.S() * d.T, d.T, nullptr, 1, 1, 1.0f);
    }
    return;
  }
  bgemm(on, false, true, d.T, d.T, d.D, scale, cst(q), d.D, TD, cst(k), d.D, TD, 0.0f, P, d.T, TT, d.S(),
        ex.precision);
  launch_softmax(on, P, d.S() * d.T, d.T, nullptr, 1, 1, 1.0f);
  bgemm(on, false, false, d.T, d.D, d.T, 1.0f, P, d.T, TT, cst(v), d.D, TD, 0.0f, mut(out), d.D, TD, d.S(),
        ex.precision);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale, const ExecOptions& ex) {
  const On on(q);
  const Dims d = dims(q);
  if (d.S() == 0 || d.T == 0 || d.D == 0) return;
  const int64_t TT = d.T * d.T, TD = d.T * d.D;
  const float* P = cst(probs);
  if (dv.defined()) {
    bgemm(on, true, false, d.T, d.D, d.T, 1.0f, P, d.T, TT, cst(dout), d.D, TD, 0.0f, mut(dv), d.D, TD, d.S(),
          ex.precision);
  }
  if (!dq.defined() && !dk.defined()) return;
  Tensor ds_t = scratch_f32(on.dev, d.S() * TT);
  float* dS = mut(ds_t);
  bgemm(on, false, true, d.T, d.T, d.D, 1.0f, cst(dout), d.D, TD, cst(v), d.D, TD, 0.0f, dS, d.T, TT, d.S(),
        ex.precision);
  launch_softmax_backward(on, P, dS, d.S() * d.T, d.T, nullptr, nullptr);
  if (dq.defined()) {
    bgemm(on, false, false, d.T, d.D, d.T, scale, dS, d.T, TT, cst(k), d.D, TD, 0.0f, mut(dq), d.D, TD, d.S(),
          ex.precision);
  }
  if (dk.defined()) {
    bgemm(on, true, false, d.T, d.D, d.T, scale, dS, d.T, TT, cst(q), d.D, TD, 0.0f, mut(dk), d.D, TD, d.S(),
          ex.precision);
  }
}

// ---- XCA

void xca_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature, const Tensor& out,
                 const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const ExecOptions& ex) {
  const On on(q);
  const Dims d = dims(q);
  if (d.S() == 0 || d.D == 0) return;
  const int64_t TD = d.T * d.D, DD = d.D * d.D;
  Tensor hat = scratch_f32(on.dev, 2 * d.S() * TD);
  Tensor norms = (q_norm.defined() && k_norm.defined()) ? Tensor() : scratch_f32(on.dev, 2 * d.S() * d.D);
  Tensor ptmp = probs.defined() ? Tensor() : scratch_f32(on.dev, d.S() * DD);
  float* qh = mut(hat);
  float* kh = qh + d.S() * TD;
  float* qn = q_norm.defined() ? mut(q_norm) : mut(norms);
  float* kn = k_norm.defined() ? mut(k_norm) : mut(norms) + d.S() * d.D;
  float* P = probs.defined() ? mut(probs) : mut(ptmp);
  const unsigned cb = warp_blocks(d.S() * d.D);
  column_norms<<<cb, kThreads, 0, on.s>>>(cst(q), d.S(), d.T, d.D, qn, qh);
  FC_LAUNCH_CHECK("column_norms", "q S=", d.S(), " T=", d.T, " D=", d.D);
  column_norms<<<cb, kThreads, 0, on.s>>>(cst(k), d.S(), d.T, d.D, kn, kh);
  FC_LAUNCH_CHECK("column_norms", "k S=", d.S(), " T=", d.T, " D=", d.D);
  if (d.T > 0) {
    bgemm(on, true, false, d.D, d.D, d.T, 1.0f, qh, d.D, TD, kh, d.D, TD, 0.0f, P, d.D, DD, d.S(), ex.precision);
  } else {
    FC_CUDA_CHECK(cudaMemsetAsync(P, 0, static_cast<size_t>(d.S() * DD) * sizeof(float), on.s), "xca probs");
  }
  launch_softmax(on, P, d.S() * d.D, d.D, cst(temperature), d.D, d.H, 1.0f);
  if (d.T > 0) {
    bgemm(on, false, true, d.T, d.D, d.D, 1.0f, cst(v), d.D, TD, P, d.D, DD, 0.0f, mut(out), d.D, TD, d.S(),
          ex.precision);
  }
}

void xca_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature,
                  const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dtemperature, const ExecOptions& ex) {
  const On on(q);
  const Dims d = dims(q);
  if (d.S() == 0 || d.D == 0 || d.T == 0) return;  // T = 0: every gradient is empty or zero
  const int64_t TD = d.T * d.D, DD = d.D * d.D;
  const float* P = cst(probs);
  if (dv.defined()) {
    bgemm(on, false, false, d.T, d.D, d.D, 1.0f, cst(dout), d.D, TD, P, d.D, DD, 0.0f, mut(dv), d.D, TD, d.S(),
          ex.precision);
  }
  if (!dq.defined() && !dk.defined() && !dtemperature.defined()) return;
  // q̂, k̂, g (dq̂/dk̂ before the normalization backward): [S, T, D] each; dS and A: [S, D, D] each.
  Tensor buf = scratch_f32(on.dev, 3 * d.S() * TD + 2 * d.S() * DD);
  float* qh = mut(buf);
  float* kh = qh + d.S() * TD;
  float* g = kh + d.S() * TD;
  float* dS = g + d.S() * TD;
  float* A = dS + d.S() * DD;
  const int64_t n = d.S() * TD;
  const unsigned eb = fc::cuda::detail::grid_for(n, kThreads);
  divide_columns<<<eb, kThreads, 0, on.s>>>(cst(q), cst(q_norm), d.S(), d.T, d.D, qh);
  FC_LAUNCH_CHECK("divide_columns", "q n=", n);
  divide_columns<<<eb, kThreads, 0, on.s>>>(cst(k), cst(k_norm), d.S(), d.T, d.D, kh);
  FC_LAUNCH_CHECK("divide_columns", "k n=", n);
  bgemm(on, true, false, d.D, d.D, d.T, 1.0f, cst(dout), d.D, TD, cst(v), d.D, TD, 0.0f, dS, d.D, DD, d.S(),
        ex.precision);  // dP = doutᵀ·v
  Tensor part;
  if (dtemperature.defined()) {
    bgemm(on, true, false, d.D, d.D, d.T, 1.0f, qh, d.D, TD, kh, d.D, TD, 0.0f, A, d.D, DD, d.S(), ex.precision);
    part = scratch_f64(on.dev, d.S() * d.D);
  }
  launch_softmax_backward(on, P, dS, d.S() * d.D, d.D, dtemperature.defined() ? A : nullptr,
                          dtemperature.defined() ? static_cast<double*>(part.data()) : nullptr);
  if (dtemperature.defined()) {
    sum_dtemperature<<<static_cast<unsigned>((d.H + 127) / 128), 128, 0, on.s>>>(
        static_cast<const double*>(part.data()), d.N, d.H, d.D, mut(dtemperature));
    FC_LAUNCH_CHECK("sum_dtemperature", "N=", d.N, " H=", d.H, " D=", d.D);
  }
  const unsigned cb = warp_blocks(d.S() * d.D);
  if (dq.defined()) {
    bgemm(on, false, true, d.T, d.D, d.D, 1.0f, kh, d.D, TD, dS, d.D, DD, 0.0f, g, d.D, TD, d.S(),
          ex.precision);  // k̂·dSᵀ
    normalize_backward<<<cb, kThreads, 0, on.s>>>(g, qh, cst(q_norm), cst(q), cst(temperature), d.S(), d.H, d.T, d.D,
                                                  mut(dq));
    FC_LAUNCH_CHECK("normalize_backward", "q S=", d.S(), " T=", d.T, " D=", d.D);
  }
  if (dk.defined()) {
    bgemm(on, false, false, d.T, d.D, d.D, 1.0f, qh, d.D, TD, dS, d.D, DD, 0.0f, g, d.D, TD, d.S(),
          ex.precision);  // q̂·dS
    normalize_backward<<<cb, kThreads, 0, on.s>>>(g, kh, cst(k_norm), cst(k), cst(temperature), d.S(), d.H, d.T, d.D,
                                                  mut(dk));
    FC_LAUNCH_CHECK("normalize_backward", "k S=", d.S(), " T=", d.T, " D=", d.D);
  }
}

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
