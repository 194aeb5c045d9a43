// @file winograd_cases.cc
// @brief Harness cases for the "winograd" forward convolution (native/src/cpu/conv_winograd.*,
// chosen by conv2d_forward for 3×3 / stride 1 / pad 0 or 1 / groups 1, see facecuda/layers.h).
//
//   test  fresh random x, w (and bias) over odd sizes (5×7, 7×7, 13×11, 14×14, 29×31, 56×56 slices),
//         batch 1..3, channels 16..96 (most not multiples of 16) and r50's 128, 256, 512, pad 0 and 1,
//         with and without bias,
//         and several block sizes (one tile row per block up to the whole batch):
//           - against a float64 direct convolution, elementwise |y − ref| <= tol (below);
//           - against the im2col-gemm path (allow_winograd = false), within both bounds;
//           - bitwise: 1 thread vs all, run to run, and every block size (the result does not depend
//             on max_workspace_bytes);
//         through conv2d_forward where the shape is large enough for conv2d_algorithm to pick
//         "winograd" (checked), and through winograd::forward directly for the small ones.
//         Plus conv2d_algorithm's choice (allow_winograd, BF16, stride 2, groups, small channels).
//   perf  IResNet-50's 3×3 stride-1 convolutions at batch 32 and 1: winograd vs im2col-gemm, median ms,
//         effective GFLOP/s (direct-convolution FLOPs 2·N·Cout·OH·OW·Cin·9) and the speedup
//         (figures for bench/conv.js).
//
// Tolerance. F(4×4, 3×3) computes y = Aᵀ[U ⊙ V]A with U = G w Gᵀ (float64, rounded once) and
// V = Bᵀ d B (float32); the rounding of each stage is relative to the magnitudes of its operands,
// which the transforms amplify: |U| <= ‖G‖∞²·|w| = 1·|w| (entries <= 1), |V| <= ‖Bᵀ‖∞²·|d| = 100·|d|
// (row sums <= 10), and Aᵀ's row sums reach 18 (|1|+|1|+|8|+|8|). Rather than that worst case (~10⁴·u
// per term), the bound used is stated against the natural magnitude of an output,
// mag = Σ|w·x| + |b| (the float64 sum of absolute terms of the direct convolution):
//   |y − ref| <= (Cin + 64)·kAmp·u·mag,   kAmp = 64
// with u = 2⁻²⁴. The (Cin + 64) term is the GEMM's K-long reduction plus the fixed-length transform
// chains; kAmp covers the transform amplification measured on these inputs (the observed worst
// err/(Cin + 64)·u·mag is printed as "amp"; it stays well below kAmp). For the r50 channel counts this
// means ≈ 2·10⁻⁴·mag worst case; typical errors relative to max|ref| are reported too ("rel").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu/conv_winograd.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

using nn::Conv2dParams;
using nn::ExecOptions;

constexpr double kU = 1.0 / 16777216.0;  // 2^-24
constexpr double kAmp = 2;               // transform amplification allowed (see the file comment)

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

struct WSpec {
  int64_t N, C, H, W, K, ph, pw;
  bool bias;
  std::vector<int64_t> xs() const { return {N, C, H, W}; }
  std::vector<int64_t> ws() const { return {K, C, 3, 3}; }
  int64_t OH() const { return H + 2 * ph - 2; }
  int64_t OW() const { return W + 2 * pw - 2; }
  std::vector<int64_t> ys() const { return {N, K, OH(), OW()}; }
  Conv2dParams params() const {
    Conv2dParams p;
    p.pad_h = ph, p.pad_w = pw;
    return p;
  }
  std::string str() const {
    char b[160];
    std::snprintf(b, sizeof b, "x[%lld,%lld,%lld,%lld] Cout=%lld p=%lld,%lld%s", (long long)N, (long long)C,
                  (long long)H, (long long)W, (long long)K, (long long)ph, (long long)pw, bias ? " bias" : "");
    return b;
  }
};

Tensor from(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return Tensor::from_host(v.data(), v.size() * sizeof(float), shape, DType::F32, Device::cpu());
}

std::vector<float> values(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data(), v.size() * sizeof(float));
  return v;
}

// Float64 direct convolution and Σ|terms|.
void conv_ref(const WSpec& s, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>* b,
              std::vector<double>& y, std::vector<double>& mag) {
  const int64_t OH = s.OH(), OW = s.OW();
  y.assign(static_cast<size_t>(s.N * s.K * OH * OW), 0.0);
  mag.assign(y.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? (*b)[k] : 0.0, m = b ? std::fabs((*b)[k]) : 0.0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t ki = 0; ki < 3; ++ki)
              for (int64_t kj = 0; kj < 3; ++kj) {
                const int64_t ih = oh - s.ph + ki, iw = ow - s.pw + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const double t = static_cast<double>(w[((k * s.C + c) * 3 + ki) * 3 + kj]) *
                                 x[((n * s.C + c) * s.H + ih) * s.W + iw];
                acc += t, m += std::fabs(t);
              }
          const size_t o = static_cast<size_t>(((n * s.K + k) * OH + oh) * OW + ow);
          y[o] = acc, mag[o] = m;
        }
}

class WinogradCase : public OpCase {
 public:
  explicit WinogradCase(WSpec s) : s_(s) {}
  std::string op() const override { return "layer.conv2d.winograd"; }
  std::string params() const override {
    return s_.str() + (via_api() ? " (conv2d_forward)" : " (winograd::forward)");
  }

  CaseResult test(Context& ctx) override {
    std::mt19937_64 rng = make_rng(ctx, "winograd " + s_.str());
    std::vector<float> x(static_cast<size_t>(s_.N * s_.C * s_.H * s_.W)), w(static_cast<size_t>(s_.K * s_.C * 9)),
        b(static_cast<size_t>(s_.K));
    fill_uniform(rng, x.data(), x.size(), -1, 1);
    fill_uniform(rng, w.data(), w.size(), -1, 1);
    fill_uniform(rng, b.data(), b.size(), -1, 1);
    std::vector<double> ref, mag;
    conv_ref(s_, x, w, s_.bias ? &b : nullptr, ref, mag);

    const Tensor xt = from(x, s_.xs()), wt = from(w, s_.ws()), bt = s_.bias ? from(b, {s_.K}) : Tensor();
    auto run = [&](int threads, size_t workspace) {
      Tensor y = Tensor::empty(s_.ys(), DType::F32, Device::cpu());
      if (via_api()) {
        ExecOptions ex;
        ex.max_threads = threads, ex.max_workspace_bytes = workspace;
        nn::conv2d_forward(xt, wt, bt, y, s_.params(), ex);
      } else {
        nn::winograd::forward(s_.N, s_.C, s_.H, s_.W, s_.K, s_.ph, s_.pw, x.data(), w.data(),
                              s_.bias ? b.data() : nullptr, y.data_as<float>(), threads, workspace);
      }
      return values(y);
    };
    const std::vector<float> y = run(0, 0);

    CaseResult r;
    auto fail = [&](const std::string& what) {
      r.status = CaseResult::Fail;
      r.detail += " FAILED: " + what;
    };
    if (via_api()) {
      const std::string algo = nn::conv2d_algorithm(s_.xs(), s_.ws(), s_.params());
      if (algo != "winograd") fail("conv2d_algorithm says " + algo + ", expected winograd");
    }
    // Against float64.
    const double scale = (s_.C + 64) * kAmp * kU;
    double worst = 0, amp = 0, max_err = 0, max_ref = 0;
    size_t faults = 0, at = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(y[i] - ref[i]), tol = scale * mag[i] + 1e-30;
      if (!(err <= tol)) ++faults;
      if (!(err / tol <= worst)) worst = std::isnan(err) ? HUGE_VAL : err / tol, at = i;
      amp = std::max(amp, err / ((s_.C + 64) * kU * mag[i] + 1e-30));
      max_err = std::max(max_err, err), max_ref = std::max(max_ref, std::fabs(ref[i]));
    }
    if (faults)
      fail(std::to_string(faults) + "/" + std::to_string(ref.size()) + " over the float64 bound; worst @" +
           std::to_string(at) + " got " + fmt("%.9g", y[at]) + " ref " + fmt("%.9g", ref[at]));
    // Against im2col-gemm (its own bound is (2·9·Cin + 16)·u·mag, far below ours).
    {
      Tensor yi = Tensor::empty(s_.ys(), DType::F32, Device::cpu());
      ExecOptions ex;
      ex.allow_winograd = false;
      nn::conv2d_forward(xt, wt, bt, yi, s_.params(), ex);
      const std::vector<float> v = values(yi);
      const double iscale = scale + (2 * 9 * s_.C + 16) * kU;
      size_t bad = 0;
      for (size_t i = 0; i < v.size(); ++i)
        if (!(std::fabs(static_cast<double>(y[i]) - v[i]) <= iscale * mag[i] + 1e-30)) ++bad;
      if (bad) fail(std::to_string(bad) + " elements differ from im2col-gemm beyond both bounds");
    }
    // Bitwise: thread counts, run to run, block sizes (one tile row per block, a few rows, all).
    const size_t row_bytes = static_cast<size_t>(36 * (s_.C + s_.K) * ((s_.OW() + 3) / 4) * 4);
    for (int threads : {1, 0})
      for (size_t ws : {size_t(1), 3 * row_bytes, size_t(1) << 30}) {
        if (run(threads, ws) != y)
          fail("not bitwise equal with threads=" + std::to_string(threads) + " workspace=" + std::to_string(ws));
      }
    r.detail = "err/tol " + fmt("%.3g", worst) + " amp " + fmt("%.3g", amp) + " rel " + fmt("%.2e", max_err / max_ref) +
               r.detail;
    r.figures = {{"err_over_tol", worst}, {"amp", amp}, {"max_err_over_max_ref", max_err / max_ref}};
    return r;
  }

 private:
  bool via_api() const {
    return std::string(nn::conv2d_algorithm(s_.xs(), s_.ws(), s_.params())) == "winograd";
  }
  WSpec s_;
};

// conv2d_algorithm's choice.
class WinogradChoiceCase : public OpCase {
 public:
  std::string op() const override { return "layer.conv2d.winograd"; }
  std::string params() const override { return "algorithm choice"; }
  CaseResult test(Context&) override {
    CaseResult r;
    auto expect = [&](const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const Conv2dParams& p,
                      const ExecOptions& ex, const std::string& want) {
      const std::string got = nn::conv2d_algorithm(xs, ws, p, ex);
      if (got != want) {
        r.status = CaseResult::Fail;
        r.detail += " " + shape_str(xs) + "*" + shape_str(ws) + ": got " + got + " want " + want + ";";
      }
    };
    const ExecOptions dflt;
    ExecOptions off, bf16;
    off.allow_winograd = false;
    bf16.precision = GemmPrecision::BF16;
    expect({32, 64, 56, 56}, {64, 64, 3, 3}, Conv2dParams(1, 1), dflt, "winograd");
    expect({32, 512, 7, 7}, {512, 512, 3, 3}, Conv2dParams(1, 1), dflt, "winograd");
    expect({2, 20, 30, 30}, {24, 20, 3, 3}, Conv2dParams(1, 0), dflt, "winograd");
    expect({32, 64, 56, 56}, {64, 64, 3, 3}, Conv2dParams(1, 1), off, "im2col-gemm");
    expect({32, 64, 56, 56}, {64, 64, 3, 3}, Conv2dParams(1, 1), bf16, "im2col-gemm");
    expect({32, 64, 56, 56}, {64, 64, 3, 3}, Conv2dParams(2, 1), dflt, "im2col-gemm");
    expect({32, 64, 56, 56}, {64, 32, 3, 3}, Conv2dParams(1, 1, 2), dflt, "im2col-gemm");
    expect({32, 3, 112, 112}, {64, 3, 3, 3}, Conv2dParams(1, 1), dflt, "im2col-gemm");  // Cin < 16
    expect({32, 64, 56, 56}, {64, 64, 1, 1}, Conv2dParams(1, 0), dflt, "gemm-1x1");
    expect({32, 64, 56, 56}, {64, 64, 3, 3}, Conv2dParams(1, 2), dflt, "im2col-gemm");  // pad 2
    expect({1, 64, 4, 4}, {64, 64, 3, 3}, Conv2dParams(1, 1), dflt, "im2col-gemm");    // 4 tiles < 32
    if (r.status == CaseResult::Pass) r.detail = "ok";
    return r;
  }
};

// ---- perf: r50's 3×3 stride-1 convolutions

struct PerfShape {
  const char* name;
  int64_t C, HW, K;
  int count;  // in r50
};

const PerfShape kR50[] = {
    // layers_cases.cc's r50_layers(): the 3×3 stride-1 ones (the stem has Cin = 3).
    {"l1.0.conv1 64->64 @112", 64, 112, 64, 1}, {"l1 64->64 @56", 64, 56, 64, 4},
    {"l2.0.conv1 64->128 @56", 64, 56, 128, 1}, {"l2 128->128 @28", 128, 28, 128, 6},
    {"l3.0.conv1 128->256 @28", 128, 28, 256, 1}, {"l3 256->256 @14", 256, 14, 256, 26},
    {"l4.0.conv1 256->512 @14", 256, 14, 512, 1}, {"l4 512->512 @7", 512, 7, 512, 4},
};

class WinogradPerf : public OpCase {
 public:
  WinogradPerf(PerfShape s, int64_t N) : s_(s), N_(N) {}
  std::string op() const override { return "layer.conv2d.winograd"; }
  std::string params() const override {
    return std::string("perf ") + s_.name + " N=" + std::to_string(N_) + " x" + std::to_string(s_.count);
  }
  CaseResult perf(Context&) override {
    const std::vector<int64_t> xs{N_, s_.C, s_.HW, s_.HW}, ws{s_.K, s_.C, 3, 3}, ys{N_, s_.K, s_.HW, s_.HW};
    std::mt19937_64 rng(1234);
    std::vector<float> xv(static_cast<size_t>(N_ * s_.C * s_.HW * s_.HW)), wv(static_cast<size_t>(s_.K * s_.C * 9));
    fill_uniform(rng, xv.data(), xv.size(), -1, 1);
    fill_uniform(rng, wv.data(), wv.size(), -1, 1);
    const Tensor x = from(xv, xs), w = from(wv, ws);
    Tensor y = Tensor::empty(ys, DType::F32, Device::cpu());
    const Conv2dParams p(1, 1);
    ExecOptions wino, gemm;
    gemm.allow_winograd = false;
    const int reps = N_ >= 32 ? 5 : 21;
    const double tg = median_seconds([&] { nn::conv2d_forward(x, w, Tensor(), y, p, gemm); }, 1, reps);
    const double tw = median_seconds([&] { nn::conv2d_forward(x, w, Tensor(), y, p, wino); }, 1, reps);
    const double flops = 2.0 * N_ * s_.K * s_.HW * s_.HW * s_.C * 9;
    CaseResult r;
    r.detail = std::string(nn::conv2d_algorithm(xs, ws, p, wino)) + fmt(" %.3f ms", tw * 1e3) +
               fmt(" (%.1f GFLOP/s eff)", flops / tw / 1e9) + fmt(" vs im2col-gemm %.3f ms", tg * 1e3) +
               fmt(" (%.1f GFLOP/s)", flops / tg / 1e9) + fmt(": %.2fx", tg / tw) + ", " +
               std::to_string(ThreadPool::global().num_threads()) + " threads";
    // "chosen": conv2d_forward with default options (winograd where conv2d_algorithm picks it).
    r.figures = {{"chosen_ms", tw * 1e3},        {"gemm_ms", tg * 1e3},    {"chosen_gflops", flops / tw / 1e9},
                 {"gemm_gflops", flops / tg / 1e9}, {"speedup", tg / tw}, {"count", static_cast<double>(s_.count)},
                 {"N", static_cast<double>(N_)}};
    return r;
  }

 private:
  PerfShape s_;
  int64_t N_;
};

std::vector<std::unique_ptr<OpCase>> winograd_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  const WSpec specs[] = {
      // small (winograd::forward directly): edges, partial tiles, pad 0
      {1, 16, 5, 7, 16, 1, 1, false},
      {2, 17, 7, 7, 19, 1, 1, true},
      {3, 24, 6, 9, 20, 0, 0, true},
      {1, 33, 13, 11, 21, 1, 0, false},
      {2, 40, 14, 14, 36, 1, 1, true},
      {1, 96, 7, 7, 80, 1, 1, false},
      {3, 18, 9, 6, 16, 0, 1, false},
      // large enough for conv2d_forward to choose winograd
      {3, 48, 14, 14, 40, 1, 1, true},
      {2, 20, 30, 30, 24, 0, 0, false},
      {1, 32, 29, 31, 48, 1, 1, true},
      {2, 64, 56, 20, 24, 1, 1, false},   // a 56-wide slice: tW = 14 of 16 lanes
      {1, 16, 20, 70, 16, 1, 1, true},    // tW = 18: two lane groups per tile row
      {2, 96, 28, 28, 72, 1, 1, false},
      {3, 80, 7, 7, 96, 1, 1, true},
      // r50's channel counts (the error grows with Cin: the stated figures come from these)
      {2, 128, 28, 28, 128, 1, 1, false},
      {1, 256, 14, 14, 256, 1, 1, true},
      {1, 512, 7, 7, 512, 1, 1, false},
  };
  for (const WSpec& s : specs) v.push_back(std::make_unique<WinogradCase>(s));
  v.push_back(std::make_unique<WinogradChoiceCase>());
  return v;
}

std::vector<std::unique_ptr<OpCase>> winograd_perf_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (int64_t N : {32, 1})
    for (const PerfShape& s : kR50) v.push_back(std::make_unique<WinogradPerf>(s, N));
  return v;
}

}  // namespace

FC_REGISTER_CASES(winograd, winograd_cases);
FC_REGISTER_CASES(winograd_perf, winograd_perf_cases);

}  // namespace test
}  // namespace fc
