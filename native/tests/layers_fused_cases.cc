// @file layers_fused_cases.cc
// @brief Harness cases for the fused BatchNorm + PReLU ops (facecuda/layers.h,
// native/src/cpu/layers_fused.cc) on the CPU.
//
//   test  the fused ops against the composition of the unfused CPU ops on fresh random inputs and
//         shapes (BatchNorm1d (N, C), BatchNorm2d (N, C, H, W), alpha per channel or shared, gamma/beta
//         undefined, freeze_gamma): forwards bitwise (they are the composition); backwards against
//         prelu_backward(dy, z) then batch_norm_backward_*(dz, x) with z the forward's BatchNorm output,
//         within float rounding: the training backward recomputes z with k = float(γ·save_invstd), one
//         rounding away from the forward's scale, which moves z by an ulp or so (bound 1e-5 of the
//         magnitude of each sum, far above that and far below any real error); argument errors.
//   grad  the training and eval backward against float64 central finite differences of L = Σ g·y,
//         y = prelu(bn(x)) re-derived here in double (batch statistics recomputed from x in training),
//         for x, gamma, beta and alpha. A coordinate whose ±h perturbation flips the sign of some z
//         (the PReLU kink) is skipped. Bound: 1e-3·max|fd| + 1e-4 (h = 1e-3: truncation O(h²) plus the
//         float backward's rounding).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using namespace layer_util;
using nn::BatchNormOptions;

struct Shape {
  std::vector<int64_t> x;
  int64_t C;
  bool shared_alpha, affine;
};

Shape random_shape(std::mt19937_64& rng, bool bn1d) {
  std::uniform_int_distribution<int64_t> n(2, 5), c(1, 6), hw(1, 6);
  Shape s;
  s.C = c(rng);
  s.x = bn1d ? std::vector<int64_t>{n(rng) + 3, s.C} : std::vector<int64_t>{n(rng), s.C, hw(rng), hw(rng)};
  s.shared_alpha = rng() % 3 == 0;
  s.affine = rng() % 4 != 0;
  return s;
}

std::string shape_text(const Shape& s) {
  return str("x ", shape_str(s.x), s.shared_alpha ? " alpha[1]" : " alpha[C]", s.affine ? "" : " affine=False");
}

// The inputs of one pair.
struct Pair {
  Shape s;
  Tensor x, gamma, beta, alpha, rm, rv;
};

Pair make_pair_inputs(std::mt19937_64& rng, bool bn1d) {
  Pair p;
  p.s = random_shape(rng, bn1d);
  p.x = uniform(rng, p.s.x, -2.0f, 2.0f);
  if (p.s.affine) {
    p.gamma = uniform(rng, {p.s.C}, 0.5f, 1.5f);
    p.beta = uniform(rng, {p.s.C}, -0.5f, 0.5f);
  }
  p.alpha = uniform(rng, {p.s.shared_alpha ? 1 : p.s.C}, 0.05f, 0.4f);
  p.rm = uniform(rng, {p.s.C}, -0.3f, 0.3f);
  p.rv = uniform(rng, {p.s.C}, 0.5f, 2.0f);
  return p;
}

Tensor zeros(const std::vector<int64_t>& shape) {
  return host(std::vector<float>(static_cast<size_t>(count(shape)), 0.0f), shape);
}
Tensor copy(const Tensor& t) { return t.defined() ? host(values(t), t.shape()) : Tensor(); }

// ---- test: fused == composition

CaseResult fused_vs_composition(Context& ctx, bool bn1d, bool train, bool freeze) {
  std::mt19937_64 rng = make_rng(ctx, str("fused", bn1d, train, freeze));
  Pair p = make_pair_inputs(rng, bn1d);
  const std::vector<int64_t> cs{p.s.C};
  BatchNormOptions o;
  o.freeze_gamma = freeze;
  Tensor dy = uniform(rng, p.s.x, -1.0f, 1.0f);
  // Forward: fused.
  Tensor y = zeros(p.s.x), sm = zeros(cs), si = zeros(cs), rm = copy(p.rm), rv = copy(p.rv);
  // Composition.
  Tensor z = zeros(p.s.x), y2 = zeros(p.s.x), sm2 = zeros(cs), si2 = zeros(cs), rm2 = copy(p.rm), rv2 = copy(p.rv);
  if (train) {
    nn::batch_norm_prelu_forward_train(p.x, p.gamma, p.beta, p.alpha, rm, rv, y, sm, si, o);
    nn::batch_norm_forward_train(p.x, p.gamma, p.beta, rm2, rv2, z, sm2, si2, o);
  } else {
    nn::batch_norm_prelu_forward_eval(p.x, p.gamma, p.beta, p.alpha, rm, rv, y, o);
    nn::batch_norm_forward_eval(p.x, p.gamma, p.beta, rm2, rv2, z, o);
  }
  nn::prelu_forward(z, p.alpha, y2);
  std::string e;
  const std::vector<double> exact(static_cast<size_t>(count(p.s.x)), 0.0), exact_c(static_cast<size_t>(p.s.C), 0.0);
  if (e.empty()) e = within("y", values(y), values(y2), exact);
  if (e.empty() && train) e = within("save_mean", values(sm), values(sm2), exact_c);
  if (e.empty() && train) e = within("save_invstd", values(si), values(si2), exact_c);
  if (e.empty()) e = within("running_mean", values(rm), values(rm2), exact_c);
  if (e.empty()) e = within("running_var", values(rv), values(rv2), exact_c);
  if (!e.empty()) return failed(str(shape_text(p.s), ": ", e));
  // Backward: fused (parameter gradients start nonzero: they accumulate).
  Tensor dgamma = uniform(rng, cs, -1.0f, 1.0f), dbeta = uniform(rng, cs, -1.0f, 1.0f);
  Tensor dalpha = uniform(rng, p.alpha.shape(), -1.0f, 1.0f);
  Tensor dgamma2 = copy(dgamma), dbeta2 = copy(dbeta), dalpha2 = copy(dalpha);
  Tensor dx = zeros(p.s.x), dz = zeros(p.s.x), dx2 = zeros(p.s.x);
  const Tensor& g_out = p.s.affine ? dgamma : Tensor();
  const Tensor& b_out = p.s.affine ? dbeta : Tensor();
  if (train) {
    nn::batch_norm_prelu_backward_train(dy, p.x, p.gamma, p.beta, p.alpha, sm, si, dx, g_out, b_out, dalpha, o);
  } else {
    nn::batch_norm_prelu_backward_eval(dy, p.x, p.gamma, p.beta, p.alpha, rm, rv, dx, g_out, b_out, dalpha, o);
  }
  nn::prelu_backward(dy, z, p.alpha, dz, dalpha2);
  const Tensor& g2 = p.s.affine ? dgamma2 : Tensor();
  const Tensor& b2 = p.s.affine ? dbeta2 : Tensor();
  if (train) {
    nn::batch_norm_backward_train(dz, p.x, p.gamma, sm2, si2, dx2, g2, b2, o);
  } else {
    nn::batch_norm_backward_eval(dz, p.x, p.gamma, rm2, rv2, dx2, g2, b2, o);
  }
  // Bound: 1e-5 of the largest magnitude of the compared quantity, + 1e-6 (see the file comment).
  auto close = [&](const char* what, const Tensor& a, const Tensor& b) {
    const std::vector<float> r = values(b);
    return within(what, values(a), r, bounds(r, 0.0, 1e-5 * std::max(1.0, max_abs(r)) + 1e-6));
  };
  if (e.empty()) e = close("dx", dx, dx2);
  if (e.empty()) e = close("dgamma", dgamma, dgamma2);
  if (e.empty()) e = close("dbeta", dbeta, dbeta2);
  if (e.empty()) e = close("dalpha", dalpha, dalpha2);
  if (!e.empty()) return failed(str(shape_text(p.s), ": ", e));
  return passed(str(shape_text(p.s), ": vs the composition: forward bitwise, backward within rounding"));
}

// ---- grad: float64 finite differences

struct RefIn {
  std::vector<double> x, gamma, beta, alpha, rm, rv;
};

// L = Σ g·prelu(bn(x)) in double; `signs` receives the sign pattern of z.
double ref_loss(const RefIn& in, const Shape& s, const std::vector<double>& g, bool train, double eps,
                std::vector<bool>* signs) {
  const int64_t N = s.x[0], C = s.C, S = count(s.x) / (N * C), M = N * S;
  double L = 0;
  if (signs) signs->assign(static_cast<size_t>(N * C * S), false);
  for (int64_t c = 0; c < C; ++c) {
    double mean = in.rm[c], var = in.rv[c];
    if (train) {
      mean = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) mean += in.x[(n * C + c) * S + i];
      mean /= M;
      var = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) var += (in.x[(n * C + c) * S + i] - mean) * (in.x[(n * C + c) * S + i] - mean);
      var /= M;
    }
    const double k = (in.gamma.empty() ? 1.0 : in.gamma[c]) / std::sqrt(var + eps);
    const double b = in.beta.empty() ? 0.0 : in.beta[c];
    const double a = in.alpha[in.alpha.size() == 1 ? 0 : c];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < S; ++i) {
        const size_t j = static_cast<size_t>((n * C + c) * S + i);
        const double z = (in.x[j] - mean) * k + b;
        if (signs) (*signs)[j] = z > 0;
        L += g[j] * (z > 0 ? z : a * z);
      }
  }
  return L;
}

std::vector<double> dvec(const Tensor& t) {
  std::vector<double> d;
  if (!t.defined()) return d;
  for (float v : values(t)) d.push_back(v);
  return d;
}

CaseResult fused_grad(Context& ctx, bool bn1d, bool train) {
  std::mt19937_64 rng = make_rng(ctx, str("fused-grad", bn1d, train));
  Pair p = make_pair_inputs(rng, bn1d);
  const std::vector<int64_t> cs{p.s.C};
  BatchNormOptions o;
  Tensor g = uniform(rng, p.s.x, -1.0f, 1.0f);
  Tensor y = zeros(p.s.x), sm = zeros(cs), si = zeros(cs);
  Tensor dgamma = zeros(cs), dbeta = zeros(cs), dalpha = zeros(p.alpha.shape()), dx = zeros(p.s.x);
  const Tensor& g_out = p.s.affine ? dgamma : Tensor();
  const Tensor& b_out = p.s.affine ? dbeta : Tensor();
  if (train) {
    nn::batch_norm_prelu_forward_train(p.x, p.gamma, p.beta, p.alpha, Tensor(), Tensor(), y, sm, si, o);
    nn::batch_norm_prelu_backward_train(g, p.x, p.gamma, p.beta, p.alpha, sm, si, dx, g_out, b_out, dalpha, o);
  } else {
    nn::batch_norm_prelu_backward_eval(g, p.x, p.gamma, p.beta, p.alpha, p.rm, p.rv, dx, g_out, b_out, dalpha, o);
  }
  RefIn in{dvec(p.x), dvec(p.gamma), dvec(p.beta), dvec(p.alpha), dvec(p.rm), dvec(p.rv)};
  const std::vector<double> gd = dvec(g);
  const double h = 1e-3;
  int skipped = 0;
  std::string e;
  auto check = [&](const char* what, std::vector<double>& param, const Tensor& analytic) {
    if (!e.empty() || !analytic.defined()) return;
    const std::vector<float> an = values(analytic);
    std::vector<float> fd(param.size());
    std::vector<bool> keep(param.size(), true);
    for (size_t i = 0; i < param.size(); ++i) {
      const double v = param[i];
      std::vector<bool> sp, sm2;
      param[i] = v + h;
      const double lp = ref_loss(in, p.s, gd, train, o.eps, &sp);
      param[i] = v - h;
      const double lm = ref_loss(in, p.s, gd, train, o.eps, &sm2);
      param[i] = v;
      fd[i] = static_cast<float>((lp - lm) / (2 * h));
      if (sp != sm2) keep[i] = false, ++skipped;
    }
    std::vector<double> b = bounds(fd, 0.0, 1e-3 * max_abs(fd) + 1e-4);
    for (size_t i = 0; i < b.size(); ++i)
      if (!keep[i]) b[i] = INFINITY;
    e = within(what, an, fd, b);
  };
  check("dx", in.x, dx);
  if (p.s.affine) {
    check("dgamma", in.gamma, dgamma);
    check("dbeta", in.beta, dbeta);
  }
  check("dalpha", in.alpha, dalpha);
  if (!e.empty()) return failed(str(shape_text(p.s), ": ", e));
  return passed(str(shape_text(p.s), ": dx, dgamma, dbeta, dalpha vs float64 differences (", skipped,
                    " coordinates at the PReLU kink skipped)"));
}

// ---- argument errors

CaseResult fused_args(Context&) {
  const std::vector<int64_t> xs{2, 3, 2, 2}, cs{3};
  Tensor x = zeros(xs), y = zeros(xs), sm = zeros(cs), si = zeros(cs), rm = zeros(cs), rv = host({1, 1, 1}, cs);
  Tensor a_bad = zeros({2}), a = zeros(cs), dx = zeros(xs), dy = zeros(xs);
  std::string e = expect_error("alpha [2]", Code::ShapeMismatch, [&] {
    nn::batch_norm_prelu_forward_train(x, Tensor(), Tensor(), a_bad, rm, rv, y, sm, si);
  }, "Expected alpha of shape [3]");
  if (e.empty()) {
    e = expect_error("dalpha [2]", Code::ShapeMismatch, [&] {
      nn::batch_norm_prelu_backward_eval(dy, x, Tensor(), Tensor(), a, rm, rv, dx, Tensor(), Tensor(), a_bad);
    }, "Expected dalpha of shape [3]");
  }
  if (e.empty()) {
    e = expect_error("dalpha == alpha", Code::InvalidArgument, [&] {
      nn::batch_norm_prelu_backward_eval(dy, x, Tensor(), Tensor(), a, rm, rv, dx, Tensor(), Tensor(), a);
    }, "Expected dalpha not to share memory with alpha");
  }
  if (e.empty()) {
    e = expect_error("beta [2]", Code::ShapeMismatch, [&] {
      nn::batch_norm_prelu_backward_train(dy, x, Tensor(), zeros({2}), a, sm, si, dx, Tensor(), Tensor(), Tensor());
    }, "Expected beta of shape [3]");
  }
  if (e.empty()) {
    e = expect_error("y overlapping alpha", Code::InvalidArgument, [&] {
      nn::batch_norm_prelu_forward_eval(x, Tensor(), Tensor(), y.reshape({24}).narrow(0, 0, 3), rm, rv, y);
    }, "Expected y not to share memory with alpha");
  }
  if (!e.empty()) return failed(e);
  return passed("5/5 invalid arguments throw the named error");
}

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (bool bn1d : {false, true}) {
    for (bool train : {true, false}) {
      const std::string shape = bn1d ? "BatchNorm1d (N, C)" : "BatchNorm2d (N, C, H, W)";
      const std::string mode = train ? "train" : "eval";
      v.emplace_back(new FnCase("layer.bn_prelu", str(mode, " ", shape), false,
                                [=](Context& c) { return fused_vs_composition(c, bn1d, train, false); },
                                [=](Context& c) { return fused_grad(c, bn1d, train); }));
    }
  }
  v.emplace_back(new FnCase("layer.bn_prelu", "train freeze_gamma vs composition", false,
                            [](Context& c) { return fused_vs_composition(c, false, true, true); }));
  v.emplace_back(new FnCase("layer.bn_prelu", "invalid arguments", false, fused_args));
  return v;
}

}  // namespace

FC_REGISTER_CASES(layers_fused, cases);

}  // namespace test
}  // namespace fc
