// @file gemm_avx512.cc
// @brief AVX-512 kernels of the SGEMM (compiled with -mavx512f/bw/vl/dq/bf16 -mfma; run only when
// kernels_for(Level::Avx512) says the CPU has them): the fp32 14x32 micro-kernel, the bf16 14x32
// micro-kernel on VDPBF16PS (used only when the CPU has AVX512_BF16), GEMV kernels and the FMA peak loop.
//
// Micro-kernel: 14 rows x 2 zmm columns = 28 accumulators, 2 zmm of B and one broadcast of A per
// row and k: 28 FMAs per 16 loads, which keeps both 512-bit FMA pipes of Zen 4/5 and Intel server
// cores busy (latency 4 x 2 pipes needs >= 8 independent chains), and reads the fewest bytes per
// FMA of the candidates (6.6 B; 12x32 7.3, 8x48 9.3, 6x64 11.7). Measured on Zen 5 (one core, FMA
// peak ~220 GFLOP/s): with panels in L1 all of 6x64, 8x48, 12x32 and 14x32 run at 220-222; in the
// full 2048^3 SGEMM at equal blocking (kc 768) 14x32 gave 197, 6x64 193, 8x48 192 GFLOP/s.
//
// No engine header with inline code is included here (see gemm_internal.h): everything is static.
// GCC 12 warns "__Y is used uninitialized" inside the unmasked forms of many AVX-512 intrinsics
// (their _mm512_undefined_ps() operand; GCC bug 105593). The location is in the header, so silencing
// it around the include leaves this file's own diagnostics on.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/gemm_internal.h"

namespace fc {
namespace gemm {
namespace {

constexpr int kMR = 14;  // rows of the register tile
constexpr int kNV = 2;   // zmm vectors (16 floats) across: nr = 32

inline __mmask16 tail_mask(int64_t cols) {
  return cols >= 16 ? static_cast<__mmask16>(0xFFFF)
                    : (cols <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << cols) - 1u));
}

// C(i, j) = alpha * acc + beta * C(i, j) for i < m, j < n; beta == 0: C is not read.
template <int MR, int NV>
inline void store_tile(__m512 (&acc)[MR][NV], float* c, int64_t ldc, int m, int n, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha);
  __mmask16 mk[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mk[v] = tail_mask(n - 16 * v);
  if (beta == 0.0f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i < m) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mk[v], _mm512_mul_ps(va, acc[i][v]));
      }
    }
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i < m) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          float* p = c + i * ldc + 16 * v;
          const __m512 old = _mm512_maskz_loadu_ps(mk[v], p);
          _mm512_mask_storeu_ps(p, mk[v], _mm512_fmadd_ps(va, acc[i][v], _mm512_mul_ps(vb, old)));
        }
      }
    }
  }
}

template <int MR, int NV>
inline void prefetch_c(const float* c, int64_t ldc, int m) {
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i < m) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * NV - 1), _MM_HINT_T0);
    }
  }
}

template <int MR, int NV>
void micro_f32(int64_t kc, const void* ap_, const void* bp_, int64_t ldbp, float* c, int64_t ldc, int m, int n,
               float alpha, float beta) {
  const float* ap = static_cast<const float*>(ap_);
  const float* bp = static_cast<const float*>(bp_);
  prefetch_c<MR, NV>(c, ldc, m);
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(ap[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    ap += MR;
    bp += ldbp;
  }
  store_tile<MR, NV>(acc, c, ldc, m, n, alpha, beta);
}

// bf16 operands in the pair layout; each VDPBF16PS adds a[2l]*b[2l] + a[2l+1]*b[2l+1] to lane l.
template <int MR, int NV>
void micro_bf16(int64_t kc, const void* ap_, const void* bp_, int64_t ldbp, float* c, int64_t ldc, int m, int n,
                float alpha, float beta) {
  const uint16_t* ap = static_cast<const uint16_t*>(ap_);
  const uint16_t* bp = static_cast<const uint16_t*>(bp_);
  prefetch_c<MR, NV>(c, ldc, m);
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const int64_t kp = (kc + 1) / 2;
#pragma GCC unroll 2
  for (int64_t k = 0; k < kp; ++k) {
    __m512bh b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_load_si512(bp + 32 * v);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      uint32_t pair;
      __builtin_memcpy(&pair, ap + 2 * i, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
    ap += 2 * MR;
    bp += ldbp;
  }
  store_tile<MR, NV>(acc, c, ldc, m, n, alpha, beta);
}

// Sum of the 16 lanes in a fixed order (halves folded: 8, 4, 2, 1).
inline float hsum(__m512 v) {
  __m512 s = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0xB1));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, 0xB1));
  return _mm512_cvtss_f32(s);
}

// In-register transpose: afterwards r[j] holds column j of the 16 x 16 block that r[0..15] held as
// rows (lane i of r[j] = old r[i][j]). Unpack within 128-bit lanes, then 4 x 4 transposes of lanes.
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // c[g][j]: lane l holds column 4l + j of rows 4g .. 4g+3.
  __m512 c[4][4];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    c[g][0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    c[g][1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    c[g][2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    c[g][3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 x0 = _mm512_shuffle_f32x4(c[0][j], c[1][j], 0x88), x1 = _mm512_shuffle_f32x4(c[0][j], c[1][j], 0xDD);
    const __m512 x2 = _mm512_shuffle_f32x4(c[2][j], c[3][j], 0x88), x3 = _mm512_shuffle_f32x4(c[2][j], c[3][j], 0xDD);
    r[j] = _mm512_shuffle_f32x4(x0, x2, 0x88);       // lane 0 of each c: column j
    r[8 + j] = _mm512_shuffle_f32x4(x0, x2, 0xDD);   // lane 2: column 8 + j
    r[4 + j] = _mm512_shuffle_f32x4(x1, x3, 0x88);   // lane 1: column 4 + j
    r[12 + j] = _mm512_shuffle_f32x4(x1, x3, 0xDD);  // lane 3: column 12 + j
  }
}

// fp32 panel packing (contract in gemm_internal.h): plain masked copies when the panel's outer
// index is contiguous, 16 x 16 register transposes when k is.
void pack_f32(const float* src, int64_t ld, bool k_contig, int64_t o0, int64_t on, int64_t k0, int64_t kn, int w,
              void* dst) {
  float* d = static_cast<float*>(dst);
  const int64_t panel = w * kn;
  if (!k_contig) {
    // Row k of the source block is contiguous: walk it across all panels, so memory is read in
    // long sequential runs that the hardware prefetcher follows.
    const float* s = src + k0 * ld + o0;
    for (int64_t k = 0; k < kn; ++k, s += ld) {
      float* dk = d + k * w;
      for (int64_t p0 = 0; p0 < on; p0 += w, dk += panel) {
        const int64_t rows = on - p0;
        for (int c = 0; c < w; c += 16)
          _mm512_mask_storeu_ps(dk + c, tail_mask(w - c), _mm512_maskz_loadu_ps(tail_mask(rows - c), s + p0 + c));
      }
    }
    return;
  }
  for (int64_t p0 = 0; p0 < on; p0 += w, d += panel) {
    const int rows = on - p0 < w ? static_cast<int>(on - p0) : w;
    for (int r0 = 0; r0 < w; r0 += 16) {
      const int rr = rows - r0;  // source rows present in this group (<= 0: all padding)
      const __mmask16 sm = tail_mask(w - r0);
      const float* s = src + (o0 + p0 + r0) * ld + k0;
      for (int64_t k = 0; k < kn; k += 16) {
        const int64_t kk = kn - k < 16 ? kn - k : 16;
        const __mmask16 km = tail_mask(kk);
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          if (i < rr) {
            _mm_prefetch(reinterpret_cast<const char*>(s + i * ld + k + 64), _MM_HINT_T0);
            r[i] = _mm512_maskz_loadu_ps(km, s + i * ld + k);
          } else {
            r[i] = _mm512_setzero_ps();
          }
        }
        transpose16(r);
        float* dk = d + k * w + r0;
        if (kk == 16) {
#pragma GCC unroll 16
          for (int j = 0; j < 16; ++j) _mm512_mask_storeu_ps(dk + j * w, sm, r[j]);
        } else {
#pragma GCC unroll 16
          for (int j = 0; j < 16; ++j)
            if (j < kk) _mm512_mask_storeu_ps(dk + j * w, sm, r[j]);
        }
      }
    }
  }
}

// bf16 pair panels (VDPBF16PS operand order): uint16 d[(k / 2) * 2w + 2 * o + (k % 2)], rounded to
// nearest even by VCVTNE2PS2BF16. Every element goes through the vector conversion (tails are
// masked, never scalar), so an element packs the same way wherever it sits in a panel.
void pack_bf16(const float* src, int64_t ld, bool k_contig, int64_t o0, int64_t on, int64_t k0, int64_t kn, int w,
               void* dst) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const int64_t kp = (kn + 1) / 2;
  const int64_t panel = 2 * w * kp;  // uint16 per panel
  if (!k_contig) {
    // Rows k and k+1 of the block are contiguous over o: convert both, interleave into 32-bit pairs.
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                                21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int64_t q = 0; q < kp; ++q) {
      const float* s0 = src + (k0 + 2 * q) * ld + o0;
      const float* s1 = s0 + ld;
      const bool second = 2 * q + 1 < kn;
      uint16_t* dq = d + q * 2 * w;
      for (int64_t p0 = 0; p0 < on; p0 += w, dq += panel) {
        const int64_t rows = on - p0;
        for (int c = 0; c < w; c += 16) {
          const __mmask16 lm = tail_mask(rows - c);
          const __m512 a = _mm512_maskz_loadu_ps(lm, s0 + p0 + c);
          const __m512 b = second ? _mm512_maskz_loadu_ps(lm, s1 + p0 + c) : _mm512_setzero_ps();
          const __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // words 0..15 = a, 16..31 = b
          _mm512_mask_storeu_epi32(dq + 2 * c, tail_mask(w - c), _mm512_permutexvar_epi16(interleave, ab));
        }
      }
    }
    return;
  }
  // k contiguous per o: 32 consecutive k of a row convert to 16 pairs (32-bit units); a 16 x 16
  // transpose of those units puts pair j of 16 rows together.
  for (int64_t p0 = 0; p0 < on; p0 += w, d += panel) {
    const int rows = on - p0 < w ? static_cast<int>(on - p0) : w;
    for (int r0 = 0; r0 < w; r0 += 16) {
      const int rr = rows - r0;
      const __mmask16 sm = tail_mask(w - r0);
      const float* s = src + (o0 + p0 + r0) * ld + k0;
      for (int64_t k = 0; k < kn; k += 32) {
        const int64_t kk = kn - k < 32 ? kn - k : 32;
        const __mmask16 m0 = tail_mask(kk), m1 = tail_mask(kk - 16);
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          if (i < rr) {
            const float* si = s + i * ld + k;
            _mm_prefetch(reinterpret_cast<const char*>(si + 128), _MM_HINT_T0);
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, si + 16), _mm512_maskz_loadu_ps(m0, si));
            r[i] = (__m512)v;
          } else {
            r[i] = _mm512_setzero_ps();
          }
        }
        transpose16(r);
        const int64_t np = (kk + 1) / 2;
        uint16_t* dk = d + (k / 2) * 2 * w + 2 * r0;
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
          if (j < np) _mm512_mask_storeu_epi32(dk + j * 2 * w, sm, _mm512_castps_si512(r[j]));
      }
    }
  }
}

inline float out_value(float acc, float y, float alpha, float beta) {
  return beta == 0.0f ? alpha * acc : __builtin_fmaf(alpha, acc, beta * y);
}

void gemv_dot(int64_t K, const float* x, const float* a, int64_t lda, int64_t rows, float* y, int64_t incy,
              float alpha, float beta) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v)
        s[v] = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16 * v), _mm512_loadu_ps(ar + k + 16 * v), s[v]);
    }
    for (int v = 0; k < K; ++v, k += 16) {
      const __mmask16 mk = tail_mask(K - k);
      s[v] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x + k), _mm512_maskz_loadu_ps(mk, ar + k), s[v]);
    }
    const float t = hsum(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
    float* yr = y + r * incy;
    *yr = out_value(t, beta == 0.0f ? 0.0f : *yr, alpha, beta);
  }
}

// Writes alpha * acc + beta * y for `w` (<= 16) outputs starting at y (stride incy).
inline void axpy_out(__m512 acc, float* y, int64_t incy, int64_t w, float alpha, float beta) {
  const __mmask16 mk = tail_mask(w);
  const __m512 va = _mm512_set1_ps(alpha);
  if (incy == 1) {
    const __m512 r = beta == 0.0f ? _mm512_mul_ps(va, acc)
                                  : _mm512_fmadd_ps(va, acc, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mk, y)));
    _mm512_mask_storeu_ps(y, mk, r);
    return;
  }
  alignas(64) float t[16];
  _mm512_store_ps(t, acc);
  for (int64_t j = 0; j < w; ++j) y[j * incy] = out_value(t[j], beta == 0.0f ? 0.0f : y[j * incy], alpha, beta);
}

void gemv_axpy(int64_t K, const float* x, const float* a, int64_t lda, int64_t cols, float* y, int64_t incy,
               float alpha, float beta) {
  constexpr int kV = 16;  // 256 columns per pass, one accumulator each
  int64_t j0 = 0;
  for (; j0 + 16 * kV <= cols; j0 += 16 * kV) {
    __m512 acc[kV];
#pragma GCC unroll 16
    for (int v = 0; v < kV; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k) {
      const __m512 xv = _mm512_set1_ps(x[k]);
      const float* ak = a + k * lda + j0;
#pragma GCC unroll 16
      for (int v = 0; v < kV; ++v) acc[v] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(ak + 16 * v), acc[v]);
    }
#pragma GCC unroll 16
    for (int v = 0; v < kV; ++v) axpy_out(acc[v], y + (j0 + 16 * v) * incy, incy, 16, alpha, beta);
  }
  for (; j0 < cols; j0 += 16) {
    const __mmask16 mk = tail_mask(cols - j0);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; ++k)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(x[k]), _mm512_maskz_loadu_ps(mk, a + k * lda + j0), acc);
    axpy_out(acc, y + j0 * incy, incy, cols - j0 < 16 ? cols - j0 : 16, alpha, beta);
  }
}

double fma_loop(int64_t iters, float* sink) {
  // 16 independent zmm chains: covers FMA latency (4) x 2 pipes with room to spare.
  constexpr int kChains = 16;
  __m512 acc[kChains];
#pragma GCC unroll 16
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-3f);  // converges: no overflow
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  *sink = hsum(s);
  return static_cast<double>(iters) * kChains * 16 * 2;
}

}  // namespace

const KernelSet& kernels_avx512() {
  static const KernelSet ks = {
      "avx512 14x32",
      "avx512 14x32 (bf16 emulated: bf16-rounded fp32)",
      kMR,
      16 * kNV,
      micro_f32<kMR, kNV>,
      "avx512_bf16 14x32 (vdpbf16ps)",
      kMR,
      16 * kNV,
      micro_bf16<kMR, kNV>,
      pack_f32,
      pack_bf16,
      gemv_dot,
      gemv_axpy,
      fma_loop,
  };
  return ks;
}

}  // namespace gemm
}  // namespace fc
