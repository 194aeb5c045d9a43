// @file margin_math.h
// @brief The margin function ψ(c) on one target cosine and its derivative ψ'(c) (SPEC §1.3, §2,
// §3.2, §3.3, §4, §5), and the counter-based random numbers of ElasticFace and Partial FC. Shared by
// the CPU head and the CUDA kernels: plain POD parameters, no std containers, FC_HOST_DEVICE,
// templated on the float type (the heads evaluate it in double; B evaluations per step).
//
//   Norm      ψ = c                                    ψ' = 1
//   Cos       ψ = c − m3                               ψ' = 1
//   Arc       ψ = cos(θ + m2), θ = arccos(ĉ)          ψ' = sin(θ + m2) / sin θ
//             fallback (c <= th = cos(π − m2)):  ψ = ĉ − mm, mm = sin(π − m2)·m2, ψ' = 1
//             easy_margin (c <= 0):               ψ = ĉ,      ψ' = 1
//             straight_through:                   ψ' = 1 everywhere (forward unchanged)
//   Combined  ψ = cos(m1·θ + m2) − m3                  ψ' = m1·sin(m1·θ + m2) / sin θ
//   Ada       a = θ + m2 (g_ang), a' = clip(a, eps, π − eps), ψ = cos(a') − m3 (g_add)
//             ψ' = sin(a') / sin θ, 0 where the clip cuts (AdaFace head.py; g's are constants)
//   Sphere    φ = (λ·c + ψ_m(c)) / (1 + λ), ψ_m = (−1)^k·T_m(c) − 2k, k = floor(m·θ/π) in [0, m−1]
//             φ' = (λ + (−1)^k·m·U_{m−1}(c)) / (1 + λ)   (m = m1, λ = lambda; Chebyshev T and U, no
//             division, so no clamp is needed: c is only clipped to [−1, 1] against rounding)
//
// Arc, Combined and Ada first clamp c to ĉ ∈ [lo, hi] (lo = −1 + eps, hi = 1 − eps; eps = 1e-6, or
// AdaFace's 1e-3) so θ and 1/sin θ stay finite at c = ±1; where the clamp cuts (c strictly outside
// the interval) ψ' = 0, as the clamp's own derivative is 0 there. All branches use ĉ, so ψ is one
// function of ĉ. Straight-through keeps ψ' = 1 even where the clamp cuts (arcface_torch's recorded
// op is s·c).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace fc {
namespace margin {

// Same values as fc::MarginKind (heads.h) for the first four; repeated here so this header needs no
// host-only include. Elastic rows use kArc (no fallback) or kCos with a per-row margin; Softmax
// rows use kNorm with scale 1.
enum : int { kNorm = 0, kCos = 1, kArc = 2, kCombined = 3, kAda = 4, kSphere = 5 };

template <typename T>
struct MarginFn {
  int kind = kNorm;
  T m1 = 1, m2 = 0, m3 = 0;
  bool easy_margin = false, fallback = true, straight_through = false;
  T th = 0, mm = 0;         // Arc fallback: cos(π − m2), sin(π − m2)·m2
  T lo = -1, hi = 1;        // the clamp interval of the angular kinds
  T a_lo = 0, a_hi = 0;     // Ada: the clip interval of θ + m2 (eps, π − eps)
  T lambda = 0;             // Sphere
};

template <typename T>
FC_HOST_DEVICE inline MarginFn<T> make_margin_fn(int kind, T m1, T m2, T m3, bool easy_margin, bool fallback,
                                                 bool straight_through, T clamp_eps) {
  using std::cos;
  using std::sin;
  MarginFn<T> f;
  f.kind = kind;
  f.m1 = m1;
  f.m2 = m2;
  f.m3 = m3;
  f.easy_margin = easy_margin;
  f.fallback = fallback;
  f.straight_through = straight_through;
  const T pi = T(3.14159265358979323846);
  f.th = cos(pi - m2);
  f.mm = sin(pi - m2) * m2;
  f.lo = T(-1) + clamp_eps;
  f.hi = T(1) - clamp_eps;
  f.a_lo = clamp_eps;
  f.a_hi = pi - clamp_eps;
  return f;
}

// Returns ψ(c) and writes ψ'(c) to *dpsi (when dpsi is not null).
template <typename T>
FC_HOST_DEVICE inline T margin_psi_eval(const MarginFn<T>& f, T c, T* dpsi) {
  using std::acos;
  using std::cos;
  using std::floor;
  using std::sin;
  using std::sqrt;
  if (f.kind == kNorm || f.kind == kCos) {
    if (dpsi) *dpsi = T(1);
    return f.kind == kCos ? c - f.m3 : c;
  }
  if (f.kind == kSphere) {
    const T cc = c < T(-1) ? T(-1) : (c > T(1) ? T(1) : c);
    const int m = static_cast<int>(f.m1);
    const T pi = T(3.14159265358979323846);
    int k = static_cast<int>(floor(T(m) * acos(cc) / pi));
    k = k < 0 ? 0 : (k > m - 1 ? m - 1 : k);
    // T_m(c) and U_{m−1}(c) by the Chebyshev recurrences.
    T t0 = T(1), t1 = cc, u0 = T(1), u1 = T(2) * cc;
    for (int n = 1; n < m; ++n) {
      const T t2 = T(2) * cc * t1 - t0;
      t0 = t1;
      t1 = t2;
    }
    for (int n = 1; n < m - 1; ++n) {
      const T u2 = T(2) * cc * u1 - u0;
      u0 = u1;
      u1 = u2;
    }
    const T tm = m == 0 ? T(1) : t1;
    const T um1 = m <= 1 ? T(1) : u1;  // U_0 = 1
    const T sgn = (k & 1) ? T(-1) : T(1);
    const T psi_m = sgn * tm - T(2 * k);
    const T dpsi_m = sgn * T(m) * um1;
    if (dpsi) *dpsi = (f.lambda + dpsi_m) / (T(1) + f.lambda);
    return (f.lambda * cc + psi_m) / (T(1) + f.lambda);
  }
  // Angular kinds: clamp first; the clamp's derivative is 0 where it cuts.
  const bool cut = c < f.lo || c > f.hi;
  const T cc = c < f.lo ? f.lo : (c > f.hi ? f.hi : c);
  const T gate = cut ? T(0) : T(1);
  const T sin_t = sqrt((T(1) - cc) * (T(1) + cc));  // sin θ >= sqrt(clamp_eps) > 0
  const T theta = acos(cc);
  T psi, d;
  if (f.kind == kArc) {
    const bool linear = f.easy_margin ? !(cc > T(0)) : (f.fallback && !(cc > f.th));
    if (linear) {
      psi = f.easy_margin ? cc : cc - f.mm;
      d = T(1);
    } else {
      psi = cos(theta + f.m2);
      d = sin(theta + f.m2) / sin_t;
    }
    if (f.straight_through) {
      if (dpsi) *dpsi = T(1);
      return psi;
    }
  } else if (f.kind == kAda) {
    const T a = theta + f.m2;
    const bool clipped = a < f.a_lo || a > f.a_hi;
    const T ac = a < f.a_lo ? f.a_lo : (a > f.a_hi ? f.a_hi : a);
    psi = cos(ac) - f.m3;
    d = clipped ? T(0) : sin(ac) / sin_t;
  } else {  // kCombined
    const T a = f.m1 * theta + f.m2;
    psi = cos(a) - f.m3;
    d = f.m1 * sin(a) / sin_t;
  }
  if (dpsi) *dpsi = d * gate;
  return psi;
}

// ---- counter-based random numbers (identical on the CPU and the GPU: integer hashing, then one
// double-precision transform). Streams: 1 = ElasticFace margins, 2 = Partial FC sampling.
//   key(seed, stream, step) = mix(mix(mix(seed) ^ stream) ^ step)
//   uniform53(key, i)       = (mix(key ^ i) >> 11) · 2^−53                          in [0, 1)
//   normal(key, i)          = sqrt(−2·ln u1)·cos(2π·u2), u1 = ((mix(key ^ 2i) >> 11) + 1)·2^−53 (in (0, 1]),
//                             u2 = uniform53(key, 2i + 1)
// where mix is splitmix64's step: x += 0x9e3779b97f4a7c15, then the two xor-shift-multiply rounds.

FC_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

FC_HOST_DEVICE inline uint64_t rng_key(uint64_t seed, uint64_t stream, uint64_t step) {
  return mix64(mix64(mix64(seed) ^ stream) ^ step);
}

FC_HOST_DEVICE inline double rng_uniform(uint64_t key, uint64_t i) {
  return static_cast<double>(mix64(key ^ i) >> 11) * (1.0 / 9007199254740992.0);
}

FC_HOST_DEVICE inline double rng_normal(uint64_t key, uint64_t i) {
  const double u1 = (static_cast<double>(mix64(key ^ (2 * i)) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  const double u2 = rng_uniform(key, 2 * i + 1);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

constexpr uint64_t kStreamElastic = 1;
constexpr uint64_t kStreamSample = 2;

}  // namespace margin
}  // namespace fc
