// @file conv_winograd_kernels.h
// @brief The Winograd F(4×4, 3×3) transform kernels, written once with GCC vector extensions (16
// float lanes = 16 tiles of one tile row) and compiled twice: in conv_winograd.cc for the baseline
// ISA and in conv_winograd_avx512.cc with the AVX-512 flags (zmm registers, vpermt2ps shuffles).
//
// INCLUDE ONLY INSIDE AN ANONYMOUS NAMESPACE, after <cstring> and conv_winograd.h: every function
// here is then private to the including file, so the AVX-512 copy can never be linked into the
// baseline code (see gemm_internal.h). For the same reason nothing here instantiates a library
// template (no std::vector, std::min): scratch comes from the caller (InputArgs::work).
//
// Input tile (6×6 at rows 4ty − ph .., columns 4tx − pw .., zero outside x): two 1-D passes of
//   w0 = 4d0 − 5d2 + d4            w3 = 2(d3 − d1) + (d4 − d2)
//   w1 = −4(d1 + d2) + (d3 + d4)   w4 = 2(d1 − d3) + (d4 − d2)
//   w2 = 4(d1 − d2) + (d4 − d3)    w5 = 4d1 − 5d3 + d5
// first down the rows (vectorized along the padded input row), then along the columns of each tile
// (the tile columns 4tx + k are de-interleaved from the row by two rounds of two-source shuffles).
// Output tile: two passes of
//   y0 = m0 + m1 + m2 + m3 + m4     y2 = (m1 + m2) + 4(m3 + m4)
//   y1 = (m1 − m2) + 2(m3 − m4)     y3 = (m1 − m2) + 8(m3 − m4) + m5
// down the 6 rows, then along each row; the 4 columns of 16 tiles are interleaved back into 64
// consecutive output columns, the bias added last.
// The helpers pass 64-byte vectors by value; they are always inlined, so the ABI note GCC gives for
// the baseline build (no AVX-512 registers) is moot: silenced for the rest of the including file.
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float wv16 __attribute__((vector_size(64)));
typedef int32_t wi16 __attribute__((vector_size(64)));

__attribute__((always_inline)) inline wv16 wload(const float* p) {
  wv16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void wstore(float* p, const wv16& v) { std::memcpy(p, &v, sizeof v); }
__attribute__((always_inline)) inline wv16 wsplat(float s) { return wv16{} + s; }

// The input transform's 1-D pass on d[0..5] (in place).
__attribute__((always_inline)) inline void bt_pass(wv16 d[6]) {
  const wv16 d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3], d4 = d[4], d5 = d[5];
  const wv16 four = wsplat(4.0f), five = wsplat(5.0f), two = wsplat(2.0f);
  d[0] = (four * d0 - five * d2) + d4;
  d[1] = (d3 + d4) - four * (d1 + d2);
  d[2] = four * (d1 - d2) + (d4 - d3);
  d[3] = two * (d3 - d1) + (d4 - d2);
  d[4] = two * (d1 - d3) + (d4 - d2);
  d[5] = (four * d1 - five * d3) + d5;
}

// The output transform's 1-D pass: m[0..5] → y[0..3].
__attribute__((always_inline)) inline void at_pass(const wv16 m[6], wv16 y[4]) {
  const wv16 a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
  y[0] = (m[0] + a) + c;
  y[1] = b + wsplat(2.0f) * d;
  y[2] = a + wsplat(4.0f) * c;
  y[3] = (b + wsplat(8.0f) * d) + m[5];
}

// The kernel transform's 1-D pass: g[0..2] → u[0..5] (rows of G: 1/4; −1/6·(1, 1, 1); −1/6·(1, −1, 1);
// (1/24, 1/12, 1/6); (1/24, −1/12, 1/6); (0, 0, 1)).
__attribute__((always_inline)) inline void g_pass(const wv16 g[3], wv16 u[6]) {
  const wv16 s02 = g[0] + g[2];
  const wv16 q = wsplat(1.0f / 24) * g[0] + wsplat(1.0f / 6) * g[2], h = wsplat(1.0f / 12) * g[1];
  u[0] = wsplat(0.25f) * g[0];
  u[1] = wsplat(-1.0f / 6) * (s02 + g[1]);
  u[2] = wsplat(-1.0f / 6) * (s02 - g[1]);
  u[3] = q + h;
  u[4] = q - h;
  u[5] = g[2];
}

// 16 input channels per step (lanes); the 9 taps are transposed through a small buffer.
void weight_transform_impl(const winograd::WeightArgs& a, int64_t k0, int64_t k1) {
  using namespace winograd;
  float tr[9 * kLanes];
  float out[kLanes];
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t c0 = 0; c0 < a.C; c0 += kLanes) {
      const int64_t n = a.C - c0 < kLanes ? a.C - c0 : kLanes;
      const float* src = a.w + (k * a.C + c0) * 9;
      for (int64_t l = 0; l < kLanes; ++l)
        for (int e = 0; e < 9; ++e) tr[e * kLanes + l] = l < n ? src[l * 9 + e] : 0.0f;
      wv16 t[6][3];  // G·g: column b of g is taps (0, 3, 6) + b
      for (int col = 0; col < 3; ++col) {
        const wv16 g[3] = {wload(tr + col * kLanes), wload(tr + (3 + col) * kLanes), wload(tr + (6 + col) * kLanes)};
        wv16 u[6];
        g_pass(g, u);
        for (int i = 0; i < 6; ++i) t[i][col] = u[i];
      }
      for (int i = 0; i < 6; ++i) {
        wv16 u[6];
        g_pass(t[i], u);
        for (int j = 0; j < 6; ++j) {
          float* dst = a.U + (i * 6 + j) * a.plane + k * a.C + c0;
          if (n == kLanes) {
            wstore(dst, u[j]);
          } else {
            wstore(out, u[j]);
            std::memcpy(dst, out, sizeof(float) * n);
          }
        }
      }
    }
}

void input_transform_impl(const winograd::InputArgs& a, int64_t c0, int64_t c1) {
  using namespace winograd;
  const Block& b = a.b;
  const int64_t groups = (b.tW + kLanes - 1) / kLanes;
  const int64_t Wp = a.wp;
  float* prow = a.work;        // 6 zero-padded input rows
  float* tmp = prow + 6 * Wp;  // after the row pass
  const int64_t plane = a.plane;
  const wi16 ev = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const wi16 od = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
  const wi16 sh1 = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  const wi16 sh1b = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17};
  const int64_t copy_lo = b.pw, copy_n = b.W;  // Wp >= W + 2·pw + 14 (conv_winograd.cc)
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t r = 0; r < b.nrows; ++r) {
      const int64_t row = b.row0 + r, n = row / b.tH, ty = row % b.tH;
      const float* xp = a.x + (n * a.C + c) * b.H * b.W;
      for (int i = 0; i < 6; ++i) {
        float* pr = prow + i * Wp;
        const int64_t ih = kTile * ty - b.ph + i;
        if (ih < 0 || ih >= b.H) {
          std::memset(pr, 0, sizeof(float) * Wp);
          continue;
        }
        std::memset(pr, 0, sizeof(float) * copy_lo);
        std::memcpy(pr + copy_lo, xp + ih * b.W, sizeof(float) * copy_n);
        std::memset(pr + copy_lo + copy_n, 0, sizeof(float) * (Wp - copy_lo - copy_n));
      }
      for (int64_t u = 0; u < Wp; u += kLanes) {
        wv16 d[6];
        for (int i = 0; i < 6; ++i) d[i] = wload(prow + i * Wp + u);
        bt_pass(d);
        for (int i = 0; i < 6; ++i) wstore(tmp + i * Wp + u, d[i]);
      }
      float* vrow = a.V + c * b.ld + r * b.tW;
      for (int64_t g = 0; g < groups; ++g) {
        for (int i = 0; i < 6; ++i) {
          const float* tp = tmp + i * Wp + 64 * g;
          const wv16 a0 = wload(tp), a1 = wload(tp + 16), a2 = wload(tp + 32), a3 = wload(tp + 48),
                     a4 = wload(tp + 64);
          const wv16 e01 = __builtin_shuffle(a0, a1, ev), o01 = __builtin_shuffle(a0, a1, od);
          const wv16 e23 = __builtin_shuffle(a2, a3, ev), o23 = __builtin_shuffle(a2, a3, od);
          wv16 d[6];
          d[0] = __builtin_shuffle(e01, e23, ev);  // columns 4l
          d[2] = __builtin_shuffle(e01, e23, od);  // 4l + 2
          d[1] = __builtin_shuffle(o01, o23, ev);  // 4l + 1
          d[3] = __builtin_shuffle(o01, o23, od);  // 4l + 3
          d[4] = __builtin_shuffle(d[0], a4, sh1);   // 4l + 4 = 4(l + 1)
          d[5] = __builtin_shuffle(d[1], a4, sh1b);  // 4l + 5
          bt_pass(d);
          for (int j = 0; j < 6; ++j) wstore(vrow + (i * 6 + j) * plane + g * kLanes, d[j]);
        }
      }
    }
  }
}

void output_transform_impl(const winograd::OutputArgs& a, int64_t k0, int64_t k1) {
  using namespace winograd;
  const Block& b = a.b;
  const int64_t groups = (b.tW + kLanes - 1) / kLanes;
  const int64_t plane = a.plane;
  const wi16 lo = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const wi16 hi = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const wi16 q0 = {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23};
  const wi16 q1 = {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31};
  float out[64];
  for (int64_t k = k0; k < k1; ++k) {
    const wv16 bias = wsplat(a.bias ? a.bias[k] : 0.0f);
    for (int64_t r = 0; r < b.nrows; ++r) {
      const int64_t row = b.row0 + r, n = row / b.tH, ty = row % b.tH;
      const float* mrow = a.M + k * b.ld + r * b.tW;
      float* yp = a.y + (n * a.K + k) * b.OH * b.OW;
      const int64_t rows_left = b.OH - kTile * ty, rows_out = rows_left < kTile ? rows_left : kTile;
      for (int64_t g = 0; g < groups; ++g) {
        // Column pass first (down the 6 rows of each of the 6 columns), then along the 4 rows.
        wv16 s[4][6];
        for (int j = 0; j < 6; ++j) {
          wv16 m[6], t[4];
          for (int i = 0; i < 6; ++i) m[i] = wload(mrow + (i * 6 + j) * plane + g * kLanes);
          at_pass(m, t);
          for (int q = 0; q < 4; ++q) s[q][j] = t[q];
        }
        const int64_t col0 = 64 * g, cols = b.OW - col0 < 64 ? b.OW - col0 : 64;
        for (int q = 0; q < rows_out; ++q) {
          wv16 o[4];
          at_pass(s[q], o);
          for (int v = 0; v < 4; ++v) o[v] = o[v] + bias;
          const wv16 p01l = __builtin_shuffle(o[0], o[1], lo), p01h = __builtin_shuffle(o[0], o[1], hi);
          const wv16 p23l = __builtin_shuffle(o[2], o[3], lo), p23h = __builtin_shuffle(o[2], o[3], hi);
          float* yr = yp + (kTile * ty + q) * b.OW + col0;
          if (cols == 64) {
            wstore(yr, __builtin_shuffle(p01l, p23l, q0));
            wstore(yr + 16, __builtin_shuffle(p01l, p23l, q1));
            wstore(yr + 32, __builtin_shuffle(p01h, p23h, q0));
            wstore(yr + 48, __builtin_shuffle(p01h, p23h, q1));
          } else {
            wstore(out, __builtin_shuffle(p01l, p23l, q0));
            wstore(out + 16, __builtin_shuffle(p01l, p23l, q1));
            wstore(out + 32, __builtin_shuffle(p01h, p23h, q0));
            wstore(out + 48, __builtin_shuffle(p01h, p23h, q1));
            std::memcpy(yr, out, sizeof(float) * cols);
          }
        }
      }
    }
  }
}

