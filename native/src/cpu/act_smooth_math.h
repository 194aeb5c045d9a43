// @file act_smooth_math.h
// @brief The vector formulas of the smooth activations (SiLU, sigmoid, GELU) on the CPU, written once
// over a small set of vector operations `O` and included INSIDE an anonymous namespace by
// act_smooth.cc (portable: SSE2, or plain floats off x86), act_smooth_avx2.cc (8 lanes) and
// act_smooth_avx512.cc (16 lanes), so every instantiation stays local to its file and its -m flags
// (see gemm_internal.h on why no inline code may be shared with those files). No #include here: the
// including file brings <cstdint>.
//
// The operations O provides (V: float vector, I: int32 vector, M: lane mask; kW lanes):
//   load store load_part store_part (the first k < kW lanes), set(f), add sub mul div neg abs,
//   fma(a, b, c) = a·b + c (fused on AVX2/AVX-512, two roundings on the portable path),
//   min_c(v, c) = v < c ? v : c and max_c(v, c) = v > c ? v : c (NaN gives c, as vminps/vmaxps),
//   lt(a, b), is_nan(a), select(m, a, b) = m ? a : b, select_i, zero_i, and_bits(v, mask),
//   round(v) (to nearest even), to_int(v) (truncating), to_float(i), min_i(i, c),
//   lookup32(table, i) = table[i] (i in [0, 32)), scale(v, i) = v·2^i rounded ONCE (also into the
//   subnormals) for i in [−216, 0] (vscalefps; the portable/AVX2 form multiplies by 2^(i/2), exact
//   as v·2^(i/2) stays normal for every v the formulas pass, then by 2^(i − i/2)).
//
// Every element goes through the same operations whatever its position (the drivers mask the tail
// instead of finishing it in scalar code), so results depend only on the inputs and the SIMD level
// (levels differ in the last bits: FMA or not).
//
// Formulas (u = |x|; every e^−a is computed as (1 + e)·2^n, 1 + e in [0.7, 1.42], and the 2^n applied
// last, so results that land in the subnormals are rounded once):
//   e^−a, a = ah + al (ah in [0, 150], |al| tiny): Cody–Waite n = round(−ah·log2 e),
//     r = −ah − n·ln2 − al (n·ln2hi and the subtraction exact), e = r + r²·q(r) with q a degree-4
//     minimax fit (relative error of 1 + e: 3.2e-9 before rounding; scripts/fit_act_smooth.py
//     checks it and can refit). 1 + e is not rounded where a product X·(1 + e) follows:
//     fma(X, e, X) is one rounding.
//   σ(x): t = e^−u, d = 1 + t (one rounding); σ = 1/d for x >= 0, t/d for x < 0 (no cancellation).
//   σ'(x) = σ(x)σ(−x) = t/d² (symmetric: accurate in both tails, unlike σ(1 − σ)).
//   SiLU(x) = x·σ(x); SiLU'(x) = σ(x)·(1 + x·σ(−x)).
//   Φ(−u) = e^−u²/2 · Q(u), Q(u) = e^(u²/2)·erfc(u/√2)/2 smooth and positive: 32 intervals
//     [k/2, k/2 + 1/2), u >= 16 clamped into the last (Φ(−16)·16 ≈ 1e-56 is 0 in float), each a
//     degree-6 polynomial in s = u − k/2 − 1/4 (exact for u >= 1/4), minimax in relative error with
//     the constant term as a float pair and the others rounded to float one by one and refitted
//     (fit error < 5.1e-9, checked by scripts/fit_act_smooth.py; Q within 0.8 ulp as evaluated).
//     u² is split exactly (u = uh + ul, uh the top 12 significant bits, uh² exact) so e^−u²/2 does
//     not lose the u²·2^-24 a rounded u² would.
//   GELU(x) = x·Φ(x) = −u·Φ(−u) for x < 0, x·(1 − Φ(−u)) for x >= 0 (the left tail relatively
//     accurate down to the subnormals, where 1 + erf(x/√2) would cancel).
//   GELU'(x) = Φ(x) + x·φ(x) = e^−u²/2·(Q(u) − u/√(2π)) for x < 0, 1 − the same for x >= 0.
// Accuracy (float64 reference, every 5th float with |x| < 128; the tails in native/tests' sweep): y
// within 2.8 ulp; dx (dy = 1) within 4.2 ulp of the magnitude of its terms (SiLU' and GELU' cross
// zero, where no relative bound holds).
// Limits: NaN in x gives that NaN (y and dx); σ(−inf) = 0, σ(+inf) = 1, SiLU(−inf) = −0,
// SiLU(+inf) = +inf, GELU(−inf) = −0, GELU(+inf) = +inf; the derivatives go to ±0 or 1 (no inf·0).

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;        // 15 significant bits: n·kLn2Hi exact for |n| < 512
constexpr float kLn2Lo = 1.42860682030941723212e-6f;  // ln 2 − kLn2Hi
constexpr float kInvSqrt2Pi = 0.398942280401432677940f;
constexpr float kExpC[5] = {4.9999994040e-01f, 1.6666521132e-01f, 4.1668262333e-02f, 8.3686700091e-03f,
                            1.3821023749e-03f};  // q(r) = c0 + c1·r + ... + c4·r⁴
constexpr float kSigClamp = 150.0f;  // σ, SiLU: u above it changes nothing (e^−150 is 0 in float)
constexpr float kGeluClamp = 16.0f;  // GELU: Φ(−16)·16 ≈ 1e-56 is 0 in float

// Q(u) on [k/2, k/2 + 1/2): kQ[0][k] + kQ[1][k] + Σ_j kQ[j + 1][k]·s^j, s = u − (k/2 + 1/4).
constexpr float kQ[8][32] = {
    {  // s^0 (high part)
     4.140321016e-01f, 3.002324700e-01f, 2.307603210e-01f, 1.852316707e-01f,
     1.536519378e-01f, 1.307247281e-01f, 1.134520620e-01f, 1.000392064e-01f,
     8.935932070e-02f, 8.067540079e-02f, 7.348822802e-02f, 6.744923443e-02f,
     6.230848655e-02f, 5.788263306e-02f, 5.403435975e-02f, 5.065898225e-02f,
     4.767538980e-02f, 4.501983151e-02f, 4.264155030e-02f, 4.049964994e-02f,
     3.856084496e-02f, 3.679777309e-02f, 3.518773988e-02f, 3.371177241e-02f,
     3.235389665e-02f, 3.110055998e-02f, 2.994020283e-02f, 2.886289544e-02f,
     2.786006965e-02f, 2.692429163e-02f, 2.604908310e-02f, 2.522876859e-02f,
    },
    {  // s^0 (low part)
     1.496128998e-09f, -7.658647938e-09f, 2.930799770e-10f, -6.056836810e-09f,
     -4.179064317e-10f, 5.993487484e-09f, 1.185983256e-10f, 3.190259390e-09f,
     -2.080488004e-09f, -1.620999335e-09f, 2.829642298e-09f, -3.074562160e-09f,
     3.573160656e-10f, -1.336336708e-09f, -3.438962448e-10f, 8.808277024e-11f,
     9.300554216e-10f, 1.492853507e-09f, -8.583984079e-10f, 3.634465506e-10f,
     1.281054263e-09f, 1.034448846e-10f, -1.039171971e-09f, 2.352416872e-12f,
     -4.812591436e-10f, 6.118860973e-10f, -5.387269519e-10f, -8.263707496e-10f,
     -4.361161432e-10f, 7.012658232e-10f, 6.582852596e-10f, 6.606913350e-10f,
    },
    {  // s^1
     -2.954342961e-01f, -1.737679541e-01f, -1.104918867e-01f, -7.478687167e-02f,
     -5.322542042e-02f, -3.944926336e-02f, -3.022307903e-02f, -2.379524522e-02f,
     -1.916517690e-02f, -1.573413424e-02f, -1.312906854e-02f, -1.110920031e-02f,
     -9.514236823e-03f, -8.234516717e-03f, -7.193174679e-03f, -6.335167214e-03f,
     -5.620306823e-03f, -5.018741824e-03f, -4.507948179e-03f, -4.070689902e-03f,
     -3.693606472e-03f, -3.366218647e-03f, -3.080218565e-03f, -2.828954486e-03f,
     -2.607052447e-03f, -2.410132904e-03f, -2.234600019e-03f, -2.077479381e-03f,
     -1.936294138e-03f, -1.808968605e-03f, -1.693753060e-03f, -1.589164720e-03f,
    },
    {  // s^2
     1.700867265e-01f, 8.495325595e-02f, 4.632273689e-02f, 2.717732452e-02f,
     1.694737002e-02f, 1.111963298e-02f, 7.613528520e-03f, 5.403521936e-03f,
     3.953659907e-03f, 2.969130641e-03f, 2.280310728e-03f, 1.785665285e-03f,
     1.422252040e-03f, 1.149823540e-03f, 9.419214912e-04f, 7.807178772e-04f,
     6.539293681e-04f, 5.529218470e-04f, 4.715150280e-04f, 4.052117583e-04f,
     3.506900393e-04f, 3.054619592e-04f, 2.676406293e-04f, 2.357783233e-04f,
     2.087523753e-04f, 1.856833260e-04f, 1.658760593e-04f, 1.487763802e-04f,
     1.339388546e-04f, 1.210028859e-04f, 1.096744381e-04f, 9.971222607e-05f,
    },
    {  // s^3
     -8.429803699e-02f, -3.668197244e-02f, -1.752862893e-02f, -9.075104259e-03f,
     -5.031281151e-03f, -2.956625773e-03f, -1.826326479e-03f, -1.177281025e-03f,
     -7.873317227e-04f, -5.435930216e-04f, -3.858042182e-04f, -2.805299300e-04f,
     -2.084126754e-04f, -1.577069052e-04f, -1.214150034e-04f, -9.487366333e-05f,
     -7.513521996e-05f, -6.021348236e-05f, -4.880268898e-05f, -3.995982843e-05f,
     -3.300992830e-05f, -2.749400846e-05f, -2.308013245e-05f, -1.952265120e-05f,
     -1.660655471e-05f, -1.422065452e-05f, -1.224699463e-05f, -1.060318300e-05f,
     -9.221926121e-06f, -8.057026207e-06f, -7.075588201e-06f, -6.234210105e-06f,
    },
    {  // s^4
     3.725314885e-02f, 1.435944159e-02f, 6.102525629e-03f, 2.823678311e-03f,
     1.406738767e-03f, 7.470931741e-04f, 4.194519715e-04f, 2.471078187e-04f,
     1.518196368e-04f, 9.676843183e-05f, 6.370203482e-05f, 4.313775207e-05f,
     2.996313015e-05f, 2.127194966e-05f, 1.541558413e-05f, 1.137262370e-05f,
     8.527305909e-06f, 6.486336133e-06f, 5.001857062e-06f, 3.905028734e-06f,
     3.081758450e-06f, 2.456159109e-06f, 1.976546400e-06f, 1.605843977e-06f,
     1.313215193e-06f, 1.083049256e-06f, 8.996721590e-07f, 7.515620837e-07f,
     6.321095043e-07f, 5.343871976e-07f, 4.545029242e-07f, 3.882375950e-07f,
    },
    {  // s^5
     -1.520605013e-02f, -5.250638817e-03f, -2.003190108e-03f, -8.362443768e-04f,
     -3.747648152e-04f, -1.827582455e-04f, -9.346887964e-05f, -5.108959158e-05f,
     -2.902558299e-05f, -1.675219755e-05f, -1.039901781e-05f, -6.658518487e-06f,
     -3.908323833e-06f, -3.199112371e-06f, -1.926804316e-06f, -1.273617954e-06f,
     -8.887101899e-07f, -8.423273243e-07f, -6.191339139e-07f, -3.596851741e-07f,
     -3.012189893e-07f, -3.057958793e-07f, -2.585790639e-07f, -9.362640441e-08f,
     -1.727496652e-07f, -1.186638414e-07f, -7.087604104e-08f, -3.039726693e-08f,
     -4.162897582e-08f, -5.630414890e-08f, 8.939847973e-09f, -6.394964558e-10f,
    },
    {  // s^6
     5.625126883e-03f, 1.765256282e-03f, 6.107133231e-04f, 2.320923086e-04f,
     9.491183300e-05f, 4.251314022e-05f, 1.986632014e-05f, 1.003173293e-05f,
     5.313426755e-06f, 2.874768825e-06f, 1.601877671e-06f, 9.688861837e-07f,
     5.270490533e-07f, 4.259194668e-07f, 2.449208694e-07f, 1.570163306e-07f,
     1.011527715e-07f, 9.095072073e-08f, 5.986110097e-08f, 2.968866397e-08f,
     2.344894767e-08f, 2.828961598e-08f, 2.482654438e-08f, 5.828201477e-09f,
     1.623530288e-08f, 1.016499329e-08f, 3.490012501e-09f, 4.886147487e-09f,
     1.986873333e-09f, 2.676345368e-09f, -1.194611965e-09f, -5.508695167e-10f,
    },
};

// e^−(ah + al) = (1 + e)·2^n for ah in [0, 150], |al| <= 1e-5·ah (al = 0 allowed).
template <class O>
inline void exp_neg(typename O::V ah, typename O::V al, typename O::V& e, typename O::I& n) {
  using V = typename O::V;
  const V nf = O::round(O::mul(ah, O::set(-kLog2e)));
  V r = O::fma(nf, O::set(-kLn2Hi), O::neg(ah));  // exact (Sterbenz)
  r = O::fma(nf, O::set(-kLn2Lo), r);
  r = O::sub(r, al);
  V q = O::set(kExpC[4]);
  q = O::fma(q, r, O::set(kExpC[3]));
  q = O::fma(q, r, O::set(kExpC[2]));
  q = O::fma(q, r, O::set(kExpC[1]));
  q = O::fma(q, r, O::set(kExpC[0]));
  e = O::fma(q, O::mul(r, r), r);
  n = O::to_int(nf);
}

// e^−u²/2 = (1 + e)·2^n and Q(u), for u in [0, kGeluClamp].
template <class O>
inline typename O::V gelu_parts(typename O::V u, typename O::V& e, typename O::I& n) {
  using V = typename O::V;
  using I = typename O::I;
  const V uh = O::and_bits(u, 0xFFFFF000u);  // top 12 significant bits: uh² exact
  const V ul = O::sub(u, uh);
  const V ah = O::mul(O::mul(uh, uh), O::set(0.5f));
  const V al = O::mul(O::mul(ul, O::add(u, uh)), O::set(0.5f));  // (u² − uh²)/2
  exp_neg<O>(ah, al, e, n);
  const I k = O::min_i(O::to_int(O::mul(u, O::set(2.0f))), 31);
  const V s = O::fma(O::to_float(k), O::set(-0.5f), O::sub(u, O::set(0.25f)));  // exact for u >= 1/4
  V q = O::lookup32(kQ[7], k);
  for (int j = 6; j >= 2; --j) q = O::fma(q, s, O::lookup32(kQ[j], k));
  return O::add(O::lookup32(kQ[0], k), O::fma(q, s, O::lookup32(kQ[1], k)));
}

template <class O>
inline typename O::V sigmoid_fwd(typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  V e;
  I n;
  exp_neg<O>(O::min_c(O::abs(x), kSigClamp), O::set(0.0f), e, n);
  const V p = O::add(O::set(1.0f), e);
  const V pw = O::scale(O::set(1.0f), n);
  const V d = O::fma(e, pw, O::add(O::set(1.0f), pw));  // 1 + t in one rounding
  const typename O::M neg = O::lt(x, O::set(0.0f));
  const V y = O::scale(O::div(O::select(neg, p, O::set(1.0f)), d), O::select_i(neg, n, O::zero_i()));
  return O::select(O::is_nan(x), x, y);
}

template <class O>
inline typename O::V sigmoid_bwd(typename O::V dy, typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  V e;
  I n;
  exp_neg<O>(O::min_c(O::abs(x), kSigClamp), O::set(0.0f), e, n);
  const V pw = O::scale(O::set(1.0f), n);
  const V d = O::fma(e, pw, O::add(O::set(1.0f), pw));  // 1 + t in one rounding
  const V w = O::div(O::set(1.0f), O::mul(d, d));
  const V ds = O::scale(O::fma(e, w, w), n);  // t/d² = (1 + e)·2^n/d²
  return O::select(O::is_nan(x), x, O::mul(dy, ds));
}

template <class O>
inline typename O::V silu_fwd(typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  V e;
  I n;
  exp_neg<O>(O::min_c(O::abs(x), kSigClamp), O::set(0.0f), e, n);
  const V pw = O::scale(O::set(1.0f), n);
  const V d = O::fma(e, pw, O::add(O::set(1.0f), pw));  // 1 + t in one rounding
  const typename O::M neg = O::lt(x, O::set(0.0f));
  const V xc = O::max_c(x, -kSigClamp);  // SiLU(−inf) = −0, not −inf·0
  const V y = O::scale(O::div(O::select(neg, O::fma(xc, e, xc), x), d), O::select_i(neg, n, O::zero_i()));
  return O::select(O::is_nan(x), x, y);
}

template <class O>
inline typename O::V silu_bwd(typename O::V dy, typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  V e;
  I n;
  exp_neg<O>(O::min_c(O::abs(x), kSigClamp), O::set(0.0f), e, n);
  const V p = O::add(O::set(1.0f), e);
  const V one = O::set(1.0f);
  const V pw = O::scale(one, n);
  const V t = O::fma(e, pw, pw);
  const V d = O::fma(e, pw, O::add(one, pw));  // 1 + t in one rounding
  const typename O::M neg = O::lt(x, O::set(0.0f));
  // x >= 0: σ(x) = 1/d, σ(−x) = t/d;  x < 0: σ(x) = p/d (·2^n), σ(−x) = 1/d.
  const V sx = O::div(O::select(neg, p, one), d);
  const V smx = O::div(O::select(neg, one, t), d);
  const V xc = O::min_c(O::max_c(x, -kSigClamp), kSigClamp);
  const V f = O::scale(O::mul(sx, O::fma(xc, smx, one)), O::select_i(neg, n, O::zero_i()));
  return O::select(O::is_nan(x), x, O::mul(dy, f));
}

template <class O>
inline typename O::V gelu_fwd(typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  const V u = O::min_c(O::abs(x), kGeluClamp);
  V e;
  I n;
  const V q = gelu_parts<O>(u, e, n);
  const V uq = O::mul(O::neg(u), q);
  const V yneg = O::scale(O::fma(uq, e, uq), n);                               // −u·Φ(−u) (−0 if it underflows)
  const V ypos = O::mul(x, O::sub(O::set(1.0f), O::scale(O::fma(q, e, q), n)));  // x·(1 − Φ(−u))
  const V y = O::select(O::lt(x, O::set(0.0f)), yneg, ypos);
  return O::select(O::is_nan(x), x, y);
}

template <class O>
inline typename O::V gelu_bwd(typename O::V dy, typename O::V x) {
  using V = typename O::V;
  using I = typename O::I;
  const V u = O::min_c(O::abs(x), kGeluClamp);
  V e;
  I n;
  const V q = gelu_parts<O>(u, e, n);
  const V dq = O::fma(u, O::set(-kInvSqrt2Pi), q);
  const V dn = O::scale(O::fma(dq, e, dq), n);  // e^−u²/2·(Q − u/√(2π))
  const V f = O::select(O::lt(x, O::set(0.0f)), dn, O::sub(O::set(1.0f), dn));
  return O::select(O::is_nan(x), x, O::mul(dy, f));
}

// ---- drivers: O::kW lanes at a time, the last n mod kW through O::load_part / O::store_part (masked),
// so a value's operations do not depend on where it sits in the chunk.

template <class O, typename O::V (*F)(typename O::V)>
void map_forward(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + O::kW <= n; i += O::kW) O::store(y + i, F(O::load(x + i)));
  if (i < n) O::store_part(y + i, F(O::load_part(x + i, n - i)), n - i);
}

template <class O, typename O::V (*F)(typename O::V, typename O::V)>
void map_backward(const float* dy, const float* x, float* dx, int64_t n) {
  int64_t i = 0;
  for (; i + O::kW <= n; i += O::kW) O::store(dx + i, F(O::load(dy + i), O::load(x + i)));
  if (i < n) O::store_part(dx + i, F(O::load_part(dy + i, n - i), O::load_part(x + i, n - i)), n - i);
}

// The kernel table of one instruction set (its Ops), for kernels_portable/_avx2/_avx512.
template <class O>
Kernels make_kernels(const char* name) {
  return {name,
          map_forward<O, silu_fwd<O>>,
          map_forward<O, sigmoid_fwd<O>>,
          map_forward<O, gelu_fwd<O>>,
          map_backward<O, silu_bwd<O>>,
          map_backward<O, sigmoid_bwd<O>>,
          map_backward<O, gelu_bwd<O>>};
}
