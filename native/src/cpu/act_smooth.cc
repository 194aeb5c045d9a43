// @file act_smooth.cc
// @brief The portable kernels of the smooth activations (act_smooth_math.h on SSE2, the x86-64
// baseline, or plain scalar floats elsewhere; no FMA) and the dispatch to the AVX2 / AVX-512 ones by
// fc::simd_level().
#include "cpu/act_smooth.h"

#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "facecuda/cpu_info.h"

namespace fc {
namespace nn {
namespace act_smooth {

namespace {

#if defined(__SSE2__)
// 4 lanes of SSE2 (the x86-64 baseline): no FMA (fma is a·b then + c, two roundings), selects by
// and/andnot/or, the table lookup through memory, the tail through a zero-padded 4-float buffer.
struct Ops {
  using V = __m128;
  using I = __m128i;
  using M = __m128;
  static constexpr int64_t kW = 4;

  static V load(const float* p) { return _mm_loadu_ps(p); }
  static void store(float* p, V v) { _mm_storeu_ps(p, v); }
  static V load_part(const float* p, int64_t k) {  // k < 4
    alignas(16) float b[4] = {0, 0, 0, 0};
    std::memcpy(b, p, static_cast<size_t>(k) * sizeof(float));
    return _mm_load_ps(b);
  }
  static void store_part(float* p, V v, int64_t k) {
    alignas(16) float b[4];
    _mm_store_ps(b, v);
    std::memcpy(p, b, static_cast<size_t>(k) * sizeof(float));
  }

  static V set(float f) { return _mm_set1_ps(f); }
  static V add(V a, V b) { return _mm_add_ps(a, b); }
  static V sub(V a, V b) { return _mm_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm_mul_ps(a, b); }
  static V div(V a, V b) { return _mm_div_ps(a, b); }
  static V neg(V a) { return _mm_xor_ps(a, _mm_set1_ps(-0.0f)); }
  static V fma(V a, V b, V c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static V abs(V a) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), a); }
  // minps/maxps return the second operand unless the comparison holds: NaN gives c.
  static V min_c(V v, float c) { return _mm_min_ps(v, _mm_set1_ps(c)); }
  static V max_c(V v, float c) { return _mm_max_ps(v, _mm_set1_ps(c)); }
  static M lt(V a, V b) { return _mm_cmplt_ps(a, b); }
  static M is_nan(V a) { return _mm_cmpunord_ps(a, a); }
  static V select(M m, V a, V b) { return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b)); }
  static I select_i(M m, I a, I b) {
    const I mi = _mm_castps_si128(m);
    return _mm_or_si128(_mm_and_si128(mi, a), _mm_andnot_si128(mi, b));
  }
  static I zero_i() { return _mm_setzero_si128(); }
  static V and_bits(V v, uint32_t mask) {
    return _mm_and_ps(v, _mm_castsi128_ps(_mm_set1_epi32(static_cast<int32_t>(mask))));
  }
  // Round to nearest even for |v| < 2^22: adding and subtracting 1.5·2^23.
  static V round(V v) {
    const V magic = _mm_set1_ps(12582912.0f);
    return _mm_sub_ps(_mm_add_ps(v, magic), magic);
  }
  static I to_int(V v) { return _mm_cvttps_epi32(v); }
  static V to_float(I i) { return _mm_cvtepi32_ps(i); }
  static I min_i(I a, int32_t c) {
    const I vc = _mm_set1_epi32(c), gt = _mm_cmpgt_epi32(a, vc);
    return _mm_or_si128(_mm_and_si128(gt, vc), _mm_andnot_si128(gt, a));
  }
  static V lookup32(const float* t, I i) {
    alignas(16) int32_t k[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(k), i);
    return _mm_setr_ps(t[k[0]], t[k[1]], t[k[2]], t[k[3]]);
  }
  static V pow2(I n) {  // n in [−126, 127]
    return _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n, _mm_set1_epi32(127)), 23));
  }
  // v·2^n in two steps, v·2^(n/2) exact for the v the formulas pass: one rounding.
  static V scale(V v, I n) {
    const I n1 = _mm_srai_epi32(_mm_sub_epi32(n, _mm_srli_epi32(n, 31)), 1);  // n/2 toward 0
    return _mm_mul_ps(_mm_mul_ps(v, pow2(n1)), pow2(_mm_sub_epi32(n, n1)));
  }
};
#else
// Plain scalar floats (no FMA contraction assumed: fma is a·b + c as written).
struct Ops {
  using V = float;
  using I = int32_t;
  using M = bool;
  static constexpr int64_t kW = 1;

  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V load_part(const float* p, int64_t) { return *p; }  // never called: kW = 1
  static void store_part(float* p, V v, int64_t) { *p = v; }

  static V set(float f) { return f; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V neg(V a) { return -a; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V abs(V a) { return and_bits(a, 0x7FFFFFFFu); }
  static V min_c(V v, float c) { return v < c ? v : c; }
  static V max_c(V v, float c) { return v > c ? v : c; }
  static M lt(V a, V b) { return a < b; }
  static M is_nan(V a) { return a != a; }
  static V select(M m, V a, V b) { return m ? a : b; }
  static I select_i(M m, I a, I b) { return m ? a : b; }
  static I zero_i() { return 0; }
  static V and_bits(V v, uint32_t mask) {
    uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    b &= mask;
    std::memcpy(&v, &b, sizeof b);
    return v;
  }
  static V round(V v) {  // to nearest even for |v| < 2^22 (no -ffast-math here)
    const float magic = 12582912.0f;
    return (v + magic) - magic;
  }
  static I to_int(V v) { return static_cast<int32_t>(v); }
  static V to_float(I i) { return static_cast<float>(i); }
  static I min_i(I a, int32_t c) { return a < c ? a : c; }
  static V lookup32(const float* t, I i) { return t[i]; }
  static V pow2(I n) {  // n in [−126, 127]
    const uint32_t b = static_cast<uint32_t>(n + 127) << 23;
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
  static V scale(V v, I n) {
    const I n1 = n / 2;
    return (v * pow2(n1)) * pow2(n - n1);
  }
};
#endif

#include "cpu/act_smooth_math.h"

}  // namespace

const Kernels& kernels_portable() {
  static const Kernels k = make_kernels<Ops>("portable");
  return k;
}

const Kernels* kernels_for(SimdLevel level) {
  if (static_cast<int>(level) > static_cast<int>(simd_level())) return nullptr;
  switch (level) {
    case SimdLevel::Avx512: return &kernels_avx512();
    case SimdLevel::Avx2: return &kernels_avx2();
    case SimdLevel::Portable: break;
  }
  return &kernels_portable();
}

const Kernels& kernels() {
  static const Kernels* k = kernels_for(simd_level());
  return *k;
}

}  // namespace act_smooth
}  // namespace nn
}  // namespace fc
