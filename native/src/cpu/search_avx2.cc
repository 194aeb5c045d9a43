// @file search_avx2.cc
// @brief AVX2 + FMA + F16C search kernels (contract in search_internal.h). A row's score: one ymm
// accumulator over dim in 8-wide steps (the tail through a zero-padded copy), then a fixed
// horizontal sum, whatever the row's place in a block of four.
#include <immintrin.h>

#include <cstring>

#include "cpu/search_internal.h"

namespace fc {
namespace search {
namespace kern {

namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256 load_f32(const float* p, int64_t d, int64_t dim) {
  if (d + 8 <= dim) return _mm256_loadu_ps(p + d);
  alignas(32) float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p + d, static_cast<size_t>(dim - d) * sizeof(float));
  return _mm256_load_ps(t);
}

inline __m256 load_f16(const uint16_t* p, int64_t d, int64_t dim) {
  if (d + 8 <= dim) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + d)));
  alignas(16) uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(t, p + d, static_cast<size_t>(dim - d) * sizeof(uint16_t));
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

template <typename T, __m256 (*Load)(const T*, int64_t, int64_t)>
void score_rows(const T* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q, int64_t nq,
                float* out, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= nr; i += 4) {
    const T* g0 = G + (rows ? rows[i + 0] : r0 + i + 0) * dim;
    const T* g1 = G + (rows ? rows[i + 1] : r0 + i + 1) * dim;
    const T* g2 = G + (rows ? rows[i + 2] : r0 + i + 2) * dim;
    const T* g3 = G + (rows ? rows[i + 3] : r0 + i + 3) * dim;
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t d = 0; d < dim; d += 8) {
        const __m256 qv = load_f32(qp, d, dim);
        a0 = _mm256_fmadd_ps(Load(g0, d, dim), qv, a0);
        a1 = _mm256_fmadd_ps(Load(g1, d, dim), qv, a1);
        a2 = _mm256_fmadd_ps(Load(g2, d, dim), qv, a2);
        a3 = _mm256_fmadd_ps(Load(g3, d, dim), qv, a3);
      }
      float* o = out + q * ldo + i;
      o[0] = hsum(a0);
      o[1] = hsum(a1);
      o[2] = hsum(a2);
      o[3] = hsum(a3);
    }
  }
  for (; i < nr; ++i) {
    const T* g0 = G + (rows ? rows[i] : r0 + i) * dim;
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      __m256 a0 = _mm256_setzero_ps();
      for (int64_t d = 0; d < dim; d += 8) a0 = _mm256_fmadd_ps(Load(g0, d, dim), load_f32(qp, d, dim), a0);
      out[q * ldo + i] = hsum(a0);
    }
  }
}

void score_f32(const float* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q, int64_t nq,
               float* out, int64_t ldo) {
  score_rows<float, load_f32>(G, rows, r0, nr, dim, Q, nq, out, ldo);
}

void score_f16(const uint16_t* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q,
               int64_t nq, float* out, int64_t ldo) {
  score_rows<uint16_t, load_f16>(G, rows, r0, nr, dim, Q, nq, out, ldo);
}

void widen_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

int64_t select_ge(const float* s, int64_t n, float thr, int32_t* idx) {
  const __m256 t = _mm256_set1_ps(thr);
  int64_t cnt = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + i), t, _CMP_GE_OQ)));
    while (m) {
      idx[cnt++] = static_cast<int32_t>(i + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  for (; i < n; ++i)
    if (s[i] >= thr) idx[cnt++] = static_cast<int32_t>(i);
  return cnt;
}

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k = {"avx2", score_f32, score_f16, widen_f16, select_ge};
  return k;
}

}  // namespace kern
}  // namespace search
}  // namespace fc
