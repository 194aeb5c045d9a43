// @file search_avx512.cc
// @brief AVX-512 search kernels (contract in search_internal.h): dot-product scan over fp32 or fp16
// rows (F16C widening in registers), fp16 tile widening, and a compress-store threshold pass.
//
// A row's score: one zmm accumulator over dim in 16-wide steps (the tail masked), then
// _mm512_reduce_add_ps, whatever the row's place in a block of four.
// GCC 12 warns "__Y may be used uninitialized" inside the unmasked forms of several AVX-512
// intrinsics (their _mm512_undefined_ps() operand; GCC bug 105593): silenced around the include only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "cpu/search_internal.h"

namespace fc {
namespace search {
namespace kern {

namespace {

inline __m512 load_f32(const float* p, int64_t d, int64_t dim, __mmask16 tail) {
  return d + 16 <= dim ? _mm512_loadu_ps(p + d) : _mm512_mask_loadu_ps(_mm512_setzero_ps(), tail, p + d);
}

inline __m512 load_f16(const uint16_t* p, int64_t d, int64_t dim, __mmask16 tail) {
  __m256i h = d + 16 <= dim ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + d))
                            : _mm256_mask_loadu_epi16(_mm256_setzero_si256(), tail, p + d);
  return _mm512_cvtph_ps(h);
}

template <typename T, __m512 (*Load)(const T*, int64_t, int64_t, __mmask16)>
void score_rows(const T* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q, int64_t nq,
                float* out, int64_t ldo) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (dim & 15)) - 1u);
  int64_t i = 0;
  for (; i + 4 <= nr; i += 4) {
    const T* g0 = G + (rows ? rows[i + 0] : r0 + i + 0) * dim;
    const T* g1 = G + (rows ? rows[i + 1] : r0 + i + 1) * dim;
    const T* g2 = G + (rows ? rows[i + 2] : r0 + i + 2) * dim;
    const T* g3 = G + (rows ? rows[i + 3] : r0 + i + 3) * dim;
    // The next block's rows, prefetched during the first query's pass (16 values = one f32 line or
    // half an f16 line per step), so the scan keeps more lines in flight than the hardware prefetcher.
    const int64_t nx = i + 8 <= nr ? i + 4 : i;
    const char* p0 = reinterpret_cast<const char*>(G + (rows ? rows[nx + 0] : r0 + nx + 0) * dim);
    const char* p1 = reinterpret_cast<const char*>(G + (rows ? rows[nx + 1] : r0 + nx + 1) * dim);
    const char* p2 = reinterpret_cast<const char*>(G + (rows ? rows[nx + 2] : r0 + nx + 2) * dim);
    const char* p3 = reinterpret_cast<const char*>(G + (rows ? rows[nx + 3] : r0 + nx + 3) * dim);
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
      for (int64_t d = 0; d < dim; d += 16) {
        if (q == 0) {
          const int64_t off = d * static_cast<int64_t>(sizeof(T));
          _mm_prefetch(p0 + off, _MM_HINT_T0);
          _mm_prefetch(p1 + off, _MM_HINT_T0);
          _mm_prefetch(p2 + off, _MM_HINT_T0);
          _mm_prefetch(p3 + off, _MM_HINT_T0);
        }
        const __m512 qv = load_f32(qp, d, dim, tail);
        a0 = _mm512_fmadd_ps(Load(g0, d, dim, tail), qv, a0);
        a1 = _mm512_fmadd_ps(Load(g1, d, dim, tail), qv, a1);
        a2 = _mm512_fmadd_ps(Load(g2, d, dim, tail), qv, a2);
        a3 = _mm512_fmadd_ps(Load(g3, d, dim, tail), qv, a3);
      }
      float* o = out + q * ldo + i;
      o[0] = _mm512_reduce_add_ps(a0);
      o[1] = _mm512_reduce_add_ps(a1);
      o[2] = _mm512_reduce_add_ps(a2);
      o[3] = _mm512_reduce_add_ps(a3);
    }
  }
  for (; i < nr; ++i) {
    const T* g0 = G + (rows ? rows[i] : r0 + i) * dim;
    for (int64_t q = 0; q < nq; ++q) {
      const float* qp = Q + q * dim;
      __m512 a0 = _mm512_setzero_ps();
      for (int64_t d = 0; d < dim; d += 16) a0 = _mm512_fmadd_ps(Load(g0, d, dim, tail), load_f32(qp, d, dim, tail), a0);
      out[q * ldo + i] = _mm512_reduce_add_ps(a0);
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
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_mask_loadu_epi16(_mm256_setzero_si256(), m, src + i)));
  }
}

int64_t select_ge(const float* s, int64_t n, float thr, int32_t* idx) {
  const __m512 t = _mm512_set1_ps(thr);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t cnt = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + i), t, _CMP_GE_OQ);
    if (m) {
      _mm512_mask_compressstoreu_epi32(idx + cnt, m, iv);
      cnt += __builtin_popcount(m);
    }
    iv = _mm512_add_epi32(iv, step);
  }
  if (i < n) {
    const __mmask16 lm = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(lm, _mm512_mask_loadu_ps(_mm512_setzero_ps(), lm, s + i), t, _CMP_GE_OQ);
    if (m) {
      _mm512_mask_compressstoreu_epi32(idx + cnt, m, iv);
      cnt += __builtin_popcount(m);
    }
  }
  return cnt;
}

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = {"avx512", score_f32, score_f16, widen_f16, select_ge};
  return k;
}

}  // namespace kern
}  // namespace search
}  // namespace fc
