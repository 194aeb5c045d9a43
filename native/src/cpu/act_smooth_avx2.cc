// @file act_smooth_avx2.cc
// @brief The smooth activations' kernels (act_smooth_math.h) on 8-lane AVX2 vectors: FMA, permutes
// and blends for the 32-entry coefficient tables, 2^n applied in two exact-then-rounded steps, masked
// loads/stores for the tail. act_smooth.cc dispatches here when fc::simd_level() is Avx2.
#include <immintrin.h>

#include <cstdint>

#include "cpu/act_smooth.h"

namespace fc {
namespace nn {
namespace act_smooth {

namespace {

struct Ops {
  using V = __m256;
  using I = __m256i;
  using M = __m256;
  static constexpr int64_t kW = 8;

  static __m256i tail(int64_t k) {  // lanes < k all ones
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V load_part(const float* p, int64_t k) { return _mm256_maskload_ps(p, tail(k)); }
  static void store_part(float* p, V v, int64_t k) { _mm256_maskstore_ps(p, tail(k), v); }

  static V set(float f) { return _mm256_set1_ps(f); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V neg(V a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  // vminps/vmaxps return the second operand unless the comparison holds: NaN gives c.
  static V min_c(V v, float c) { return _mm256_min_ps(v, _mm256_set1_ps(c)); }
  static V max_c(V v, float c) { return _mm256_max_ps(v, _mm256_set1_ps(c)); }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M is_nan(V a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
  static I select_i(M m, I a, I b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
  }
  static I zero_i() { return _mm256_setzero_si256(); }
  static V and_bits(V v, uint32_t mask) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(mask))));
  }
  static V round(V v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(V v) { return _mm256_cvttps_epi32(v); }
  static V to_float(I i) { return _mm256_cvtepi32_ps(i); }
  static I min_i(I a, int32_t c) { return _mm256_min_epi32(a, _mm256_set1_epi32(c)); }
  // table[i] for i in [0, 32): four in-register permutes (index bits 0–2) and blends on bits 3 and 4,
  // cheaper than vgatherdps (slow on CPUs with the gather-data-sampling mitigation).
  static V lookup32(const float* t, I i) {
    const V b3 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28));  // bit 3 in the sign bit
    const V b4 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 27));  // bit 4 in the sign bit
    const V lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(t), i),
                                  _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 8), i), b3);
    const V hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 16), i),
                                  _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 24), i), b3);
    return _mm256_blendv_ps(lo, hi, b4);
  }
  static V pow2(I n) {  // n in [−126, 127]
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  }
  // v·2^n in two exact-then-rounded steps (as the portable path): one rounding.
  static V scale(V v, I n) {
    const I n1 = _mm256_srai_epi32(_mm256_sub_epi32(n, _mm256_srli_epi32(n, 31)), 1);  // n/2 toward 0
    return _mm256_mul_ps(_mm256_mul_ps(v, pow2(n1)), pow2(_mm256_sub_epi32(n, n1)));
  }
};

#include "cpu/act_smooth_math.h"

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k = make_kernels<Ops>("avx2");
  return k;
}

}  // namespace act_smooth
}  // namespace nn
}  // namespace fc
