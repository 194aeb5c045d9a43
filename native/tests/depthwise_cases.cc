// @file depthwise_cases.cc
// @brief Harness cases for the depthwise Conv2d forward kernels (native/src/cpu/conv_dw*.cc, the
// "direct" algorithm of layers_conv.cc for square 3/5/7/9 kernels at stride 1 and 2).
//
//   test  every shape against an independent float64 reference (direct loops, written here) on fresh
//         random inputs, through nn::conv2d_forward (the dispatched ISA) and through each ISA build
//         the CPU can run (portable, avx2, avx512) called directly; kernels 3, 5, 7, 9 at strides 1
//         and 2, even and odd padding, odd sizes, planes narrower than the kernel, one output column,
//         outputs wider than one vector with a partial last vector, 2 channels per group, channel
//         multiplier 2, bias and none; and bitwise determinism (1 thread vs all, run to run).
//
// Tolerance: an output reduced from n = Cg·KH·KW float terms (+ bias) with at most 2 roundings per
// term carries |err| <= (2(n + 1) + 16)·u·Σ|terms| (u = 2^-24), Σ|terms| computed in float64 (the
// bound of layers_cases.cc).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cpu/conv_dw.h"
#include "facecuda/cpu_info.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24

struct DwSpec {
  int64_t N, C, H, W, k, s, p;
  int64_t G;        // groups (C / G channels per group)
  int64_t mult;     // output channels per group
  bool bias;
  int64_t K() const { return G * mult; }
  int64_t Cg() const { return C / G; }
  int64_t OH() const { return (H + 2 * p - k) / s + 1; }
  int64_t OW() const { return (W + 2 * p - k) / s + 1; }
  std::vector<int64_t> xs() const { return {N, C, H, W}; }
  std::vector<int64_t> ws() const { return {K(), Cg(), k, k}; }
  std::vector<int64_t> ys() const { return {N, K(), OH(), OW()}; }
  nn::Conv2dParams params() const {
    nn::Conv2dParams q;
    q.stride_h = q.stride_w = s, q.pad_h = q.pad_w = p, q.groups = G;
    return q;
  }
  std::string str() const {
    char b[200];
    std::snprintf(b, sizeof b, "x[%lld,%lld,%lld,%lld] k=%lld s=%lld p=%lld g=%lld Cout=%lld%s", (long long)N,
                  (long long)C, (long long)H, (long long)W, (long long)k, (long long)s, (long long)p, (long long)G,
                  (long long)K(), bias ? " bias" : "");
    return b;
  }
};

std::vector<float> rand_vec(std::mt19937_64& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_uniform(rng, v.data(), v.size(), -1, 1);
  return v;
}

Tensor to_tensor(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

// Float64 reference and Σ|terms| per output.
void reference(const DwSpec& s, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>* b,
               std::vector<double>& y, std::vector<double>& mag) {
  const int64_t OH = s.OH(), OW = s.OW(), Cg = s.Cg(), K = s.K();
  y.assign(static_cast<size_t>(s.N * K * OH * OW), 0.0);
  mag.assign(y.size(), 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t co = 0; co < K; ++co)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? (*b)[co] : 0.0, m = b ? std::fabs((*b)[co]) : 0.0;
          for (int64_t cl = 0; cl < Cg; ++cl) {
            const int64_t ci = (co / s.mult) * Cg + cl;
            for (int64_t ki = 0; ki < s.k; ++ki)
              for (int64_t kj = 0; kj < s.k; ++kj) {
                const int64_t ih = oh * s.s - s.p + ki, iw = ow * s.s - s.p + kj;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const double t = static_cast<double>(w[((co * Cg + cl) * s.k + ki) * s.k + kj]) *
                                 x[((n * s.C + ci) * s.H + ih) * s.W + iw];
                acc += t;
                m += std::fabs(t);
              }
          }
          const size_t o = static_cast<size_t>(((n * K + co) * OH + oh) * OW + ow);
          y[o] = acc;
          mag[o] = m;
        }
}

// Faults of got against ref within the file comment's bound; worst err/tol in `worst`.
size_t check(const float* got, const std::vector<double>& ref, const std::vector<double>& mag, double n_terms,
             double& worst) {
  size_t faults = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = (2.0 * (n_terms + 1) + 16.0) * kU * mag[i] + 1e-30;
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= tol)) ++faults;  // NaN (an unwritten output) is a fault
    if (err / tol > worst || std::isnan(err)) worst = std::isnan(err) ? INFINITY : err / tol;
  }
  return faults;
}

class DwCase : public OpCase {
 public:
  explicit DwCase(DwSpec s) : s_(s) {}
  std::string op() const override { return "layer.conv2d.depthwise"; }
  std::string params() const override { return s_.str(); }

  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const std::vector<float> x = rand_vec(rng, s_.N * s_.C * s_.H * s_.W), w = rand_vec(rng, s_.K() * s_.Cg() * s_.k * s_.k),
                             b = rand_vec(rng, s_.K());
    std::vector<double> ref, mag;
    reference(s_, x, w, s_.bias ? &b : nullptr, ref, mag);
    const double n_terms = static_cast<double>(s_.Cg() * s_.k * s_.k);
    std::string bad;
    double worst = 0;
    // Through the op (the dispatched ISA, the default thread split).
    const size_t ny = ref.size();
    {
      Tensor y = to_tensor(std::vector<float>(ny, NAN), s_.ys());
      nn::conv2d_forward(to_tensor(x, s_.xs()), to_tensor(w, s_.ws()), s_.bias ? to_tensor(b, {s_.K()}) : Tensor(), y,
                         s_.params());
      const size_t f = check(y.data_as<float>(), ref, mag, n_terms, worst);
      if (f) bad += " conv2d_forward: " + std::to_string(f) + " faults";
    }
    // Each ISA build directly, planes split in two calls (any split must give the same values).
    const nn::dw::Args a0{s_.C, s_.H, s_.W, s_.K(), s_.k, s_.k, s_.OH(), s_.OW(), s_.s, s_.s, s_.p, s_.p, s_.Cg(),
                          s_.mult, x.data(), w.data(), s_.bias ? b.data() : nullptr, nullptr};
    if (!nn::dw::supported(a0)) return CaseResult{CaseResult::Fail, "shape not handled by conv_dw", {}};
    using Fn = void (*)(const nn::dw::Args&, int64_t, int64_t, float*);
    const struct {
      const char* name;
      Fn fn;
      SimdLevel level;
    } isas[] = {{"portable", nn::dw::forward_portable, SimdLevel::Portable},
                {"avx2", nn::dw::forward_avx2, SimdLevel::Avx2},
                {"avx512", nn::dw::forward_avx512, SimdLevel::Avx512}};
    std::vector<float> scratch(static_cast<size_t>(nn::dw::scratch_floats(a0)) + 16);
    int ran = 0;
    std::vector<float> first;
    for (const auto& isa : isas) {
      if (static_cast<int>(isa.level) > static_cast<int>(simd_level())) continue;
      std::vector<float> y(ny, NAN);
      nn::dw::Args a = a0;
      a.y = y.data();
      const int64_t planes = s_.N * s_.K(), mid = planes / 2;
      isa.fn(a, 0, mid, scratch.data());
      isa.fn(a, mid, planes, scratch.data());
      const size_t f = check(y.data(), ref, mag, n_terms, worst);
      if (f) bad += std::string(" ") + isa.name + ": " + std::to_string(f) + " faults";
      ++ran;
    }
    CaseResult r;
    char d[120];
    std::snprintf(d, sizeof d, "err/tol %.3g (op + %d ISA builds)", worst, ran);
    r.detail = d + bad;
    r.status = bad.empty() ? CaseResult::Pass : CaseResult::Fail;
    r.figures = {{"err_over_tol", worst}};
    return r;
  }

 private:
  DwSpec s_;
};

class DwDeterminism : public OpCase {
 public:
  std::string op() const override { return "layer.conv2d.depthwise"; }
  std::string params() const override { return "determinism: 1 thread vs all and run to run, k3/5/7/9 s1/s2"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    std::string bad;
    const DwSpec specs[] = {{3, 24, 20, 20, 3, 1, 1, 24, 1, true},
                            {3, 24, 21, 21, 5, 2, 2, 24, 1, true},
                            {2, 32, 14, 14, 7, 1, 3, 32, 1, false},
                            {2, 32, 7, 7, 9, 1, 4, 16, 1, true},
                            {1, 40, 17, 17, 3, 2, 1, 40, 1, true}};
    for (const DwSpec& s : specs) {
      const Tensor x = to_tensor(rand_vec(rng, s.N * s.C * s.H * s.W), s.xs()),
                   w = to_tensor(rand_vec(rng, s.K() * s.Cg() * s.k * s.k), s.ws()), b = to_tensor(rand_vec(rng, s.K()), {s.K()});
      const int64_t ny = s.N * s.K() * s.OH() * s.OW();
      std::vector<std::vector<float>> outs;
      for (int threads : {1, 0, 0}) {
        Tensor y = to_tensor(std::vector<float>(static_cast<size_t>(ny), 0.0f), s.ys());
        nn::ExecOptions ex;
        ex.max_threads = threads;
        nn::conv2d_forward(x, w, s.bias ? b : Tensor(), y, s.params(), ex);
        outs.emplace_back(y.data_as<float>(), y.data_as<float>() + ny);
      }
      if (std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)) != 0 ||
          std::memcmp(outs[1].data(), outs[2].data(), outs[0].size() * sizeof(float)) != 0)
        bad += " " + s.str();
    }
    CaseResult r;
    r.status = bad.empty() ? CaseResult::Pass : CaseResult::Fail;
    r.detail = bad.empty() ? "bitwise equal" : "differs:" + bad;
    return r;
  }
};

std::vector<std::unique_ptr<OpCase>> depthwise_cases() {
  // {N, C, H, W, k, s, p, groups, mult, bias}
  const std::vector<DwSpec> specs = {
      // k3: stride 1 and 2, odd/even widths, pad 0 and 1, a partial last vector, V = 8 and 16
      {2, 6, 28, 28, 3, 1, 1, 6, 1, true},
      {1, 4, 9, 40, 3, 1, 1, 4, 1, false},
      {2, 5, 13, 37, 3, 2, 1, 5, 1, true},
      {1, 4, 12, 12, 3, 2, 0, 4, 1, false},
      {2, 3, 8, 8, 3, 1, 0, 3, 1, true},
      {1, 3, 113, 35, 3, 2, 1, 3, 1, true},
      // k5
      {2, 8, 28, 28, 5, 1, 2, 8, 1, true},
      {3, 7, 7, 7, 5, 1, 2, 7, 1, true},
      {2, 6, 14, 14, 5, 2, 2, 6, 1, true},
      {1, 5, 13, 17, 5, 2, 2, 5, 1, false},
      {2, 4, 19, 23, 5, 2, 1, 4, 1, true},  // odd pad at stride 2 (phases swap)
      {1, 4, 11, 30, 5, 1, 0, 4, 1, false},
      {1, 3, 2, 2, 5, 2, 2, 3, 1, true},    // plane smaller than the kernel: one output
      // k7
      {2, 8, 14, 14, 7, 1, 3, 8, 1, true},
      {1, 4, 15, 15, 7, 2, 3, 4, 1, false},
      {2, 16, 7, 7, 7, 1, 0, 16, 1, false},  // the GDC shape: one output per plane
      {1, 3, 9, 41, 7, 2, 2, 3, 1, true},
      // k9
      {2, 6, 7, 7, 9, 1, 4, 6, 1, true},
      {1, 3, 19, 20, 9, 2, 4, 3, 1, true},
      {1, 2, 3, 3, 9, 1, 4, 2, 1, false},    // every output row sees mostly padding
      {1, 2, 30, 9, 9, 1, 3, 2, 1, true},
      // more than one channel per group, channel multiplier 2
      {2, 8, 10, 11, 3, 1, 1, 4, 1, true},
      {2, 6, 12, 12, 5, 2, 2, 3, 1, false},
      {2, 4, 9, 9, 3, 2, 1, 4, 2, true},
      {1, 6, 14, 14, 7, 1, 3, 3, 2, true},
  };
  std::vector<std::unique_ptr<OpCase>> v;
  for (const DwSpec& s : specs) v.push_back(std::make_unique<DwCase>(s));
  v.push_back(std::make_unique<DwDeterminism>());
  return v;
}

FC_REGISTER_CASES(depthwise, depthwise_cases);

}  // namespace
}  // namespace test
}  // namespace fc
