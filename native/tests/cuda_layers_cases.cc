// @file cuda_layers_cases.cc
// @brief Harness cases for the layer ops on CUDA (facecuda/layers.h through common/layers_cuda.h):
// every op, forward and every gradient, CUDA against the CPU ops on the same fresh random inputs and
// random shapes; they skip with the reason when no CUDA device is usable. Always run: without a
// device, CUDA tensors cannot be made (CUDA_UNAVAILABLE), and in a build without CUDA the stubs of
// layers_cuda.h throw CUDA_UNAVAILABLE.
//
// Tolerances (each stated where it is used):
//   - Convolutions: |cuda − cpu| <= t·mag + 1e-6 per element, mag = the same convolution of |inputs|
//     (Σ|terms| of that output, computed by the CPU op). t = 1e-5 for F32 (fp32 FMA math; cuDNN may
//     pick FFT or Winograd algorithms, whose transforms cost more than direct summation's (2R)·2^-24),
//     t = 2^-8 for TF32 (10-bit mantissa inputs: 2·2^-11 per product, plus fp32 summation), t = 2^-6
//     for BF16 (8-bit inputs: 2·2^-9 per product, plus the bf16 rounding of the result, 2^-9 of |y|).
//   - Linear: the same with mag = linear(|x|, |w|) and t = 1e-5 (F32).
//   - BatchNorm (plain and fused), PReLU's dalpha, bias gradients: rtol 1e-5 plus 1e-5·max|ref|: the
//     per-channel sums are added in another order (double per term here, float lanes on the CPU), so
//     statistics and gradients differ by rounding; the training backward's dx goes through the
//     statistics, hence the max-relative term.
//   - Elementwise ops (ReLU, PReLU forward and dx, Dropout, add), fold_batch_norm: bitwise (the CUDA
//     kernels use the CPU's float operations and the same double formulas; Dropout the same mask).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/layers_cuda.h"
#include "facecuda/cuda.h"
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
using nn::Conv2dParams;
using nn::ExecOptions;

const Device kCpu = Device::cpu();
const Device kGpu = Device::cuda(0);

Tensor zeros(const std::vector<int64_t>& shape, const Device& d = kCpu) {
  return host(std::vector<float>(static_cast<size_t>(count(shape)), 0.0f), shape).to(d);
}

Tensor abs_of(const Tensor& t) {
  std::vector<float> v = values(t);
  for (float& x : v) x = std::fabs(x);
  return host(v, t.shape());
}

// Compares a CUDA result with the CPU's; "" or the violation.
std::string same(const char* what, const Tensor& gpu, const Tensor& cpu, const std::vector<double>& b) {
  return within(what, values(gpu), values(cpu), b);
}
std::vector<double> exact(const Tensor& t) { return std::vector<double>(static_cast<size_t>(t.numel()), 0.0); }
std::vector<double> rel(const Tensor& ref, double r) {
  const std::vector<float> v = values(ref);
  return bounds(v, r, r * max_abs(v));
}
// t·mag + 1e-6 (the convolution bound of the file comment).
std::vector<double> by_magnitude(const Tensor& mag, double t) {
  std::vector<double> b;
  for (float m : values(mag)) b.push_back(t * m + 1e-6);
  return b;
}

CaseResult result(const std::string& e, const std::string& ok) { return e.empty() ? passed(ok) : failed(e); }

// ---- Conv2d

struct ConvSpec {
  const char* kind;
  int64_t N, C, H, W, K, KH, KW;
  Conv2dParams p;
};

ConvSpec conv_spec(std::mt19937_64& rng, int kind) {
  std::uniform_int_distribution<int64_t> n(1, 3), hw(5, 13), ch(2, 12);
  ConvSpec s{};
  s.N = n(rng);
  s.H = hw(rng) | 1;  // odd sizes
  s.W = hw(rng);
  switch (kind) {
    case 0: s = {"3x3 s1 p1", s.N, ch(rng), s.H, s.W, ch(rng), 3, 3, Conv2dParams(1, 1)}; break;
    case 1: s = {"3x3 s2 p1", s.N, ch(rng), s.H, s.W, ch(rng), 3, 3, Conv2dParams(2, 1)}; break;
    case 2: s = {"1x1 s1 p0", s.N, ch(rng), s.H, s.W, ch(rng), 1, 1, Conv2dParams(1, 0)}; break;
    case 3: s = {"1x1 s2 p0", s.N, ch(rng), s.H, s.W, ch(rng), 1, 1, Conv2dParams(2, 0)}; break;
    case 4: {
      const int64_t c = ch(rng);
      s = {"depthwise 3x3 s2 p1", s.N, c, s.H, s.W, c, 3, 3, Conv2dParams(2, 1, c)};
      break;
    }
    case 5: s = {"groups 2 3x3 s1 p2", s.N, 6, s.H, s.W, 8, 3, 3, Conv2dParams(1, 2, 2)}; break;
    case 6: s = {"depthwise 7x7 GDC", s.N, 16, 7, 7, 16, 7, 7, Conv2dParams(1, 0, 16)}; break;
    default: {
      s = {"3x1 stride 2x1 pad 1x0", s.N, ch(rng), s.H, s.W, ch(rng), 3, 1, Conv2dParams()};
      s.p.stride_h = 2, s.p.pad_h = 1;
      break;
    }
  }
  return s;
}

const char* precision_name(GemmPrecision p) {
  return p == GemmPrecision::F32 ? "f32" : p == GemmPrecision::TF32 ? "tf32" : "bf16";
}

CaseResult conv_case(Context& ctx, int kind, GemmPrecision prec) {
  std::mt19937_64 rng = make_rng(ctx, str("cuda-conv", kind, static_cast<int>(prec)));
  const ConvSpec s = conv_spec(rng, kind);
  const std::vector<int64_t> xs{s.N, s.C, s.H, s.W}, ws{s.K, s.C / s.p.groups, s.KH, s.KW};
  const std::vector<int64_t> ys = nn::conv2d_output_shape(xs, ws, s.p);
  ExecOptions ex;
  ex.precision = prec;
  const double t = prec == GemmPrecision::F32 ? 1e-5 : prec == GemmPrecision::TF32 ? 1.0 / 256 : 1.0 / 64;
  Tensor x = uniform(rng, xs, -1, 1), w = uniform(rng, ws, -1, 1), b = uniform(rng, {s.K}, -1, 1);
  Tensor dy = uniform(rng, ys, -1, 1), dx0 = uniform(rng, xs, -1, 1), dw0 = uniform(rng, ws, -1, 1);
  Tensor db0 = uniform(rng, {s.K}, -1, 1);
  std::string e;
  // forward (+ bias)
  Tensor y = zeros(ys), yg = zeros(ys, kGpu), mag = zeros(ys);
  nn::conv2d_forward(x, w, b, y, s.p);
  nn::conv2d_forward(x.to(kGpu), w.to(kGpu), b.to(kGpu), yg, s.p, ex);
  nn::conv2d_forward(abs_of(x), abs_of(w), abs_of(b), mag, s.p);
  e = same("y", yg, y, by_magnitude(mag, t));
  // backward data, written and accumulated
  for (bool acc : {false, true}) {
    if (!e.empty()) break;
    Tensor dx = host(values(dx0), xs), dxg = dx0.to(kGpu), mx = acc ? abs_of(dx0) : zeros(xs);
    nn::conv2d_backward_data(dy, w, dx, s.p, acc);
    nn::conv2d_backward_data(dy.to(kGpu), w.to(kGpu), dxg, s.p, acc, ex);
    nn::conv2d_backward_data(abs_of(dy), abs_of(w), mx, s.p, acc);
    e = same(acc ? "dx (accumulated)" : "dx", dxg, dx, by_magnitude(mx, t));
  }
  // backward filter (accumulates into dw0) and bias
  if (e.empty()) {
    Tensor dw = host(values(dw0), ws), dwg = dw0.to(kGpu), mw = abs_of(dw0);
    nn::conv2d_backward_filter(x, dy, dw, s.p);
    nn::conv2d_backward_filter(x.to(kGpu), dy.to(kGpu), dwg, s.p, ex);
    nn::conv2d_backward_filter(abs_of(x), abs_of(dy), mw, s.p);
    e = same("dw", dwg, dw, by_magnitude(mw, t));
  }
  if (e.empty()) {
    Tensor db = host(values(db0), {s.K}), dbg = db0.to(kGpu);
    nn::conv2d_backward_bias(dy, db);
    nn::conv2d_backward_bias(dy.to(kGpu), dbg);
    e = same("db", dbg, db, rel(db, 1e-5));
  }
  return result(e, str(s.kind, " x ", shape_str(xs), " w ", shape_str(ws), " ", precision_name(prec),
                       ": y, dx (= and +=), dw, db within the stated bounds"));
}

// ---- BatchNorm (plain and fused with PReLU)

CaseResult bn_case(Context& ctx, bool train, bool fused, bool bn1d) {
  std::mt19937_64 rng = make_rng(ctx, str("cuda-bn", train, fused, bn1d));
  std::uniform_int_distribution<int64_t> n(2, 9), c(1, 40), hw(1, 17);
  const int64_t C = c(rng);
  const std::vector<int64_t> xs =
      bn1d ? std::vector<int64_t>{n(rng) * 8, C} : std::vector<int64_t>{n(rng), C, hw(rng), hw(rng)};
  const std::vector<int64_t> cs{C};
  BatchNormOptions o;
  Tensor x = uniform(rng, xs, -2, 3), gamma = uniform(rng, cs, 0.5f, 1.5f), beta = uniform(rng, cs, -0.5f, 0.5f);
  Tensor alpha = uniform(rng, {rng() % 2 ? C : 1}, 0.05f, 0.4f);
  Tensor rm = uniform(rng, cs, -0.3f, 0.3f), rv = uniform(rng, cs, 0.5f, 2.0f), dy = uniform(rng, xs, -1, 1);
  Tensor dg0 = uniform(rng, cs, -1, 1), db0 = uniform(rng, cs, -1, 1), da0 = uniform(rng, alpha.shape(), -1, 1);
  struct Out {
    Tensor y, sm, si, rm, rv, dx, dg, db, da;
  };
  auto run = [&](const Device& d) {
    Out r{zeros(xs, d), zeros(cs, d), zeros(cs, d), rm.to(d), rv.to(d), zeros(xs, d), dg0.to(d), db0.to(d),
          da0.to(d)};
    const Tensor xd = x.to(d), gd = gamma.to(d), bd = beta.to(d), ad = alpha.to(d), dyd = dy.to(d);
    if (train && fused) {
      nn::batch_norm_prelu_forward_train(xd, gd, bd, ad, r.rm, r.rv, r.y, r.sm, r.si, o);
      nn::batch_norm_prelu_backward_train(dyd, xd, gd, bd, ad, r.sm, r.si, r.dx, r.dg, r.db, r.da, o);
    } else if (train) {
      nn::batch_norm_forward_train(xd, gd, bd, r.rm, r.rv, r.y, r.sm, r.si, o);
      nn::batch_norm_backward_train(dyd, xd, gd, r.sm, r.si, r.dx, r.dg, r.db, o);
    } else if (fused) {
      nn::batch_norm_prelu_forward_eval(xd, gd, bd, ad, r.rm, r.rv, r.y, o);
      nn::batch_norm_prelu_backward_eval(dyd, xd, gd, bd, ad, r.rm, r.rv, r.dx, r.dg, r.db, r.da, o);
    } else {
      nn::batch_norm_forward_eval(xd, gd, bd, r.rm, r.rv, r.y, o);
      nn::batch_norm_backward_eval(dyd, xd, gd, r.rm, r.rv, r.dx, r.dg, r.db, o);
    }
    return r;
  };
  const Out a = run(kCpu), g = run(kGpu);
  std::string e;
  const double r = 1e-5;  // see the file comment
  const char* names[] = {"y", "save_mean", "save_invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta",
                         "dalpha"};
  const Tensor* ga[] = {&g.y, &g.sm, &g.si, &g.rm, &g.rv, &g.dx, &g.dg, &g.db, &g.da};
  const Tensor* ca[] = {&a.y, &a.sm, &a.si, &a.rm, &a.rv, &a.dx, &a.dg, &a.db, &a.da};
  for (int i = 0; i < 9 && e.empty(); ++i) e = same(names[i], *ga[i], *ca[i], rel(*ca[i], r));
  return result(e, str(train ? "train" : "eval", fused ? " +prelu" : "", " x ", shape_str(xs), " alpha ",
                       shape_str(alpha.shape()), ": forward, statistics and every gradient within 1e-5"));
}

// ---- elementwise ops, Linear, fold, flatten

CaseResult elementwise_case(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "cuda-elementwise");
  std::uniform_int_distribution<int64_t> d(1, 19);
  const std::vector<int64_t> xs{d(rng), d(rng), d(rng), 3};
  const int64_t C = xs[1];
  Tensor x = uniform(rng, xs, -1, 1), x2 = uniform(rng, xs, -1, 1), dy = uniform(rng, xs, -1, 1);
  Tensor alpha = uniform(rng, {C}, 0.05f, 0.4f), da0 = uniform(rng, {C}, -1, 1);
  std::string e;
  auto both = [&](const char* what, const std::function<void(const Device&, Tensor&)>& f, bool bitwise) {
    if (!e.empty()) return;
    Tensor c = zeros(xs), g = zeros(xs, kGpu);
    f(kCpu, c);
    f(kGpu, g);
    e = same(what, g, c, bitwise ? exact(c) : rel(c, 1e-5));
  };
  both("relu", [&](const Device& dv, Tensor& out) { nn::relu_forward(x.to(dv), out); }, true);
  both("relu dx", [&](const Device& dv, Tensor& out) { nn::relu_backward(dy.to(dv), x.to(dv), out); }, true);
  both("prelu", [&](const Device& dv, Tensor& out) { nn::prelu_forward(x.to(dv), alpha.to(dv), out); }, true);
  both("prelu dx", [&](const Device& dv, Tensor& out) {
    nn::prelu_backward(dy.to(dv), x.to(dv), alpha.to(dv), out, Tensor());
  }, true);
  both("add", [&](const Device& dv, Tensor& out) { nn::add(x.to(dv), x2.to(dv), out); }, true);
  for (double p : {0.0, 0.3, 1.0}) {
    nn::DropoutParams dp;
    dp.p = p;
    dp.seed = rng();
    dp.step = rng() % 1000;
    both("dropout", [&](const Device& dv, Tensor& out) { nn::dropout_forward(x.to(dv), out, dp, true); }, true);
    both("dropout dx", [&](const Device& dv, Tensor& out) { nn::dropout_backward(dy.to(dv), out, dp, true); }, true);
  }
  if (e.empty()) {  // dalpha, per channel and shared
    for (int64_t an : {C, int64_t(1)}) {
      Tensor a = uniform(rng, {an}, 0.05f, 0.4f), dc = uniform(rng, {an}, -1, 1), dg = dc.to(kGpu);
      nn::prelu_backward(dy, x, a, Tensor(), dc);
      nn::prelu_backward(dy.to(kGpu), x.to(kGpu), a.to(kGpu), Tensor(), dg);
      if (e.empty()) e = same("dalpha", dg, dc, rel(dc, 1e-5));
    }
  }
  if (e.empty()) {  // flatten: a view of the same device storage
    const Tensor xg = x.to(kGpu);
    const Tensor f = nn::flatten(xg);
    const std::vector<int64_t> want{xs[0], xs[1] * xs[2] * xs[3]};
    if (f.data() != xg.data() || f.shape() != want || !f.device().is_cuda())
      e = str("flatten of a CUDA tensor gave ", f.describe());
  }
  return result(e, str("x ", shape_str(xs), ": relu, prelu, add, dropout (p 0, 0.3, 1) forward and backward bitwise; "
                                             "dalpha within 1e-5; flatten a view"));
}

CaseResult linear_case(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "cuda-linear");
  std::uniform_int_distribution<int64_t> d(1, 70);
  const int64_t N = d(rng), in = d(rng), out = d(rng);
  Tensor x = uniform(rng, {N, in}, -1, 1), w = uniform(rng, {out, in}, -1, 1), b = uniform(rng, {out}, -1, 1);
  Tensor dy = uniform(rng, {N, out}, -1, 1), dw0 = uniform(rng, {out, in}, -1, 1), db0 = uniform(rng, {out}, -1, 1);
  Tensor y = zeros({N, out}), yg = zeros({N, out}, kGpu), mag = zeros({N, out});
  nn::linear_forward(x, w, b, y);
  nn::linear_forward(x.to(kGpu), w.to(kGpu), b.to(kGpu), yg);
  nn::linear_forward(abs_of(x), abs_of(w), abs_of(b), mag);
  std::string e = same("y", yg, y, by_magnitude(mag, 1e-5));
  Tensor dx = zeros({N, in}), dw = host(values(dw0), {out, in}), db = host(values(db0), {out});
  Tensor dxg = zeros({N, in}, kGpu), dwg = dw0.to(kGpu), dbg = db0.to(kGpu);
  nn::linear_backward(dy, x, w, dx, dw, db);
  nn::linear_backward(dy.to(kGpu), x.to(kGpu), w.to(kGpu), dxg, dwg, dbg);
  Tensor mx = zeros({N, in}), mw = abs_of(dw0), mb = abs_of(db0);
  nn::linear_backward(abs_of(dy), abs_of(x), abs_of(w), mx, mw, mb);
  if (e.empty()) e = same("dx", dxg, dx, by_magnitude(mx, 1e-5));
  if (e.empty()) e = same("dw", dwg, dw, by_magnitude(mw, 1e-5));
  if (e.empty()) e = same("db", dbg, db, by_magnitude(mb, 1e-5));
  return result(e, str("x [", N, ", ", in, "] -> ", out, ": y, dx, dw, db within 1e-5 of Σ|terms|"));
}

CaseResult fold_case(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "cuda-fold");
  const std::vector<int64_t> ws{7, 3, 3, 3}, cs{7};
  Tensor w = uniform(rng, ws, -1, 1), bias = uniform(rng, cs, -1, 1), g = uniform(rng, cs, 0.5f, 1.5f);
  Tensor be = uniform(rng, cs, -1, 1), rm = uniform(rng, cs, -1, 1), rv = uniform(rng, cs, 0.5f, 2);
  Tensor wo = zeros(ws), bo = zeros(cs), wog = zeros(ws, kGpu), bog = zeros(cs, kGpu);
  nn::fold_batch_norm(w, bias, g, be, rm, rv, 1e-5, wo, bo);
  nn::fold_batch_norm(w.to(kGpu), bias.to(kGpu), g.to(kGpu), be.to(kGpu), rm.to(kGpu), rv.to(kGpu), 1e-5, wog, bog);
  std::string e = same("w_out", wog, wo, exact(wo));
  if (e.empty()) e = same("b_out", bog, bo, exact(bo));
  return result(e, "w [7, 3, 3, 3]: w_out and b_out bitwise");
}

// A CPU tensor in a CUDA op (and the reverse) is INVALID_ARGUMENT naming it.
CaseResult mixed_devices_case(Context&) {
  Tensor xc = zeros({2, 3}), xg = zeros({2, 3}, kGpu), yc = zeros({2, 3}), yg = zeros({2, 3}, kGpu);
  std::string e = expect_error("relu cuda x, cpu y", Code::InvalidArgument, [&] { nn::relu_forward(xg, yc); },
                               "Expected y on cuda:0 but received");
  if (e.empty()) {
    e = expect_error("relu cpu x, cuda y", Code::InvalidArgument, [&] { nn::relu_forward(xc, yg); },
                     "Expected y on cpu but received");
  }
  if (e.empty()) {
    Tensor w = zeros({4, 3}), y = zeros({2, 4}, kGpu);
    e = expect_error("linear cpu w", Code::InvalidArgument, [&] { nn::linear_forward(xg, w, Tensor(), y); },
                     "Expected w on cuda:0");
  }
  return result(e, "mixing devices names the argument");
}

// Without a usable device: CUDA tensors cannot be made; in a build without CUDA the CUDA layer entry
// points throw CUDA_UNAVAILABLE.
CaseResult unavailable_case(Context& ctx) {
  if (ctx.cuda_available) return CaseResult::skip("a CUDA device is available: the other cases cover it");
  std::string e = expect_error("a CUDA tensor", Code::CudaUnavailable,
                               [] { Tensor::empty({2, 3}, DType::F32, Device::cuda(0)); }, "");
#ifndef FACECUDA_WITH_CUDA
  if (e.empty()) {
    e = expect_error("cuda_nn::relu_forward (stub)", Code::CudaUnavailable,
                     [] { nn::cuda_nn::relu_forward(Tensor(), Tensor()); }, "without the CUDA backend");
  }
  if (e.empty()) {
    e = expect_error("cuda_nn::conv2d_forward (stub)", Code::CudaUnavailable, [] {
      nn::cuda_nn::conv2d_forward(Tensor(), Tensor(), Tensor(), Tensor(), Conv2dParams(), ExecOptions());
    }, "without the CUDA backend");
  }
#endif
  return result(e, "CUDA_UNAVAILABLE with the reason");
}

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (int kind = 0; kind < 8; ++kind) {
    for (GemmPrecision p : {GemmPrecision::F32, GemmPrecision::TF32, GemmPrecision::BF16}) {
      if (p != GemmPrecision::F32 && kind % 3 != 0) continue;  // reduced precisions on a subset
      v.emplace_back(new FnCase("cuda.layer.conv2d", str("kind ", kind, " ", precision_name(p)), true,
                                [=](Context& c) { return conv_case(c, kind, p); }));
    }
  }
  for (bool train : {true, false})
    for (bool fused : {false, true})
      for (bool bn1d : {false, true})
        v.emplace_back(new FnCase("cuda.layer.batchnorm",
                                  str(train ? "train" : "eval", fused ? " +prelu" : "", bn1d ? " 1d" : " 2d"), true,
                                  [=](Context& c) { return bn_case(c, train, fused, bn1d); }));
  v.emplace_back(new FnCase("cuda.layer.elementwise", "relu prelu add dropout flatten", true, elementwise_case));
  v.emplace_back(new FnCase("cuda.layer.linear", "forward backward", true, linear_case));
  v.emplace_back(new FnCase("cuda.layer.fold", "fold_batch_norm", true, fold_case));
  v.emplace_back(new FnCase("cuda.layer.args", "mixed devices", true, mixed_devices_case));
  v.emplace_back(new FnCase("cuda.layer.unavailable", "no device", false, unavailable_case));
  return v;
}

}  // namespace

FC_REGISTER_CASES(cuda_layers, cases);

}  // namespace test
}  // namespace fc
