// @file layers_conv.cc
// @brief Conv2d on the CPU (facecuda/layers.h): forward, backward-data and backward-filter, for any
// stride, padding and groups (dilation 1), NCHW float32.
//
// Algorithms (chosen from the shapes only, so the rounding never depends on the thread count):
//   direct       groups > 1 with <= 8 input and <= 8 output channels per group (depthwise convs,
//                MobileFaceNet's groups=64 conv, its 7×7 GDC). Forward: one task per output plane;
//                square 3/5/7/9 kernels at stride 1 or 2 run conv_dw.h (a zero-padded, for stride 2
//                column-parity-split copy of the input plane, then blocks of output rows accumulated
//                in vector registers over all taps, per ISA); other shapes: each output row
//                accumulating all KH·KW taps of one input channel in one fused loop over the
//                interior columns, edge columns tap by tap.
//                Backward-data: one task per input plane, tap-by-tap scatter (axpy) loops.
//                Backward-filter: one task per output channel; per-row dot products in float,
//                added in double over rows and images in order.
//   pointwise    1×1, stride 1, no padding, groups 1, Cout·Cin <= 64Ki, fp32, AVX-512: the direct kernel of
//                conv_pointwise.h (6 channels × 64 positions in registers, no packing, bias and the
//                epilogue activation fused); one task per run of 64-position tiles of one image.
//   gemm-1x1     1×1, stride 1, no padding otherwise: the input plane is already the GEMM operand.
//   im2col-gemm  the rest: col[r][j] with r = (c·KH + ki)·KW + kj and j a column of the tile, then
//                per group Y_g = W_g · col_g (fc::sgemm, threaded inside; deterministic). With stride 1
//                and OW == W ("same" padding) a col row is one shifted memcpy of the input plane plus
//                |kj − pw| zeroed edge columns per row.
//   winograd     forward only: 3×3 / stride 1 / pad <= 1 / groups 1 with enough tiles (use_winograd
//                below), F(4×4, 3×3) in conv_winograd.cc.
// Tiles (GEMM algorithms): a band of output rows of one image (images with >= kWideImage output
// pixels; the GEMM writes y in place with ldc = OH·OW) or nb whole images (smaller images; the GEMM
// writes a [Cout, nb·OH·OW] scratch that is scattered to NCHW). The col buffer of a tile is at most
// the workspace budget (ExecOptions::max_workspace_bytes, default 8 MiB), one output row at least.
//
//   forward         y  = W · col (+ bias added after the GEMM, so tiling never changes a bit)
//   backward-data   dcol = Wᵀ · dy, then col2im adds dcol into dx (dx zeroed first unless
//                   accumulating); 1×1/s1/p0 with one image per tile: dx = Wᵀ · dy directly
//   backward-filter dw += dy · colᵀ, tile after tile in order
#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "common/activation_math.h"
#include "common/layers_cuda.h"
#include "cpu/act_smooth.h"
#include "cpu/conv_dw.h"
#include "cpu/conv_pointwise.h"
#include "cpu/conv_winograd.h"
#include "cpu/layers_internal.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;  // the shared checks and loop of layers_internal.h

constexpr size_t kDefaultWorkspace = size_t(8) << 20;
constexpr int64_t kWideImage = 1024;    // output pixels from which one image makes a tile by itself
constexpr int64_t kTargetCols = 1024;   // columns a multi-image tile aims for
constexpr int64_t kDirectMaxPerGroup = 8;


// Outputs must not share memory with inputs (convolutions are never in place).
void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name) {
  if (!out.defined() || !in.defined() || out.numel() == 0 || in.numel() == 0) return;
  const char* a = static_cast<const char*>(out.data());
  const char* b = static_cast<const char*>(in.data());
  const bool overlap = a < b + in.nbytes() && b < a + out.nbytes();
  FC_CHECK(!overlap, InvalidArgument, "Expected ", out_name, " not to share memory with ", in_name,
           " (convolutions are not in place)");
}


// ---- geometry

struct Geom {
  int64_t N, C, H, W;       // input
  int64_t K, KH, KW;        // output channels, kernel
  int64_t OH, OW;           // output
  int64_t sh, sw, ph, pw;   // stride, padding
  int64_t G, Cg, Kg, R;     // groups, channels per group in / out, GEMM depth Cg·KH·KW
  int64_t HW, OHW;
  bool pointwise;  // 1×1, stride 1, no padding
  bool direct;
};

// xn, wn: the names of the input-shaped and the weight-shaped arguments ("x"/"dx", "w"/"dw").
Geom make_geom(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const Conv2dParams& p,
               const char* xn = "x", const char* wn = "w") {
  FC_CHECK(xs.size() == 4, ShapeMismatch, "Expected ", xn, " of rank 4 (N, Cin, H, W) but received ", shape_str(xs));
  FC_CHECK(ws.size() == 4, ShapeMismatch, "Expected ", wn, " of rank 4 (Cout, Cin/groups, KH, KW) but received ",
           shape_str(ws));
  FC_CHECK(p.stride_h >= 1 && p.stride_w >= 1, InvalidArgument, "Expected stride_h, stride_w >= 1 but received ",
           p.stride_h, ", ", p.stride_w);
  FC_CHECK(p.pad_h >= 0 && p.pad_w >= 0, InvalidArgument, "Expected pad_h, pad_w >= 0 but received ", p.pad_h,
           ", ", p.pad_w);
  FC_CHECK(p.groups >= 1, InvalidArgument, "Expected groups >= 1 but received ", p.groups);
  FC_CHECK(xs[0] >= 0 && xs[1] >= 1 && xs[2] >= 1 && xs[3] >= 1, ShapeMismatch, "Expected ", xn,
           " of shape (N >= 0, Cin >= 1, H >= 1, W >= 1) but received ", shape_str(xs));
  FC_CHECK(ws[0] >= 1 && ws[2] >= 1 && ws[3] >= 1, ShapeMismatch, "Expected ", wn,
           " of shape (Cout >= 1, Cin/groups, KH >= 1, KW >= 1) but received ", shape_str(ws));
  Geom g{};
  g.N = xs[0], g.C = xs[1], g.H = xs[2], g.W = xs[3];
  g.K = ws[0], g.KH = ws[2], g.KW = ws[3];
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w, g.G = p.groups;
  FC_CHECK(g.C % g.G == 0, InvalidArgument, "Expected groups (", g.G, ") to divide Cin (", g.C, ")");
  FC_CHECK(g.K % g.G == 0, InvalidArgument, "Expected groups (", g.G, ") to divide Cout (", g.K, ")");
  g.Cg = g.C / g.G, g.Kg = g.K / g.G;
  FC_CHECK(ws[1] == g.Cg, ShapeMismatch, "Expected ", wn, " of shape [", g.K, ", ", g.Cg, ", ", g.KH, ", ", g.KW,
           "] (Cout, Cin/groups = ", g.C, "/", g.G, ", KH, KW) but received ", shape_str(ws));
  FC_CHECK(g.H + 2 * g.ph >= g.KH && g.W + 2 * g.pw >= g.KW, ShapeMismatch, "Expected the padded input (",
           g.H + 2 * g.ph, "x", g.W + 2 * g.pw, ") to be at least the kernel (", g.KH, "x", g.KW,
           ") but received ", xn, " ", shape_str(xs), " with pad ", g.ph, ", ", g.pw);
  g.OH = (g.H + 2 * g.ph - g.KH) / g.sh + 1;
  g.OW = (g.W + 2 * g.pw - g.KW) / g.sw + 1;
  g.R = g.Cg * g.KH * g.KW;
  g.HW = g.H * g.W, g.OHW = g.OH * g.OW;
  g.pointwise = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  g.direct = g.G > 1 && g.Cg <= kDirectMaxPerGroup && g.Kg <= kDirectMaxPerGroup;
  return g;
}

std::vector<int64_t> out_shape(const Geom& g) { return {g.N, g.K, g.OH, g.OW}; }

// The forward runs "winograd" (conv_winograd.h) when allowed, in F32, for an eligible shape with
// enough tiles to repay the per-call weight transform (36·Cout·Cin floats written, measured with
// `node bench/run.js conv`).
constexpr int64_t kWinogradMinTiles = 32;
// Not for BF16: bf16 operands through F(4×4, 3×3)'s transforms (entries up to 8 and their sums)
// lose far more than bf16 im2col-gemm does; measured on IResNet-50 (BN statistics calibrated on
// the input), 1 − cos(fp32, bf16) of the embeddings was 2.3e-2 with winograd vs 3.5e-4 without.
bool use_winograd(const Geom& g, const ExecOptions& ex) {
  return ex.allow_winograd && (ex.precision == GemmPrecision::F32 || ex.precision == GemmPrecision::TF32) &&
         winograd::shape_eligible(g.C, g.K, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, g.G, g.OH, g.OW) &&
         winograd::tile_count(g.N, g.OH, g.OW) >= kWinogradMinTiles;
}

// The output columns ow in [0, out) with 0 <= ow·s + off < len: [lo, hi), 0 <= lo <= hi <= out.
inline void valid_range(int64_t off, int64_t s, int64_t len, int64_t out, int64_t& lo, int64_t& hi) {
  lo = std::min(out, off >= 0 ? 0 : ceil_div(-off, s));
  const int64_t last = len - 1 - off;
  hi = std::max(lo, last < 0 ? 0 : std::min(out, last / s + 1));
}

// ---- tiles (GEMM algorithms)

struct Tile {
  int64_t n0, nb;    // images [n0, n0 + nb)
  int64_t oh0, ohn;  // output rows [oh0, oh0 + ohn) (all rows when nb > 1)
};

// True when a tile's GEMM operand is the input itself (no im2col, no scatter).
bool in_place(const Geom& g, const Tile& t) { return g.pointwise && t.nb == 1; }

std::vector<Tile> plan_tiles(const Geom& g, const ExecOptions& ex) {
  const size_t budget = ex.max_workspace_bytes ? ex.max_workspace_bytes : kDefaultWorkspace;
  const int64_t col_rows = g.C * g.KH * g.KW;
  const int64_t budget_cols = std::max<int64_t>(1, static_cast<int64_t>(budget / sizeof(float)) / col_rows);
  std::vector<Tile> tiles;
  if (g.OHW >= kWideImage || g.N == 1 || budget_cols < 2 * g.OHW) {
    // One image per tile, cut into bands of output rows (1×1/s1/p0: the whole image, no col).
    const int64_t rows = g.pointwise ? g.OH : std::max<int64_t>(1, std::min(g.OH, budget_cols / g.OW));
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t r = 0; r < g.OH; r += rows) tiles.push_back({n, 1, r, std::min(rows, g.OH - r)});
  } else {
    const int64_t nb = std::max<int64_t>(1, std::min({g.N, ceil_div(kTargetCols, g.OHW), budget_cols / g.OHW}));
    for (int64_t n = 0; n < g.N; n += nb) tiles.push_back({n, std::min(nb, g.N - n), 0, g.OH});
  }
  return tiles;
}

// Scratch of n floats (uninitialized) from the host allocator's cache: no page faults per call.
Tensor scratch(int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::cpu()); }

// col[r][j] for the tile (all C channels), r = (c·KH + ki)·KW + kj, j = img·(ohn·OW) + (oh − oh0)·OW + ow.
void im2col(const Geom& g, const float* x, const Tile& t, float* col, int max_threads) {
  const int64_t rows = g.C * g.KH * g.KW, band = t.ohn * g.OW, cols = t.nb * band;
  const bool same_width = g.sh == 1 && g.sw == 1 && g.OW == g.W;
  parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), max_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / (g.KH * g.KW), ki = (r / g.KW) % g.KH, kj = r % g.KW;
      const int64_t off = kj - g.pw;
      int64_t lo, hi;
      valid_range(off, g.sw, g.W, g.OW, lo, hi);
      for (int64_t img = 0; img < t.nb; ++img) {
        const float* xp = x + ((t.n0 + img) * g.C + c) * g.HW;
        float* dst = col + r * cols + img * band;
        if (same_width) {
          // Stride 1 and OW == W: the rows [oa, ob) of this col row are one shifted copy of the input
          // rows oa − ph + ki ..., except |off| edge columns per row, which are zeroed after.
          const int64_t oa = std::min(t.oh0 + t.ohn, std::max(t.oh0, g.ph - ki));
          const int64_t ob = std::max(oa, std::min(t.oh0 + t.ohn, g.H + g.ph - ki));
          float* d = dst + (oa - t.oh0) * g.OW;
          const int64_t s0 = (oa - g.ph + ki) * g.W + off, len = (ob - oa) * g.OW;
          const int64_t e0 = std::min(len, std::max<int64_t>(0, -s0)), e1 = std::max(e0, std::min(len, g.HW - s0));
          std::memset(dst, 0, sizeof(float) * (oa - t.oh0) * g.OW);
          for (int64_t e = 0; e < e0; ++e) d[e] = 0.0f;
          if (e1 > e0) std::memcpy(d + e0, xp + s0 + e0, sizeof(float) * (e1 - e0));
          for (int64_t e = e1; e < len; ++e) d[e] = 0.0f;
          for (int64_t row = 0; row < ob - oa; ++row) {
            float* dr = d + row * g.OW;
            for (int64_t ow = 0; ow < lo; ++ow) dr[ow] = 0.0f;
            for (int64_t ow = hi; ow < g.OW; ++ow) dr[ow] = 0.0f;
          }
          std::memset(d + len, 0, sizeof(float) * (t.oh0 + t.ohn - ob) * g.OW);
          continue;
        }
        for (int64_t oh = t.oh0; oh < t.oh0 + t.ohn; ++oh) {
          float* d = dst + (oh - t.oh0) * g.OW;
          const int64_t ih = oh * g.sh - g.ph + ki;
          if (ih < 0 || ih >= g.H) {
            std::memset(d, 0, sizeof(float) * g.OW);
            continue;
          }
          const float* xr = xp + ih * g.W;
          for (int64_t ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
          if (g.sw == 1) {
            if (hi > lo) std::memcpy(d + lo, xr + lo + off, sizeof(float) * (hi - lo));
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] = xr[ow * g.sw + off];
          }
          for (int64_t ow = hi; ow < g.OW; ++ow) d[ow] = 0.0f;
        }
      }
    }
  });
}

// dx[n, c, ih, iw] += dcol[r][j] for the tile; one task per input channel (each dx element gets its
// contributions in a fixed order: (ki, kj) outer, then output position).
void col2im(const Geom& g, const float* dcol, const Tile& t, float* dx, int max_threads) {
  const int64_t band = t.ohn * g.OW, cols = t.nb * band;
  parallel_for(g.C, 1, max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t img = 0; img < t.nb; ++img) {
        float* xp = dx + ((t.n0 + img) * g.C + c) * g.HW;
        for (int64_t ki = 0; ki < g.KH; ++ki)
          for (int64_t kj = 0; kj < g.KW; ++kj) {
            const int64_t r = (c * g.KH + ki) * g.KW + kj, off = kj - g.pw;
            const float* src = dcol + r * cols + img * band;
            int64_t lo, hi;
            valid_range(off, g.sw, g.W, g.OW, lo, hi);
            for (int64_t oh = t.oh0; oh < t.oh0 + t.ohn; ++oh) {
              const int64_t ih = oh * g.sh - g.ph + ki;
              if (ih < 0 || ih >= g.H) continue;
              float* __restrict xr = xp + ih * g.W;
              const float* __restrict s = src + (oh - t.oh0) * g.OW;
              if (g.sw == 1) {
                for (int64_t ow = lo; ow < hi; ++ow) xr[ow + off] += s[ow];
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) xr[ow * g.sw + off] += s[ow];
              }
            }
          }
      }
  });
}

// dst[c][img·OHW + p] = src[(n0 + img), c, p]: nb images of an NCHW tensor with `ch` channels as one
// [ch, nb·OHW] matrix (the backward's dy for multi-image tiles).
void gather_images(const float* src, int64_t ch, int64_t plane, const Tile& t, float* dst, int max_threads) {
  parallel_for(ch, 1, max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t img = 0; img < t.nb; ++img)
        std::memcpy(dst + c * t.nb * plane + img * plane, src + ((t.n0 + img) * ch + c) * plane,
                    sizeof(float) * plane);
  });
}

// The inverse of gather_images (the forward's multi-image output).
void scatter_images(const float* src, int64_t ch, int64_t plane, const Tile& t, float* dst, int max_threads) {
  parallel_for(ch, 1, max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t img = 0; img < t.nb; ++img)
        std::memcpy(dst + ((t.n0 + img) * ch + c) * plane, src + c * t.nb * plane + img * plane,
                    sizeof(float) * plane);
  });
}

// The scratch of the GEMM paths for a tile plan: the largest im2col buffer of the tiles that need
// one and the largest [K, cols] staging buffer of the multi-image tiles.
struct TileScratch {
  Tensor col_t, tmp_t;
  float* col = nullptr;
  float* tmp = nullptr;
  TileScratch(const Geom& g, const std::vector<Tile>& tiles) {
    int64_t col_floats = 0, tmp_floats = 0;
    for (const Tile& t : tiles) {
      const int64_t cols = t.nb * t.ohn * g.OW;
      if (!in_place(g, t)) col_floats = std::max(col_floats, g.C * g.KH * g.KW * cols);
      if (t.nb > 1) tmp_floats = std::max(tmp_floats, g.K * cols);
    }
    if (col_floats) {
      col_t = scratch(col_floats);
      col = col_t.data_as<float>();
    }
    if (tmp_floats) {
      tmp_t = scratch(tmp_floats);
      tmp = tmp_t.data_as<float>();
    }
  }
};

// ---- GEMM algorithms

void gemm_forward(const Geom& g, const float* x, const float* w, const float* bias, float* y, const ExecOptions& ex) {
  const GemmOptions go = gemm_options(ex);
  const std::vector<Tile> tiles = plan_tiles(g, ex);
  TileScratch sc(g, tiles);
  float* col = sc.col;
  float* tmp = sc.tmp;
  for (const Tile& t : tiles) {
    const int64_t cols = t.nb * t.ohn * g.OW;
    const bool direct_b = in_place(g, t);
    if (!direct_b) im2col(g, x, t, col, ex.max_threads);
    for (int64_t grp = 0; grp < g.G; ++grp) {
      const float* A = w + grp * g.Kg * g.R;
      const float* B = direct_b ? x + (t.n0 * g.C + grp * g.Cg) * g.HW + t.oh0 * g.OW : col + grp * g.R * cols;
      const int64_t ldb = direct_b ? g.HW : cols;
      float* Cp = t.nb == 1 ? y + (t.n0 * g.K + grp * g.Kg) * g.OHW + t.oh0 * g.OW : tmp + grp * g.Kg * cols;
      const int64_t ldc = t.nb == 1 ? g.OHW : cols;
      sgemm(false, false, g.Kg, cols, g.R, 1.0f, A, g.R, B, ldb, 0.0f, Cp, ldc, go);
    }
    if (t.nb > 1) scatter_images(tmp, g.K, g.OHW, t, y, ex.max_threads);
    if (bias) {
      parallel_for(g.K, 1, ex.max_threads, [&](int64_t c0, int64_t c1) {
        for (int64_t img = 0; img < t.nb; ++img)
          for (int64_t c = c0; c < c1; ++c) {
            float* yr = y + ((t.n0 + img) * g.K + c) * g.OHW + t.oh0 * g.OW;
            const float b = bias[c];
            for (int64_t j = 0; j < t.ohn * g.OW; ++j) yr[j] += b;
          }
      });
    }
  }
}

void gemm_backward_data(const Geom& g, const float* dy, const float* w, float* dx, bool accumulate,
                        const ExecOptions& ex) {
  const GemmOptions go = gemm_options(ex);
  const std::vector<Tile> tiles = plan_tiles(g, ex);
  int64_t col_floats = 0, tmp_floats = 0;
  bool any_col2im = false;
  for (const Tile& t : tiles) {
    const int64_t cols = t.nb * t.ohn * g.OW;
    if (!in_place(g, t)) col_floats = std::max(col_floats, g.C * g.KH * g.KW * cols), any_col2im = true;
    if (t.nb > 1) tmp_floats = std::max(tmp_floats, g.K * cols);
  }
  if (any_col2im && !accumulate) {
    parallel_for(g.N * g.C, 1, ex.max_threads,
                 [&](int64_t p0, int64_t p1) { std::memset(dx + p0 * g.HW, 0, sizeof(float) * (p1 - p0) * g.HW); });
  }
  Tensor col_t = col_floats ? scratch(col_floats) : Tensor(), tmp_t = tmp_floats ? scratch(tmp_floats) : Tensor();
  float* dcol = col_floats ? col_t.data_as<float>() : nullptr;
  float* tmp = tmp_floats ? tmp_t.data_as<float>() : nullptr;
  for (const Tile& t : tiles) {
    const int64_t cols = t.nb * t.ohn * g.OW;
    const bool direct_c = in_place(g, t);
    if (t.nb > 1) gather_images(dy, g.K, g.OHW, t, tmp, ex.max_threads);
    const float* dyb = t.nb > 1 ? tmp : dy + t.n0 * g.K * g.OHW + t.oh0 * g.OW;
    const int64_t lddy = t.nb > 1 ? cols : g.OHW;
    for (int64_t grp = 0; grp < g.G; ++grp) {
      const float* A = w + grp * g.Kg * g.R;  // Kg x R; op(A) = Aᵀ is R x Kg
      const float* B = dyb + grp * g.Kg * lddy;
      if (direct_c) {
        float* Cp = dx + (t.n0 * g.C + grp * g.Cg) * g.HW;
        sgemm(true, false, g.R, cols, g.Kg, 1.0f, A, g.R, B, lddy, accumulate ? 1.0f : 0.0f, Cp, g.HW, go);
      } else {
        sgemm(true, false, g.R, cols, g.Kg, 1.0f, A, g.R, B, lddy, 0.0f, dcol + grp * g.R * cols, cols, go);
      }
    }
    if (!direct_c) col2im(g, dcol, t, dx, ex.max_threads);
  }
}

void gemm_backward_filter(const Geom& g, const float* x, const float* dy, float* dw, const ExecOptions& ex) {
  const GemmOptions go = gemm_options(ex);
  const std::vector<Tile> tiles = plan_tiles(g, ex);
  TileScratch sc(g, tiles);
  float* col = sc.col;
  float* tmp = sc.tmp;
  for (const Tile& t : tiles) {
    const int64_t cols = t.nb * t.ohn * g.OW;
    const bool direct_b = in_place(g, t);
    if (!direct_b) im2col(g, x, t, col, ex.max_threads);
    if (t.nb > 1) gather_images(dy, g.K, g.OHW, t, tmp, ex.max_threads);
    const float* dyb = t.nb > 1 ? tmp : dy + t.n0 * g.K * g.OHW + t.oh0 * g.OW;
    const int64_t lddy = t.nb > 1 ? cols : g.OHW;
    for (int64_t grp = 0; grp < g.G; ++grp) {
      const float* A = dyb + grp * g.Kg * lddy;  // Kg x cols
      const float* B = direct_b ? x + (t.n0 * g.C + grp * g.Cg) * g.HW : col + grp * g.R * cols;  // R x cols
      const int64_t ldb = direct_b ? g.HW : cols;
      sgemm(false, true, g.Kg, g.R, cols, 1.0f, A, lddy, B, ldb, 1.0f, dw + grp * g.Kg * g.R, g.R, go);
    }
  }
}

// ---- direct algorithm (small groups)

// Planes per task so a task does at least ~64k multiply-adds (the GDC has 49 per plane).
int64_t plane_grain(int64_t work_per_plane) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(work_per_plane, 1)); }

// Output planes [p0, p1) (plane = n·K + co). For each output row and input channel of the group:
//   yr[ow] += Σ_{ki, kj} w[co, cl, ki, kj]·row_ki[ow·sw − pw + kj]   (taps in (ki, kj) order)
// where row_ki is the input row oh·sh − ph + ki, or a row of zeros outside the input (adding w·0
// leaves every value unchanged). Interior columns [lo, hi), where every tap is inside the row, run
// one fused loop (vectorized for compile-time KH, KW); edge columns check each tap.
template <int KH_, int KW_>
void direct_forward_planes(const Geom& g, const float* x, const float* w, const float* bias, float* y, int64_t p0,
                           int64_t p1) {
  const int64_t kh = KH_ ? KH_ : g.KH, kw = KW_ ? KW_ : g.KW, OW = g.OW, W = g.W, sw = g.sw, pw = g.pw;
  int64_t lo, hi, unused;
  valid_range(-pw, sw, W, OW, lo, unused);
  valid_range(kw - 1 - pw, sw, W, OW, unused, hi);
  hi = std::max(hi, lo);
  const std::vector<float> zeros(static_cast<size_t>(W), 0.0f);
  std::vector<const float*> rowv(static_cast<size_t>(kh));
  const float** rows = rowv.data();
  for (int64_t plane = p0; plane < p1; ++plane) {
    const int64_t n = plane / g.K, co = plane % g.K, ci0 = (co / g.Kg) * g.Cg;
    float* yp = y + plane * g.OHW;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      float* __restrict yr = yp + oh * OW;
      for (int64_t ow = 0; ow < OW; ++ow) yr[ow] = 0.0f;
      for (int64_t cl = 0; cl < g.Cg; ++cl) {
        const float* xp = x + (n * g.C + ci0 + cl) * g.HW;
        for (int64_t ki = 0; ki < kh; ++ki) {
          const int64_t ih = oh * g.sh - g.ph + ki;
          rows[ki] = (ih < 0 || ih >= g.H) ? zeros.data() : xp + ih * W;
        }
        const float* __restrict wk = w + co * g.R + cl * kh * kw;
        auto edge = [&](int64_t ow) {
          float acc = yr[ow];
          for (int64_t ki = 0; ki < kh; ++ki)
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t iw = ow * sw - pw + kj;
              if (iw >= 0 && iw < W) acc += wk[ki * kw + kj] * rows[ki][iw];
            }
          yr[ow] = acc;
        };
        for (int64_t ow = 0; ow < lo; ++ow) edge(ow);
        if (sw == 1) {
          for (int64_t ow = lo; ow < hi; ++ow) {
            float acc = yr[ow];
            for (int64_t ki = 0; ki < kh; ++ki)
              for (int64_t kj = 0; kj < kw; ++kj) acc += wk[ki * kw + kj] * rows[ki][ow - pw + kj];
            yr[ow] = acc;
          }
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) {
            float acc = yr[ow];
            for (int64_t ki = 0; ki < kh; ++ki)
              for (int64_t kj = 0; kj < kw; ++kj) acc += wk[ki * kw + kj] * rows[ki][ow * sw - pw + kj];
            yr[ow] = acc;
          }
        }
        for (int64_t ow = hi; ow < OW; ++ow) edge(ow);
      }
      if (bias) {
        const float b = bias[co];
        for (int64_t ow = 0; ow < OW; ++ow) yr[ow] += b;
      }
    }
  }
}

// The fused activation of Conv2dParams::epilogue over n values in place, as the activation layer
// computes each value (common/activation_math.h; SiLU: act_smooth's kernel).
void epilogue_span(int epilogue, float* y, int64_t n) {
  switch (epilogue) {
    case 1: for (int64_t i = 0; i < n; ++i) y[i] = std::max(y[i], 0.0f); break;  // NaN stays NaN
    case 2: for (int64_t i = 0; i < n; ++i) y[i] = act::forward<Activation::kReLU6>(y[i]); break;
    case 3: for (int64_t i = 0; i < n; ++i) y[i] = act::forward<Activation::kHardSwish>(y[i]); break;
    case 4: act_smooth::kernels().silu_forward(y, y, n); break;
    default: break;
  }
}

// Returns true when the epilogue was applied (the depthwise kernels: per run of output planes, while
// they are still in cache); false leaves it to the caller.
bool direct_forward(const Geom& g, const float* x, const float* w, const float* bias, float* y, int max_threads,
                    int epilogue) {
  const dw::Args a{g.C, g.H, g.W, g.K, g.KH, g.KW, g.OH, g.OW, g.sh, g.sw, g.ph, g.pw, g.Cg, g.Kg, x, w, bias, y};
  if (dw::supported(a)) {
    // runs of planes of <= 64 KiB of output, activated right after they are written
    const int64_t run = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.OHW, 1));
    parallel_for(g.N * g.K, plane_grain(g.OHW * g.R), max_threads, [&](int64_t p0, int64_t p1) {
      for (int64_t q = p0; q < p1; q += run) {
        const int64_t q1 = std::min(p1, q + run);
        dw::forward(a, q, q1);
        if (epilogue) epilogue_span(epilogue, y + q * g.OHW, (q1 - q) * g.OHW);
      }
    });
    return true;
  }
  const bool k3 = g.KH == 3 && g.KW == 3;
  parallel_for(g.N * g.K, plane_grain(g.OHW * g.R), max_threads, [&](int64_t p0, int64_t p1) {
    if (k3) {
      direct_forward_planes<3, 3>(g, x, w, bias, y, p0, p1);
    } else {
      direct_forward_planes<0, 0>(g, x, w, bias, y, p0, p1);
    }
  });
  return false;
}

void direct_backward_data(const Geom& g, const float* dy, const float* w, float* dx, bool accumulate,
                          int max_threads) {
  parallel_for(g.N * g.C, plane_grain(g.OHW * g.Kg * g.KH * g.KW), max_threads, [&](int64_t p0, int64_t p1) {
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t n = plane / g.C, ci = plane % g.C, grp = ci / g.Cg, cl = ci % g.Cg;
      float* xp = dx + plane * g.HW;
      if (!accumulate) std::memset(xp, 0, sizeof(float) * g.HW);
      for (int64_t co = grp * g.Kg; co < (grp + 1) * g.Kg; ++co) {
        const float* dyp = dy + (n * g.K + co) * g.OHW;
        const float* wk = w + co * g.R + cl * g.KH * g.KW;
        for (int64_t oh = 0; oh < g.OH; ++oh) {
          const float* __restrict dyr = dyp + oh * g.OW;
          for (int64_t ki = 0; ki < g.KH; ++ki) {
            const int64_t ih = oh * g.sh - g.ph + ki;
            if (ih < 0 || ih >= g.H) continue;
            float* __restrict xr = xp + ih * g.W;
            for (int64_t kj = 0; kj < g.KW; ++kj) {
              const float wv = wk[ki * g.KW + kj];
              const int64_t off = kj - g.pw;
              int64_t lo, hi;
              valid_range(off, g.sw, g.W, g.OW, lo, hi);
              if (g.sw == 1) {
                for (int64_t ow = lo; ow < hi; ++ow) xr[ow + off] += wv * dyr[ow];
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) xr[ow * g.sw + off] += wv * dyr[ow];
              }
            }
          }
        }
      }
    }
  });
}

// Σ a[i]·b[i·sb] for i in [0, n): four float partial sums (a fixed order).
inline float dot_strided(const float* a, const float* b, int64_t sb, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  if (sb == 1) {
    for (; i + 4 <= n; i += 4) {
      s0 += a[i] * b[i];
      s1 += a[i + 1] * b[i + 1];
      s2 += a[i + 2] * b[i + 2];
      s3 += a[i + 3] * b[i + 3];
    }
  } else {
    for (; i + 4 <= n; i += 4) {
      s0 += a[i] * b[i * sb];
      s1 += a[i + 1] * b[(i + 1) * sb];
      s2 += a[i + 2] * b[(i + 2) * sb];
      s3 += a[i + 3] * b[(i + 3) * sb];
    }
  }
  for (; i < n; ++i) s0 += a[i] * b[i * sb];
  return (s0 + s1) + (s2 + s3);
}

void direct_backward_filter(const Geom& g, const float* x, const float* dy, float* dw, int max_threads) {
  parallel_for(g.K, 1, max_threads, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(static_cast<size_t>(g.R));
    for (int64_t co = c0; co < c1; ++co) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const int64_t ci0 = (co / g.Kg) * g.Cg;
      for (int64_t n = 0; n < g.N; ++n) {
        const float* dyp = dy + (n * g.K + co) * g.OHW;
        for (int64_t cl = 0; cl < g.Cg; ++cl) {
          const float* xp = x + (n * g.C + ci0 + cl) * g.HW;
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const float* dyr = dyp + oh * g.OW;
            for (int64_t ki = 0; ki < g.KH; ++ki) {
              const int64_t ih = oh * g.sh - g.ph + ki;
              if (ih < 0 || ih >= g.H) continue;
              const float* xr = xp + ih * g.W;
              double* a = acc.data() + (cl * g.KH + ki) * g.KW;
              for (int64_t kj = 0; kj < g.KW; ++kj) {
                const int64_t off = kj - g.pw;
                int64_t lo, hi;
                valid_range(off, g.sw, g.W, g.OW, lo, hi);
                if (hi > lo) a[kj] += dot_strided(dyr + lo, xr + lo * g.sw + off, g.sw, hi - lo);
              }
            }
          }
        }
      }
      float* d = dw + co * g.R;
      for (int64_t i = 0; i < g.R; ++i) d[i] += static_cast<float>(acc[static_cast<size_t>(i)]);
    }
  });
}

// The checks both backward passes run: `img` is the input-shaped tensor (x or dx) and `filt` the
// filter-shaped one (w or dw); dy must have the output shape; the written one (dx or dw) must not
// share memory with the other two. Returns the geometry.
Geom backward_geom(const Tensor& img, const char* img_name, const Tensor& filt, const char* filt_name, const Tensor& dy,
                   const Conv2dParams& p, const ExecOptions& ex) {
  check_tensor(dy, "dy");
  check_tensor(filt, filt_name);
  check_tensor(img, img_name);
  FC_CHECK(ex.max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 (0 = all) but received ", ex.max_threads);
  const Geom g = make_geom(img.shape(), filt.shape(), p, img_name, filt_name);
  check_shape(dy, "dy", out_shape(g), img_name[0] == 'd' ? "N, Cout, OH, OW of dx convolved with w"
                                                           : "N, Cout, OH, OW of x convolved with dw");
  const bool writes_img = img_name[0] == 'd';
  const Tensor& out = writes_img ? img : filt;
  const Tensor& other = writes_img ? filt : img;
  check_disjoint(out, writes_img ? img_name : filt_name, dy, "dy");
  check_disjoint(out, writes_img ? img_name : filt_name, other, writes_img ? filt_name : img_name);
  return g;
}

}  // namespace

// ---- public entry points

std::vector<int64_t> conv2d_output_shape(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                         const Conv2dParams& p) {
  return out_shape(make_geom(x_shape, w_shape, p));
}

const char* conv2d_algorithm(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                             const Conv2dParams& p, const ExecOptions& ex) {
  const Geom g = make_geom(x_shape, w_shape, p);
  if (use_winograd(g, ex)) return "winograd";
  return g.direct ? "direct" : g.pointwise ? "gemm-1x1" : "im2col-gemm";
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const Conv2dParams& p,
                    const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  check_tensor(w, "w");
  check_tensor(y, "y");
  FC_CHECK(ex.max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 (0 = all) but received ", ex.max_threads);
  const Geom g = make_geom(x.shape(), w.shape(), p);
  check_shape(y, "y", out_shape(g), "N, Cout, OH, OW");
  if (bias.defined()) {
    check_tensor(bias, "bias");
    check_shape(bias, "bias", {g.K}, "Cout");
  }
  check_disjoint(y, "y", x, "x");
  check_disjoint(y, "y", w, "w");
  check_disjoint(y, "y", bias, "bias");
  FC_CHECK(p.epilogue >= 0 && p.epilogue <= 4, InvalidArgument, "Expected an epilogue in [0, 4] but received ",
           p.epilogue);
  FC_CHECK(!dev.cuda() || p.epilogue == 0, NotImplemented,
           "A fused activation epilogue is implemented on the CPU only; apply the activation separately on CUDA");
  if (dev.cuda()) return cuda_nn::conv2d_forward(x, w, bias, y, p, ex);
  if (g.N == 0) return;
  const float* b = bias.defined() ? bias.data_as<float>() : nullptr;
  const pointwise::Fn pw = pointwise::kernel();
  if (g.pointwise && g.G == 1 && pw != nullptr && g.K * g.C <= pointwise::kMaxWeights && ex.precision == GemmPrecision::F32) {
    // direct 1×1 kernel: tiles of 64 positions of one image, all output channels, activation fused
    const int64_t P = g.OHW, tiles = (P + pointwise::kTileP - 1) / pointwise::kTileP;
    const float* xp = x.data_as<float>();
    const float* wp = w.data_as<float>();
    float* yp = y.data_as<float>();
    const auto act = static_cast<pointwise::Act>(p.epilogue);
    const pointwise::SiluFn silu = act_smooth::kernels().silu_forward;
    const bool stream = g.N * g.K * P * static_cast<int64_t>(sizeof(float)) > pointwise::kStreamBytes;
    const int64_t per_tile = std::max<int64_t>(1, g.K * g.C * pointwise::kTileP);
    parallel_for(g.N * tiles, std::max<int64_t>(1, (int64_t{1} << 20) / per_tile), ex.max_threads,
                 [&](int64_t t0, int64_t t1) {
                   for (int64_t t = t0; t < t1;) {
                     const int64_t n = t / tiles, first = t % tiles, last = std::min(tiles, first + (t1 - t));
                     pw(xp + n * g.C * P, wp, b, yp + n * g.K * P, g.K, g.C, P, first * pointwise::kTileP,
                        std::min(P, last * pointwise::kTileP), act, silu, stream);
                     t += last - first;
                   }
                 });
    return;
  }
  if (g.direct) {
    if (direct_forward(g, x.data_as<float>(), w.data_as<float>(), b, y.data_as<float>(), ex.max_threads, p.epilogue)) return;
  } else if (use_winograd(g, ex)) {
    winograd::forward(g.N, g.C, g.H, g.W, g.K, g.ph, g.pw, x.data_as<float>(), w.data_as<float>(), b,
                      y.data_as<float>(), ex.max_threads, ex.max_workspace_bytes);
  } else {
    gemm_forward(g, x.data_as<float>(), w.data_as<float>(), b, y.data_as<float>(), ex);
  }
  if (p.epilogue != 0) {  // the other algorithms: the activation in place afterwards
    float* yp = y.data_as<float>();
    parallel_for(y.numel(), int64_t{32768}, ex.max_threads,
                 [&](int64_t b0, int64_t b1) { epilogue_span(p.epilogue, yp + b0, b1 - b0); });
  }
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, const Conv2dParams& p, bool accumulate,
                          const ExecOptions& ex) {
  const OpDevice dev(dy);
  const Geom g = backward_geom(dx, "dx", w, "w", dy, p, ex);
  if (dev.cuda()) return cuda_nn::conv2d_backward_data(dy, w, dx, p, accumulate, ex);
  if (g.N == 0) return;
  if (g.direct) {
    direct_backward_data(g, dy.data_as<float>(), w.data_as<float>(), dx.data_as<float>(), accumulate, ex.max_threads);
  } else {
    gemm_backward_data(g, dy.data_as<float>(), w.data_as<float>(), dx.data_as<float>(), accumulate, ex);
  }
}

void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Conv2dParams& p,
                            const ExecOptions& ex) {
  const OpDevice dev(dy);
  const Geom g = backward_geom(x, "x", dw, "dw", dy, p, ex);
  if (dev.cuda()) return cuda_nn::conv2d_backward_filter(x, dy, dw, p, ex);
  if (g.N == 0) return;
  if (g.direct) {
    direct_backward_filter(g, x.data_as<float>(), dy.data_as<float>(), dw.data_as<float>(), ex.max_threads);
  } else {
    gemm_backward_filter(g, x.data_as<float>(), dy.data_as<float>(), dw.data_as<float>(), ex);
  }
}

}  // namespace nn
}  // namespace fc
