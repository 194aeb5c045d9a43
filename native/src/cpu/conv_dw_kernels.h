// @file conv_dw_kernels.h
// @brief The depthwise forward kernels of conv_dw.h, written once with GCC/Clang vector extensions
// and included (inside an anonymous namespace) by conv_dw.cc, conv_dw_avx2.cc and conv_dw_avx512.cc,
// each compiled with its own ISA flags. No std:: templates here (see conv_dw.h).
//
// Scratch layout for one input plane: Hp = (OH − 1)·sh + KH padded rows; padded row r holds S = sw
// phase rows of Wq floats, P[(r·S + φ)·Wq + q] = input[r − ph][S·q + φ − pw] (0 outside the input).
// Output column ow, tap kj then reads P[(r·S + kj % S)·Wq + ow + kj / S]: contiguous in ow.
// Wq = ceil(OW / L)·L + (KW − 1)/S + 1 so that a whole vector of L columns never leaves the row.

// The vectors are passed by value between inlined helpers only (no ABI crossing).
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float dw_v16 __attribute__((vector_size(64)));
typedef float dw_v8 __attribute__((vector_size(32)));
typedef int dw_i16 __attribute__((vector_size(64)));

inline int64_t dw_lanes(const Args& a) { return a.OW <= 8 ? 8 : 16; }
inline int64_t dw_row_floats(const Args& a) {
  const int64_t L = dw_lanes(a);
  return (a.OW + L - 1) / L * L + (a.KW - 1) / a.sw + 1;
}
inline int64_t dw_padded_rows(const Args& a) { return (a.OH - 1) * a.sh + a.KH; }
inline int64_t dw_plane_floats(const Args& a) { return dw_padded_rows(a) * a.sw * dw_row_floats(a); }

template <class T>
inline T dw_load(const float* p) {
  T v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void dw_store(float* p, T v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// The first n < L lanes of a vector: masked on AVX-512, through a small buffer otherwise.
template <class T>
inline T dw_load_part(const float* p, int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const unsigned m = (1u << n) - 1;
  if (sizeof(T) == 64) {
    const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), p);
    T r;
    __builtin_memcpy(&r, &v, sizeof r);
    return r;
  } else {
    const __m256 v = _mm256_maskz_loadu_ps(static_cast<__mmask8>(m), p);
    T r;
    __builtin_memcpy(&r, &v, sizeof r);
    return r;
  }
#else
  float t[sizeof(T) / sizeof(float)] = {};
  for (int64_t i = 0; i < n; ++i) t[i] = p[i];
  return dw_load<T>(t);
#endif
}
template <class T>
inline void dw_store_part(float* p, T v, int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const unsigned m = (1u << n) - 1;
  if (sizeof(T) == 64) {
    __m512 t;
    __builtin_memcpy(&t, &v, sizeof t);
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>(m), t);
  } else {
    __m256 t;
    __builtin_memcpy(&t, &v, sizeof t);
    _mm256_mask_storeu_ps(p, static_cast<__mmask8>(m), t);
  }
#else
  float t[sizeof(T) / sizeof(float)];
  dw_store(t, v);
  for (int64_t i = 0; i < n; ++i) p[i] = t[i];
#endif
}

inline void dw_zero(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = 0.0f;
}

// dst[q] = src[2q] for q in [0, n); reads src[0, 2n) only.
inline void dw_even(float* __restrict dst, const float* __restrict src, int64_t n) {
  int64_t q = 0;
  const dw_i16 idx = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  for (; q + 16 <= n; q += 16) {
    const dw_v16 lo = dw_load<dw_v16>(src + 2 * q), hi = dw_load<dw_v16>(src + 2 * q + 16);
    dw_store(dst + q, __builtin_shuffle(lo, hi, idx));
  }
  if (q + 8 <= n) {
    typedef int dw_i8 __attribute__((vector_size(32)));
    const dw_i8 idx8 = {0, 2, 4, 6, 8, 10, 12, 14};
    const dw_v8 lo = dw_load<dw_v8>(src + 2 * q), hi = dw_load<dw_v8>(src + 2 * q + 8);
    dw_store(dst + q, __builtin_shuffle(lo, hi, idx8));
    q += 8;
  }
  for (; q < n; ++q) dst[q] = src[2 * q];
}

// Phase row φ of stride 2 holds iw = 2q + φ − pw: the q in [lo, hi) (within [0, Wq)) with iw in [0, W).
inline void dw_phase_range(int64_t W, int64_t pw, int phase, int64_t Wq, int64_t& lo, int64_t& hi) {
  const int64_t off = phase - pw;
  lo = off >= 0 ? 0 : (-off + 1) / 2;
  if (lo > Wq) lo = Wq;
  hi = (W - 1 - off) >= 0 ? (W - 1 - off) / 2 + 1 : 0;
  if (hi > Wq) hi = Wq;
  if (hi < lo) hi = lo;
}

// The input values of one plane xp (H×W) into their places in P. The other places of P (the
// padding) are zero and never written: dw_planes zeroes P once per call.
template <int S>
inline void dw_fill(const Args& a, const float* __restrict xp, float* __restrict P, int64_t Hp, int64_t Wq) {
  const int64_t H = a.H, W = a.W, ph = a.ph, pw = a.pw;
  const int64_t r0 = ph, r1 = ph + H < Hp ? ph + H : Hp;  // padded rows holding input rows
  for (int64_t r = r0; r < r1; ++r) {
    float* pr = P + r * S * Wq;
    const float* xr = xp + (r - ph) * W;
    if (S == 1) {
      __builtin_memcpy(pr + pw, xr, static_cast<decltype(sizeof(0))>(W) * sizeof(float));  // pw + W <= Wq
    } else {
      for (int phase = 0; phase < 2; ++phase) {
        float* d = pr + phase * Wq;
        int64_t lo, hi;
        dw_phase_range(W, pw, phase, Wq, lo, hi);
        // d[q] = s[2(q − lo)] for q in [lo, hi), s = the row from iw0 = 2·lo + phase − pw; the last
        // one is s[2n − 2], s[2n − 1] may be past the row (then the last one is copied alone).
        const int64_t n = hi - lo;
        if (n <= 0) continue;
        const float* s = xr + 2 * lo + phase - pw;
        if (W - (2 * lo + phase - pw) >= 2 * n) {
          dw_even(d + lo, s, n);
        } else {
          dw_even(d + lo, s, n - 1);
          d[hi - 1] = s[2 * (n - 1)];
        }
      }
    }
  }
}

// RB output rows starting at row0 = oh0·S of P (padded rows), written to yb (row pitch OW).
// acc[rb] = seed + Σ_{ki, kj} w[ki][kj]·P[row0 + rb·S + ki][φ(kj)][c0 + kj / S], taps in (ki, kj)
// order for every row of the block (so the block size never changes a bit).
template <class T, int K, int S, int RB>
inline void dw_rows(const float* __restrict P, int64_t Wq, const float* __restrict wl, float* __restrict yb,
                    int64_t OW, int64_t row0, bool first, float seed) {
  constexpr int L = sizeof(T) / sizeof(float);
  constexpr int NR = (RB - 1) * S + K;
  for (int64_t c0 = 0; c0 < OW; c0 += L) {
    const bool full = c0 + L <= OW;
    const int64_t nv = full ? L : OW - c0;
    T acc[RB];
#pragma GCC unroll 8
    for (int rb = 0; rb < RB; ++rb) {
      if (first) {
        acc[rb] = T{} + seed;
      } else if (full) {
        acc[rb] = dw_load<T>(yb + rb * OW + c0);
      } else {
        acc[rb] = dw_load_part<T>(yb + rb * OW + c0, nv);
      }
    }
    const float* pc = P + row0 * S * Wq + c0;
#pragma GCC unroll 32
    for (int rr = 0; rr < NR; ++rr) {
#pragma GCC unroll 16
      for (int kj = 0; kj < K; ++kj) {
        const T v = dw_load<T>(pc + (rr * S + kj % S) * Wq + kj / S);
#pragma GCC unroll 8
        for (int rb = 0; rb < RB; ++rb) {
          const int ki = rr - rb * S;
          if (ki >= 0 && ki < K) acc[rb] += wl[ki * K + kj] * v;
        }
      }
    }
#pragma GCC unroll 8
    for (int rb = 0; rb < RB; ++rb) {
      if (full) {
        dw_store(yb + rb * OW + c0, acc[rb]);
      } else {
        dw_store_part(yb + rb * OW + c0, acc[rb], nv);
      }
    }
  }
}

template <class T, int K, int S, int RB>
void dw_planes(const Args& a, int64_t p0, int64_t p1, float* P) {
  const int64_t Hp = dw_padded_rows(a), Wq = dw_row_floats(a), OH = a.OH, OW = a.OW, sh = a.sh;
  dw_zero(P, Hp * S * Wq);
  for (int64_t plane = p0; plane < p1; ++plane) {
    const int64_t n = plane / a.K, co = plane % a.K, ci0 = (co / a.Kg) * a.Cg;
    float* yp = a.y + plane * OH * OW;
    const float seed = a.bias ? a.bias[co] : 0.0f;
    for (int64_t cl = 0; cl < a.Cg; ++cl) {
      dw_fill<S>(a, a.x + (n * a.C + ci0 + cl) * a.H * a.W, P, Hp, Wq);
      float wl[K * K];
      const float* wk = a.w + (co * a.Cg + cl) * K * K;
      for (int i = 0; i < K * K; ++i) wl[i] = wk[i];
      const bool first = cl == 0;
      int64_t oh = 0;
      for (; oh + RB <= OH; oh += RB) dw_rows<T, K, S, RB>(P, Wq, wl, yp + oh * OW, OW, oh * sh, first, seed);
      for (; oh < OH; ++oh) dw_rows<T, K, S, 1>(P, Wq, wl, yp + oh * OW, OW, oh * sh, first, seed);
    }
  }
}

template <class T>
void dw_dispatch_lanes(const Args& a, int64_t p0, int64_t p1, float* P) {
  const int k = static_cast<int>(a.KH), s = static_cast<int>(a.sw);
#define FC_DW_CASE(K_, S_, RB_) \
  if (k == K_ && s == S_) return dw_planes<T, K_, S_, RB_>(a, p0, p1, P);
  FC_DW_CASE(3, 1, 4)
  FC_DW_CASE(3, 2, 4)
  FC_DW_CASE(5, 1, 4)
  FC_DW_CASE(5, 2, 4)
  FC_DW_CASE(7, 1, 4)
  FC_DW_CASE(7, 2, 2)
  FC_DW_CASE(9, 1, 4)
  FC_DW_CASE(9, 2, 2)
#undef FC_DW_CASE
}

inline void dw_run(const Args& a, int64_t p0, int64_t p1, float* P) {
  if (dw_lanes(a) == 8) {
    dw_dispatch_lanes<dw_v8>(a, p0, p1, P);
  } else {
    dw_dispatch_lanes<dw_v16>(a, p0, p1, P);
  }
}
