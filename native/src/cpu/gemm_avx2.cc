// @file gemm_avx2.cc
// @brief AVX2/FMA kernels of the SGEMM (compiled with -mavx2 -mfma -mf16c; run only when
// kernels_for(Level::Avx2) says the CPU has them): the fp32 6x16 micro-kernel, GEMV kernels and the
// FMA peak loop. BF16 on this level is emulated by the driver (bf16-rounded fp32 through 6x16).
//
// Micro-kernel: 6 rows x 2 ymm columns = 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16
// ymm registers; 12 FMAs per 8 loads, enough independent chains for latency 4-5 x 2 pipes.
//
// No engine header with inline code is included here (see gemm_internal.h): everything is static.
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_internal.h"

namespace fc {
namespace gemm {
namespace {

constexpr int kMR = 6;
constexpr int kNV = 2;  // ymm vectors (8 floats) across: nr = 16

inline __m256i tail_mask(int64_t cols) {
  const int c = cols >= 8 ? 8 : (cols <= 0 ? 0 : static_cast<int>(cols));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int MR, int NV>
inline void store_tile(__m256 (&acc)[MR][NV], float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha);
  const __m256 vb = _mm256_set1_ps(beta);
  if (n == 8 * NV) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      if (i < m) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          float* p = c + i * ldc + 8 * v;
          const __m256 r = beta == 0.0f ? _mm256_mul_ps(va, acc[i][v])
                                        : _mm256_fmadd_ps(va, acc[i][v], _mm256_mul_ps(vb, _mm256_loadu_ps(p)));
          _mm256_storeu_ps(p, r);
        }
      }
    }
    return;
  }
  __m256i mk[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mk[v] = tail_mask(n - 8 * v);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i < m) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* p = c + i * ldc + 8 * v;
        const __m256 r = beta == 0.0f
                             ? _mm256_mul_ps(va, acc[i][v])
                             : _mm256_fmadd_ps(va, acc[i][v], _mm256_mul_ps(vb, _mm256_maskload_ps(p, mk[v])));
        _mm256_maskstore_ps(p, mk[v], r);
      }
    }
  }
}

template <int MR, int NV>
void micro_f32(int64_t kc, const void* ap_, const void* bp_, int64_t ldbp, float* c, int64_t ldc, int m, int n,
               float alpha, float beta) {
  const float* ap = static_cast<const float*>(ap_);
  const float* bp = static_cast<const float*>(bp_);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
    if (i < m) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  __m256 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    __m256 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(bp + 8 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(ap + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
    }
    ap += MR;
    bp += ldbp;
  }
  store_tile<MR, NV>(acc, c, ldc, m, n, alpha, beta);
}

inline float out_value(float acc, float y, float alpha, float beta) {
  return beta == 0.0f ? alpha * acc : __builtin_fmaf(alpha, acc, beta * y);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void gemv_dot(int64_t K, const float* x, const float* a, int64_t lda, int64_t rows, float* y, int64_t incy,
              float alpha, float beta) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v)
        s[v] = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8 * v), _mm256_loadu_ps(ar + k + 8 * v), s[v]);
    }
    for (int v = 0; k < K; ++v, k += 8) {
      const __m256i mk = tail_mask(K - k);
      s[v] = _mm256_fmadd_ps(_mm256_maskload_ps(x + k, mk), _mm256_maskload_ps(ar + k, mk), s[v]);
    }
    const float t = hsum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
    float* yr = y + r * incy;
    *yr = out_value(t, beta == 0.0f ? 0.0f : *yr, alpha, beta);
  }
}

inline void axpy_out(__m256 acc, float* y, int64_t incy, int64_t w, float alpha, float beta) {
  alignas(32) float t[8];
  _mm256_store_ps(t, acc);
  for (int64_t j = 0; j < w; ++j) y[j * incy] = out_value(t[j], beta == 0.0f ? 0.0f : y[j * incy], alpha, beta);
}

void gemv_axpy(int64_t K, const float* x, const float* a, int64_t lda, int64_t cols, float* y, int64_t incy,
               float alpha, float beta) {
  constexpr int kV = 8;  // 64 columns per pass, one accumulator each
  int64_t j0 = 0;
  for (; j0 + 8 * kV <= cols; j0 += 8 * kV) {
    __m256 acc[kV];
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) acc[v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m256 xv = _mm256_set1_ps(x[k]);
      const float* ak = a + k * lda + j0;
#pragma GCC unroll 8
      for (int v = 0; v < kV; ++v) acc[v] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(ak + 8 * v), acc[v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) axpy_out(acc[v], y + (j0 + 8 * v) * incy, incy, 8, alpha, beta);
  }
  for (; j0 < cols; j0 += 8) {
    const __m256i mk = tail_mask(cols - j0);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; ++k)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(x[k]), _mm256_maskload_ps(a + k * lda + j0, mk), acc);
    axpy_out(acc, y + j0 * incy, incy, cols - j0 < 8 ? cols - j0 : 8, alpha, beta);
  }
}

double fma_loop(int64_t iters, float* sink) {
  // 12 independent ymm chains (+ 2 constants fit the 16 registers): latency 4-5 x 2 pipes.
  constexpr int kChains = 12;
  __m256 acc[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  *sink = hsum(s);
  return static_cast<double>(iters) * kChains * 8 * 2;
}

}  // namespace

const KernelSet& kernels_avx2() {
  static const KernelSet ks = {
      "avx2 6x16",
      "avx2 6x16 (bf16 emulated: bf16-rounded fp32)",
      kMR,
      8 * kNV,
      micro_f32<kMR, kNV>,
      nullptr,  // no native bf16 kernel: the driver emulates BF16
      0,
      0,
      nullptr,
      nullptr,  // pack_f32: the driver's generic packer
      nullptr,  // pack_bf16
      gemv_dot,
      gemv_axpy,
      fma_loop,
  };
  return ks;
}

}  // namespace gemm
}  // namespace fc
