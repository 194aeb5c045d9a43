// @file layers_ext_cases.cc
// @brief Harness cases for the ops of facecuda/layers_ext.h (SPEC-BACKBONES §9): activations,
// LayerNorm (tokens and NCHW), layer scale, drop path, global average pooling and the SE channel
// multiply, on the CPU against float64 references; CUDA against the CPU (skipped without a device).
//
//   test  every forward against a float64 reference written here on fresh random inputs, the test
//         values of SPEC §9.2–9.6 and the derivative conventions at the kinks (§9.1–9.3, PyTorch's);
//         every backward against the float64 analytic formula; drop path's mask (per sample, the
//         rate, eval/p = 0 identity, p = 1 zeros, thread-count independence); argument errors; the
//         SiLU / sigmoid / GELU CPU kernels at every SIMD level swept against float64 in ulps.
//   grad  every backward against float64 central finite differences of L = Σ w·y (w random), with
//         y the float64 reference forward: activation dx, LayerNorm dx/dγ/dβ (both layouts, with and
//         without affine parameters), layer-scale dx/dγ, drop path dx, GAP dx, channel-multiply dx/dg,
//         and the squeeze-and-excitation chain y = x ⊙ σ(GAP(x)) (dx = dy ⊙ g + ds/HW, §9.8).
//   perf  GELU, SiLU, sigmoid, hard-swish and LayerNorm (both layouts) at ViT-S / EdgeNeXt-S sizes, batch 32 (CPU).
//
// Tolerances (u = 2^-24, the float32 unit roundoff): a float result computed by k float operations
// from values of magnitude M (Σ|terms| of the computation, evaluated in float64 here) is within k·u·M;
// each bound below states its k and M. Finite differences (step h) add h²-truncation and
// 2^-53·Σ|w·y|/h noise, both far below the float bounds at the steps used; a small relative slack
// of 1e-7·max|reference| covers them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/layers_ext_cuda.h"
#include "cpu/act_smooth.h"
#include "facecuda/cpu_info.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using namespace layer_util;
using nn::Activation;
using nn::ChannelLayout;
using nn::ExecOptions;
using Vec = std::vector<double>;

constexpr double kU = 1.0 / 16777216.0;  // 2^-24
const Device kCpu = Device::cpu();
const Device kGpu = Device::cuda(0);

const Activation kActs[] = {Activation::kReLU6,     Activation::kHardSigmoid, Activation::kHardSigmoidKeras,
                            Activation::kHardSwish, Activation::kSiLU,        Activation::kSigmoid,
                            Activation::kGELU};

Vec dbl(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
Tensor zeros(const std::vector<int64_t>& shape, const Device& d = kCpu) {
  return host(std::vector<float>(static_cast<size_t>(count(shape)), 0.0f), shape).to(d);
}
Tensor nans(const std::vector<int64_t>& shape) {
  return host(std::vector<float>(static_cast<size_t>(count(shape)), NAN), shape);
}
CaseResult result(const std::string& e, const std::string& ok) { return e.empty() ? passed(ok) : failed(e); }

// |got − ref| <= tol elementwise with tol = k·u·mag + slack·max|ref|.
std::string check(const char* what, const std::vector<float>& got, const Vec& ref, const Vec& mag, double k,
                  double slack = 0.0) {
  double m = 0;
  for (double r : ref) m = std::max(m, std::fabs(r));
  std::vector<double> b(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) b[i] = k * kU * mag[i] + slack * m + 1e-300;
  if (got.size() != ref.size()) return str(what, ": ", got.size(), " values, expected ", ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(e <= b[i])) return str(what, "[", i, "] = ", got[i], ", expected ", ref[i], " within ", b[i]);
  }
  return "";
}

// ======================================================================== activations

double act_ref(Activation a, double x) {
  switch (a) {
    case Activation::kReLU6: return std::min(std::max(x, 0.0), 6.0);
    case Activation::kHardSigmoid: return std::min(std::max((x + 3) / 6, 0.0), 1.0);
    case Activation::kHardSigmoidKeras: return std::min(std::max(0.2 * x + 0.5, 0.0), 1.0);
    case Activation::kHardSwish: return x * std::min(std::max((x + 3) / 6, 0.0), 1.0);
    case Activation::kSiLU: return x / (1 + std::exp(-x));
    case Activation::kSigmoid: return 1 / (1 + std::exp(-x));
    case Activation::kGELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  }
  return 0;
}

// The derivative with PyTorch's conventions at the kinks (SPEC §9.1–9.3).
double act_dref(Activation a, double x) {
  switch (a) {
    case Activation::kReLU6: return (x > 0 && x < 6) ? 1 : 0;
    case Activation::kHardSigmoid: return (x > -3 && x < 3) ? 1.0 / 6 : 0;
    case Activation::kHardSigmoidKeras: return (x > -2.5 && x < 2.5) ? 0.2 : 0;
    case Activation::kHardSwish: return x < -3 ? 0 : x <= 3 ? x / 3 + 0.5 : 1;
    case Activation::kSiLU: {
      const double s = 1 / (1 + std::exp(-x));
      return s * (1 + x * (1 - s));
    }
    case Activation::kSigmoid: {
      const double s = 1 / (1 + std::exp(-x));
      return s * (1 - s);
    }
    case Activation::kGELU:
      return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI);
  }
  return 0;
}

// Random x in [−7, 7] plus every kink and the §9 test points.
std::vector<float> act_inputs(std::mt19937_64& rng, int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  fill_uniform(rng, x.data(), x.size(), -7.0f, 7.0f);
  const float special[] = {-4, -3, -2.5f, -1, 0, 1, 2.5f, 3, 4, 6, -6, 1e-4f, -1e-4f, 30, -30, 100, -100};
  for (size_t i = 0; i < sizeof special / sizeof special[0] && i < x.size(); ++i) x[i] = special[i];
  return x;
}

CaseResult act_test(Context& ctx, Activation a) {
  std::mt19937_64 rng = make_rng(ctx, str("act", static_cast<int>(a)));
  const std::vector<int64_t> xs{3, 5, 7, 11};
  const std::vector<float> x = act_inputs(rng, count(xs));
  std::vector<float> g(x.size());
  fill_uniform(rng, g.data(), g.size(), -1, 1);
  Tensor y = nans(xs), dx = nans(xs);
  nn::activation_forward(a, host(x, xs), y);
  nn::activation_backward(a, host(g, xs), host(x, xs), dx);
  // y: at most ~8 float operations on values of magnitude |x| + |y| (expf/erff 1–2 ulp each): k = 16.
  Vec yr(x.size()), ym(x.size()), dr(x.size()), dm(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    yr[i] = act_ref(a, x[i]);
    ym[i] = std::fabs(x[i]) + std::fabs(yr[i]);
    dr[i] = g[i] * act_dref(a, x[i]);
    // dx: ~10 operations on |g|·(1 + |x|)·max(f', 1/6)-sized terms: k = 16 of |g|·(1 + |x|).
    dm[i] = std::fabs(g[i]) * (1 + std::fabs(x[i]));
  }
  std::string e = check("y", values(y), yr, ym, 16);
  if (e.empty()) e = check("dx", values(dx), dr, dm, 16);
  // In place: y = x and dx = dy give the same values.
  if (e.empty()) {
    Tensor t = host(x, xs);
    nn::activation_forward(a, t, t);
    if (values(t) != values(y)) e = "in-place forward differs";
    Tensor gd = host(g, xs);
    nn::activation_backward(a, gd, host(x, xs), gd);
    if (e.empty() && values(gd) != values(dx)) e = "in-place backward differs";
  }
  return result(e, str(nn::activation_name(a), " x ", shape_str(xs), " incl. kinks: y, dx within 16u"));
}

CaseResult act_grad(Context& ctx, Activation a) {
  std::mt19937_64 rng = make_rng(ctx, str("act-grad", static_cast<int>(a)));
  const std::vector<int64_t> xs{4, 6, 5};
  std::vector<float> x(static_cast<size_t>(count(xs))), w(x.size());
  fill_uniform(rng, x.data(), x.size(), -7, 7);
  fill_uniform(rng, w.data(), w.size(), -1, 1);
  // Keep away from the kinks (the derivative is one-sided there): |x − k| >= 1e-3.
  for (float& v : x)
    for (double k : {-3.0, -2.5, 0.0, 2.5, 3.0, 6.0})
      if (std::fabs(v - k) < 1e-3) v = static_cast<float>(k + 0.01);
  Tensor dx = nans(xs);
  nn::activation_backward(a, host(w, xs), host(x, xs), dx);
  const Vec xd = dbl(x), wd = dbl(w);
  const Vec fd = central_diff(xd, 1e-6, [&](const Vec& v) {
    double l = 0;
    for (size_t i = 0; i < v.size(); ++i) l += wd[i] * act_ref(a, v[i]);
    return l;
  });
  Vec mag(x.size());
  for (size_t i = 0; i < x.size(); ++i) mag[i] = std::fabs(w[i]) * (1 + std::fabs(x[i]));
  const std::string e = check("dx vs finite differences", values(dx), fd, mag, 16, 1e-7);
  return result(e, str(nn::activation_name(a), " x ", shape_str(xs), ": dx within 16u of float64 differences"));
}

// SPEC §9.2–9.6 test values (printed to 6 decimals: within 1e-6) and the kink derivatives of §9.1–9.3.
CaseResult act_spec_values(Context&) {
  const std::vector<float> xs{-4, -3, -2.5f, -1, 0, 1, 2.5f, 3, 4};
  const std::vector<int64_t> sh{9};
  auto run = [&](Activation a) {
    Tensor y = nans(sh);
    nn::activation_forward(a, host(xs, sh), y);
    return values(y);
  };
  std::string e;
  auto expect = [&](const char* what, const std::vector<float>& got, const std::vector<double>& want) {
    for (size_t i = 0; i < want.size() && e.empty(); ++i)
      if (!(std::fabs(got[i] - want[i]) <= 1e-6))
        e = str(what, "(", xs[i], ") = ", got[i], ", SPEC says ", want[i]);
  };
  expect("hardsigmoid", run(Activation::kHardSigmoid), {0, 0, 0.083333, 0.333333, 0.5, 0.666667, 0.916667, 1, 1});
  expect("hardsigmoid_keras", run(Activation::kHardSigmoidKeras), {0, 0, 0, 0.3, 0.5, 0.7, 1, 1, 1});
  expect("hardswish", run(Activation::kHardSwish), {-0.0, -0.0, -0.208333, -0.333333, 0, 0.666667, 2.291667, 3, 4});
  const std::vector<float> s3{-1, 1, 2.5f};
  auto run3 = [&](Activation a) {
    Tensor y = nans({3});
    nn::activation_forward(a, host(s3, {3}), y);
    return values(y);
  };
  const std::vector<float> silu = run3(Activation::kSiLU), gelu = run3(Activation::kGELU);
  const double sw[] = {-0.268941, 0.731059, 2.310355}, gw[] = {-0.158655, 0.841345, 2.484476};
  for (int i = 0; i < 3 && e.empty(); ++i) {
    if (!(std::fabs(silu[i] - sw[i]) <= 1e-6)) e = str("silu(", s3[i], ") = ", silu[i], ", SPEC says ", sw[i]);
    if (e.empty() && !(std::fabs(gelu[i] - gw[i]) <= 1e-6))
      e = str("gelu(", s3[i], ") = ", gelu[i], ", SPEC says ", gw[i]);
  }
  // Derivatives at the kinks (dy = 1): PyTorch's conventions.
  struct Kink {
    Activation a;
    float x, d;
  };
  const Kink kinks[] = {{Activation::kReLU6, 0, 0},           {Activation::kReLU6, 6, 0},
                        {Activation::kReLU6, 5.999f, 1},      {Activation::kHardSigmoid, -3, 0},
                        {Activation::kHardSigmoid, 3, 0},     {Activation::kHardSigmoid, 0, 1.0f / 6},
                        {Activation::kHardSigmoidKeras, -2.5f, 0}, {Activation::kHardSigmoidKeras, 2.5f, 0},
                        {Activation::kHardSigmoidKeras, 0, 0.2f},  {Activation::kHardSwish, -3, -0.5f},
                        {Activation::kHardSwish, 3, 1.5f},    {Activation::kHardSwish, -3.0001f, 0},
                        {Activation::kHardSwish, 3.0001f, 1}};
  for (const Kink& k : kinks) {
    if (!e.empty()) break;
    Tensor dx = nans({1});
    nn::activation_backward(k.a, host({1.0f}, {1}), host({k.x}, {1}), dx);
    const float got = values(dx)[0];
    if (!(std::fabs(got - k.d) <= 1e-7f)) e = str(nn::activation_name(k.a), "'(", k.x, ") = ", got, ", expected ", k.d);
  }
  return result(e, "SPEC §9.2–9.6 test values within 1e-6; derivatives at the kinks as PyTorch");
}

// ---- accuracy sweep of the smooth activations' CPU kernels (cpu/act_smooth.h) at every SIMD level this
// CPU has, against float64 over a dense grid, random floats, the tails (subnormal results included),
// huge values, ±0, ±inf and NaN. Error in ulps of the float64 value (subnormal ulp 2^-149); for the
// derivatives in ulps of the sum of the magnitudes of its terms (the derivatives of SiLU and GELU
// cross zero, where no relative bound holds): SiLU σ(x)(1 + |x|σ(−x)), GELU Φ(x) + |x|φ(x), sigmoid
// σ(x)σ(−x) itself (computed as t/(1 + t)², t = e^−|x|, accurate in both tails).

// Worst seen over every 5th float with |x| < 128, all levels: y SiLU 2.7, sigmoid 2.4, GELU 2.8 ulp;
// dx SiLU 4.2, sigmoid 3.8, GELU 3.2.
constexpr double kSmoothFwdUlps = 3.5;
constexpr double kSmoothBwdUlps = 5.0;

double ulps_of(double r) {
  r = std::fabs(r);
  if (r < 0x1p-126) return 0x1p-149;
  int e;
  std::frexp(r, &e);  // r = m·2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 24);
}

struct SmoothRef {
  double y, d, mag;  // f(x), f'(x), the magnitude d is measured against
};

SmoothRef smooth_ref(Activation a, double x) {
  const double s = x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));    // σ(x)
  const double sm = x >= 0 ? std::exp(-x) / (1 + std::exp(-x)) : 1 / (1 + std::exp(x));  // σ(−x)
  switch (a) {
    case Activation::kSiLU: return {x * s, s * (1 + x * sm), s * (1 + std::fabs(x) * sm)};
    case Activation::kSigmoid: return {s, s * sm, s * sm};
    default: {  // GELU: Φ through erfc (1 + erf cancels in the left tail)
      const double phi = 0.5 * std::erfc(-x / std::sqrt(2.0)), f = x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI);
      return {x * phi, phi + f, phi + std::fabs(f)};
    }
  }
}

CaseResult act_sweep(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "act-sweep");
  std::vector<float> xs;
  for (int i = 0; i <= 40 * 4096; ++i) xs.push_back(-20.0f + static_cast<float>(i) / 4096);  // step 2^-12
  for (int i = 0; i <= 30 * 256; ++i) xs.push_back(-110.0f + static_cast<float>(i) / 256);   // σ, SiLU subnormal
  for (int i = 0; i <= 3 * 4096; ++i) xs.push_back(-15.0f + static_cast<float>(i) / 4096);   // GELU subnormal
  for (int sg = -1; sg <= 1; sg += 2)
    for (int i = -40 * 64; i <= 38 * 64; ++i) xs.push_back(static_cast<float>(sg * std::pow(10.0, i / 64.0)));
  std::vector<float> r(200000);
  fill_uniform(rng, r.data(), r.size(), -20, 20);
  xs.insert(xs.end(), r.begin(), r.end());
  std::uniform_int_distribution<uint32_t> bits(0, 0x43000000u);  // |x| < 128, every binade below
  for (int i = 0; i < 100000; ++i) {
    const uint32_t b = bits(rng) | (i % 2 ? 0x80000000u : 0u);
    float f;
    std::memcpy(&f, &b, sizeof f);
    xs.push_back(f);
  }
  for (float v : {0.0f, -0.0f, 1e-45f, -1e-45f, 3.4e38f, -3.4e38f, 16.0f, -16.0f, 150.0f, -150.0f, 14.5f, -14.5f})
    xs.push_back(v);
  const size_t n = xs.size();
  const Activation acts[] = {Activation::kSiLU, Activation::kSigmoid, Activation::kGELU};
  std::vector<SmoothRef> ref[3];
  for (int a = 0; a < 3; ++a) {
    ref[a].resize(n);
    for (size_t i = 0; i < n; ++i) ref[a][i] = smooth_ref(acts[a], xs[i]);
  }
  // Specials: {x, SiLU, SiLU', σ, σ', GELU, GELU'} (dy = 1).
  const float inf = INFINITY;
  const float specials[][7] = {{-inf, 0, 0, 0, 0, 0, 0}, {inf, inf, 1, 1, 0, inf, 1}};
  const std::vector<float> ones(n, 1.0f);
  std::vector<float> y(n), d(n), y2(n), d2(n);
  std::string e, levels;
  double worst_f[3] = {0, 0, 0}, worst_d[3] = {0, 0, 0};
  for (SimdLevel lv : {SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512}) {
    const nn::act_smooth::Kernels* k = nn::act_smooth::kernels_for(lv);
    if (!k || !e.empty()) continue;
    levels += str(levels.empty() ? "" : ", ", k->name);
    const nn::act_smooth::ForwardFn fw[3] = {k->silu_forward, k->sigmoid_forward, k->gelu_forward};
    const nn::act_smooth::BackwardFn bw[3] = {k->silu_backward, k->sigmoid_backward, k->gelu_backward};
    for (int a = 0; a < 3 && e.empty(); ++a) {
      const char* name = nn::activation_name(acts[a]);
      fw[a](xs.data(), y.data(), static_cast<int64_t>(n));
      bw[a](ones.data(), xs.data(), d.data(), static_cast<int64_t>(n));
      for (size_t i = 0; i < n && e.empty(); ++i) {
        const SmoothRef& rf = ref[a][i];
        const double ef = y[i] == rf.y ? 0 : std::fabs(y[i] - rf.y) / ulps_of(rf.y);
        const double ed = d[i] == rf.d ? 0 : std::fabs(d[i] - rf.d) / ulps_of(rf.mag);
        if (!(ef <= kSmoothFwdUlps))
          e = str(k->name, " ", name, "(", xs[i], ") = ", y[i], ", float64 ", rf.y, ": ", ef, " ulp");
        else if (!(ed <= kSmoothBwdUlps))
          e = str(k->name, " ", name, "'(", xs[i], ") = ", d[i], ", float64 ", rf.d, ": ", ed, " ulp of ", rf.mag);
        worst_f[a] = std::max(worst_f[a], ef);
        worst_d[a] = std::max(worst_d[a], ed);
      }
      // A value's result does not depend on where it sits in the call (vector body or masked tail).
      for (size_t off : {size_t(1), size_t(7), size_t(13)}) {
        if (!e.empty()) break;
        fw[a](xs.data() + off, y2.data(), static_cast<int64_t>(n - off));
        bw[a](ones.data(), xs.data() + off, d2.data(), static_cast<int64_t>(n - off));
        if (std::memcmp(y2.data(), y.data() + off, (n - off) * sizeof(float)) != 0 ||
            std::memcmp(d2.data(), d.data() + off, (n - off) * sizeof(float)) != 0)
          e = str(k->name, " ", name, ": results depend on the offset ", off);
      }
      // In place, NaN, ±inf.
      if (e.empty()) {
        std::vector<float> t(xs.begin(), xs.begin() + 37), g(37, 1.0f);
        fw[a](t.data(), t.data(), 37);
        bw[a](g.data(), xs.data(), g.data(), 37);
        if (std::memcmp(t.data(), y.data(), 37 * sizeof(float)) != 0 ||
            std::memcmp(g.data(), d.data(), 37 * sizeof(float)) != 0)
          e = str(k->name, " ", name, ": in place differs");
      }
      const float nan_in[3] = {NAN, 1.0f, -NAN};
      float yo[3], dout[3];
      fw[a](nan_in, yo, 3);
      bw[a](ones.data(), nan_in, dout, 3);
      if (e.empty() && !(std::isnan(yo[0]) && std::isnan(yo[2]) && std::isnan(dout[0]) && std::isnan(dout[2])))
        e = str(k->name, " ", name, ": NaN did not propagate");
      for (const auto& sp : specials) {
        float yi, di;
        fw[a](&sp[0], &yi, 1);
        bw[a](ones.data(), &sp[0], &di, 1);
        if (e.empty() && !(yi == sp[1 + 2 * a] && di == sp[2 + 2 * a]))
          e = str(k->name, " ", name, "(", sp[0], ") = ", yi, ", derivative ", di, ", expected ", sp[1 + 2 * a], ", ",
                  sp[2 + 2 * a]);
      }
    }
  }
  return result(e, str("silu, sigmoid, gelu (", levels, ") on ", n, " x incl. tails, subnormal results, ±inf, NaN: ",
                       "max y error ", worst_f[0], ", ", worst_f[1], ", ", worst_f[2], " ulp (bound ", kSmoothFwdUlps,
                       "), dx ", worst_d[0], ", ", worst_d[1], ", ", worst_d[2], " ulp of the terms (bound ",
                       kSmoothBwdUlps, ")"));
}

// ======================================================================== LayerNorm

struct LnSpec {
  std::vector<int64_t> shape;
  ChannelLayout layout;
  bool affine;
  double eps;
};

struct Oci {
  int64_t O, C, I;
};
Oci oci(const LnSpec& s) {
  if (s.layout == ChannelLayout::kTokens) {
    Oci v{1, s.shape.back(), 1};
    for (size_t a = 0; a + 1 < s.shape.size(); ++a) v.O *= s.shape[a];
    return v;
  }
  Oci v{s.shape[0], s.shape[1], 1};
  for (size_t a = 2; a < s.shape.size(); ++a) v.I *= s.shape[a];
  return v;
}

std::string ln_name(const LnSpec& s) {
  return str(s.layout == ChannelLayout::kTokens ? "tokens " : "nchw ", shape_str(s.shape), s.affine ? " affine" : "",
             " eps ", s.eps);
}

// Float64 forward: y, and the row statistics (mean, invstd) and x̂.
void ln_ref(const LnSpec& s, const Vec& x, const Vec* gm, const Vec* bt, Vec& y, Vec* mean = nullptr,
            Vec* invstd = nullptr, Vec* xhat = nullptr) {
  const Oci v = oci(s);
  y.assign(x.size(), 0.0);
  if (mean) mean->assign(static_cast<size_t>(v.O * v.I), 0.0), invstd->assign(mean->size(), 0.0);
  if (xhat) xhat->assign(x.size(), 0.0);
  for (int64_t o = 0; o < v.O; ++o)
    for (int64_t i = 0; i < v.I; ++i) {
      auto at = [&](int64_t c) { return static_cast<size_t>((o * v.C + c) * v.I + i); };
      double m = 0, var = 0;
      for (int64_t c = 0; c < v.C; ++c) m += x[at(c)];
      m /= v.C;
      for (int64_t c = 0; c < v.C; ++c) var += (x[at(c)] - m) * (x[at(c)] - m);
      var /= v.C;
      const double is = 1 / std::sqrt(var + s.eps);
      if (mean) (*mean)[static_cast<size_t>(o * v.I + i)] = m, (*invstd)[static_cast<size_t>(o * v.I + i)] = is;
      for (int64_t c = 0; c < v.C; ++c) {
        const double xh = (x[at(c)] - m) * is;
        if (xhat) (*xhat)[at(c)] = xh;
        y[at(c)] = xh * (gm ? (*gm)[static_cast<size_t>(c)] : 1.0) + (bt ? (*bt)[static_cast<size_t>(c)] : 0.0);
      }
    }
}

struct LnRun {
  std::vector<float> x, gamma, beta, w, dg0, db0;
  Tensor y, mean, invstd, dx, dg, db;
};

// Runs forward and backward (dy = w) on `d`; dgamma/dbeta start from dg0/db0 (accumulated).
LnRun ln_run(const LnSpec& s, std::mt19937_64& rng, const Device& d, const LnRun* inputs = nullptr) {
  const Oci v = oci(s);
  LnRun r;
  if (inputs) {
    r.x = inputs->x, r.gamma = inputs->gamma, r.beta = inputs->beta, r.w = inputs->w, r.dg0 = inputs->dg0,
    r.db0 = inputs->db0;
  } else {
    r.x.resize(static_cast<size_t>(count(s.shape)));
    fill_uniform(rng, r.x.data(), r.x.size(), -2, 3);
    r.gamma.resize(static_cast<size_t>(v.C)), r.beta.resize(r.gamma.size()), r.dg0.resize(r.gamma.size()),
        r.db0.resize(r.gamma.size());
    fill_uniform(rng, r.gamma.data(), r.gamma.size(), 0.5f, 1.5f);
    fill_uniform(rng, r.beta.data(), r.beta.size(), -1, 1);
    fill_uniform(rng, r.dg0.data(), r.dg0.size(), -1, 1);
    fill_uniform(rng, r.db0.data(), r.db0.size(), -1, 1);
    r.w.resize(r.x.size());
    fill_uniform(rng, r.w.data(), r.w.size(), -1, 1);
  }
  const std::vector<int64_t> cs{v.C}, rs{v.O * v.I};
  const Tensor x = host(r.x, s.shape).to(d);
  const Tensor g = s.affine ? host(r.gamma, cs).to(d) : Tensor(), b = s.affine ? host(r.beta, cs).to(d) : Tensor();
  r.y = nans(s.shape).to(d), r.mean = nans(rs).to(d), r.invstd = nans(rs).to(d), r.dx = nans(s.shape).to(d);
  r.dg = host(r.dg0, cs).to(d), r.db = host(r.db0, cs).to(d);
  nn::layer_norm_forward(x, g, b, r.y, r.mean, r.invstd, s.eps, s.layout);
  nn::layer_norm_backward(host(r.w, s.shape).to(d), x, g, r.mean, r.invstd, r.dx, s.affine ? r.dg : Tensor(),
                          s.affine ? r.db : Tensor(), s.layout);
  return r;
}

// The float-rounding magnitudes of LayerNorm (file comment): with c_μ = invstd·|μ| (the cancellation in
// x − μ) and a_i = |x̂_i| + c_μ: y: |γ|·a + |β|; dx: invstd·(|g| + mean|g| + a·mean(|g|·a)); dγ: Σ|dy|·a + |dγ0|;
// dβ: Σ|dy| + |dβ0|.
struct LnMags {
  Vec y, dx, dg, db;
};
LnMags ln_mags(const LnSpec& s, const LnRun& r, const Vec& mean, const Vec& invstd, const Vec& xhat) {
  const Oci v = oci(s);
  LnMags m;
  m.y.assign(r.x.size(), 0), m.dx.assign(r.x.size(), 0), m.dg.assign(static_cast<size_t>(v.C), 0),
      m.db.assign(m.dg.size(), 0);
  for (int64_t c = 0; c < v.C; ++c) m.dg[c] = std::fabs(r.dg0[c]), m.db[c] = std::fabs(r.db0[c]);
  for (int64_t o = 0; o < v.O; ++o)
    for (int64_t i = 0; i < v.I; ++i) {
      const size_t row = static_cast<size_t>(o * v.I + i);
      const double cm = invstd[row] * std::fabs(mean[row]);
      double sg = 0, sga = 0;
      for (int64_t c = 0; c < v.C; ++c) {
        const size_t k = static_cast<size_t>((o * v.C + c) * v.I + i);
        const double gm = s.affine ? std::fabs(r.gamma[c]) : 1.0, a = std::fabs(xhat[k]) + cm;
        sg += std::fabs(r.w[k]) * gm, sga += std::fabs(r.w[k]) * gm * a;
        m.y[k] = gm * a + (s.affine ? std::fabs(r.beta[c]) : 0.0);
        m.dg[c] += std::fabs(r.w[k]) * a, m.db[c] += std::fabs(r.w[k]);
      }
      sg /= v.C, sga /= v.C;
      for (int64_t c = 0; c < v.C; ++c) {
        const size_t k = static_cast<size_t>((o * v.C + c) * v.I + i);
        const double gm = s.affine ? std::fabs(r.gamma[c]) : 1.0, a = std::fabs(xhat[k]) + cm;
        m.dx[k] = invstd[row] * (std::fabs(r.w[k]) * gm + sg + a * sga);
      }
    }
  return m;
}

// Float64 analytic backward (SPEC §9.9).
void ln_ref_backward(const LnSpec& s, const LnRun& r, const Vec& invstd, const Vec& xhat, Vec& dx, Vec& dg, Vec& db) {
  const Oci v = oci(s);
  dx.assign(r.x.size(), 0), dg = dbl(r.dg0), db = dbl(r.db0);
  for (int64_t o = 0; o < v.O; ++o)
    for (int64_t i = 0; i < v.I; ++i) {
      const size_t row = static_cast<size_t>(o * v.I + i);
      double mg = 0, mgx = 0;
      for (int64_t c = 0; c < v.C; ++c) {
        const size_t k = static_cast<size_t>((o * v.C + c) * v.I + i);
        const double g = r.w[k] * (s.affine ? r.gamma[c] : 1.0);
        mg += g, mgx += g * xhat[k];
        dg[c] += r.w[k] * xhat[k], db[c] += r.w[k];
      }
      mg /= v.C, mgx /= v.C;
      for (int64_t c = 0; c < v.C; ++c) {
        const size_t k = static_cast<size_t>((o * v.C + c) * v.I + i);
        const double g = r.w[k] * (s.affine ? r.gamma[c] : 1.0);
        dx[k] = invstd[row] * (g - mg - xhat[k] * mgx);
      }
    }
}

CaseResult ln_test(Context& ctx, const LnSpec& s) {
  std::mt19937_64 rng = make_rng(ctx, "ln " + ln_name(s));
  const LnRun r = ln_run(s, rng, kCpu);
  Vec y, mean, invstd, xhat, dx, dg, db;
  const Vec gm = dbl(r.gamma), bt = dbl(r.beta);
  ln_ref(s, dbl(r.x), s.affine ? &gm : nullptr, s.affine ? &bt : nullptr, y, &mean, &invstd, &xhat);
  ln_ref_backward(s, r, invstd, xhat, dx, dg, db);
  const LnMags m = ln_mags(s, r, mean, invstd, xhat);
  // y: 4 float operations after the statistics (each statistic rounded once): k = 8.
  std::string e = check("y", values(r.y), y, m.y, 8);
  // Statistics: double sums rounded once to float: half an ulp (k = 1) of |μ| and invstd.
  Vec am(mean.size()), ai(invstd.size());
  for (size_t i = 0; i < mean.size(); ++i) am[i] = std::fabs(mean[i]) + 1e-30, ai[i] = invstd[i];
  if (e.empty()) e = check("save_mean", values(r.mean), mean, am, 1);
  if (e.empty()) e = check("save_invstd", values(r.invstd), invstd, ai, 1);
  // dx: x̂ and g in float (3 operations), the rest in double: k = 16 of its magnitude.
  if (e.empty()) e = check("dx", values(r.dx), dx, m.dx, 16);
  if (s.affine) {
    // dγ: x̂ in float (2 operations) per term, double sums, one rounding and the += : k = 8.
    if (e.empty()) e = check("dgamma", values(r.dg), dg, m.dg, 8);
    if (e.empty()) e = check("dbeta", values(r.db), db, m.db, 4);
  } else if (e.empty() && (values(r.dg) != r.dg0 || values(r.db) != r.db0)) {
    e = "undefined dgamma/dbeta must leave the buffers untouched";
  }
  // In place: y = x gives the same y; dx = dy gives the same dx.
  if (e.empty()) {
    const Oci v = oci(s);
    const Tensor g = s.affine ? host(r.gamma, {v.C}) : Tensor(), b = s.affine ? host(r.beta, {v.C}) : Tensor();
    Tensor t = host(r.x, s.shape);
    nn::layer_norm_forward(t, g, b, t, Tensor(), Tensor(), s.eps, s.layout);
    if (values(t) != values(r.y)) e = "in-place forward (no statistics saved) differs";
    Tensor gd = host(r.w, s.shape);
    nn::layer_norm_backward(gd, host(r.x, s.shape), g, r.mean, r.invstd, gd, Tensor(), Tensor(), s.layout);
    if (e.empty() && values(gd) != values(r.dx)) e = "in-place dx differs";
    // Thread-count independence.
    ExecOptions one;
    one.max_threads = 1;
    Tensor y1 = nans(s.shape);
    nn::layer_norm_forward(host(r.x, s.shape), g, b, y1, Tensor(), Tensor(), s.eps, s.layout, one);
    if (e.empty() && values(y1) != values(r.y)) e = "1 thread vs all: y differs";
  }
  return result(e, ln_name(s) + ": y, statistics, dx, dgamma, dbeta vs float64 (k·u bounds); in place; threads");
}

CaseResult ln_grad(Context& ctx, const LnSpec& s) {
  std::mt19937_64 rng = make_rng(ctx, "ln-grad " + ln_name(s));
  const LnRun r = ln_run(s, rng, kCpu);
  const Vec xd = dbl(r.x), wd = dbl(r.w), gd = dbl(r.gamma), bd = dbl(r.beta);
  Vec y, mean, invstd, xhat;
  ln_ref(s, xd, s.affine ? &gd : nullptr, s.affine ? &bd : nullptr, y, &mean, &invstd, &xhat);
  const LnMags m = ln_mags(s, r, mean, invstd, xhat);
  auto loss = [&](const Vec& x, const Vec& g, const Vec& b) {
    Vec yy;
    ln_ref(s, x, s.affine ? &g : nullptr, s.affine ? &b : nullptr, yy);
    return dot(wd, yy);
  };
  const double h = 1e-5;
  std::string e = check("dx", values(r.dx), central_diff(xd, h, [&](const Vec& v) { return loss(v, gd, bd); }), m.dx,
                        16, 1e-7);
  if (s.affine) {
    Vec fg = central_diff(gd, h, [&](const Vec& v) { return loss(xd, v, bd); });
    Vec fb = central_diff(bd, h, [&](const Vec& v) { return loss(xd, gd, v); });
    for (size_t c = 0; c < fg.size(); ++c) fg[c] += r.dg0[c], fb[c] += r.db0[c];
    if (e.empty()) e = check("dgamma", values(r.dg), fg, m.dg, 8, 1e-7);
    if (e.empty()) e = check("dbeta", values(r.db), fb, m.db, 4, 1e-7);
  }
  return result(e, ln_name(s) + ": dx" + (s.affine ? ", dgamma, dbeta" : "") + " vs float64 finite differences");
}

// ======================================================================== layer scale

CaseResult scale_case(Context& ctx, ChannelLayout layout, bool fd) {
  std::mt19937_64 rng = make_rng(ctx, str("scale", static_cast<int>(layout), fd));
  std::uniform_int_distribution<int64_t> d(1, 6);
  const std::vector<int64_t> xs{d(rng), d(rng) + 1, d(rng), d(rng)};
  LnSpec spec{xs, layout, true, 1e-6};
  const Oci v = oci(spec);
  const Tensor x = uniform(rng, xs, -2, 2), g = uniform(rng, {v.C}, -1, 1), dy = uniform(rng, xs, -1, 1),
               dg0 = uniform(rng, {v.C}, -1, 1);
  Tensor y = nans(xs), dx = nans(xs), dg = host(values(dg0), {v.C});
  nn::layer_scale_forward(x, g, y, layout);
  nn::layer_scale_backward(dy, x, g, dx, dg, layout);
  const std::vector<float> xv = values(x), gv = values(g), gyv = values(dy), dg0v = values(dg0);
  Vec yr(xv.size()), dxr(xv.size()), dgr = dbl(dg0v), dgm(gv.size());
  for (int64_t c = 0; c < v.C; ++c) dgm[c] = std::fabs(dg0v[c]);
  for (size_t k = 0; k < xv.size(); ++k) {
    const int64_t c = (static_cast<int64_t>(k) / v.I) % v.C;
    yr[k] = static_cast<double>(xv[k]) * gv[c];
    dxr[k] = static_cast<double>(gyv[k]) * gv[c];
    dgr[c] += static_cast<double>(gyv[k]) * xv[k];
    dgm[c] += std::fabs(static_cast<double>(gyv[k]) * xv[k]);
  }
  std::string e;
  if (fd) {  // grad mode: the gradients against finite differences of L = Σ dy·(γ ⊙ x)
    const Vec xd = dbl(xv), gd = dbl(gv), wd = dbl(gyv);
    auto loss = [&](const Vec& xx, const Vec& gg) {
      double l = 0;
      for (size_t k = 0; k < xx.size(); ++k) l += wd[k] * xx[k] * gg[(static_cast<int64_t>(k) / v.I) % v.C];
      return l;
    };
    Vec fdg = central_diff(gd, 1e-3, [&](const Vec& gg) { return loss(xd, gg); });
    for (size_t c = 0; c < fdg.size(); ++c) fdg[c] += dg0v[c];
    Vec mx(xv.size());
    for (size_t k = 0; k < xv.size(); ++k) mx[k] = std::fabs(dxr[k]);
    e = check("dx vs differences", values(dx), central_diff(xd, 1e-3, [&](const Vec& xx) { return loss(xx, gd); }),
              mx, 1, 1e-9);
    if (e.empty()) e = check("dgamma vs differences", values(dg), fdg, dgm, 4, 1e-9);
  } else {
    // y, dx: one float product (k = 1 of |ref|: the rounded product);
    // dγ: exact products, double sums, one rounding of the sum and the += : k = 4.
    Vec my(xv.size()), mx(xv.size());
    for (size_t k = 0; k < xv.size(); ++k) my[k] = std::fabs(yr[k]), mx[k] = std::fabs(dxr[k]);
    e = check("y", values(y), yr, my, 1);
    if (e.empty()) e = check("dx", values(dx), dxr, mx, 1);
    if (e.empty()) e = check("dgamma", values(dg), dgr, dgm, 4);
  }
  return result(e, str(layout == ChannelLayout::kTokens ? "tokens " : "nchw ", shape_str(xs),
                       fd ? ": dx, dgamma vs finite differences" : ": y, dx exact products; dgamma within 4u"));
}

// ======================================================================== drop path

CaseResult drop_path_test(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "drop-path");
  const std::vector<int64_t> xs{4000, 3, 5};
  const Tensor x = uniform(rng, xs, -1, 1), dy = uniform(rng, xs, -1, 1);
  nn::DropoutParams d;
  d.p = 0.3, d.seed = rng(), d.step = rng() % 1000;
  Tensor y = nans(xs), dx = nans(xs);
  nn::drop_path_forward(x, y, d, true);
  nn::drop_path_backward(dy, dx, d, true);
  const std::vector<float> xv = values(x), yv = values(y), gv = values(dy), dv = values(dx);
  const float scale = static_cast<float>(1.0 / (1.0 - d.p));
  const int64_t per = 15;
  int64_t dropped = 0;
  std::string e;
  for (int64_t n = 0; n < xs[0] && e.empty(); ++n) {
    const bool keep = nn::drop_path_keep(d, n);
    dropped += !keep;
    for (int64_t k = n * per; k < (n + 1) * per && e.empty(); ++k) {
      const float want = keep ? xv[k] * scale : 0.0f, wantd = keep ? gv[k] * scale : 0.0f;
      if (yv[k] != want)
        e = str("y[", k, "] = ", yv[k], ", expected ", want, " (sample ", n, keep ? " kept)" : " dropped)");
      if (e.empty() && dv[k] != wantd) e = str("dx[", k, "] = ", dv[k], ", expected ", wantd);
    }
  }
  // The rate: dropped ~ Binomial(4000, 0.3): mean 1200, sd 29; within 5 sd.
  if (e.empty() && std::fabs(dropped - 1200.0) > 5 * 29) e = str(dropped, " of 4000 samples dropped at p = 0.3");
  // Another step draws another mask; 1 thread gives the same; eval and p = 0 are the identity; p = 1 zeros.
  if (e.empty()) {
    nn::DropoutParams d2 = d;
    d2.step += 1;
    int64_t differ = 0;
    for (int64_t n = 0; n < 200; ++n) differ += nn::drop_path_keep(d, n) != nn::drop_path_keep(d2, n);
    if (differ == 0) e = "step + 1 drew the same mask";
    ExecOptions one;
    one.max_threads = 1;
    Tensor y1 = nans(xs);
    nn::drop_path_forward(x, y1, d, true, one);
    if (e.empty() && values(y1) != yv) e = "1 thread vs all differs";
    Tensor ye = nans(xs);
    nn::drop_path_forward(x, ye, d, false);
    if (e.empty() && values(ye) != xv) e = "eval is not the identity";
    nn::DropoutParams d0 = d, d1 = d;
    d0.p = 0, d1.p = 1;
    nn::drop_path_forward(x, ye, d0, true);
    if (e.empty() && values(ye) != xv) e = "p = 0 is not the identity";
    nn::drop_path_backward(dy, ye, d1, true);
    if (e.empty() && values(ye) != std::vector<float>(xv.size(), 0.0f)) e = "p = 1 does not drop everything";
    Tensor t = host(xv, xs);
    nn::drop_path_forward(t, t, d, true);
    if (e.empty() && values(t) != yv) e = "in place differs";
  }
  return result(e, str("x ", shape_str(xs), " p 0.3: per-sample mask, ", dropped,
                       " dropped, kept ×1/(1−p) exactly; eval, p 0, p 1, threads, in place"));
}

CaseResult drop_path_grad(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "drop-path-grad");
  const std::vector<int64_t> xs{16, 2, 3};
  const Tensor x = uniform(rng, xs, -1, 1), w = uniform(rng, xs, -1, 1);
  nn::DropoutParams d;
  d.p = 0.4, d.seed = rng(), d.step = 7;
  Tensor dx = nans(xs);
  nn::drop_path_backward(w, dx, d, true);
  const Vec wd = dbl(values(w));
  const int64_t per = 6;
  // Float64 forward with the same mask: y = x·b_n/(1 − p).
  const std::function<double(const Vec&)> loss = [&](const Vec& v) {
    double l = 0;
    for (size_t k = 0; k < v.size(); ++k)
      if (nn::drop_path_keep(d, static_cast<int64_t>(k) / per)) l += wd[k] * v[k] / (1 - d.p);
    return l;
  };
  const Vec fd = central_diff(dbl(values(x)), 1e-3, loss);
  Vec mag(fd.size());
  for (size_t k = 0; k < fd.size(); ++k) mag[k] = std::fabs(fd[k]);
  // dx = float(dy·float(1/(1 − p))): 2 roundings (k = 2 of |dx|) plus the differences' rounding.
  const std::string e = check("dx vs differences", values(dx), fd, mag, 2, 1e-9);
  return result(e, "x [16, 2, 3] p 0.4: dx vs float64 finite differences");
}

// ======================================================================== GAP and the SE channel multiply

// SE chain y = x ⊙ σ(GAP(x)) through the ops, against the float64 chain (SPEC §9.8 without the FCs).
struct SeOut {
  Tensor s, g, y, dx, dg, ds;
};
SeOut se_run(const Tensor& x, const Tensor& w, const Device& d) {
  const int64_t N = x.size(0), C = x.size(1);
  SeOut o;
  const Tensor xd = x.to(d), wd = w.to(d);
  o.s = zeros({N, C}, d), o.g = zeros({N, C}, d), o.y = zeros(x.shape(), d);
  o.dx = zeros(x.shape(), d), o.dg = zeros({N, C}, d), o.ds = zeros({N, C}, d);
  nn::global_avg_pool_forward(xd, o.s);
  nn::activation_forward(Activation::kSigmoid, o.s, o.g);
  nn::channel_mul_forward(xd, o.g, o.y);
  nn::channel_mul_backward(wd, xd, o.g, o.dx, o.dg);
  nn::activation_backward(Activation::kSigmoid, o.dg, o.s, o.ds);
  nn::global_avg_pool_backward(o.ds, o.dx, true);
  return o;
}

CaseResult pool_mul_test(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "gap-mul");
  std::uniform_int_distribution<int64_t> d(1, 7);
  const std::vector<int64_t> xs{d(rng), d(rng), d(rng), d(rng)};
  const int64_t N = xs[0], C = xs[1], S = xs[2] * xs[3];
  const Tensor x = uniform(rng, xs, -2, 2), g = uniform(rng, {N, C}, -1, 1), dy = uniform(rng, xs, -1, 1),
               dyp = uniform(rng, {N, C}, -1, 1), dx0 = uniform(rng, xs, -1, 1);
  Tensor y = nans({N, C}), ym = nans(xs), dxm = nans(xs), dg = nans({N, C}), dxp = nans(xs),
         dxa = host(values(dx0), xs);
  nn::global_avg_pool_forward(x, y);
  nn::global_avg_pool_backward(dyp, dxp);
  nn::global_avg_pool_backward(dyp, dxa, true);
  nn::channel_mul_forward(x, g, ym);
  nn::channel_mul_backward(dy, x, g, dxm, dg);
  const std::vector<float> xv = values(x), gv = values(g), gyv = values(dy), pv = values(dyp), a0 = values(dx0);
  Vec yr(static_cast<size_t>(N * C), 0), yrm(yr.size(), 0), dgr(yr.size(), 0), dgm(yr.size(), 0);
  Vec mr(xv.size()), mm(xv.size()), dmr(xv.size()), dmm(xv.size()), pr(xv.size()), pm(xv.size()), ar(xv.size()),
      am(xv.size());
  for (size_t k = 0; k < xv.size(); ++k) {
    const size_t r = k / static_cast<size_t>(S);
    yr[r] += xv[k] / static_cast<double>(S), yrm[r] += std::fabs(xv[k]) / static_cast<double>(S);
    mr[k] = static_cast<double>(xv[k]) * gv[r], mm[k] = std::fabs(mr[k]);
    dmr[k] = static_cast<double>(gyv[k]) * gv[r], dmm[k] = std::fabs(dmr[k]);
    dgr[r] += static_cast<double>(gyv[k]) * xv[k], dgm[r] += std::fabs(static_cast<double>(gyv[k]) * xv[k]);
    pr[k] = pv[r] / static_cast<double>(S), pm[k] = std::fabs(pr[k]);
    ar[k] = a0[k] + static_cast<float>(pv[r] / static_cast<double>(S));
    am[k] = std::fabs(ar[k]);
  }
  // GAP y, dg: double sums rounded once (k = 1 of Σ|terms|); the multiply and dx: one float product
  // (k = 1); GAP dx: dy/S rounded once (k = 1); accumulated: the reference adds the rounded dy/S, the op
  // rounds the sum once more (k = 1 of |sum|).
  std::string e = check("gap y", values(y), yr, yrm, 1);
  if (e.empty()) e = check("gap dx", values(dxp), pr, pm, 1);
  if (e.empty()) e = check("gap dx accumulated", values(dxa), ar, am, 1);
  if (e.empty()) e = check("channel_mul y", values(ym), mr, mm, 1);
  if (e.empty()) e = check("channel_mul dx", values(dxm), dmr, dmm, 1);
  if (e.empty()) e = check("channel_mul dg", values(dg), dgr, dgm, 1);
  return result(e, str("x ", shape_str(xs), ": GAP y/dx (written, accumulated), channel multiply y/dx/dg vs float64"));
}

CaseResult se_grad(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "se-grad");
  std::uniform_int_distribution<int64_t> d(1, 4);
  const std::vector<int64_t> xs{d(rng), d(rng) + 1, d(rng) + 1, d(rng)};
  const int64_t S = xs[2] * xs[3];
  const Tensor x = uniform(rng, xs, -2, 2), w = uniform(rng, xs, -1, 1);
  const SeOut o = se_run(x, w, kCpu);
  const Vec xd = dbl(values(x)), wd = dbl(values(w));
  const auto loss = [&](const Vec& v) {
    Vec s(v.size() / static_cast<size_t>(S), 0.0);
    for (size_t k = 0; k < v.size(); ++k) s[k / static_cast<size_t>(S)] += v[k] / S;
    double l = 0;
    for (size_t k = 0; k < v.size(); ++k) l += wd[k] * v[k] / (1 + std::exp(-s[k / static_cast<size_t>(S)]));
    return l;
  };
  const Vec fd = central_diff(xd, 1e-5, loss);
  // Magnitude of dx = dy·g + σ'(s)·Σ dy·x/S: |dy| + Σ|dy·x|/S (σ, σ' <= 1); ~10 float roundings.
  Vec mag(xd.size(), 0.0), row(xd.size() / static_cast<size_t>(S), 0.0);
  for (size_t k = 0; k < xd.size(); ++k) row[k / static_cast<size_t>(S)] += std::fabs(wd[k] * xd[k]) / S;
  for (size_t k = 0; k < xd.size(); ++k) mag[k] = std::fabs(wd[k]) + row[k / static_cast<size_t>(S)];
  const std::string e = check("SE dx vs differences", values(o.dx), fd, mag, 16, 1e-7);
  return result(e, str("x ", shape_str(xs), ": y = x ⊙ sigmoid(GAP(x)): dx = dy ⊙ g + ds/HW vs finite differences"));
}

CaseResult channel_mul_grad(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "mul-grad");
  const std::vector<int64_t> xs{2, 3, 2, 3};
  const Tensor x = uniform(rng, xs, -2, 2), g = uniform(rng, {2, 3}, -1, 1), w = uniform(rng, xs, -1, 1);
  Tensor dx = nans(xs), dg = nans({2, 3});
  nn::channel_mul_backward(w, x, g, dx, dg);
  const Vec xd = dbl(values(x)), gd = dbl(values(g)), wd = dbl(values(w));
  auto loss = [&](const Vec& xx, const Vec& gg) {
    double l = 0;
    for (size_t k = 0; k < xx.size(); ++k) l += wd[k] * xx[k] * gg[k / 6];
    return l;
  };
  const Vec fx = central_diff(xd, 1e-3, [&](const Vec& v) { return loss(v, gd); });
  const Vec fg = central_diff(gd, 1e-3, [&](const Vec& v) { return loss(xd, v); });
  Vec mx(fx.size()), mg(fg.size(), 0.0);
  for (size_t k = 0; k < fx.size(); ++k) mx[k] = std::fabs(fx[k]), mg[k / 6] += std::fabs(wd[k] * xd[k]);
  std::string e = check("dx vs differences", values(dx), fx, mx, 1, 1e-9);
  if (e.empty()) e = check("dg vs differences", values(dg), fg, mg, 2, 1e-9);
  Tensor dxp = nans(xs);
  nn::global_avg_pool_backward(g, dxp);
  const Vec fp = central_diff(xd, 1e-3, [&](const Vec& v) {
    double l = 0;
    for (size_t k = 0; k < v.size(); ++k) l += gd[k / 6] * v[k] / 6;  // L = Σ dy·GAP(x)
    return l;
  });
  Vec mp(fp.size());
  for (size_t k = 0; k < fp.size(); ++k) mp[k] = std::fabs(fp[k]);
  if (e.empty()) e = check("gap dx vs differences", values(dxp), fp, mp, 1, 1e-9);
  return result(e, "x [2, 3, 2, 3]: channel multiply dx/dg and GAP dx vs finite differences");
}

// ======================================================================== argument errors

CaseResult args_case(Context&) {
  const Tensor x = zeros({2, 3, 4}), y = zeros({2, 3, 4}), c4 = zeros({4}), c3 = zeros({3}), r6 = zeros({6});
  const Tensor i32 = Tensor::empty({2, 3, 4}, DType::I32, kCpu);
  const Tensor x4 = zeros({2, 3, 2, 2}), nc = zeros({2, 3});
  struct E {
    const char* what;
    Code code;
    std::function<void()> f;
    const char* needle;
  };
  const std::vector<E> es = {
      {"activation y shape", Code::ShapeMismatch,
       [&] { nn::activation_forward(Activation::kGELU, x, zeros({2, 3, 5})); }, "Expected y of shape [2, 3, 4]"},
      {"activation dtype", Code::InvalidArgument, [&] { nn::activation_forward(Activation::kSiLU, i32, y); },
       "Expected x of dtype float32"},
      {"activation enum", Code::InvalidArgument,
       [&] { nn::activation_forward(static_cast<Activation>(42), x, y); }, "Expected an Activation"},
      {"activation dx aliases x", Code::InvalidArgument,
       [&] { nn::activation_backward(Activation::kReLU6, y, x, x); }, "Expected dx not to share memory with x"},
      {"ln gamma shape", Code::ShapeMismatch,
       [&] { nn::layer_norm_forward(x, c3, Tensor(), y, Tensor(), Tensor(), 1e-6); },
       "Expected gamma of shape [4] (C, the last dim of x)"},
      {"ln nchw gamma shape", Code::ShapeMismatch,
       [&] { nn::layer_norm_forward(x, c4, Tensor(), y, Tensor(), Tensor(), 1e-6, ChannelLayout::kNCHW); },
       "Expected gamma of shape [3] (C, the channels of x)"},
      {"ln save shape", Code::ShapeMismatch,
       [&] { nn::layer_norm_forward(x, c4, c4, y, c4, c4, 1e-6); }, "Expected save_mean of shape [6]"},
      {"ln save one of two", Code::InvalidArgument,
       [&] { nn::layer_norm_forward(x, c4, c4, y, r6, Tensor(), 1e-6); }, "both defined or both undefined"},
      {"ln eps", Code::InvalidArgument, [&] { nn::layer_norm_forward(x, c4, c4, y, r6, zeros({6}), 0.0); },
       "Expected eps > 0"},
      {"ln dtype", Code::InvalidArgument, [&] { nn::layer_norm_forward(i32, c4, c4, y, Tensor(), Tensor(), 1e-6); },
       "Expected x of dtype float32"},
      {"ln backward dy shape", Code::ShapeMismatch,
       [&] { nn::layer_norm_backward(zeros({2, 3, 5}), x, c4, r6, zeros({6}), y, Tensor(), Tensor()); },
       "Expected dy of shape [2, 3, 4]"},
      {"ln backward dgamma aliases dbeta", Code::InvalidArgument,
       [&] {
         const Tensor t4 = zeros({4});
         nn::layer_norm_backward(y, x, c4, r6, zeros({6}), Tensor(), t4, t4);
       },
       "Expected dgamma not to share memory with dbeta"},
      {"ln nchw rank", Code::ShapeMismatch,
       [&] { nn::layer_norm_forward(c4, Tensor(), Tensor(), c4, Tensor(), Tensor(), 1e-6, ChannelLayout::kNCHW); },
       "Expected x of rank >= 2"},
      {"ln layout", Code::InvalidArgument,
       [&] {
         nn::layer_norm_forward(x, Tensor(), Tensor(), y, Tensor(), Tensor(), 1e-6, static_cast<ChannelLayout>(7));
       },
       "Expected layout"},
      {"scale gamma shape", Code::ShapeMismatch, [&] { nn::layer_scale_forward(x, c3, y); },
       "Expected gamma of shape [4]"},
      {"scale backward x shape", Code::ShapeMismatch,
       [&] { nn::layer_scale_backward(y, zeros({2, 3}), c4, Tensor(), zeros({4})); }, "Expected x of shape [2, 3, 4]"},
      {"drop path p", Code::InvalidArgument,
       [&] {
         nn::DropoutParams d;
         d.p = 1.5;
         nn::drop_path_forward(x, y, d, true);
       },
       "Expected p in [0, 1]"},
      {"drop path y shape", Code::ShapeMismatch,
       [&] { nn::drop_path_forward(x, zeros({2, 12}), nn::DropoutParams(), true); }, "Expected y of shape [2, 3, 4]"},
      {"gap y shape", Code::ShapeMismatch, [&] { nn::global_avg_pool_forward(x4, zeros({2, 3, 1})); },
       "Expected y of shape [2, 3] (N, C of x)"},
      {"gap rank", Code::ShapeMismatch, [&] { nn::global_avg_pool_forward(c4, nc); }, "Expected x of rank >= 2"},
      {"gap dtype", Code::InvalidArgument,
       [&] { nn::global_avg_pool_forward(Tensor::empty({2, 3, 2, 2}, DType::F16, kCpu), nc); },
       "Expected x of dtype float32"},
      {"channel_mul g shape", Code::ShapeMismatch, [&] { nn::channel_mul_forward(x4, zeros({3, 2}), x4); },
       "Expected g of shape [2, 3] (N, C of x)"},
      {"channel_mul dg aliases g", Code::InvalidArgument,
       [&] { nn::channel_mul_backward(x4, x4, nc, Tensor(), nc); }, "Expected dg not to share memory with"},
      {"channel_mul dg undefined x", Code::InvalidArgument,
       [&] { nn::channel_mul_backward(x4, Tensor(), nc, Tensor(), zeros({2, 3})); }, "Expected x to be a defined"},
  };
  for (const E& t : es) {
    const std::string e = expect_error(t.what, t.code, t.f, t.needle);
    if (!e.empty()) return failed(e);
  }
  return passed(str(es.size(), " invalid calls: the right code and message"));
}

// ======================================================================== CUDA vs CPU

std::string same(const char* what, const Tensor& gpu, const Tensor& cpu, double rtol) {
  const std::vector<float> c = values(cpu);
  return within(what, values(gpu), c, bounds(c, rtol, rtol * max_abs(c)));
}

CaseResult cuda_act(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "cuda-act");
  std::uniform_int_distribution<int64_t> d(1, 40);
  const std::vector<int64_t> xs{d(rng), d(rng), 7};
  const std::vector<float> xv = act_inputs(rng, count(xs));
  const Tensor x = host(xv, xs), dy = uniform(rng, xs, -1, 1);
  std::string e;
  for (Activation a : kActs) {
    if (!e.empty()) break;
    Tensor yc = zeros(xs), yg = zeros(xs, kGpu), dc = zeros(xs), dg = zeros(xs, kGpu);
    nn::activation_forward(a, x, yc);
    nn::activation_forward(a, x.to(kGpu), yg);
    nn::activation_backward(a, dy, x, dc);
    nn::activation_backward(a, dy.to(kGpu), x.to(kGpu), dg);
    // The piecewise ones: the same float operations. SiLU, sigmoid, GELU: the CPU's cpu/act_smooth.h
    // kernels (~3 ulp of exact) against CUDA's expf/erff forms (a few ulps, but 1 + erf cancels in
    // GELU's left tail: tiny absolute errors there): 8u relative + 8u·max.
    e = same(nn::activation_name(a), yg, yc, 8 * kU);
    if (e.empty()) e = same(str(nn::activation_name(a), " dx").c_str(), dg, dc, 8 * kU);
  }
  return result(e, str("x ", shape_str(xs), ": every activation, y and dx within 8u of the CPU"));
}

CaseResult cuda_ln(Context& ctx, ChannelLayout layout) {
  std::mt19937_64 rng = make_rng(ctx, str("cuda-ln", static_cast<int>(layout)));
  std::uniform_int_distribution<int64_t> d(1, 9), c(1, 80);
  std::vector<int64_t> xs{d(rng), d(rng), c(rng)};  // tokens (B, T, C)
  if (layout == ChannelLayout::kNCHW) xs = {d(rng), c(rng), d(rng), d(rng)};
  std::string e;
  for (bool affine : {true, false}) {
    const LnSpec s{xs, layout, affine, 1e-6};
    const LnRun rc = ln_run(s, rng, kCpu);
    const LnRun rg = ln_run(s, rng, kGpu, &rc);
    // Double row sums in another order: statistics and everything after them within 1e-5 (relative
    // to each tensor's largest value).
    const char* names[] = {"y", "save_mean", "save_invstd", "dx", "dgamma", "dbeta"};
    const Tensor* gs[] = {&rg.y, &rg.mean, &rg.invstd, &rg.dx, &rg.dg, &rg.db};
    const Tensor* cs[] = {&rc.y, &rc.mean, &rc.invstd, &rc.dx, &rc.dg, &rc.db};
    for (int i = 0; i < 6 && e.empty(); ++i) e = same(names[i], *gs[i], *cs[i], 1e-5);
  }
  return result(e, str(layout == ChannelLayout::kTokens ? "tokens " : "nchw ", shape_str(xs),
                       " (affine and not): y, statistics, dx, dgamma, dbeta within 1e-5 of the CPU"));
}

CaseResult cuda_misc(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "cuda-misc");
  std::uniform_int_distribution<int64_t> d(1, 12);
  const std::vector<int64_t> xs{d(rng), d(rng), d(rng), d(rng)};
  const int64_t N = xs[0], C = xs[1];
  const Tensor x = uniform(rng, xs, -2, 2), dy = uniform(rng, xs, -1, 1), gN = uniform(rng, {N, C}, -1, 1);
  std::string e;
  // Layer scale, both layouts: y, dx bitwise (one float product); dγ within 1e-6 (double sums).
  for (ChannelLayout layout : {ChannelLayout::kTokens, ChannelLayout::kNCHW}) {
    const int64_t Cl = layout == ChannelLayout::kTokens ? xs[3] : C;
    const Tensor g = uniform(rng, {Cl}, -1, 1), dg0 = uniform(rng, {Cl}, -1, 1);
    Tensor yc = zeros(xs), yg = zeros(xs, kGpu), dxc = zeros(xs), dxg = zeros(xs, kGpu);
    Tensor dgc = host(values(dg0), {Cl}), dgg = dg0.to(kGpu);
    nn::layer_scale_forward(x, g, yc, layout);
    nn::layer_scale_forward(x.to(kGpu), g.to(kGpu), yg, layout);
    nn::layer_scale_backward(dy, x, g, dxc, dgc, layout);
    nn::layer_scale_backward(dy.to(kGpu), x.to(kGpu), g.to(kGpu), dxg, dgg, layout);
    if (e.empty()) e = same("layer_scale y", yg, yc, 0);
    if (e.empty()) e = same("layer_scale dx", dxg, dxc, 0);
    if (e.empty()) e = same("layer_scale dgamma", dgg, dgc, 1e-6);
  }
  // Drop path: bitwise, training (p 0.5, 1) and eval.
  for (double p : {0.5, 1.0, 0.0}) {
    nn::DropoutParams dp;
    dp.p = p, dp.seed = rng(), dp.step = rng() % 100;
    for (bool training : {true, false}) {
      Tensor yc = zeros(xs), yg = zeros(xs, kGpu);
      nn::drop_path_forward(x, yc, dp, training);
      nn::drop_path_forward(x.to(kGpu), yg, dp, training);
      if (e.empty()) e = same("drop_path", yg, yc, 0);
      nn::drop_path_backward(dy, yc, dp, training);
      nn::drop_path_backward(dy.to(kGpu), yg, dp, training);
      if (e.empty()) e = same("drop_path dx", yg, yc, 0);
    }
  }
  // GAP, channel multiply, the SE chain.
  const SeOut c = se_run(x, dy, kCpu), g = se_run(x, dy, kGpu);
  if (e.empty()) e = same("gap y", g.s, c.s, 1e-6);
  if (e.empty()) e = same("se y", g.y, c.y, 1e-6);
  if (e.empty()) e = same("se dg", g.dg, c.dg, 1e-6);
  if (e.empty()) e = same("se dx", g.dx, c.dx, 1e-6);
  Tensor mc = zeros(xs), mg = zeros(xs, kGpu);
  nn::channel_mul_forward(x, gN, mc);
  nn::channel_mul_forward(x.to(kGpu), gN.to(kGpu), mg);
  if (e.empty()) e = same("channel_mul y", mg, mc, 0);
  return result(e, str("x ", shape_str(xs), ": layer scale, drop path (bitwise), GAP, channel multiply, SE chain"));
}

CaseResult cuda_mixed(Context&) {
  const Tensor xg = zeros({2, 3}, kGpu), yc = zeros({2, 3}), c3 = zeros({3});
  std::string e = expect_error("activation cuda x, cpu y", Code::InvalidArgument,
                               [&] { nn::activation_forward(Activation::kGELU, xg, yc); },
                               "Expected y on cuda:0 but received");
  if (e.empty())
    e = expect_error("layer_norm cpu gamma", Code::InvalidArgument,
                     [&] { nn::layer_norm_forward(xg, c3, Tensor(), zeros({2, 3}, kGpu), Tensor(), Tensor(), 1e-6); },
                     "Expected gamma on cuda:0");
  if (e.empty())
    e = expect_error("channel_mul cpu g", Code::InvalidArgument,
                     [&] { nn::channel_mul_forward(zeros({2, 3, 2}, kGpu), zeros({2, 3}), zeros({2, 3, 2}, kGpu)); },
                     "Expected g on cuda:0");
  return result(e, "mixing devices names the argument");
}

CaseResult cuda_unavailable(Context& ctx) {
  if (ctx.cuda_available) return CaseResult::skip("a CUDA device is available: the other cases cover it");
  std::string e;
#ifndef FACECUDA_WITH_CUDA
  e = expect_error("cuda_nn::activation_forward (stub)", Code::CudaUnavailable,
                   [] { nn::cuda_nn::activation_forward(Activation::kGELU, Tensor(), Tensor()); },
                   "without the CUDA backend");
  if (e.empty())
    e = expect_error("cuda_nn::layer_norm_forward (stub)", Code::CudaUnavailable, [] {
      nn::cuda_nn::layer_norm_forward(Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), 1e-6, 1, 1, 1);
    }, "without the CUDA backend");
#endif
  return result(e, "CUDA_UNAVAILABLE with the reason");
}

// ======================================================================== perf

// Median time of one op call on the CPU over backbone-sized tensors, with the bytes it must move
// (each tensor read or written once) as GB/s.
class ExtPerf : public OpCase {
 public:
  using Setup = std::function<std::function<void()>(std::mt19937_64&)>;
  ExtPerf(std::string label, double bytes, Setup setup) : label_(std::move(label)), bytes_(bytes), setup_(setup) {}
  std::string op() const override { return "layer_ext.perf"; }
  std::string params() const override { return label_; }
  CaseResult perf(Context& ctx) override {
    std::mt19937_64 rng = make_rng(ctx, label_);
    const std::function<void()> run = setup_(rng);
    const double t = median_seconds(run, 2, 9);
    CaseResult r;
    r.detail = str(t * 1e3, " ms, ", bytes_ / t / 1e9, " GB/s");
    r.figures = {{"median_s", t}, {"gbps", bytes_ / t / 1e9}};
    return r;
  }

 private:
  std::string label_;
  double bytes_;
  Setup setup_;
};

void add_perf(std::vector<std::unique_ptr<OpCase>>& v) {
  // ViT-S/8 at 112: 32 × 197 tokens × 384; its MLP hidden 1536; EdgeNeXt-S stage 3 NCHW 32 × 160 × 7 × 7
  // and stage 1 32 × 48 × 28 × 28.
  const std::vector<int64_t> tok{32, 197, 384}, hid{32, 197, 1536}, nchw{32, 48, 28, 28};
  const double nt = count(tok) * 4.0, nh = count(hid) * 4.0, nn4 = count(nchw) * 4.0;
  v.emplace_back(new ExtPerf("gelu forward [32, 197, 1536]", 2 * nh, [=](std::mt19937_64& rng) {
    const Tensor x = uniform(rng, hid, -3, 3), y = zeros(hid);
    return [=] { nn::activation_forward(Activation::kGELU, x, y); };
  }));
  v.emplace_back(new ExtPerf("gelu backward [32, 197, 1536]", 3 * nh, [=](std::mt19937_64& rng) {
    const Tensor x = uniform(rng, hid, -3, 3), dy = uniform(rng, hid, -1, 1), dx = zeros(hid);
    return [=] { nn::activation_backward(Activation::kGELU, dy, x, dx); };
  }));
  for (Activation a : {Activation::kSiLU, Activation::kSigmoid}) {
    const std::string name = nn::activation_name(a);
    v.emplace_back(new ExtPerf(name + " forward [32, 197, 1536]", 2 * nh, [=](std::mt19937_64& rng) {
      const Tensor x = uniform(rng, hid, -6, 6), y = zeros(hid);
      return [=] { nn::activation_forward(a, x, y); };
    }));
    v.emplace_back(new ExtPerf(name + " backward [32, 197, 1536]", 3 * nh, [=](std::mt19937_64& rng) {
      const Tensor x = uniform(rng, hid, -6, 6), dy = uniform(rng, hid, -1, 1), dx = zeros(hid);
      return [=] { nn::activation_backward(a, dy, x, dx); };
    }));
  }
  v.emplace_back(new ExtPerf("hardswish forward [32, 48, 28, 28]", 2 * nn4, [=](std::mt19937_64& rng) {
    const Tensor x = uniform(rng, nchw, -4, 4), y = zeros(nchw);
    return [=] { nn::activation_forward(Activation::kHardSwish, x, y); };
  }));
  for (bool nchw_layout : {false, true}) {
    const std::vector<int64_t> xs = nchw_layout ? nchw : tok;
    const ChannelLayout l = nchw_layout ? ChannelLayout::kNCHW : ChannelLayout::kTokens;
    const double nb = nchw_layout ? nn4 : nt;
    const int64_t C = nchw_layout ? nchw[1] : tok[2], R = count(xs) / C;
    v.emplace_back(new ExtPerf(str("layer_norm forward ", nchw_layout ? "nchw " : "tokens ", shape_str(xs)), 2 * nb,
                               [=](std::mt19937_64& rng) {
                                 const Tensor x = uniform(rng, xs, -2, 2), g = uniform(rng, {C}, 0.5f, 1.5f),
                                              b = uniform(rng, {C}, -1, 1), y = zeros(xs), m = zeros({R}),
                                              is = zeros({R});
                                 return [=] { nn::layer_norm_forward(x, g, b, y, m, is, 1e-6, l); };
                               }));
    v.emplace_back(new ExtPerf(str("layer_norm backward ", nchw_layout ? "nchw " : "tokens ", shape_str(xs)), 5 * nb,
                               [=](std::mt19937_64& rng) {
                                 const Tensor x = uniform(rng, xs, -2, 2), g = uniform(rng, {C}, 0.5f, 1.5f),
                                              b = uniform(rng, {C}, -1, 1), y = zeros(xs), m = zeros({R}),
                                              is = zeros({R}), dy = uniform(rng, xs, -1, 1), dx = zeros(xs),
                                              dg = zeros({C}), db = zeros({C});
                                 nn::layer_norm_forward(x, g, b, y, m, is, 1e-6, l);
                                 return [=] { nn::layer_norm_backward(dy, x, g, m, is, dx, dg, db, l); };
                               }));
  }
}

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (Activation a : kActs) {
    v.emplace_back(new FnCase("layer_ext.activation", nn::activation_name(a), false,
                              [=](Context& c) { return act_test(c, a); }, [=](Context& c) { return act_grad(c, a); }));
  }
  v.emplace_back(new FnCase("layer_ext.activation", "spec values and kinks", false, act_spec_values));
  v.emplace_back(new FnCase("layer_ext.activation", "smooth accuracy sweep", false, act_sweep));
  const std::vector<LnSpec> lns = {
      {{3, 5, 7}, ChannelLayout::kTokens, true, 1e-6},   {{2, 3, 45}, ChannelLayout::kTokens, true, 1e-5},
      {{4, 9}, ChannelLayout::kTokens, false, 1e-6},     {{2, 1}, ChannelLayout::kTokens, true, 1e-6},
      {{2, 6, 3, 5}, ChannelLayout::kNCHW, true, 1e-6},  {{1, 4, 9, 9}, ChannelLayout::kNCHW, true, 1e-6},
      {{3, 5, 2, 2}, ChannelLayout::kNCHW, false, 1e-5}, {{2, 7, 1, 1}, ChannelLayout::kNCHW, true, 1e-6},
  };
  for (const LnSpec& s : lns) {
    v.emplace_back(new FnCase("layer_ext.layer_norm", ln_name(s), false, [=](Context& c) { return ln_test(c, s); },
                              [=](Context& c) { return ln_grad(c, s); }));
  }
  for (ChannelLayout l : {ChannelLayout::kTokens, ChannelLayout::kNCHW}) {
    v.emplace_back(new FnCase("layer_ext.layer_scale", l == ChannelLayout::kTokens ? "tokens" : "nchw", false,
                              [=](Context& c) { return scale_case(c, l, false); },
                              [=](Context& c) { return scale_case(c, l, true); }));
  }
  v.emplace_back(new FnCase("layer_ext.drop_path", "mask rate identity", false, drop_path_test, drop_path_grad));
  v.emplace_back(new FnCase("layer_ext.gap_channel_mul", "forward backward", false, pool_mul_test, channel_mul_grad));
  v.emplace_back(new FnCase("layer_ext.se_chain", "x * sigmoid(gap(x))", false, Fn(), se_grad));
  v.emplace_back(new FnCase("layer_ext.args", "invalid arguments", false, args_case));
  v.emplace_back(new FnCase("cuda.layer_ext.activation", "vs cpu", true, cuda_act));
  v.emplace_back(new FnCase("cuda.layer_ext.layer_norm", "tokens vs cpu", true,
                            [](Context& c) { return cuda_ln(c, ChannelLayout::kTokens); }));
  v.emplace_back(new FnCase("cuda.layer_ext.layer_norm", "nchw vs cpu", true,
                            [](Context& c) { return cuda_ln(c, ChannelLayout::kNCHW); }));
  v.emplace_back(new FnCase("cuda.layer_ext.misc", "scale drop_path gap channel_mul se", true, cuda_misc));
  v.emplace_back(new FnCase("cuda.layer_ext.args", "mixed devices", true, cuda_mixed));
  v.emplace_back(new FnCase("cuda.layer_ext.unavailable", "no device", false, cuda_unavailable));
  add_perf(v);
  return v;
}

}  // namespace

FC_REGISTER_CASES(layers_ext, cases);

}  // namespace test
}  // namespace fc
