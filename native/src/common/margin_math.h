// @file margin_math.h
// @brief The margin function ψ(c) on one target cosine and its derivative ψ'(c) (SPEC §1.3, §3.2,
// §3.3), for the cosine-based margin family of fc::MarginKind. Shared by the CPU head and (later)
// the CUDA kernels: plain POD parameters, no std containers, FC_HOST_DEVICE, templated on the float
// type (the CPU head evaluates it in double; B evaluations per step).
//
//   Norm      ψ = c                                    ψ' = 1
//   Cos       ψ = c − m3                               ψ' = 1
//   Arc       ψ = cos(θ + m2), θ = arccos(ĉ)          ψ' = sin(θ + m2) / sin θ
//             fallback (c <= th = cos(π − m2)):  ψ = ĉ − mm, mm = sin(π − m2)·m2, ψ' = 1
//             easy_margin (c <= 0):               ψ = ĉ,      ψ' = 1
//             straight_through:                   ψ' = 1 everywhere (forward unchanged)
//   Combined  ψ = cos(m1·θ + m2) − m3                  ψ' = m1·sin(m1·θ + m2) / sin θ
//
// The angular kinds (Arc, Combined) first clamp c to ĉ ∈ [−1 + kCosClampEps, 1 − kCosClampEps]
// (kCosClampEps = 1e-6, heads.h) so θ and 1/sin θ stay finite at c = ±1; where the clamp cuts
// (c strictly outside the interval) ψ' = 0, as the clamp's own derivative is 0 there. All branches
// (also the linear fallback and easy-margin ones) use ĉ, so ψ is one function of ĉ.
// Straight-through keeps ψ' = 1 even where the clamp cuts (arcface_torch's recorded op is s·c).
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace fc {
namespace margin {

// Same values as fc::MarginKind (heads.h); repeated here so this header needs no host-only include.
enum : int { kNorm = 0, kCos = 1, kArc = 2, kCombined = 3 };

template <typename T>
struct MarginFn {
  int kind = kNorm;
  T m1 = 1, m2 = 0, m3 = 0;
  bool easy_margin = false, fallback = true, straight_through = false;
  T th = 0, mm = 0;         // Arc fallback: cos(π − m2), sin(π − m2)·m2
  T lo = -1, hi = 1;        // the clamp interval of the angular kinds
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
  return f;
}

// Returns ψ(c) and writes ψ'(c) to *dpsi (when dpsi is not null).
template <typename T>
FC_HOST_DEVICE inline T margin_psi_eval(const MarginFn<T>& f, T c, T* dpsi) {
  using std::acos;
  using std::cos;
  using std::sin;
  using std::sqrt;
  if (f.kind == kNorm || f.kind == kCos) {
    if (dpsi) *dpsi = T(1);
    return f.kind == kCos ? c - f.m3 : c;
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
  } else {  // kCombined
    const T a = f.m1 * theta + f.m2;
    psi = cos(a) - f.m3;
    d = f.m1 * sin(a) / sin_t;
  }
  if (dpsi) *dpsi = d * gate;
  return psi;
}

}  // namespace margin
}  // namespace fc
