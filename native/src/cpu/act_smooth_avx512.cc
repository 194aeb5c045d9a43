// @file act_smooth_avx512.cc
// @brief The smooth activations' kernels (act_smooth_math.h) on 16-lane AVX-512 vectors: FMA,
// vpermt2ps for the 32-entry coefficient tables, vscalefps for the final 2^n (one rounding, also into
// the subnormals), masked loads/stores for the tail. act_smooth.cc dispatches here when
// fc::simd_level() is Avx512.
// GCC 12's AVX-512 intrinsic headers read an `undefined` vector in many unmasked forms, which trips
// -Wmaybe-uninitialized at -O3 (a known header false positive): silenced around the include only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/act_smooth.h"

namespace fc {
namespace nn {
namespace act_smooth {

namespace {

struct Ops {
  using V = __m512;
  using I = __m512i;
  using M = __mmask16;
  static constexpr int64_t kW = 16;

  static __mmask16 tail(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }  // k < 16
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V load_part(const float* p, int64_t k) { return _mm512_maskz_loadu_ps(tail(k), p); }
  static void store_part(float* p, V v, int64_t k) { _mm512_mask_storeu_ps(p, tail(k), v); }

  static V set(float f) { return _mm512_set1_ps(f); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V neg(V a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V abs(V a) { return and_bits(a, 0x7FFFFFFFu); }
  // vminps/vmaxps return the second operand unless the comparison holds: NaN gives c.
  static V min_c(V v, float c) { return _mm512_min_ps(v, _mm512_set1_ps(c)); }
  static V max_c(V v, float c) { return _mm512_max_ps(v, _mm512_set1_ps(c)); }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M is_nan(V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  static I select_i(M m, I a, I b) { return _mm512_mask_blend_epi32(m, b, a); }
  static I zero_i() { return _mm512_setzero_si512(); }
  static V and_bits(V v, uint32_t mask) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(static_cast<int32_t>(mask))));
  }
  static V round(V v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(V v) { return _mm512_cvttps_epi32(v); }
  static V to_float(I i) { return _mm512_cvtepi32_ps(i); }
  static I min_i(I a, int32_t c) { return _mm512_min_epi32(a, _mm512_set1_epi32(c)); }
  static V lookup32(const float* t, I i) {
    return _mm512_permutex2var_ps(_mm512_loadu_ps(t), i, _mm512_loadu_ps(t + 16));
  }
  static V scale(V v, I n) { return _mm512_scalef_ps(v, _mm512_cvtepi32_ps(n)); }
};

#include "cpu/act_smooth_math.h"

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k = make_kernels<Ops>("avx512");
  return k;
}

}  // namespace act_smooth
}  // namespace nn
}  // namespace fc
