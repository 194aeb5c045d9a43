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

// Rows [m0, m0 + MR) × columns [p, p + 16·NV) ∩ [p, p + valid) (valid <= 16·NV): NV vectors per row.
// `stream`: whole-vector rows go out with non-temporal stores (an output far larger than the caches:
// no read-for-ownership of lines the next layer reads from memory anyway). SiLU's tile is finished
// in a stack buffer (in L1) and then copied out.
template <int MR, int NV>
inline void tile(const float* x, const float* w, const float* b, float* y, int64_t m0, int64_t K, int64_t P, int64_t p,
                 int64_t valid, Act act, SiluFn silu, bool stream) {
  __mmask16 mk[NV];
  for (int v = 0; v < NV; ++v) mk[v] = lane_mask(valid - 16 * v);
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* xk = x + p;
  const float* wr = w + m0 * K;
  if (valid == 16 * NV) {
    for (int64_t k = 0; k < K; ++k, xk += P) {
      __m512 xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_ps(xk + 16 * v);
      for (int r = 0; r < MR; ++r) {
        const __m512 wv = _mm512_set1_ps(wr[r * K + k]);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
      }
    }
  } else {
    for (int64_t k = 0; k < K; ++k, xk += P) {
      __m512 xv[NV];
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_maskz_loadu_ps(mk[v], xk + 16 * v);
      for (int r = 0; r < MR; ++r) {
        const __m512 wv = _mm512_set1_ps(wr[r * K + k]);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
      }
    }
  }
  const bool whole = valid == 16 * NV;
  alignas(64) float buf[MR][16 * NV];
  for (int r = 0; r < MR; ++r) {
    const __m512 bv = _mm512_set1_ps(b ? b[m0 + r] : 0.0f);
    float* yr = y + (m0 + r) * P + p;
    if (act == Act::kSiLU) {
      for (int v = 0; v < NV; ++v) _mm512_store_ps(buf[r] + 16 * v, _mm512_add_ps(acc[r][v], bv));
      silu(buf[r], buf[r], 16 * NV);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_load_ps(buf[r] + 16 * v);
    } else {
      for (int v = 0; v < NV; ++v) acc[r][v] = activate(_mm512_add_ps(acc[r][v], bv), act);
    }
    if (stream && whole && (reinterpret_cast<uintptr_t>(yr) & 63) == 0) {
      for (int v = 0; v < NV; ++v) _mm512_stream_ps(yr + 16 * v, acc[r][v]);
    } else {
      for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(yr + 16 * v, mk[v], acc[r][v]);
    }
  }
}

template <int NV>
void tiles(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t P, int64_t p,
           int64_t valid, Act act, SiluFn silu, bool stream) {
  int64_t m = 0;
  for (; m + 6 <= M; m += 6) tile<6, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream);
  switch (M - m) {
    case 5: tile<5, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream); break;
    case 4: tile<4, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream); break;
    case 3: tile<3, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream); break;
    case 2: tile<2, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream); break;
    case 1: tile<1, NV>(x, w, b, y, m, K, P, p, valid, act, silu, stream); break;
    default: break;
  }
}

void run(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t P, int64_t p0,
         int64_t p1, Act act, SiluFn silu, bool stream) {
  for (int64_t p = p0; p < p1; p += kTileP) {
    // The tile's input columns (K × 64 floats) stay in L1/L2 while every channel block reads them; a
    // last partial tile takes only the vectors it needs (196 = 3·64 + 4: one vector, not four).
    const int64_t valid = std::min<int64_t>(kTileP, p1 - p);
    switch ((valid + 15) / 16) {
      case 1: tiles<1>(x, w, b, y, M, K, P, p, valid, act, silu, stream); break;
      case 2: tiles<2>(x, w, b, y, M, K, P, p, valid, act, silu, stream); break;
      case 3: tiles<3>(x, w, b, y, M, K, P, p, valid, act, silu, stream); break;
      default: tiles<4>(x, w, b, y, M, K, P, p, valid, act, silu, stream); break;
    }
  }
  if (stream) _mm_sfence();
}

}  // namespace

Fn kernel_avx512() { return &run; }

}  // namespace pointwise
}  // namespace nn
}  // namespace fc
