// @file layers_cases.cc
// @brief Harness cases for the layer ops (facecuda/layers.h, native/src/cpu/layers*.cc) on the CPU.
//
//   test  every forward against an independent float64 reference written here (direct loops), on
//         fresh random inputs: Conv2d over odd sizes, strides 1 and 2, padding 0/1/2, groups 1, 2, 4,
//         small-group and depthwise, 1×1, the 7×7 GDC, non-square kernels and strides, batch 1 and
//         > 1, each tiling (row bands, multi-image tiles, the default), bf16 GEMM operands; and the
//         conv backward against the float64 analytic backward (shapes too large for finite
//         differences included). BatchNorm training statistics, running statistics after k = 3
//         steps, eval; eval BatchNorm == the folded conv / Linear; PReLU, ReLU, Dropout (the counter
//         mask, its rate, identities), Linear, add, flatten; argument errors; bitwise determinism
//         (1 thread vs all, run to run).
//   grad  every backward against float64 central finite differences of L = Σ g·y, with y the float64
//         reference forward and g a random upstream gradient: conv dx (written and accumulated), dw,
//         db; BatchNorm dx/dgamma/dbeta in training mode (through the batch statistics) and eval mode,
//         freeze_gamma; PReLU dx/dalpha; ReLU; Dropout; Linear dx/dw/db.
//   perf  Conv2d forward over IResNet-50's layer shapes at batch 32, the whole r50 conv stack at
//         batches 32 and 1 (ms per face), r50's most frequent shape backward, MobileFaceNet's direct
//         convolutions.
//
// Tolerances are elementwise bounds on float32 rounding: a value reduced from n float terms with at
// most 2 roundings per term carries |err| <= (2n + 16)·u·Σ|terms| (u = 2^-24; the 16 covers the GEMM's
// per-block updates and the final additions), with Σ|terms| computed exactly in float64. For a linear
// map that magnitude is the gradient of the same loss with |g| and |w| (or |x|), which the tests get
// from the same reference by differences.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/margin_math.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using Vec = std::vector<double>;
using layer_util::central_diff;
using layer_util::dot;
using nn::Conv2dParams;
using nn::ExecOptions;

constexpr double kU = 1.0 / 16777216.0;  // fp32 unit roundoff, 2^-24

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string shape_s(const std::vector<int64_t>& s) { return shape_str(s); }

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor tensor(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return Tensor::from_host(v.data(), v.size() * sizeof(float), shape, DType::F32, Device::cpu());
}

Tensor filled(const std::vector<int64_t>& shape, float value) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
  return t;
}

std::vector<float> values(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data(), v.size() * sizeof(float));
  return v;
}

std::vector<float> uniform(std::mt19937_64& rng, int64_t n, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_uniform(rng, v.data(), v.size(), lo, hi);
  return v;
}

Vec dbl(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

Vec absv(const Vec& v) {
  Vec a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}

// Rounding noise of a central difference of L = Σ g·y(v) with step h: each y carries <= k roundings
// of float64 (2^-53) relative to its magnitude, the compensated dot a few more, and the difference
// of the two losses is divided by 2h: k·2^-53·Σ|g·y|/h bounds it.
double fd_noise(const Vec& g, const Vec& y, double h, double k) {
  double m = 0;
  for (size_t i = 0; i < g.size(); ++i) m += std::fabs(g[i] * y[i]);
  return k * std::ldexp(1.0, -53) * m / h + 1e-300;
}

// The gradient of a LINEAR f by unit forward differences (exact up to float64 rounding): used for
// the magnitudes Σ|terms| of the tolerances.
Vec linear_grad(const Vec& v, const std::function<double(const Vec&)>& f) {
  Vec z(v.size(), 0.0), g(v.size());
  const double f0 = f(z);
  for (size_t i = 0; i < v.size(); ++i) {
    z[i] = 1.0;
    g[i] = f(z) - f0;
    z[i] = 0.0;
  }
  return g;
}

// Elementwise |got − ref| <= tol[i] (NaN fails). `worst` is the largest err/tol.
struct Check {
  size_t faults = 0, at = 0, n = 0;
  double worst = 0;
  float got = 0;
  double ref = 0, tol = 0;
};

Check within(const std::vector<float>& got, const Vec& ref, const Vec& tol) {
  Check c;
  c.n = ref.size();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double ratio = err / std::max(tol[i], 1e-300);
    if (!(err <= tol[i])) ++c.faults;
    if (!(ratio <= c.worst)) {
      c.worst = std::isnan(ratio) ? HUGE_VAL : ratio;
      c.at = i, c.got = got[i], c.ref = ref[i], c.tol = tol[i];
    }
  }
  return c;
}

Check within(const std::vector<float>& got, const Vec& ref, double tol) {
  return within(got, ref, Vec(ref.size(), tol));
}

// Collects named checks into one CaseResult: "y 0.031 dw 0.12" (worst err/tol of each).
struct Report {
  CaseResult r;
  void add(const std::string& name, const Check& c) {
    if (!r.detail.empty()) r.detail += " ";
    r.detail += name + " " + fmt("%.2g", c.worst);
    r.figures.push_back({name + "_err_over_tol", c.worst});
    if (c.faults) {
      r.status = CaseResult::Fail;
      r.detail += " [" + std::to_string(c.faults) + "/" + std::to_string(c.n) + " over; worst @" +
                  std::to_string(c.at) + " got " + fmt("%.9g", c.got) + " ref " + fmt("%.9g", c.ref) + " tol " +
                  fmt("%.3g", c.tol) + "]";
    }
  }
  void expect(bool ok, const std::string& what) {
    if (!ok) {
      r.status = CaseResult::Fail;
      r.detail += " FAILED: " + what;
    }
  }
  CaseResult done() {
    if (r.status == CaseResult::Pass) r.detail = "err/tol: " + r.detail;
    return r;
  }
};

// ======================================================================== Conv2d

struct ConvSpec {
  int64_t N, C, H, W, K, KH, KW, sh, sw, ph, pw, G;
  bool bias = false;
  int tiling = 0;     // 0: default; 1: one output row per tile (bands); 2: two images per tile
  bool bf16 = false;  // ExecOptions::precision = BF16 (GEMM algorithms only)

  int64_t OH() const { return (H + 2 * ph - KH) / sh + 1; }
  int64_t OW() const { return (W + 2 * pw - KW) / sw + 1; }
  int64_t R() const { return C / G * KH * KW; }
  std::vector<int64_t> xs() const { return {N, C, H, W}; }
  std::vector<int64_t> ws() const { return {K, C / G, KH, KW}; }
  std::vector<int64_t> ys() const { return {N, K, OH(), OW()}; }
  Conv2dParams params() const {
    Conv2dParams p;
    p.stride_h = sh, p.stride_w = sw, p.pad_h = ph, p.pad_w = pw, p.groups = G;
    return p;
  }
  ExecOptions ex(int threads = 0) const {
    ExecOptions e;
    e.max_threads = threads;
    if (tiling == 1) e.max_workspace_bytes = 1;  // one output row (the minimum) per tile
    if (tiling == 2) e.max_workspace_bytes = static_cast<size_t>(4 * C * KH * KW * OH() * OW() * 2);
    if (bf16) e.precision = GemmPrecision::BF16;
    return e;
  }
  std::string str() const {
    char b[200];
    std::snprintf(b, sizeof b, "x[%lld,%lld,%lld,%lld] Cout=%lld k=%lldx%lld s=%lld,%lld p=%lld,%lld g=%lld",
                  (long long)N, (long long)C, (long long)H, (long long)W, (long long)K, (long long)KH, (long long)KW,
                  (long long)sh, (long long)sw, (long long)ph, (long long)pw, (long long)G);
    std::string s = b;
    if (bias) s += " bias";
    if (tiling == 1) s += " tiles=rows";
    if (tiling == 2) s += " tiles=2img";
    if (bf16) s += " prec=bf16";
    return s + " (" + nn::conv2d_algorithm(xs(), ws(), params()) + ")";
  }
};

ConvSpec conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t k, int64_t s, int64_t p, int64_t G,
              bool bias = false, int tiling = 0) {
  return ConvSpec{N, C, H, W, K, k, k, s, s, p, p, G, bias, tiling};
}

// Float64 reference: y[n, co, oh, ow] = b[co] + Σ_{cl, ki, kj} w[co, cl, ki, kj]·x[n, g·Cg + cl, ih, iw].
// `y` gets the value; `mag` (optional) Σ|terms|.
void conv_ref(const ConvSpec& s, const Vec& x, const Vec& w, const Vec* b, Vec& y, Vec* mag = nullptr) {
  const int64_t OH = s.OH(), OW = s.OW(), Cg = s.C / s.G, Kg = s.K / s.G;
  y.assign(static_cast<size_t>(s.N * s.K * OH * OW), 0.0);
  if (mag) mag->assign(y.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t co = 0; co < s.K; ++co)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? (*b)[co] : 0.0, m = b ? std::fabs((*b)[co]) : 0.0;
          for (int64_t cl = 0; cl < Cg; ++cl)
            for (int64_t ki = 0; ki < s.KH; ++ki)
              for (int64_t kj = 0; kj < s.KW; ++kj) {
                const int64_t ih = oh * s.sh - s.ph + ki, iw = ow * s.sw - s.pw + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const double t = w[((co * Cg + cl) * s.KH + ki) * s.KW + kj] *
                                 x[((n * s.C + (co / Kg) * Cg + cl) * s.H + ih) * s.W + iw];
                acc += t;
                m += std::fabs(t);
              }
          const size_t o = static_cast<size_t>(((n * s.K + co) * OH + oh) * OW + ow);
          y[o] = acc;
          if (mag) (*mag)[o] = m;
        }
}

// Float64 analytic backward (the forward's loop nest, scattered): dx = Σ w·g, dw = Σ g·x over the
// same (output, tap) pairs as conv_ref, with the magnitudes Σ|terms|. Test mode uses it on shapes too
// large for finite differences (the grad mode checks the same ops against differences).
void conv_ref_backward(const ConvSpec& s, const Vec& x, const Vec& w, const Vec& g, Vec& dx, Vec& dxmag, Vec& dw,
                       Vec& dwmag) {
  const int64_t OH = s.OH(), OW = s.OW(), Cg = s.C / s.G, Kg = s.K / s.G;
  dx.assign(x.size(), 0.0), dxmag.assign(x.size(), 0.0), dw.assign(w.size(), 0.0), dwmag.assign(w.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t co = 0; co < s.K; ++co)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double gv = g[((n * s.K + co) * OH + oh) * OW + ow];
          for (int64_t cl = 0; cl < Cg; ++cl)
            for (int64_t ki = 0; ki < s.KH; ++ki)
              for (int64_t kj = 0; kj < s.KW; ++kj) {
                const int64_t ih = oh * s.sh - s.ph + ki, iw = ow * s.sw - s.pw + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const size_t wi = static_cast<size_t>(((co * Cg + cl) * s.KH + ki) * s.KW + kj);
                const size_t xi = static_cast<size_t>(((n * s.C + (co / Kg) * Cg + cl) * s.H + ih) * s.W + iw);
                dx[xi] += w[wi] * gv, dxmag[xi] += std::fabs(w[wi] * gv);
                dw[wi] += gv * x[xi], dwmag[wi] += std::fabs(gv * x[xi]);
              }
        }
}

class ConvCase : public OpCase {
 public:
  explicit ConvCase(ConvSpec s) : s_(s) {}
  std::string op() const override { return "layer.conv2d"; }
  std::string params() const override { return s_.str(); }

  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<float> x = uniform(rng, numel(s_.xs()), -1, 1), w = uniform(rng, numel(s_.ws()), -1, 1),
                             b = uniform(rng, s_.K, -1, 1);
    Tensor y = filled(s_.ys(), NAN);  // every element must be written
    nn::conv2d_forward(tensor(x, s_.xs()), tensor(w, s_.ws()), s_.bias ? tensor(b, {s_.K}) : Tensor(), y, s_.params(),
                       s_.ex());
    Vec ref, mag;
    const Vec bd = dbl(b);
    conv_ref(s_, dbl(x), dbl(w), s_.bias ? &bd : nullptr, ref, &mag);
    // R = Cg·KH·KW terms (+ bias) per output: (2(R + 1) + 16)·u·Σ|terms| (file comment). BF16 rounds
    // both GEMM operands to 8 significant bits (2^-9 relative each, so a product is off by at most
    // 2^-8 + 2^-18 relative): (2^-8 + 2^-17)·Σ|terms| more.
    const double prec = s_.bf16 ? 1.0 / 256 + 1.0 / 131072 : 0.0;
    Vec tol(mag.size()), tol32(mag.size());
    for (size_t i = 0; i < mag.size(); ++i) {
      tol32[i] = (2.0 * (s_.R() + 1) + 16.0) * kU * mag[i] + 1e-30;
      tol[i] = tol32[i] + prec * mag[i];
    }
    Report rep;
    rep.add("y", within(values(y), ref, tol));
    if (s_.bf16) rep.expect(within(values(y), ref, tol32).faults > 0, "bf16 operands in use (some error above fp32's)");
    // Backward against the analytic float64 reference: dx has Kg·KH·KW terms, dw N·OH·OW.
    const std::vector<float> g = uniform(rng, numel(s_.ys()), -1, 1);
    Tensor dx = filled(s_.xs(), NAN), dw = filled(s_.ws(), 0.0f);
    nn::conv2d_backward_data(tensor(g, s_.ys()), tensor(w, s_.ws()), dx, s_.params(), false, s_.ex());
    nn::conv2d_backward_filter(tensor(x, s_.xs()), tensor(g, s_.ys()), dw, s_.params(), s_.ex());
    Vec rdx, mdx, rdw, mdw;
    conv_ref_backward(s_, dbl(x), dbl(w), dbl(g), rdx, mdx, rdw, mdw);
    const double n_dx = static_cast<double>(s_.K / s_.G * s_.KH * s_.KW), n_dw = static_cast<double>(s_.N * s_.OH() * s_.OW());
    for (double& m : mdx) m = ((2 * n_dx + 16) * kU + prec) * m + 1e-30;
    for (double& m : mdw) m = ((2 * n_dw + 16) * kU + prec) * m + 1e-30;
    rep.add("dx", within(values(dx), rdx, mdx));
    rep.add("dw", within(values(dw), rdw, mdw));
    return rep.done();
  }

  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const std::vector<float> x = uniform(rng, numel(s_.xs()), -1, 1), w = uniform(rng, numel(s_.ws()), -1, 1),
                             g = uniform(rng, numel(s_.ys()), -1, 1), seed_dx = uniform(rng, numel(s_.xs()), -1, 1),
                             seed_dw = uniform(rng, numel(s_.ws()), -1, 1), seed_db = uniform(rng, s_.K, -1, 1);
    const Vec xd = dbl(x), wd = dbl(w), gd = dbl(g), ga = absv(gd), xa = absv(xd), wa = absv(wd);
    const Tensor gt = tensor(g, s_.ys()), xt = tensor(x, s_.xs()), wt = tensor(w, s_.ws());
    // The op: dx written, then dx accumulated onto seed_dx; dw and db accumulated onto seeds.
    Tensor dx = filled(s_.xs(), NAN), dx_acc = tensor(seed_dx, s_.xs()), dw = tensor(seed_dw, s_.ws()),
           db = tensor(seed_db, {s_.K});
    nn::conv2d_backward_data(gt, wt, dx, s_.params(), false, s_.ex());
    nn::conv2d_backward_data(gt, wt, dx_acc, s_.params(), true, s_.ex());
    nn::conv2d_backward_filter(xt, gt, dw, s_.params(), s_.ex());
    nn::conv2d_backward_bias(gt, db);
    // Finite differences of L = Σ g·conv(x, w) + Σ g·b (linear: any step is exact up to rounding).
    auto loss_x = [&](const Vec& v) {
      Vec y;
      conv_ref(s_, v, wd, nullptr, y);
      return dot(gd, y);
    };
    auto loss_w = [&](const Vec& v) {
      Vec y;
      conv_ref(s_, xd, v, nullptr, y);
      return dot(gd, y);
    };
    const Vec fx = central_diff(xd, 0.5, loss_x), fw = central_diff(wd, 0.5, loss_w);
    Vec y0;
    conv_ref(s_, xd, wd, nullptr, y0);
    const double noise = fd_noise(gd, y0, 0.5, static_cast<double>(s_.R() + 4));
    // Magnitudes: the same gradients with |g|, |w| (for dx) and |g|, |x| (for dw).
    const Vec mx = linear_grad(xd, [&](const Vec& v) {
      Vec y;
      conv_ref(s_, v, wa, nullptr, y);
      return dot(ga, y);
    });
    const Vec mw = linear_grad(wd, [&](const Vec& v) {
      Vec y;
      conv_ref(s_, xa, v, nullptr, y);
      return dot(ga, y);
    });
    Vec fb(static_cast<size_t>(s_.K), 0.0), mb(fb.size(), 0.0);
    const int64_t plane = s_.OH() * s_.OW();
    for (int64_t n = 0; n < s_.N; ++n)
      for (int64_t c = 0; c < s_.K; ++c)
        for (int64_t p = 0; p < plane; ++p) {
          fb[c] += gd[(n * s_.K + c) * plane + p];
          mb[c] += ga[(n * s_.K + c) * plane + p];
        }
    // dx: Kg·KH·KW terms per element; dw: N·OH·OW; db: N·OH·OW (file comment's bound), plus the
    // seed added once (accumulate) and the finite differences' rounding noise.
    const double n_dx = static_cast<double>(s_.K / s_.G * s_.KH * s_.KW), n_dw = static_cast<double>(s_.N * plane);
    Vec tdx(fx.size()), tdx_acc(fx.size()), tdw(fw.size()), tdb(fb.size()), ref_acc(fx.size()), ref_dw(fw.size()),
        ref_db(fb.size());
    for (size_t i = 0; i < fx.size(); ++i) {
      tdx[i] = (2 * n_dx + 16) * kU * mx[i] + noise;
      ref_acc[i] = fx[i] + seed_dx[i];
      tdx_acc[i] = tdx[i] + 2 * kU * (std::fabs(seed_dx[i]) + mx[i]);
    }
    for (size_t i = 0; i < fw.size(); ++i) {
      ref_dw[i] = fw[i] + seed_dw[i];
      tdw[i] = (2 * n_dw + 16) * kU * (mw[i] + std::fabs(seed_dw[i])) + noise;
    }
    for (size_t i = 0; i < fb.size(); ++i) {
      ref_db[i] = fb[i] + seed_db[i];
      tdb[i] = (2 * n_dw + 16) * kU * (mb[i] + std::fabs(seed_db[i])) + 1e-30;
    }
    Report rep;
    rep.add("dx", within(values(dx), fx, tdx));
    rep.add("dx+=", within(values(dx_acc), ref_acc, tdx_acc));
    rep.add("dw+=", within(values(dw), ref_dw, tdw));
    rep.add("db+=", within(values(db), ref_db, tdb));
    return rep.done();
  }

 private:
  ConvSpec s_;
};

// ---- perf: IResNet-50 convolutions (SPEC §8.1)

struct R50Layer {
  const char* name;
  ConvSpec s;  // N is set per run
  int count;   // occurrences in r50
};

std::vector<R50Layer> r50_layers() {
  // IBasicBlock: conv1 3×3 s1 (inplanes → planes) at the input resolution, conv2 3×3 with the stage's
  // stride, downsample 1×1 with the stride on each stage's first block; blocks [3, 4, 14, 3].
  return {
      {"stem 3->64 @112", conv(1, 3, 112, 112, 64, 3, 1, 1, 1), 1},
      {"l1.0.conv1 64->64 @112", conv(1, 64, 112, 112, 64, 3, 1, 1, 1), 1},
      {"l1.0.conv2 64->64 @112 s2", conv(1, 64, 112, 112, 64, 3, 2, 1, 1), 1},
      {"l1.0.ds 1x1 64->64 @112 s2", conv(1, 64, 112, 112, 64, 1, 2, 0, 1), 1},
      {"l1 64->64 @56", conv(1, 64, 56, 56, 64, 3, 1, 1, 1), 4},
      {"l2.0.conv1 64->128 @56", conv(1, 64, 56, 56, 128, 3, 1, 1, 1), 1},
      {"l2.0.conv2 128->128 @56 s2", conv(1, 128, 56, 56, 128, 3, 2, 1, 1), 1},
      {"l2.0.ds 1x1 64->128 @56 s2", conv(1, 64, 56, 56, 128, 1, 2, 0, 1), 1},
      {"l2 128->128 @28", conv(1, 128, 28, 28, 128, 3, 1, 1, 1), 6},
      {"l3.0.conv1 128->256 @28", conv(1, 128, 28, 28, 256, 3, 1, 1, 1), 1},
      {"l3.0.conv2 256->256 @28 s2", conv(1, 256, 28, 28, 256, 3, 2, 1, 1), 1},
      {"l3.0.ds 1x1 128->256 @28 s2", conv(1, 128, 28, 28, 256, 1, 2, 0, 1), 1},
      {"l3 256->256 @14", conv(1, 256, 14, 14, 256, 3, 1, 1, 1), 26},
      {"l4.0.conv1 256->512 @14", conv(1, 256, 14, 14, 512, 3, 1, 1, 1), 1},
      {"l4.0.conv2 512->512 @14 s2", conv(1, 512, 14, 14, 512, 3, 2, 1, 1), 1},
      {"l4.0.ds 1x1 256->512 @14 s2", conv(1, 256, 14, 14, 512, 1, 2, 0, 1), 1},
      {"l4 512->512 @7", conv(1, 512, 7, 7, 512, 3, 1, 1, 1), 4},
  };
}

double conv_flops(const ConvSpec& s) { return 2.0 * s.N * s.K * s.OH() * s.OW() * s.R(); }

enum class Pass { Forward, Data, Filter };

// Median seconds of one conv pass (after a warm-up call).
double time_conv(const ConvSpec& s, int reps, Pass pass = Pass::Forward) {
  std::mt19937_64 rng(1234);
  const Tensor x = tensor(uniform(rng, numel(s.xs()), -1, 1), s.xs()), w = tensor(uniform(rng, numel(s.ws()), -1, 1), s.ws());
  Tensor y = tensor(uniform(rng, numel(s.ys()), -1, 1), s.ys());
  Tensor dx = Tensor::empty(s.xs(), DType::F32, Device::cpu()), dw = filled(s.ws(), 0);
  return median_seconds(
      [&] {
        if (pass == Pass::Forward) nn::conv2d_forward(x, w, Tensor(), y, s.params());
        if (pass == Pass::Data) nn::conv2d_backward_data(y, w, dx, s.params());
        if (pass == Pass::Filter) nn::conv2d_backward_filter(x, y, dw, s.params());
      },
      1, reps);
}

class ConvPerf : public OpCase {
 public:
  ConvPerf(std::string label, ConvSpec s, int count, Pass pass = Pass::Forward)
      : label_(std::move(label)), s_(s), count_(count), pass_(pass) {}
  std::string op() const override { return "layer.conv2d"; }
  std::string params() const override {
    const char* p = pass_ == Pass::Forward ? "forward" : pass_ == Pass::Data ? "backward-data" : "backward-filter";
    return "perf " + label_ + " N=" + std::to_string(s_.N) + " " + p + " (" +
           nn::conv2d_algorithm(s_.xs(), s_.ws(), s_.params()) + ")";
  }
  CaseResult perf(Context&) override {
    const double t = time_conv(s_, 3, pass_);
    CaseResult r;
    const double gf = conv_flops(s_) / t / 1e9;
    r.detail = fmt("%.1f GFLOP/s", gf) + fmt(" %.2f ms", t * 1e3) +
               (count_ ? " (x" + std::to_string(count_) + " in the model, " : " (") +
               std::to_string(ThreadPool::global().num_threads()) + " threads)";
    r.figures = {{"gflops", gf}, {"median_s", t}};
    return r;
  }

 private:
  std::string label_;
  ConvSpec s_;
  int count_;
  Pass pass_;
};

class R50StackPerf : public OpCase {
 public:
  explicit R50StackPerf(int64_t N) : N_(N) {}
  std::string op() const override { return "layer.conv2d"; }
  std::string params() const override { return "perf r50 all convs N=" + std::to_string(N_); }
  CaseResult perf(Context&) override {
    double total = 0, flops = 0;
    for (R50Layer l : r50_layers()) {
      l.s.N = N_;
      total += l.count * time_conv(l.s, N_ >= 32 ? 1 : 5);
      flops += l.count * conv_flops(l.s);
    }
    CaseResult r;
    r.detail = fmt("%.2f ms/face", total / N_ * 1e3) + fmt(" (%.1f GFLOP/s", flops / total / 1e9) +
               fmt(", %.3f GMAC/face conv)", flops / 2 / N_ / 1e9);
    r.figures = {{"ms_per_face", total / N_ * 1e3}, {"gflops", flops / total / 1e9}};
    return r;
  }

 private:
  int64_t N_;
};

// ======================================================================== BatchNorm

struct BnSpec {
  std::vector<int64_t> shape;  // (N, C, ...)
  bool affine = true;
  bool freeze = false;  // BatchNormOptions::freeze_gamma (grad mode checks dgamma is untouched)
  int64_t C() const { return shape[1]; }
  int64_t S() const {
    int64_t s = 1;
    for (size_t a = 2; a < shape.size(); ++a) s *= shape[a];
    return s;
  }
  std::string str() const {
    return (shape.size() == 2 ? "1d x" : "2d x") + shape_s(shape) + (affine ? "" : " affine=false") +
           (freeze ? " freeze_gamma" : "");
  }
};

// Per-channel inputs with an offset and scale per channel (mean ~ ±1, std 0.3..1.5).
std::vector<float> bn_input(std::mt19937_64& rng, const BnSpec& s) {
  std::vector<float> x = uniform(rng, numel(s.shape), -1.7f, 1.7f);
  const std::vector<float> off = uniform(rng, s.C(), -1, 1), sc = uniform(rng, s.C(), 0.3f, 1.5f);
  const int64_t N = s.shape[0], C = s.C(), S = s.S();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        float& v = x[static_cast<size_t>((n * C + c) * S + i)];
        v = v * sc[c] + off[c];
      }
  return x;
}

struct BnStats {
  Vec mean, var;  // var biased
};

BnStats bn_stats(const BnSpec& s, const Vec& x) {
  const int64_t N = s.shape[0], C = s.C(), S = s.S();
  BnStats st{Vec(C, 0.0), Vec(C, 0.0)};
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) sum += x[(n * C + c) * S + i];
    const double m = sum / (N * S);
    double ss = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) ss += (x[(n * C + c) * S + i] - m) * (x[(n * C + c) * S + i] - m);
    st.mean[c] = m;
    st.var[c] = ss / (N * S);
  }
  return st;
}

// y = (x − mean)/sqrt(var + eps)·gamma + beta with the given statistics (training: the batch's).
Vec bn_apply(const BnSpec& s, const Vec& x, const Vec& mean, const Vec& var, const Vec& gamma, const Vec& beta,
             double eps) {
  const int64_t N = s.shape[0], C = s.C(), S = s.S();
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        const size_t k = static_cast<size_t>((n * C + c) * S + i);
        y[k] = (x[k] - mean[c]) / std::sqrt(var[c] + eps) * gamma[c] + beta[c];
      }
  return y;
}

Vec bn_train_ref(const BnSpec& s, const Vec& x, const Vec& gamma, const Vec& beta, double eps) {
  const BnStats st = bn_stats(s, x);
  return bn_apply(s, x, st.mean, st.var, gamma, beta, eps);
}

class BnCase : public OpCase {
 public:
  explicit BnCase(BnSpec s) : s_(std::move(s)) {}
  std::string op() const override { return "layer.batchnorm"; }
  std::string params() const override { return s_.str(); }

  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t C = s_.C(), M = s_.shape[0] * s_.S();
    const std::vector<float> x = bn_input(rng, s_), gamma = uniform(rng, C, 0.5f, 1.5f),
                             beta = uniform(rng, C, -0.5f, 0.5f), rm0 = uniform(rng, C, -0.2f, 0.2f),
                             rv0 = uniform(rng, C, 0.5f, 2.0f);
    const Vec xd = dbl(x), gd = s_.affine ? dbl(gamma) : Vec(C, 1.0), bd = s_.affine ? dbl(beta) : Vec(C, 0.0);
    Tensor y = filled(s_.shape, NAN), sm = filled({C}, NAN), si = filled({C}, NAN), rm = tensor(rm0, {C}),
           rv = tensor(rv0, {C});
    const Tensor gt = s_.affine ? tensor(gamma, {C}) : Tensor(), bt = s_.affine ? tensor(beta, {C}) : Tensor();
    nn::BatchNormOptions o;
    nn::batch_norm_forward_train(tensor(x, s_.shape), gt, bt, rm, rv, y, sm, si, o);
    const BnStats st = bn_stats(s_, xd);
    const Vec ref = bn_apply(s_, xd, st.mean, st.var, gd, bd, o.eps);
    // Mean |x| per channel: the scale of the statistics' partial-sum rounding.
    Vec mabs(C, 0.0);
    for (size_t k = 0; k < xd.size(); ++k) mabs[(k / s_.S()) % C] += std::fabs(xd[k]) / M;
    // y: the mean and Σ(x − mean)² come from float partial sums of <= 32 terms per lane (<= 34u
    // relative to Σ|terms|), are rounded to float once, and the normalize is 3 float operations; so
    // |err| <= 64u·(|γ|·invstd·(|x − mean| + mean|x|) + |β|) with a factor ~2 to spare.
    Vec ty(ref.size()), tm(C), ti(C), rmr(C), rvr(C), trm(C), trv(C);
    for (size_t k = 0; k < ref.size(); ++k) {
      const size_t c = (k / s_.S()) % C;
      const double is = 1 / std::sqrt(st.var[c] + o.eps);
      ty[k] = 64 * kU * (std::fabs(gd[c]) * is * (std::fabs(xd[k] - st.mean[c]) + mabs[c]) + std::fabs(bd[c]));
    }
    Vec isr(C);
    for (int64_t c = 0; c < C; ++c) {
      isr[c] = 1 / std::sqrt(st.var[c] + o.eps);
      tm[c] = 40 * kU * mabs[c];      // float partial sums (34u·mean|x|) + the float rounding
      ti[c] = 48 * kU * isr[c];       // the variance's partial sums (35u) halve under the sqrt; + roundings
      rmr[c] = 0.9 * rm0[c] + 0.1 * st.mean[c];
      rvr[c] = 0.9 * rv0[c] + 0.1 * st.var[c] * M / (M - 1);  // UNBIASED variance in the running stat
      // One step from exact float values: 0.1 × the statistic's error (mean: tm; unbiased variance:
      // two-pass float partial sums, <= 40u relative) plus the final rounding (<= u, 4u with margin).
      trm[c] = 4 * kU * std::fabs(rmr[c]) + 0.1 * tm[c];
      trv[c] = 4 * kU * std::fabs(rvr[c]) + 0.1 * 40 * kU * st.var[c] * M / (M - 1);
    }
    Report rep;
    rep.add("y", within(values(y), ref, ty));
    rep.add("mean", within(values(sm), st.mean, tm));
    rep.add("invstd", within(values(si), isr, ti));
    rep.add("running_mean", within(values(rm), rmr, trm));
    rep.add("running_var", within(values(rv), rvr, trv));
    // Eval with the updated running statistics, in place (y is x).
    Tensor xe = tensor(x, s_.shape);
    nn::batch_norm_forward_eval(xe, gt, bt, rm, rv, xe, o);
    const Vec rmv = dbl(values(rm)), rvv = dbl(values(rv));
    const Vec eref = bn_apply(s_, xd, rmv, rvv, gd, bd, o.eps);
    Vec te(eref.size());
    for (size_t k = 0; k < eref.size(); ++k) {
      const size_t c = (k / s_.S()) % C;
      // Scale and shift rounded once each, then 3 float operations.
      te[k] = 8 * kU * (std::fabs(gd[c]) / std::sqrt(rvv[c] + o.eps) * (std::fabs(xd[k]) + std::fabs(rmv[c])) +
                        std::fabs(bd[c]));
    }
    rep.add("eval_y", within(values(xe), eref, te));
    return rep.done();
  }

  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const int64_t C = s_.C(), S = s_.S(), N = s_.shape[0], M = N * S;
    const std::vector<float> x = bn_input(rng, s_), gamma = uniform(rng, C, 0.5f, 1.5f),
                             beta = uniform(rng, C, -0.5f, 0.5f), g = uniform(rng, numel(s_.shape), -1, 1),
                             seed_g = uniform(rng, C, -1, 1), seed_b = uniform(rng, C, -1, 1),
                             rmv = uniform(rng, C, -0.5f, 0.5f), rvv = uniform(rng, C, 0.3f, 2.0f);
    const Vec xd = dbl(x), gdv = dbl(g), ga = s_.affine ? dbl(gamma) : Vec(C, 1.0),
              ba = s_.affine ? dbl(beta) : Vec(C, 0.0);
    const Tensor gt = s_.affine ? tensor(gamma, {C}) : Tensor(), bt = s_.affine ? tensor(beta, {C}) : Tensor();
    nn::BatchNormOptions o;
    o.freeze_gamma = s_.freeze;
    Tensor y = filled(s_.shape, 0), sm = filled({C}, 0), si = filled({C}, 0);
    const Tensor xt = tensor(x, s_.shape);
    nn::batch_norm_forward_train(xt, gt, bt, Tensor(), Tensor(), y, sm, si, o);
    Tensor dx = filled(s_.shape, NAN), dg = tensor(seed_g, {C}), db = tensor(seed_b, {C});
    nn::batch_norm_backward_train(tensor(g, s_.shape), xt, gt, sm, si, dx, s_.affine ? dg : Tensor(),
                                  s_.affine ? db : Tensor(), o);
    // Finite differences through the batch statistics (h = 1e-5: truncation ~h²·|L'''| ~ 1e-9,
    // rounding ~1e-16·|L|/h ~ 1e-10).
    const double h = 1e-5;
    const Vec fx = central_diff(xd, h, [&](const Vec& v) { return dot(gdv, bn_train_ref(s_, v, ga, ba, o.eps)); });
    const Vec fg = central_diff(ga, h, [&](const Vec& v) { return dot(gdv, bn_train_ref(s_, xd, v, ba, o.eps)); });
    const Vec fb = central_diff(ba, h, [&](const Vec& v) { return dot(gdv, bn_train_ref(s_, xd, ga, v, o.eps)); });
    // Magnitudes of the three terms of dx = γ·is·(g − Σg/M − x̂·Σ(g·x̂)/M) and of the sums.
    const BnStats st = bn_stats(s_, xd);
    Vec sg(C, 0.0), sgx(C, 0.0), tdx(xd.size()), tdg(C), tdb(C);
    for (size_t k = 0; k < xd.size(); ++k) {
      const size_t c = (k / S) % C;
      const double xh = (xd[k] - st.mean[c]) / std::sqrt(st.var[c] + o.eps);
      sg[c] += std::fabs(gdv[k]);
      sgx[c] += std::fabs(gdv[k] * xh);
    }
    // Every rounding of the float backward (the statistics' partial sums <= 34u, the saved float mean
    // and invstd, the double coefficients rounded to float, 4 float operations per element) is a
    // relative error of <= ~40u on one of the three terms: tolerance 96u·Σ|terms|. A wrong formula is
    // off by >= Σ|g|/M ~ 1e-2. Finite differences: the reference's statistics are M-term float64 sums
    // (noise fd_noise with k = M + 8); truncation h²/6 times the third derivative of L, <= 1e-9 here
    // (that derivative scales with invstd³ <= ~40 and Σ|g|/M <= 1).
    const double noise = fd_noise(gdv, bn_train_ref(s_, xd, ga, ba, o.eps), h, static_cast<double>(M + 8)) + 1e-9;
    for (size_t k = 0; k < xd.size(); ++k) {
      const size_t c = (k / S) % C;
      const double is = 1 / std::sqrt(st.var[c] + o.eps), xh = (xd[k] - st.mean[c]) * is;
      tdx[k] = 96 * kU * std::fabs(ga[c]) * is * (std::fabs(gdv[k]) + sg[c] / M + std::fabs(xh) * sgx[c] / M) + noise;
    }
    Vec rg(C), rb(C);
    for (int64_t c = 0; c < C; ++c) {
      rg[c] = fg[c] + seed_g[c];
      rb[c] = fb[c] + seed_b[c];
      tdg[c] = 48 * kU * (sgx[c] + std::fabs(seed_g[c])) + noise;  // Σ g·x̂ in partial sums, + the seed
      tdb[c] = 40 * kU * (sg[c] + std::fabs(seed_b[c])) + noise;
    }
    Report rep;
    rep.add("dx", within(values(dx), fx, tdx));
    if (s_.affine) {
      if (s_.freeze) {
        rep.expect(values(dg) == seed_g, "freeze_gamma left dgamma untouched");
      } else {
        rep.add("dgamma+=", within(values(dg), rg, tdg));
      }
      rep.add("dbeta+=", within(values(db), rb, tdb));
    }
    // Eval mode: the running statistics are constants, L is linear in x.
    Tensor edx = filled(s_.shape, NAN), edg = filled({C}, 0), edb = filled({C}, 0);
    const Tensor rmt = tensor(rmv, {C}), rvt = tensor(rvv, {C});
    nn::batch_norm_backward_eval(tensor(g, s_.shape), xt, gt, rmt, rvt, edx, s_.affine ? edg : Tensor(),
                                 s_.affine ? edb : Tensor(), o);
    const Vec rmd = dbl(rmv), rvd = dbl(rvv);
    const Vec efx =
        central_diff(xd, 0.5, [&](const Vec& v) { return dot(gdv, bn_apply(s_, v, rmd, rvd, ga, ba, o.eps)); });
    const Vec efg =
        central_diff(ga, 0.5, [&](const Vec& v) { return dot(gdv, bn_apply(s_, xd, rmd, rvd, v, ba, o.eps)); });
    const double enoise = fd_noise(gdv, bn_apply(s_, xd, rmd, rvd, ga, ba, o.eps), 0.5, 8);
    Vec tex(xd.size()), teg(C, 0.0);
    for (size_t k = 0; k < xd.size(); ++k) {
      const size_t c = (k / S) % C;
      const double is = 1 / std::sqrt(rvd[c] + o.eps);
      tex[k] = 8 * kU * std::fabs(ga[c] * is * gdv[k]) + enoise;  // γ·is rounded once, one product
      teg[c] += 48 * kU * std::fabs(gdv[k]) * (std::fabs(xd[k]) + std::fabs(rmd[c])) * is;
    }
    for (double& t : teg) t += enoise;
    rep.add("eval_dx", within(values(edx), efx, tex));
    if (s_.affine && !s_.freeze) rep.add("eval_dgamma", within(values(edg), efg, teg));
    return rep.done();
  }

 private:
  BnSpec s_;
};

// Running statistics after k = 3 training steps on different batches vs the float64 formula.
class BnRunningCase : public OpCase {
 public:
  explicit BnRunningCase(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  std::string op() const override { return "layer.batchnorm"; }
  std::string params() const override { return "running stats after 3 steps x" + shape_s(shape_); }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const BnSpec s{shape_};
    const int64_t C = s.C(), M = shape_[0] * s.S();
    Tensor rm = filled({C}, 0.0f), rv = filled({C}, 1.0f), y = filled(shape_, 0), sm = filled({C}, 0),
           si = filled({C}, 0);
    Vec rmr(C, 0.0), rvr(C, 1.0);
    double xmax = 0, vmax = 0;
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> x = bn_input(rng, s);
      for (float v : x) xmax = std::max(xmax, std::fabs(static_cast<double>(v)));
      nn::batch_norm_forward_train(tensor(x, shape_), Tensor(), Tensor(), rm, rv, y, sm, si);
      const BnStats st = bn_stats(s, dbl(x));
      for (int64_t c = 0; c < C; ++c) {
        vmax = std::max(vmax, st.var[c] * M / (M - 1));
        rmr[c] = 0.9 * rmr[c] + 0.1 * st.mean[c];
        rvr[c] = 0.9 * rvr[c] + 0.1 * st.var[c] * M / (M - 1);
      }
    }
    // Per step, the batch mean is within 34u·mean|x| + u·|mean| (float partial sums, one rounding)
    // and the unbiased variance within ~40u·var; the update adds two roundings of the running value,
    // and earlier errors decay by 0.9. Three steps: 16u·(|ref| + max|x|) and 16u·(|ref| + max var)
    // leave a factor ~2. Swapping the biased and the unbiased variance changes rv by
    // 0.1·var/(M − 1) >= 1e-4·var here; the other momentum convention (0.9 on the batch) by O(1).
    Vec tm(C), tv(C);
    for (int64_t c = 0; c < C; ++c) {
      tm[c] = 16 * kU * (std::fabs(rmr[c]) + xmax);
      tv[c] = 16 * kU * (std::fabs(rvr[c]) + vmax);
    }
    Report rep;
    rep.add("running_mean", within(values(rm), rmr, tm));
    rep.add("running_var", within(values(rv), rvr, tv));
    return rep.done();
  }

 private:
  std::vector<int64_t> shape_;
};

// Eval BatchNorm after a conv (or a Linear) == the folded layer, both against float64.
class FoldCase : public OpCase {
 public:
  explicit FoldCase(bool linear) : linear_(linear) {}
  std::string op() const override { return "layer.batchnorm"; }
  std::string params() const override {
    return linear_ ? "fold into linear x[5,37] -> 19 (features head)" : "fold into conv x[2,8,10,9] -> 12 k3 s1 p1";
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const ConvSpec cs = linear_ ? conv(5, 37, 1, 1, 19, 1, 1, 0, 1) : conv(2, 8, 10, 9, 12, 3, 1, 1, 1);
    const int64_t K = cs.K;
    const std::vector<int64_t> wsh = linear_ ? std::vector<int64_t>{K, cs.C} : cs.ws();
    const std::vector<int64_t> xsh = linear_ ? std::vector<int64_t>{cs.N, cs.C} : cs.xs();
    const std::vector<int64_t> ysh = linear_ ? std::vector<int64_t>{cs.N, K} : cs.ys();
    const std::vector<float> x = uniform(rng, numel(xsh), -1, 1), w = uniform(rng, numel(wsh), -1, 1),
                             bias = uniform(rng, K, -1, 1), gamma = uniform(rng, K, 0.5f, 1.5f),
                             beta = uniform(rng, K, -0.5f, 0.5f), rm = uniform(rng, K, -0.5f, 0.5f),
                             rv = uniform(rng, K, 0.2f, 2.0f);
    const Tensor xt = tensor(x, xsh), wt = tensor(w, wsh), bt = tensor(bias, {K}), gt = tensor(gamma, {K}),
                 bet = tensor(beta, {K}), rmt = tensor(rm, {K}), rvt = tensor(rv, {K});
    // Unfolded: layer (with bias for Linear, without for conv) then eval BN, in place.
    Tensor y = filled(ysh, NAN), yf = filled(ysh, NAN), wf = filled(wsh, NAN), bf = filled({K}, NAN);
    const Tensor lin_bias = linear_ ? bt : Tensor();
    if (linear_) {
      nn::linear_forward(xt, wt, lin_bias, y);
    } else {
      nn::conv2d_forward(xt, wt, Tensor(), y, cs.params());
    }
    nn::batch_norm_forward_eval(y, gt, bet, rmt, rvt, y);
    nn::fold_batch_norm(wt, lin_bias, gt, bet, rmt, rvt, 1e-5, wf, bf);
    if (linear_) {
      nn::linear_forward(xt, wf, bf, yf);
    } else {
      nn::conv2d_forward(xt, wf, bf, yf, cs.params());
    }
    Vec ref, mag;
    conv_ref(cs, dbl(x), dbl(w), nullptr, ref, &mag);  // a Linear is a 1×1 conv on 1×1 images
    Vec tol(ref.size());
    const int64_t plane = ref.size() / (cs.N * K);
    for (size_t i = 0; i < ref.size(); ++i) {
      const size_t c = (i / plane) % K;
      const double sc = gamma[c] / std::sqrt(rv[c] + 1e-5), b0 = linear_ ? bias[c] : 0.0;
      ref[i] = (ref[i] + b0 - rm[c]) * sc + beta[c];
      // Both paths: the layer's (2(R + 1) + 16)u bound on Σ|terms|·|s|, then <= 8 more roundings
      // on the affine terms.
      tol[i] = (2.0 * (cs.R() + 1) + 16) * kU * mag[i] * std::fabs(sc) +
               8 * kU * ((std::fabs(b0) + std::fabs(rm[c])) * std::fabs(sc) + std::fabs(beta[c]) + std::fabs(ref[i]));
    }
    Report rep;
    rep.add("bn(layer)", within(values(y), ref, tol));
    rep.add("folded", within(values(yf), ref, tol));
    return rep.done();
  }

 private:
  bool linear_;
};

// ======================================================================== PReLU, ReLU, Dropout, add

// Values with |v| >= 0.05 (finite differences with h = 1e-3 never cross the kink at 0).
std::vector<float> away_from_zero(std::mt19937_64& rng, int64_t n) {
  std::vector<float> v = uniform(rng, n, -1, 1);
  for (float& f : v)
    if (std::fabs(f) < 0.05f) f = f < 0 ? f - 0.05f : f + 0.05f;
  return v;
}

class PreluCase : public OpCase {
 public:
  PreluCase(std::vector<int64_t> shape, bool shared) : shape_(std::move(shape)), shared_(shared) {}
  std::string op() const override { return "layer.prelu"; }
  std::string params() const override { return "x" + shape_s(shape_) + (shared_ ? " alpha[1]" : " alpha[C]"); }

  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t C = shape_[1], S = numel(shape_) / shape_[0] / C, A = shared_ ? 1 : C;
    const std::vector<float> x = uniform(rng, numel(shape_), -1, 1), a = uniform(rng, A, -0.5f, 0.5f);
    Tensor y = filled(shape_, NAN), xi = tensor(x, shape_);
    nn::prelu_forward(tensor(x, shape_), tensor(a, {A}), y);
    nn::prelu_forward(xi, tensor(a, {A}), xi);  // in place
    Vec ref(x.size()), tol(x.size());
    for (size_t k = 0; k < x.size(); ++k) {
      const double al = a[shared_ ? 0 : (k / S) % C];
      ref[k] = x[k] > 0 ? x[k] : al * x[k];
      tol[k] = kU * std::fabs(ref[k]);  // one rounded product
    }
    Report rep;
    rep.add("y", within(values(y), ref, tol));
    rep.add("y(in place)", within(values(xi), ref, tol));
    return rep.done();
  }

  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const int64_t C = shape_[1], S = numel(shape_) / shape_[0] / C, A = shared_ ? 1 : C;
    const std::vector<float> x = away_from_zero(rng, numel(shape_)), a = uniform(rng, A, -0.5f, 0.5f),
                             g = uniform(rng, numel(shape_), -1, 1), seed = uniform(rng, A, -1, 1);
    const Vec xd = dbl(x), ad = dbl(a), gd = dbl(g);
    Tensor dx = filled(shape_, NAN), da = tensor(seed, {A});
    nn::prelu_backward(tensor(g, shape_), tensor(x, shape_), tensor(a, {A}), dx, da);
    auto ref = [&](const Vec& xv, const Vec& av) {
      double L = 0;
      for (size_t k = 0; k < xv.size(); ++k) {
        const double al = av[shared_ ? 0 : (k / S) % C];
        L += gd[k] * (xv[k] > 0 ? xv[k] : al * xv[k]);
      }
      return L;
    };
    const Vec fx = central_diff(xd, 1e-3, [&](const Vec& v) { return ref(v, ad); });
    const Vec fa = central_diff(ad, 1e-3, [&](const Vec& v) { return ref(xd, v); });
    Vec y0(xd.size());
    for (size_t k = 0; k < xd.size(); ++k) y0[k] = xd[k] > 0 ? xd[k] : ad[shared_ ? 0 : (k / S) % C] * xd[k];
    const double noise = fd_noise(gd, y0, 1e-3, 4);
    Vec tx(fx.size()), ra(A), ta(A, 0.0);
    for (size_t k = 0; k < fx.size(); ++k) {
      tx[k] = kU * std::fabs(fx[k]) + noise;  // one rounded product
      if (x[k] <= 0) ta[shared_ ? 0 : (k / S) % C] += std::fabs(xd[k] * gd[k]);
    }
    // dalpha: products summed in float partial sums of <= 32 per lane, blocks in double (<= 37u of
    // Σ|terms|), the seed added once: 40u.
    for (int64_t c = 0; c < A; ++c) {
      ra[c] = fa[c] + seed[c];
      ta[c] = 40 * kU * (ta[c] + std::fabs(seed[c])) + noise;
    }
    Report rep;
    rep.add("dx", within(values(dx), fx, tx));
    rep.add("dalpha+=", within(values(da), ra, ta));
    return rep.done();
  }

 private:
  std::vector<int64_t> shape_;
  bool shared_;
};

class ReluCase : public OpCase {
 public:
  std::string op() const override { return "layer.relu"; }
  std::string params() const override { return "x[3,5,7,4]"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<int64_t> sh = {3, 5, 7, 4};
    const std::vector<float> x = uniform(rng, numel(sh), -1, 1);
    Tensor y = filled(sh, NAN);
    nn::relu_forward(tensor(x, sh), y);
    Vec ref(x.size());
    for (size_t k = 0; k < x.size(); ++k) ref[k] = std::max(0.0f, x[k]);
    Report rep;
    rep.add("y", within(values(y), ref, 0.0));  // exact
    return rep.done();
  }
  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const std::vector<int64_t> sh = {3, 5, 7, 4};
    const std::vector<float> x = away_from_zero(rng, numel(sh)), g = uniform(rng, numel(sh), -1, 1);
    Tensor y = tensor(x, sh), dx = filled(sh, NAN);
    nn::relu_forward(y, y);  // in place: the backward reads the output
    nn::relu_backward(tensor(g, sh), y, dx);
    const Vec gd = dbl(g);
    const Vec fx = central_diff(dbl(x), 1e-3, [&](const Vec& v) {
      double L = 0;
      for (size_t k = 0; k < v.size(); ++k) L += gd[k] * std::max(0.0, v[k]);
      return L;
    });
    Vec y0(x.size());
    for (size_t k = 0; k < x.size(); ++k) y0[k] = std::max(0.0f, x[k]);
    Report rep;
    rep.add("dx", within(values(dx), fx, fd_noise(gd, y0, 1e-3, 4)));  // exact copies of g or 0
    return rep.done();
  }
};

class DropoutCase : public OpCase {
 public:
  std::string op() const override { return "layer.dropout"; }
  std::string params() const override { return "p=0.4 x[8,16,29] counter mask, rate, identities"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<int64_t> sh = {8, 16, 29};
    const std::vector<float> x = uniform(rng, numel(sh), -1, 1);
    nn::DropoutParams d;
    d.p = 0.4;
    d.seed = rng();
    d.step = 17;
    const Tensor xt = tensor(x, sh);
    Tensor y = filled(sh, NAN), y2 = filled(sh, NAN), ys = filled(sh, NAN), ye = filled(sh, NAN), y1 = filled(sh, NAN);
    nn::dropout_forward(xt, y, d, true);
    nn::dropout_forward(xt, y2, d, true);
    nn::DropoutParams d2 = d;
    d2.step = 18;
    nn::dropout_forward(xt, ys, d2, true);
    nn::dropout_forward(xt, ye, d, false);
    nn::DropoutParams d1 = d;
    d1.p = 1.0;
    nn::dropout_forward(xt, y1, d1, true);
    // The mask is margin_math.h's counter generator (its own spec, shared by the CUDA kernels).
    const uint64_t key = margin::rng_key(d.seed, nn::kDropoutStream, d.step);
    Vec ref(x.size());
    size_t kept = 0;
    for (size_t k = 0; k < x.size(); ++k) {
      const bool keep = margin::rng_uniform(key, k) >= d.p;
      kept += keep;
      ref[k] = keep ? static_cast<double>(x[k] * static_cast<float>(1.0 / 0.6)) : 0.0;
    }
    const std::vector<float> yv = values(y), sv = values(ys);
    size_t differ = 0;
    for (size_t k = 0; k < x.size(); ++k) differ += (yv[k] == 0) != (sv[k] == 0);
    Report rep;
    rep.add("y", within(yv, ref, 0.0));  // x·float(1/(1 − p)) exactly
    // Keep rate 0.6 over n = 3712 draws: std sqrt(0.24/n) = 0.008; 5 sigma.
    const double rate = static_cast<double>(kept) / x.size();
    rep.expect(std::fabs(rate - 0.6) < 0.04, "keep rate " + fmt("%.4f", rate) + " within 0.04 of 0.6");
    rep.expect(yv == values(y2), "same (seed, step) gives the same output");
    rep.expect(differ > x.size() / 4, "another step gives another mask (" + std::to_string(differ) + " differ)");
    rep.expect(values(ye) == x, "eval is the identity");
    rep.expect(values(y1) == std::vector<float>(x.size(), 0.0f), "p = 1 drops everything");
    Tensor xi = tensor(x, sh);
    nn::dropout_forward(xi, xi, d, true);
    rep.expect(values(xi) == yv, "in place equals out of place");
    rep.r.detail += fmt(" keep rate %.4f", rate);
    return rep.done();
  }
  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const std::vector<int64_t> sh = {4, 6, 5};
    const std::vector<float> x = uniform(rng, numel(sh), -1, 1), g = uniform(rng, numel(sh), -1, 1);
    nn::DropoutParams d;
    d.p = 0.4;
    d.seed = rng();
    d.step = 3;
    Tensor dx = filled(sh, NAN);
    nn::dropout_backward(tensor(g, sh), dx, d, true);
    const uint64_t key = margin::rng_key(d.seed, nn::kDropoutStream, d.step);
    const Vec gd = dbl(g);
    const Vec fx = central_diff(dbl(x), 0.5, [&](const Vec& v) {
      double L = 0;
      for (size_t k = 0; k < v.size(); ++k)
        if (margin::rng_uniform(key, k) >= d.p) L += gd[k] * v[k] / (1 - d.p);
      return L;
    });
    Vec tol(fx.size());
    const double noise = fd_noise(gd, absv(dbl(x)), 0.5, 8);  // |y| <= |x|/(1 − p) < 2|x|
    for (size_t k = 0; k < fx.size(); ++k) tol[k] = 2 * kU * std::fabs(fx[k]) + noise;  // float(1/(1−p)), one product
    Report rep;
    rep.add("dx", within(values(dx), fx, tol));
    return rep.done();
  }
};

class AddFlattenCase : public OpCase {
 public:
  std::string op() const override { return "layer.add"; }
  std::string params() const override { return "add x[2,3,5,5] (in place too) and flatten"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<int64_t> sh = {2, 3, 5, 5};
    const std::vector<float> a = uniform(rng, numel(sh), -1, 1), b = uniform(rng, numel(sh), -1, 1);
    Tensor y = filled(sh, NAN), ai = tensor(a, sh);
    nn::add(tensor(a, sh), tensor(b, sh), y);
    nn::add(ai, tensor(b, sh), ai);
    Vec ref(a.size()), tol(a.size());
    for (size_t k = 0; k < a.size(); ++k) {
      ref[k] = static_cast<double>(a[k]) + b[k];
      tol[k] = kU * std::fabs(ref[k]);  // one rounding
    }
    Report rep;
    rep.add("y", within(values(y), ref, tol));
    rep.add("y(in place)", within(values(ai), ref, tol));
    const Tensor f = nn::flatten(y);
    rep.expect(f.shape() == std::vector<int64_t>{2, 75} && f.data() == y.data(), "flatten is a [2, 75] view");
    return rep.done();
  }
};

// ======================================================================== Linear

struct LinSpec {
  int64_t N, in, out;
  bool bias;
};

void linear_ref(const LinSpec& s, const Vec& x, const Vec& w, const Vec* b, Vec& y, Vec* mag = nullptr) {
  y.assign(static_cast<size_t>(s.N * s.out), 0.0);
  if (mag) mag->assign(y.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.out; ++o) {
      double acc = b ? (*b)[o] : 0.0, m = b ? std::fabs((*b)[o]) : 0.0;
      for (int64_t i = 0; i < s.in; ++i) {
        acc += x[n * s.in + i] * w[o * s.in + i];
        m += std::fabs(x[n * s.in + i] * w[o * s.in + i]);
      }
      y[n * s.out + o] = acc;
      if (mag) (*mag)[n * s.out + o] = m;
    }
}

class LinearCase : public OpCase {
 public:
  explicit LinearCase(LinSpec s) : s_(s) {}
  std::string op() const override { return "layer.linear"; }
  std::string params() const override {
    return "x[" + std::to_string(s_.N) + "," + std::to_string(s_.in) + "] -> " + std::to_string(s_.out) +
           (s_.bias ? " bias" : " no bias");
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<float> x = uniform(rng, s_.N * s_.in, -1, 1), w = uniform(rng, s_.out * s_.in, -1, 1),
                             b = uniform(rng, s_.out, -1, 1);
    Tensor y = filled({s_.N, s_.out}, NAN);
    nn::linear_forward(tensor(x, {s_.N, s_.in}), tensor(w, {s_.out, s_.in}), s_.bias ? tensor(b, {s_.out}) : Tensor(), y);
    Vec ref, mag;
    const Vec bd = dbl(b);
    linear_ref(s_, dbl(x), dbl(w), s_.bias ? &bd : nullptr, ref, &mag);
    Vec tol(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) tol[i] = (2.0 * (s_.in + 1) + 16) * kU * mag[i] + 1e-30;  // file comment
    Report rep;
    rep.add("y", within(values(y), ref, tol));
    return rep.done();
  }
  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params() + " grad");
    const std::vector<float> x = uniform(rng, s_.N * s_.in, -1, 1), w = uniform(rng, s_.out * s_.in, -1, 1),
                             g = uniform(rng, s_.N * s_.out, -1, 1), sw = uniform(rng, s_.out * s_.in, -1, 1),
                             sb = uniform(rng, s_.out, -1, 1);
    const Vec xd = dbl(x), wd = dbl(w), gd = dbl(g), ga = absv(gd), xa = absv(xd), wa = absv(wd);
    Tensor dx = filled({s_.N, s_.in}, NAN), dw = tensor(sw, {s_.out, s_.in}), db = tensor(sb, {s_.out});
    nn::linear_backward(tensor(g, {s_.N, s_.out}), tensor(x, {s_.N, s_.in}), tensor(w, {s_.out, s_.in}), dx, dw,
                        s_.bias ? db : Tensor());
    auto L = [&](const Vec& xv, const Vec& wv, const Vec& gv) {
      Vec y;
      linear_ref(s_, xv, wv, nullptr, y);
      return dot(gv, y);
    };
    const Vec fx = central_diff(xd, 0.5, [&](const Vec& v) { return L(v, wd, gd); });
    const Vec fw = central_diff(wd, 0.5, [&](const Vec& v) { return L(xd, v, gd); });
    const Vec mx = linear_grad(xd, [&](const Vec& v) { return L(v, wa, ga); });
    const Vec mw = linear_grad(wd, [&](const Vec& v) { return L(xa, v, ga); });
    Vec y0;
    linear_ref(s_, xd, wd, nullptr, y0);
    const double noise = fd_noise(gd, y0, 0.5, static_cast<double>(s_.in + 4));
    Vec tx(fx.size()), rw(fw.size()), tw(fw.size()), rb(s_.out), tb(s_.out);
    // dx: out terms; dw: N terms (+ the seed); db: N terms in double (+ the seed, one rounding).
    for (size_t i = 0; i < fx.size(); ++i) tx[i] = (2.0 * s_.out + 16) * kU * mx[i] + noise;
    for (size_t i = 0; i < fw.size(); ++i) {
      rw[i] = fw[i] + sw[i];
      tw[i] = (2.0 * s_.N + 16) * kU * (mw[i] + std::fabs(sw[i])) + noise;
    }
    for (int64_t o = 0; o < s_.out; ++o) {
      double sum = 0, mag = 0;
      for (int64_t n = 0; n < s_.N; ++n) sum += gd[n * s_.out + o], mag += ga[n * s_.out + o];
      rb[o] = sum + sb[o];
      tb[o] = 4 * kU * (mag + std::fabs(sb[o]));
    }
    Report rep;
    rep.add("dx", within(values(dx), fx, tx));
    rep.add("dw+=", within(values(dw), rw, tw));
    if (s_.bias) rep.add("db+=", within(values(db), rb, tb));
    return rep.done();
  }

 private:
  LinSpec s_;
};

// ======================================================================== determinism

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

class DeterminismCase : public OpCase {
 public:
  std::string op() const override { return "layer.determinism"; }
  std::string params() const override {
    return "1 thread vs all (" + std::to_string(ThreadPool::global().num_threads()) +
           ") and run to run: conv (3 algorithms) fwd/bwd, batchnorm, prelu, linear";
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    std::vector<std::string> bad;
    // Large enough that fc::sgemm and the per-channel loops use every thread.
    const ConvSpec specs[] = {conv(5, 32, 18, 18, 48, 3, 1, 1, 1), conv(4, 64, 16, 16, 64, 1, 1, 0, 1),
                              conv(4, 64, 17, 17, 64, 3, 2, 1, 64), conv(2, 32, 40, 40, 16, 3, 1, 1, 1, false, 1)};
    for (const ConvSpec& s : specs) {
      const Tensor x = tensor(uniform(rng, numel(s.xs()), -1, 1), s.xs()), w = tensor(uniform(rng, numel(s.ws()), -1, 1), s.ws()),
                   g = tensor(uniform(rng, numel(s.ys()), -1, 1), s.ys());
      auto run = [&](int threads, Tensor& y, Tensor& dx, Tensor& dw) {
        y = filled(s.ys(), 0), dx = filled(s.xs(), 0), dw = filled(s.ws(), 0);
        nn::conv2d_forward(x, w, Tensor(), y, s.params(), s.ex(threads));
        nn::conv2d_backward_data(g, w, dx, s.params(), false, s.ex(threads));
        nn::conv2d_backward_filter(x, g, dw, s.params(), s.ex(threads));
      };
      Tensor y1, dx1, dw1, ya, dxa, dwa, yb, dxb, dwb;
      run(1, y1, dx1, dw1);
      run(0, ya, dxa, dwa);
      run(0, yb, dxb, dwb);
      if (!same_bits(y1, ya) || !same_bits(ya, yb)) bad.push_back("conv y " + s.str());
      if (!same_bits(dx1, dxa) || !same_bits(dxa, dxb)) bad.push_back("conv dx " + s.str());
      if (!same_bits(dw1, dwa) || !same_bits(dwa, dwb)) bad.push_back("conv dw " + s.str());
    }
    {
      const std::vector<int64_t> sh = {6, 24, 15, 15};
      const BnSpec bs{sh};
      const Tensor x = tensor(bn_input(rng, bs), sh), g = tensor(uniform(rng, numel(sh), -1, 1), sh),
                   gm = tensor(uniform(rng, 24, 0.5f, 1.5f), {24}), bt = tensor(uniform(rng, 24, -1, 1), {24}),
                   al = tensor(uniform(rng, 24, 0, 0.5f), {24});
      std::vector<Tensor> outs[2];
      for (int t = 0; t < 2; ++t) {
        ExecOptions ex;
        ex.max_threads = t == 0 ? 1 : 0;
        Tensor y = filled(sh, 0), sm = filled({24}, 0), si = filled({24}, 0), rm = filled({24}, 0), rv = filled({24}, 1),
               dx = filled(sh, 0), dg = filled({24}, 0), db = filled({24}, 0), py = filled(sh, 0), pdx = filled(sh, 0),
               pda = filled({24}, 0);
        nn::batch_norm_forward_train(x, gm, bt, rm, rv, y, sm, si, nn::BatchNormOptions(), ex);
        nn::batch_norm_backward_train(g, x, gm, sm, si, dx, dg, db, nn::BatchNormOptions(), ex);
        nn::prelu_forward(x, al, py, ex);
        nn::prelu_backward(g, x, al, pdx, pda, ex);
        outs[t] = {y, sm, si, rm, rv, dx, dg, db, py, pdx, pda};
      }
      const char* names[] = {"bn y", "bn mean", "bn invstd", "bn running_mean", "bn running_var", "bn dx",
                             "bn dgamma", "bn dbeta", "prelu y", "prelu dx", "prelu dalpha"};
      for (size_t i = 0; i < outs[0].size(); ++i)
        if (!same_bits(outs[0][i], outs[1][i])) bad.push_back(names[i]);
    }
    {
      const Tensor x = tensor(uniform(rng, 64 * 300, -1, 1), {64, 300}), w = tensor(uniform(rng, 200 * 300, -1, 1), {200, 300}),
                   b = tensor(uniform(rng, 200, -1, 1), {200}), g = tensor(uniform(rng, 64 * 200, -1, 1), {64, 200});
      std::vector<Tensor> outs[2];
      for (int t = 0; t < 2; ++t) {
        ExecOptions ex;
        ex.max_threads = t == 0 ? 1 : 0;
        Tensor y = filled({64, 200}, 0), dx = filled({64, 300}, 0), dw = filled({200, 300}, 0), db = filled({200}, 0);
        nn::linear_forward(x, w, b, y, ex);
        nn::linear_backward(g, x, w, dx, dw, db, ex);
        outs[t] = {y, dx, dw, db};
      }
      const char* names[] = {"linear y", "linear dx", "linear dw", "linear db"};
      for (size_t i = 0; i < 4; ++i)
        if (!same_bits(outs[0][i], outs[1][i])) bad.push_back(names[i]);
    }
    CaseResult r;
    if (bad.empty()) {
      r.detail = "bitwise identical";
    } else {
      r.status = CaseResult::Fail;
      r.detail = "differ:";
      for (auto& b : bad) r.detail += " [" + b + "]";
    }
    return r;
  }
};

// ======================================================================== argument errors

class ArgsCase : public OpCase {
 public:
  std::string op() const override { return "layer.args"; }
  std::string params() const override { return "invalid arguments throw fc::Error with a named message"; }
  CaseResult test(Context&) override {
    struct Expect {
      const char* what;
      Code code;
      const char* needle;  // substring of the message
      std::function<void()> call;
    };
    const Tensor x = filled({2, 4, 6, 6}, 0.5f), w = filled({8, 4, 3, 3}, 0.1f), y = filled({2, 8, 6, 6}, 0);
    const Tensor wg = filled({8, 2, 3, 3}, 0.1f), c4 = filled({4}, 1.0f), c3 = filled({3}, 1.0f);
    const Tensor strided = filled({4, 6}, 0).transpose(0, 1);
    const Tensor one = filled({1, 4}, 1.0f), ibad = Tensor::empty({2, 4, 6, 6}, DType::I32, Device::cpu());
    const Conv2dParams p(1, 1);
    std::vector<Expect> cases = {
        {"conv w rank", Code::ShapeMismatch, "Expected w of rank 4",
         [&] { nn::conv2d_forward(x, filled({8, 4, 3}, 0), Tensor(), y, p); }},
        {"conv groups", Code::InvalidArgument, "Expected groups (3) to divide Cin (4)",
         [&] { nn::conv2d_forward(x, w, Tensor(), y, Conv2dParams(1, 1, 3)); }},
        {"conv w per group", Code::ShapeMismatch, "Expected w of shape [8, 2, 3, 3]",
         [&] { nn::conv2d_forward(x, w, Tensor(), y, Conv2dParams(1, 1, 2)); }},
        {"conv y shape", Code::ShapeMismatch, "Expected y of shape [2, 8, 6, 6]",
         [&] { nn::conv2d_forward(x, wg, Tensor(), filled({2, 8, 5, 6}, 0), Conv2dParams(1, 1, 2)); }},
        {"conv stride", Code::InvalidArgument, "Expected stride_h, stride_w >= 1",
         [&] { nn::conv2d_forward(x, w, Tensor(), y, Conv2dParams(0, 1)); }},
        {"conv kernel too big", Code::ShapeMismatch, "to be at least the kernel",
         [&] { nn::conv2d_output_shape({1, 4, 3, 3}, {8, 4, 7, 7}, Conv2dParams(1, 1)); }},
        {"conv bias", Code::ShapeMismatch, "Expected bias of shape [8]", [&] { nn::conv2d_forward(x, w, c4, y, p); }},
        {"conv dtype", Code::InvalidArgument, "Expected x of dtype float32",
         [&] { nn::conv2d_forward(ibad, w, Tensor(), y, p); }},
        {"conv in place", Code::InvalidArgument, "Expected y not to share memory with x",
         [&] { nn::conv2d_forward(x, filled({4, 4, 1, 1}, 0), Tensor(), x, Conv2dParams()); }},
        {"conv bwd dy", Code::ShapeMismatch, "Expected dy of shape [2, 8, 6, 6]",
         [&] { nn::conv2d_backward_data(filled({2, 8, 6, 5}, 0), w, filled({2, 4, 6, 6}, 0), p); }},
        {"conv bwd filter dw", Code::ShapeMismatch, "Expected dw of rank 4",
         [&] { nn::conv2d_backward_filter(x, y, filled({8, 36}, 0), p); }},
        {"bn one value", Code::InvalidArgument, "Expected more than 1 value per channel",
         [&] { nn::batch_norm_forward_train(one, Tensor(), Tensor(), Tensor(), Tensor(), filled({1, 4}, 0), filled({4}, 0), filled({4}, 0)); }},
        {"bn gamma", Code::ShapeMismatch, "Expected gamma of shape [4]",
         [&] { nn::batch_norm_forward_eval(x, c3, Tensor(), c4, c4, filled({2, 4, 6, 6}, 0)); }},
        {"bn eps", Code::InvalidArgument, "Expected eps > 0",
         [&] {
           nn::BatchNormOptions o;
           o.eps = 0;
           nn::batch_norm_forward_eval(x, Tensor(), Tensor(), c4, c4, filled({2, 4, 6, 6}, 0), o);
         }},
        {"bn running pair", Code::InvalidArgument, "both defined or both undefined",
         [&] { nn::batch_norm_forward_train(x, Tensor(), Tensor(), c4, Tensor(), filled({2, 4, 6, 6}, 0), filled({4}, 0), filled({4}, 0)); }},
        {"bn strided", Code::InvalidArgument, "Expected x to be contiguous",
         [&] { nn::batch_norm_forward_eval(strided, Tensor(), Tensor(), filled({4}, 0), filled({4}, 1), filled({6, 4}, 0)); }},
        {"prelu alpha", Code::ShapeMismatch, "Expected alpha of shape [4] (C, the channels of x) or [1]",
         [&] { nn::prelu_forward(x, c3, filled({2, 4, 6, 6}, 0)); }},
        {"prelu partial overlap", Code::InvalidArgument, "partially overlap",
         [&] { nn::prelu_forward(x.narrow(0, 0, 1), c4, x.narrow(0, 0, 2).reshape({-1}).narrow(0, 1, 144).reshape({1, 4, 6, 6})); }},
        {"dropout p", Code::InvalidArgument, "Expected p in [0, 1]",
         [&] {
           nn::DropoutParams d;
           d.p = 1.5;
           nn::dropout_forward(x, filled({2, 4, 6, 6}, 0), d, true);
         }},
        {"linear w", Code::ShapeMismatch, "Expected w of shape [out, 4]",
         [&] { nn::linear_forward(one, filled({3, 5}, 0), Tensor(), filled({1, 3}, 0)); }},
        {"linear y", Code::ShapeMismatch, "Expected y of shape [1, 3]",
         [&] { nn::linear_forward(one, filled({3, 4}, 0), Tensor(), filled({3, 1}, 0)); }},
        {"add shapes", Code::ShapeMismatch, "Expected b of shape [2, 4, 6, 6]",
         [&] { nn::add(x, y, filled({2, 4, 6, 6}, 0)); }},
        {"threads", Code::InvalidArgument, "Expected max_threads >= 0",
         [&] {
           ExecOptions e;
           e.max_threads = -1;
           nn::relu_forward(x, filled({2, 4, 6, 6}, 0), e);
         }},
        {"fold w rank", Code::ShapeMismatch, "Expected w of rank 2 (out, in) or 4",
         [&] { nn::fold_batch_norm(c4, Tensor(), Tensor(), Tensor(), c4, c4, 1e-5, filled({4}, 0), filled({4}, 0)); }},
    };
    CaseResult r;
    int ok = 0;
    for (auto& e : cases) {
      std::string got = "no exception";
      bool pass = false;
      try {
        e.call();
      } catch (const Error& err) {
        pass = err.code() == e.code && std::string(err.what()).find(e.needle) != std::string::npos;
        got = std::string(code_name(err.code())) + ": " + err.what();
      } catch (const std::exception& err) {
        got = std::string("non-fc exception: ") + err.what();
      }
      if (pass) {
        ++ok;
      } else {
        r.status = CaseResult::Fail;
        r.detail += std::string(" [") + e.what + ": expected " + code_name(e.code) + " '" + e.needle + "', got " + got +
                    "]";
      }
    }
    // An empty batch is valid and writes nothing.
    try {
      nn::conv2d_forward(filled({0, 4, 6, 6}, 0), w, Tensor(), filled({0, 8, 6, 6}, 0), p);
      ++ok;
    } catch (const std::exception& err) {
      r.status = CaseResult::Fail;
      r.detail += std::string(" [empty batch threw: ") + err.what() + "]";
    }
    r.detail = std::to_string(ok) + "/" + std::to_string(cases.size() + 1) + " as expected" + r.detail;
    return r;
  }
};

// ======================================================================== the tables

std::vector<std::unique_ptr<OpCase>> layer_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  const std::vector<ConvSpec> convs = {
      // dense (im2col-gemm): odd sizes, stride 1/2, padding 0/1, bias, batch 1 and > 1, each tiling
      conv(2, 3, 9, 9, 8, 3, 1, 1, 1, true),
      conv(1, 5, 7, 6, 7, 3, 2, 1, 1),
      conv(3, 4, 5, 5, 6, 3, 1, 0, 1, false, 2),
      conv(2, 4, 7, 7, 6, 3, 2, 1, 1, true, 1),
      conv(3, 16, 15, 13, 24, 3, 1, 1, 1),
      conv(2, 8, 17, 17, 16, 3, 2, 1, 1),
      conv(1, 3, 40, 40, 16, 3, 1, 1, 1),        // one image per tile (>= 1024 output pixels)
      conv(2, 32, 36, 36, 16, 3, 1, 1, 1, false, 1),
      conv(1, 2, 6, 5, 3, 3, 1, 0, 1),
      conv(2, 3, 8, 7, 4, 5, 1, 2, 1),               // 5×5, pad 2: two zero columns per edge
      ConvSpec{2, 3, 5, 6, 4, 1, 3, 1, 1, 0, 1, 1},  // 1×3 kernel, pad (0, 1)
      ConvSpec{1, 2, 4, 1, 3, 3, 5, 1, 1, 1, 2, 1},  // W = 1 under a 5-wide kernel: no column valid for 4 taps
      ConvSpec{2, 3, 4, 2, 3, 3, 5, 2, 1, 1, 2, 3},  // the same on the direct path (depthwise), stride (2, 1)
      ConvSpec{1, 2, 6, 5, 3, 3, 2, 2, 1, 1, 0, 1},  // 3×2 kernel, strides 2/1, pads 1/0
      // grouped GEMM (groups 2 and 4 with > 8 channels per group)
      conv(2, 20, 6, 6, 18, 3, 1, 1, 2),
      conv(1, 18, 3, 3, 18, 3, 1, 1, 2, true),
      conv(1, 18, 5, 5, 18, 3, 2, 1, 2),
      conv(2, 48, 10, 10, 32, 3, 1, 1, 4),
      // direct: depthwise 3×3 s1/s2, MobileFaceNet's groups=64-style conv (2 channels per group),
      // depthwise with multiplier 2, the 7×7 GDC without padding
      conv(2, 5, 6, 7, 5, 3, 2, 1, 5),
      conv(2, 32, 28, 28, 32, 3, 1, 1, 32),
      conv(2, 32, 27, 27, 32, 3, 2, 1, 32, true),
      conv(2, 6, 5, 5, 6, 3, 1, 1, 3),
      conv(2, 128, 8, 8, 128, 3, 1, 1, 64),
      conv(1, 3, 5, 5, 6, 3, 1, 1, 3),
      conv(2, 4, 7, 7, 4, 7, 1, 0, 4),
      conv(5, 64, 7, 7, 64, 7, 1, 0, 64),
      // 1×1: stride 1 (gemm-1x1: multi-image gather, in place per image, >= 1024 pixels), stride 2
      conv(2, 6, 3, 5, 5, 1, 1, 0, 1),
      conv(3, 5, 4, 4, 7, 1, 1, 0, 1, true, 1),
      conv(3, 40, 9, 9, 24, 1, 1, 0, 1),
      conv(1, 16, 33, 33, 8, 1, 1, 0, 1),
      conv(2, 4, 5, 5, 6, 1, 2, 0, 1),
      conv(2, 16, 14, 14, 32, 1, 2, 0, 1),
      // BF16 GEMM operands (im2col and 1×1)
      ConvSpec{2, 16, 9, 9, 24, 3, 3, 1, 1, 1, 1, 1, false, 0, true},
      ConvSpec{2, 32, 7, 7, 16, 1, 1, 1, 1, 0, 0, 1, true, 0, true},
  };
  // Grad mode runs finite differences over every input and weight: the big shapes only run in test
  // mode (a case whose grad would cost more than ~1.5e8 reference multiply-adds skips it).
  for (const ConvSpec& s : convs) {
    struct Sized : ConvCase {
      Sized(ConvSpec s, std::string skip) : ConvCase(s), skip_(std::move(skip)) {}
      CaseResult grad(Context& ctx) override { return skip_.empty() ? ConvCase::grad(ctx) : CaseResult::skip(skip_); }
      std::string skip_;
    };
    const double cost = (numel(s.xs()) + numel(s.ws())) * 4.0 * s.N * s.K * s.OH() * s.OW() * s.R();
    v.push_back(std::make_unique<Sized>(
        s, s.bf16 ? "bf16 rounding is checked in test mode"
                  : cost >= 1.5e8 ? "too large for finite differences; test mode checks its backward analytically" : ""));
  }
  for (const BnSpec& s : std::vector<BnSpec>{{{4, 3, 5, 7}}, {{1, 2, 3, 3}}, {{6, 10}}, {{5, 4, 3}, false},
                                             {{8, 6}, true, true}, {{3, 4, 2, 2}, true, true}}) {
    v.push_back(std::make_unique<BnCase>(s));
  }
  v.push_back(std::make_unique<BnRunningCase>(std::vector<int64_t>{4, 6, 5, 5}));
  v.push_back(std::make_unique<BnRunningCase>(std::vector<int64_t>{16, 32}));
  v.push_back(std::make_unique<FoldCase>(false));
  v.push_back(std::make_unique<FoldCase>(true));
  v.push_back(std::make_unique<PreluCase>(std::vector<int64_t>{3, 5, 4, 3}, false));
  v.push_back(std::make_unique<PreluCase>(std::vector<int64_t>{4, 7}, false));
  v.push_back(std::make_unique<PreluCase>(std::vector<int64_t>{2, 3, 5}, true));
  v.push_back(std::make_unique<ReluCase>());
  v.push_back(std::make_unique<DropoutCase>());
  v.push_back(std::make_unique<AddFlattenCase>());
  for (const LinSpec& s : std::vector<LinSpec>{{1, 7, 5, true}, {6, 13, 11, false}, {9, 33, 17, true}, {40, 100, 70, true}}) {
    struct Sized : LinearCase {
      Sized(LinSpec s, bool fd) : LinearCase(s), fd_(fd) {}
      CaseResult grad(Context& ctx) override {
        return fd_ ? LinearCase::grad(ctx) : CaseResult::skip("too large for finite differences (test mode only)");
      }
      bool fd_;
    };
    v.push_back(std::make_unique<Sized>(s, s.N * s.in * s.out * (s.N + s.out) * s.in < 3e7));
  }
  v.push_back(std::make_unique<DeterminismCase>());
  v.push_back(std::make_unique<ArgsCase>());
  for (R50Layer l : r50_layers()) {
    l.s.N = 32;
    v.push_back(std::make_unique<ConvPerf>(std::string("r50 ") + l.name, l.s, l.count));
  }
  // Training passes of r50's most frequent shape, and MobileFaceNet's direct convolutions (SPEC §8.2).
  v.push_back(std::make_unique<ConvPerf>("r50 l3 256->256 @14", conv(32, 256, 14, 14, 256, 3, 1, 1, 1), 26, Pass::Data));
  v.push_back(std::make_unique<ConvPerf>("r50 l3 256->256 @14", conv(32, 256, 14, 14, 256, 3, 1, 1, 1), 26, Pass::Filter));
  v.push_back(std::make_unique<ConvPerf>("mbf conv_dw 128 g64 @56", conv(32, 128, 56, 56, 128, 3, 1, 1, 64), 1));
  v.push_back(std::make_unique<ConvPerf>("mbf dw 128 @28", conv(32, 128, 28, 28, 128, 3, 1, 1, 128), 4));
  v.push_back(std::make_unique<ConvPerf>("mbf dw 256 @14", conv(32, 256, 14, 14, 256, 3, 1, 1, 256), 6));
  v.push_back(std::make_unique<ConvPerf>("mbf dw 128 @56 s2", conv(32, 128, 56, 56, 128, 3, 2, 1, 128), 1));
  v.push_back(std::make_unique<ConvPerf>("mbf gdc 512 7x7", conv(32, 512, 7, 7, 512, 7, 1, 0, 512), 1));
  v.push_back(std::make_unique<R50StackPerf>(32));
  v.push_back(std::make_unique<R50StackPerf>(1));
  return v;
}

FC_REGISTER_CASES(layers, layer_cases);

}  // namespace
}  // namespace test
}  // namespace fc
