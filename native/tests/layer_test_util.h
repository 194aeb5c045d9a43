// @file layer_test_util.h
// @brief What the fused-layer and the CUDA-layer cases share: a case made of a function per mode,
// random tensors, copies between devices and an elementwise comparison with a per-element bound.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/tensor.h"
#include "harness.h"

namespace fc {
namespace test {
namespace layer_util {

using Fn = std::function<CaseResult(Context&)>;

// Σ a·b with Neumaier's compensated sum: the loss of a finite-difference check is then accurate to a
// few ulps of Σ|a·b| whatever the length.
inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0, comp = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double t = a[i] * b[i], u = s + t;
    comp += std::fabs(s) >= std::fabs(t) ? (s - u) + t : (t - u) + s;
    s = u;
  }
  return s + comp;
}

// Central differences of f at v with step h.
inline std::vector<double> central_diff(std::vector<double> v, double h,
                                        const std::function<double(const std::vector<double>&)>& f) {
  std::vector<double> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double v0 = v[i];
    v[i] = v0 + h;
    const double lp = f(v);
    v[i] = v0 - h;
    const double lm = f(v);
    v[i] = v0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// One case: `test` and/or `grad` (either may be empty: that mode is not applicable). needs_cuda
// cases skip with the context's reason when no device is usable; fc::Error becomes a failure.
class FnCase : public OpCase {
 public:
  FnCase(std::string op, std::string params, bool needs_cuda, Fn test, Fn grad = Fn())
      : op_(std::move(op)), params_(std::move(params)), needs_cuda_(needs_cuda), test_(std::move(test)),
        grad_(std::move(grad)) {}
  std::string op() const override { return op_; }
  std::string params() const override { return params_; }
  bool uses_cuda() const override { return needs_cuda_; }
  CaseResult test(Context& ctx) override { return run(test_, ctx); }
  CaseResult grad(Context& ctx) override { return run(grad_, ctx); }

 private:
  CaseResult run(const Fn& f, Context& ctx) {
    if (!f) return CaseResult::skip("mode not applicable");
    if (needs_cuda_ && !ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    try {
      return f(ctx);
    } catch (const Error& e) {
      CaseResult r;
      r.status = CaseResult::Fail;
      r.detail = str("unexpected ", code_name(e.code()), ": ", e.what());
      return r;
    }
  }
  std::string op_, params_;
  bool needs_cuda_;
  Fn test_, grad_;
};

inline CaseResult failed(const std::string& why) {
  CaseResult r;
  r.status = CaseResult::Fail;
  r.detail = why;
  return r;
}

inline CaseResult passed(const std::string& detail) {
  CaseResult r;
  r.detail = detail;
  return r;
}

inline Tensor host(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return Tensor::from_host(v.data(), v.size() * sizeof(float), shape, DType::F32, Device::cpu());
}

inline int64_t count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

inline Tensor uniform(std::mt19937_64& rng, const std::vector<int64_t>& shape, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(count(shape)));
  fill_uniform(rng, v.data(), v.size(), lo, hi);
  return host(v, shape);
}

inline std::vector<float> values(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  std::vector<float> v(static_cast<size_t>(h.numel()));
  if (!v.empty()) std::memcpy(v.data(), h.data(), v.size() * sizeof(float));
  return v;
}

// A copy of t on `d` (undefined stays undefined).
inline Tensor on(const Tensor& t, const Device& d) { return t.defined() ? t.to(d) : Tensor(); }

// |got[i] − ref[i]| <= bound[i] for every i (NaN fails). Returns "" or the worst violation; *worst
// receives max |err| / bound.
inline std::string within(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                          const std::vector<double>& bound, double* worst = nullptr) {
  if (got.size() != ref.size()) return str(what, ": ", got.size(), " values, expected ", ref.size());
  double w = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double r = bound[i] > 0 ? e / bound[i] : (e > 0 ? INFINITY : 0.0);
    if (!(r <= w) || std::isnan(e)) {
      w = std::isnan(e) ? INFINITY : r;
      at = i;
    }
  }
  if (worst) *worst = std::max(*worst, w);
  if (w <= 1.0) return "";
  return str(what, "[", at, "] = ", got[at], ", expected ", ref[at], " within ", bound[at], " (", w, "x the bound)");
}

// Bounds rtol·|ref[i]| + atol.
inline std::vector<double> bounds(const std::vector<float>& ref, double rtol, double atol) {
  std::vector<double> b(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) b[i] = rtol * std::fabs(ref[i]) + atol;
  return b;
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// "" when f throws fc::Error with `code` and a message containing `needle`.
inline std::string expect_error(const char* what, Code code, const std::function<void()>& f,
                                const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    if (e.code() != code) {
      return str(what, ": expected ", code_name(code), " but got ", code_name(e.code()), ": ", e.what());
    }
    if (std::string(e.what()).find(needle) == std::string::npos)
      return str(what, ": message \"", e.what(), "\" does not contain \"", needle, "\"");
    return "";
  }
  return str(what, ": expected ", code_name(code), " but nothing was thrown");
}

}  // namespace layer_util
}  // namespace test
}  // namespace fc
