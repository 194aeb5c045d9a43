// @file head_kernels_avx512.cc
// @brief AVX-512 row kernels of the CPU margin head's element passes (head_kernels.cc dispatches to
// them when fc::simd_level() is Avx512; the portable versions there define the contract).
// All pointers are rows of `n` elements; sums accumulate in double (8 lanes, then a fixed-order
// horizontal sum), so results depend only on the data, not on threads.
// GCC 12's AVX-512 intrinsic headers read an `undefined` vector in many unmasked forms, which trips
// -Wmaybe-uninitialized at -O3 (a known header false positive): silenced around the include only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstdint>

namespace fc {
namespace head_avx512 {

namespace {

// exp(x) for x <= 0: Cody–Waite reduction, Cephes' degree-6 polynomial, 2^n by scalef; clamped at
// −88 (e^−88 ≈ 6e−39: negligible next to a row sum >= 1).
inline __m512 exp_nonpos(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_maskz_roundscale_ps(__mmask16(0xffff), _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u); }

// Horizontal sums/max through memory (a fixed order; avoids the GCC 12 intrinsics that read an
// undefined vector and trip -Wmaybe-uninitialized).
inline double hsum(__m512d v) {
  alignas(64) double a[8];
  _mm512_store_pd(a, v);
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
inline float hmax(__m512 v) {
  alignas(64) float a[16];
  _mm512_store_ps(a, v);
  float m = a[0];
  for (int i = 1; i < 16; ++i) m = a[i] > m ? a[i] : m;
  return m;
}
// The low / high 8 floats of v widened to double.
inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_maskz_extracti64x4_epi64(__mmask8(0xff), _mm512_castps_si512(v), 1)));
}

}  // namespace

// c[j] *= wv[j]; z[j] = s·c[j]
void scale_logits(float* c, const float* wv, int64_t n, float s, float* z) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask(n - j);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, c + j), _mm512_maskz_loadu_ps(k, wv + j));
    _mm512_mask_storeu_ps(c + j, k, v);
    _mm512_mask_storeu_ps(z + j, k, _mm512_mul_ps(v, vs));
  }
}

// *m = max_j z[j]; *sum = Σ_j exp(z[j] − *m)
void max_expsum(const float* z, int64_t n, float* m, double* sum) {
  __m512 vm = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask(n - j);
    vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, k, z + j));
  }
  const float mx = hmax(vm);
  const __m512 vmx = _mm512_set1_ps(mx);
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask(n - j);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, z + j), vmx)));
    acc0 = _mm512_add_pd(acc0, lo_pd(e));
    acc1 = _mm512_add_pd(acc1, hi_pd(e));
  }
  *m = mx;
  *sum = hsum(_mm512_add_pd(acc0, acc1));
}

// e[j] = exp(s·c[j] − m)·inv
void exp_scaled(const float* c, int64_t n, float s, float m, float inv, float* e) {
  const __m512 vs = _mm512_set1_ps(s), vm = _mm512_set1_ps(m), vi = _mm512_set1_ps(inv);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask(n - j);
    const __m512 x = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(k, c + j), vs, vm);
    _mm512_mask_storeu_ps(e + j, k, _mm512_mul_ps(exp_nonpos(x), vi));
  }
}

// Returns Σ_j e[j]·c[j] (double); cs[j] += e[j]·c[j] (double); then c[j] = e[j]·wv[j].
double grad_acc(float* c, const float* e, const float* wv, double* cs, int64_t n) {
  __m512d r0 = _mm512_setzero_pd(), r1 = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 ve = _mm512_loadu_ps(e + j), vc = _mm512_loadu_ps(c + j);
    const __m512d e0 = lo_pd(ve), e1 = hi_pd(ve), c0 = lo_pd(vc), c1 = hi_pd(vc);
    const __m512d g0 = _mm512_mul_pd(e0, c0), g1 = _mm512_mul_pd(e1, c1);
    r0 = _mm512_add_pd(r0, g0);
    r1 = _mm512_add_pd(r1, g1);
    _mm512_storeu_pd(cs + j, _mm512_add_pd(_mm512_loadu_pd(cs + j), g0));
    _mm512_storeu_pd(cs + j + 8, _mm512_add_pd(_mm512_loadu_pd(cs + j + 8), g1));
    _mm512_storeu_ps(c + j, _mm512_mul_ps(ve, _mm512_loadu_ps(wv + j)));
  }
  double rs = hsum(_mm512_add_pd(r0, r1));
  for (; j < n; ++j) {
    const double g = static_cast<double>(e[j]) * c[j];
    rs += g;
    cs[j] += g;
    c[j] = e[j] * wv[j];
  }
  return rs;
}

}  // namespace head_avx512
}  // namespace fc
