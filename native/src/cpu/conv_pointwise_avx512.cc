// @file conv_pointwise_avx512.cc
// @brief The AVX-512 direct 1×1 convolution of conv_pointwise.h: 6 output channels × 4 vectors (64
// positions) of accumulators, k-loop with one broadcast weight per channel and 4 input loads, masked
// loads/stores for the last partial tile, bias + activation in the epilogue.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>

#include "cpu/conv_pointwise.h"

namespace fc {
namespace nn {
namespace pointwise {
namespace {

constexpr int kV = 4;  // vectors per tile row

inline __mmask16 lane_mask(int64_t valid) {
  if (valid >= 16) return static_cast<__mmask16>(0xFFFF);
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

// As common/activation_math.h computes them, NaN kept (vmaxps/vminps return their second operand
// when either is NaN, so the value goes second): ReLU max(x, 0); ReLU6 clamp(x, 0, 6); hard-swish
// x·clamp(x + 3, 0, 6)/6.
inline __m512 clamp_nan(__m512 v, float lo, float hi) {
  return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), v));
}

inline __m512 activate(__m512 v, Act act) {
  switch (act) {
    case Act::kReLU: return _mm512_max_ps(_mm512_setzero_ps(), v);
    case Act::kReLU6: return clamp_nan(v, 0.0f, 6.0f);
    case Act::kHardSwish:
      return _mm512_div_ps(_mm512_mul_ps(v, clamp_nan(_mm512_add_ps(v, _mm512_set1_ps(3.0f)), 0.0f, 6.0f)),
                           _mm512_set1_ps(6.0f));
    default: return v;
  }
}

// Rows [m0, m0 + MR) × columns [p, p + 64) ∩ [p, P).
template <int MR>
inline void tile(const float* x, const float* w, const float* b, float* y, int64_t m0, int64_t K, int64_t P, int64_t p,
                 int64_t valid, Act act, SiluFn silu) {
  __mmask16 mk[kV];
  for (int v = 0; v < kV; ++v) mk[v] = lane_mask(valid - 16 * v);
  __m512 acc[MR][kV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* xk = x + p;
  const float* wr = w + m0 * K;
  if (valid == kTileP) {
    for (int64_t k = 0; k < K; ++k, xk += P) {
      const __m512 x0 = _mm512_loadu_ps(xk), x1 = _mm512_loadu_ps(xk + 16), x2 = _mm512_loadu_ps(xk + 32),
                   x3 = _mm512_loadu_ps(xk + 48);
      for (int r = 0; r < MR; ++r) {
        const __m512 wv = _mm512_set1_ps(wr[r * K + k]);
        acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(wv, x2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(wv, x3, acc[r][3]);
      }
    }
  } else {
    for (int64_t k = 0; k < K; ++k, xk += P) {
      __m512 xv[kV];
      for (int v = 0; v < kV; ++v) xv[v] = _mm512_maskz_loadu_ps(mk[v], xk + 16 * v);
      for (int r = 0; r < MR; ++r) {
        const __m512 wv = _mm512_set1_ps(wr[r * K + k]);
        for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    const __m512 bv = _mm512_set1_ps(b ? b[m0 + r] : 0.0f);
    float* yr = y + (m0 + r) * P + p;
    for (int v = 0; v < kV; ++v) _mm512_mask_storeu_ps(yr + 16 * v, mk[v], activate(_mm512_add_ps(acc[r][v], bv), act));
    if (act == Act::kSiLU) silu(yr, yr, valid);
  }
}

void run(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t P, int64_t p0,
         int64_t p1, Act act, SiluFn silu) {
  for (int64_t p = p0; p < p1; p += kTileP) {
    // the tile's input columns (K × 64 floats) stay in L1/L2 while every channel block reads them
    const int64_t valid = std::min<int64_t>(kTileP, p1 - p);
    int64_t m = 0;
    for (; m + 6 <= M; m += 6) tile<6>(x, w, b, y, m, K, P, p, valid, act, silu);
    switch (M - m) {
      case 5: tile<5>(x, w, b, y, m, K, P, p, valid, act, silu); break;
      case 4: tile<4>(x, w, b, y, m, K, P, p, valid, act, silu); break;
      case 3: tile<3>(x, w, b, y, m, K, P, p, valid, act, silu); break;
      case 2: tile<2>(x, w, b, y, m, K, P, p, valid, act, silu); break;
      case 1: tile<1>(x, w, b, y, m, K, P, p, valid, act, silu); break;
      default: break;
    }
  }
}

}  // namespace

Fn kernel_avx512() { return &run; }

}  // namespace pointwise
}  // namespace nn
}  // namespace fc
