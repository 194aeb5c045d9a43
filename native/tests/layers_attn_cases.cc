// @file layers_attn_cases.cc
// @brief Harness cases for the attention ops (facecuda/layers_attn.h, native/src/cpu/layers_attn.cc,
// native/src/cuda/layers_attn.cu): multi-head self-attention ("attn.mhsa") and EdgeNeXt's XCA
// ("attn.xca"). Shapes are fresh random small ones (N 1–2, H 1–3, T 5–17, D 4–8) unless named.
//
//   test  forward against a float64 re-derivation (mhsa_ref / xca_ref below, written from the spec's
//         formulas §9.10–9.11, not from the op): |out − ref| <= 1e-5·max|ref| + 1e-6 and the same for P
//         (fp32 GEMMs of length <= 17 and one exp per logit: a few ulps of the magnitudes);
//         softmax numerics with logits up to ~2·10⁴ (integer q, k so the products are exact in fp32:
//         the result must be finite and match the float64 reference within the same bound; a naive
//         exp would overflow); XCA with an all-zero channel (the 1e-12 clamp: finite output); bitwise
//         identical results for 1 and for all threads; invalid arguments with their codes and
//         messages; CUDA against the CPU (skips without a device): |cuda − cpu| <= 1e-4·max|cpu| + 1e-6
//         per tensor (fp32 cuBLAS and fp32 softmax in another summation order; the gradients go
//         through dS = P ⊙ (dP − r), which cancels, hence the max-relative form).
//   grad  the float32 backward against float64 central finite differences of L = Σ g·out with the
//         float64 re-derivation (h = 1e-5: truncation O(h²) ≈ 1e-10, rounding ≈ 1e-11), for q, k, v and
//         (XCA) the temperature; bound |analytic − fd| <= 2e-4·max|fd| + 1e-5 (the float32 backward's
//         rounding through the softmax and, for XCA, the normalization Jacobian). dtemperature is
//         checked to ACCUMULATE (it starts at 0.25 here).
//   perf  CPU forward and backward at the backbones' sizes (ViT-S/8, insightface vit_s, EdgeNeXt-S
//         SDTA stages 2 and 3; batch 32): median ms and GEMM GFLOP/s.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/layers_attn.h"
#include "facecuda/tensor.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using namespace layer_util;
using nn::ExecOptions;

const Device kCpu = Device::cpu();
const Device kGpu = Device::cuda(0);

struct Dims {
  int64_t N, H, T, D;
  std::vector<int64_t> qkv() const { return {N, H, T, D}; }
  std::string text() const { return str("N=", N, " H=", H, " T=", T, " D=", D); }
};

Dims random_dims(std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> n(1, 2), h(1, 3), t(5, 17), d(4, 8);
  return Dims{n(rng), h(rng), t(rng), d(rng)};
}

Tensor zeros(const std::vector<int64_t>& shape, const Device& dev = kCpu) {
  return host(std::vector<float>(static_cast<size_t>(count(shape)), 0.0f), shape).to(dev);
}

std::vector<double> dbl(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---- float64 references (per (n, h) slice, [T, D] row-major)

// Row softmax of rows×cols logits, max-subtracted.
void softmax_ref(std::vector<double>& s, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, z = 0;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, s[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) z += (s[r * cols + j] = std::exp(s[r * cols + j] - m));
    for (int64_t j = 0; j < cols; ++j) s[r * cols + j] /= z;
  }
}

// out and P of MHSA.
void mhsa_ref(const Dims& d, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
              double scale, std::vector<double>* out, std::vector<double>* probs) {
  const int64_t TD = d.T * d.D, TT = d.T * d.T;
  out->assign(static_cast<size_t>(d.N * d.H * TD), 0.0);
  if (probs) probs->assign(static_cast<size_t>(d.N * d.H * TT), 0.0);
  for (int64_t s = 0; s < d.N * d.H; ++s) {
    std::vector<double> S(static_cast<size_t>(TT));
    for (int64_t i = 0; i < d.T; ++i)
      for (int64_t j = 0; j < d.T; ++j) {
        double a = 0;
        for (int64_t c = 0; c < d.D; ++c) a += q[s * TD + i * d.D + c] * k[s * TD + j * d.D + c];
        S[i * d.T + j] = scale * a;
      }
    softmax_ref(S, d.T, d.T);
    for (int64_t i = 0; i < d.T; ++i)
      for (int64_t c = 0; c < d.D; ++c) {
        double a = 0;
        for (int64_t j = 0; j < d.T; ++j) a += S[i * d.T + j] * v[s * TD + j * d.D + c];
        (*out)[s * TD + i * d.D + c] = a;
      }
    if (probs) std::copy(S.begin(), S.end(), probs->begin() + s * TT);
  }
}

// out and P of XCA (q̂ = q / max(‖q[:, i]‖, 1e-12) per channel i, over the tokens).
void xca_ref(const Dims& d, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
             const std::vector<double>& tau, std::vector<double>* out, std::vector<double>* probs) {
  const int64_t TD = d.T * d.D, DD = d.D * d.D;
  out->assign(static_cast<size_t>(d.N * d.H * TD), 0.0);
  if (probs) probs->assign(static_cast<size_t>(d.N * d.H * DD), 0.0);
  for (int64_t s = 0; s < d.N * d.H; ++s) {
    std::vector<double> qh(static_cast<size_t>(TD)), kh(static_cast<size_t>(TD));
    for (int64_t i = 0; i < d.D; ++i) {
      double nq = 0, nk = 0;
      for (int64_t t = 0; t < d.T; ++t) {
        nq += q[s * TD + t * d.D + i] * q[s * TD + t * d.D + i];
        nk += k[s * TD + t * d.D + i] * k[s * TD + t * d.D + i];
      }
      nq = std::max(std::sqrt(nq), 1e-12);
      nk = std::max(std::sqrt(nk), 1e-12);
      for (int64_t t = 0; t < d.T; ++t) {
        qh[t * d.D + i] = q[s * TD + t * d.D + i] / nq;
        kh[t * d.D + i] = k[s * TD + t * d.D + i] / nk;
      }
    }
    std::vector<double> S(static_cast<size_t>(DD));
    for (int64_t i = 0; i < d.D; ++i)
      for (int64_t j = 0; j < d.D; ++j) {
        double a = 0;
        for (int64_t t = 0; t < d.T; ++t) a += qh[t * d.D + i] * kh[t * d.D + j];
        S[i * d.D + j] = tau[s % d.H] * a;
      }
    softmax_ref(S, d.D, d.D);
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t i = 0; i < d.D; ++i) {
        double a = 0;
        for (int64_t j = 0; j < d.D; ++j) a += S[i * d.D + j] * v[s * TD + t * d.D + j];
        (*out)[s * TD + t * d.D + i] = a;
      }
    if (probs) std::copy(S.begin(), S.end(), probs->begin() + s * DD);
  }
}

std::string close_to(const char* what, const Tensor& got, const std::vector<double>& ref, double rtol_max,
                     double atol) {
  double m = 0;
  for (double x : ref) m = std::max(m, std::fabs(x));
  const double b = rtol_max * m + atol;
  const std::vector<float> g = values(got);
  if (g.size() != ref.size()) return str(what, ": ", g.size(), " values, expected ", ref.size());
  for (size_t i = 0; i < g.size(); ++i) {
    const double e = std::fabs(static_cast<double>(g[i]) - ref[i]);
    if (!(e <= b)) return str(what, "[", i, "] = ", g[i], ", expected ", ref[i], " within ", b);
  }
  return "";
}

// ---- forward against float64

CaseResult mhsa_forward(Context& ctx, bool large, int salt) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.mhsa.fwd", large, "#", salt));
  const Dims d = random_dims(rng);
  Tensor q, k, v;
  float scale;
  if (large) {
    // integer q, k in [-40, 40]: products and sums exact in fp32, logits up to 8·1600 = 12800
    std::uniform_int_distribution<int> u(-40, 40);
    std::vector<float> a(static_cast<size_t>(count(d.qkv()))), b(a.size());
    for (auto& x : a) x = static_cast<float>(u(rng));
    for (auto& x : b) x = static_cast<float>(u(rng));
    q = host(a, d.qkv());
    k = host(b, d.qkv());
    scale = 1.0f;
  } else {
    q = uniform(rng, d.qkv(), -2, 2);
    k = uniform(rng, d.qkv(), -2, 2);
    scale = 1.0f / std::sqrt(static_cast<float>(d.D));
  }
  v = uniform(rng, d.qkv(), -1, 1);
  Tensor out = zeros(d.qkv()), probs = zeros({d.N, d.H, d.T, d.T});
  nn::attention_forward(q, k, v, out, probs, scale);
  std::vector<double> ro, rp;
  mhsa_ref(d, dbl(values(q)), dbl(values(k)), dbl(values(v)), scale, &ro, &rp);
  std::string e = close_to("out", out, ro, 1e-5, 1e-6);
  if (e.empty()) e = close_to("probs", probs, rp, 1e-5, 1e-6);
  // inference form (probs undefined) gives the same out bitwise
  Tensor out2 = zeros(d.qkv());
  nn::attention_forward(q, k, v, out2, Tensor(), scale);
  if (e.empty() && values(out2) != values(out)) e = "out without probs differs from out with probs";
  if (e.empty() && large) {
    for (float x : values(probs))
      if (!std::isfinite(x)) e = "non-finite probability with large logits";
  }
  return e.empty() ? passed(d.text() + (large ? " logits up to 1.3e4" : "")) : failed(d.text() + ": " + e);
}

CaseResult xca_forward(Context& ctx, bool large_tau, bool zero_channel, int salt) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.xca.fwd", large_tau, zero_channel, "#", salt));
  const Dims d = random_dims(rng);
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1);
  if (zero_channel) {  // channel 1 of q in every slice: all zero (clamped norm, q̂ = 0)
    std::vector<float> a = values(q);
    for (int64_t s = 0; s < d.N * d.H; ++s)
      for (int64_t t = 0; t < d.T; ++t) a[static_cast<size_t>(s * d.T * d.D + t * d.D + 1)] = 0.0f;
    q = host(a, d.qkv());
  }
  std::vector<float> tv(static_cast<size_t>(d.H));
  for (auto& x : tv) x = large_tau ? 3000.0f : std::uniform_real_distribution<float>(0.3f, 2.0f)(rng);
  Tensor tau = host(tv, {d.H});
  Tensor out = zeros(d.qkv()), qn = zeros({d.N, d.H, d.D}), kn = zeros({d.N, d.H, d.D}),
         probs = zeros({d.N, d.H, d.D, d.D});
  nn::xca_forward(q, k, v, tau, out, qn, kn, probs);
  std::vector<double> ro, rp;
  xca_ref(d, dbl(values(q)), dbl(values(k)), dbl(values(v)), dbl(tv), &ro, &rp);
  // Large τ: the fp32 logits τ·q̂ᵀk̂ carry τ·(a few ulps) = ~1e-3 of error, so P moves by that much
  // relative; the point of that case is finiteness and normalization, bound 1e-2.
  const double rt = large_tau ? 1e-2 : 1e-5;
  std::string e = close_to("out", out, ro, rt, 1e-6);
  if (e.empty()) e = close_to("probs", probs, rp, rt, 1e-6);
  if (e.empty()) {
    const std::vector<float> p = values(probs);
    for (int64_t r = 0; r < d.N * d.H * d.D && e.empty(); ++r) {
      double s = 0;
      for (int64_t j = 0; j < d.D; ++j) {
        const float x = p[static_cast<size_t>(r * d.D + j)];
        if (!std::isfinite(x)) e = "non-finite probability";
        s += x;
      }
      if (std::fabs(s - 1) > 1e-5) e = str("probability row ", r, " sums to ", s);
    }
  }
  if (e.empty() && zero_channel) {
    const std::vector<float> n = values(qn);
    if (n[1] != nn::kXcaNormEps) e = str("q_norm of the zero channel is ", n[1], ", expected the clamp 1e-12");
  }
  Tensor out2 = zeros(d.qkv());
  nn::xca_forward(q, k, v, tau, out2, Tensor(), Tensor(), Tensor());
  if (e.empty() && values(out2) != values(out)) e = "out without saved tensors differs";
  const std::string what = str(d.text(), large_tau ? " tau=3000" : "", zero_channel ? " zero q channel" : "");
  return e.empty() ? passed(what) : failed(what + ": " + e);
}

// ---- determinism over thread counts

CaseResult threads_bitwise(Context& ctx) {
  std::mt19937_64 rng = make_rng(ctx, "attn.threads");
  const Dims d{3, 3, 17, 8};
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
         g = uniform(rng, d.qkv(), -1, 1), tau = uniform(rng, {d.H}, 0.5f, 2);
  std::vector<std::vector<float>> res[2];
  for (int r = 0; r < 2; ++r) {
    ExecOptions ex;
    ex.max_threads = r == 0 ? 1 : 0;
    Tensor o = zeros(d.qkv()), p = zeros({d.N, d.H, d.T, d.T}), dq = zeros(d.qkv()), dk = zeros(d.qkv()),
           dv = zeros(d.qkv());
    nn::attention_forward(q, k, v, o, p, 0.35f, ex);
    nn::attention_backward(g, q, k, v, p, dq, dk, dv, 0.35f, ex);
    Tensor xo = zeros(d.qkv()), qn = zeros({d.N, d.H, d.D}), kn = zeros({d.N, d.H, d.D}),
           xp = zeros({d.N, d.H, d.D, d.D}), xq = zeros(d.qkv()), xk = zeros(d.qkv()), xv = zeros(d.qkv()),
           dt = zeros({d.H});
    nn::xca_forward(q, k, v, tau, xo, qn, kn, xp, ex);
    nn::xca_backward(g, q, k, v, tau, qn, kn, xp, xq, xk, xv, dt, ex);
    for (const Tensor* t : {&o, &p, &dq, &dk, &dv, &xo, &xp, &xq, &xk, &xv, &dt}) res[r].push_back(values(*t));
  }
  for (size_t i = 0; i < res[0].size(); ++i)
    if (res[0][i] != res[1][i]) return failed(str("result ", i, " differs between 1 thread and all threads"));
  return passed("11 outputs bitwise equal for 1 and all threads");
}

// ---- backward against float64 finite differences

// Central differences of L(x) = Σ g·f(x) for every element of x (double).
std::vector<double> fd(std::vector<double>& x, const std::function<double()>& L, double h = 1e-5) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double o = x[i];
    x[i] = o + h;
    const double a = L();
    x[i] = o - h;
    const double b = L();
    x[i] = o;
    out[i] = (a - b) / (2 * h);
  }
  return out;
}

std::string grad_close(const char* what, const std::vector<float>& got, const std::vector<double>& ref) {
  double m = 0;
  for (double x : ref) m = std::max(m, std::fabs(x));
  const double b = 2e-4 * m + 1e-5;
  if (got.size() != ref.size()) return str(what, ": size ", got.size(), " vs ", ref.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    if (!(e <= b)) return str(what, "[", i, "] = ", got[i], ", finite differences ", ref[i], " (bound ", b, ")");
  }
  return "";
}

CaseResult mhsa_grad(Context& ctx, int salt) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.mhsa.grad#", salt));
  const Dims d = random_dims(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
         g = uniform(rng, d.qkv(), -1, 1);
  Tensor out = zeros(d.qkv()), probs = zeros({d.N, d.H, d.T, d.T}), dq = zeros(d.qkv()), dk = zeros(d.qkv()),
         dv = zeros(d.qkv());
  nn::attention_forward(q, k, v, out, probs, scale);
  nn::attention_backward(g, q, k, v, probs, dq, dk, dv, scale);
  std::vector<double> Q = dbl(values(q)), K = dbl(values(k)), V = dbl(values(v)), G = dbl(values(g));
  auto L = [&]() {
    std::vector<double> o;
    mhsa_ref(d, Q, K, V, scale, &o, nullptr);
    return dot(o, G);
  };
  std::string e = grad_close("dq", values(dq), fd(Q, L));
  if (e.empty()) e = grad_close("dk", values(dk), fd(K, L));
  if (e.empty()) e = grad_close("dv", values(dv), fd(V, L));
  // A subset of the gradients: the others stay untouched.
  Tensor dk2 = host(std::vector<float>(static_cast<size_t>(count(d.qkv())), 7.0f), d.qkv());
  nn::attention_backward(g, q, k, v, probs, Tensor(), dk2, Tensor(), scale);
  if (e.empty() && values(dk2) != values(dk)) e = "dk alone differs from dk computed with dq and dv";
  return e.empty() ? passed(d.text()) : failed(d.text() + ": " + e);
}

CaseResult xca_grad(Context& ctx, int salt) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.xca.grad#", salt));
  const Dims d = random_dims(rng);
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
         g = uniform(rng, d.qkv(), -1, 1), tau = uniform(rng, {d.H}, 0.5f, 3.0f);
  Tensor out = zeros(d.qkv()), qn = zeros({d.N, d.H, d.D}), kn = zeros({d.N, d.H, d.D}),
         probs = zeros({d.N, d.H, d.D, d.D}), dq = zeros(d.qkv()), dk = zeros(d.qkv()), dv = zeros(d.qkv());
  const float acc0 = 0.25f;
  Tensor dt = host(std::vector<float>(static_cast<size_t>(d.H), acc0), {d.H});
  nn::xca_forward(q, k, v, tau, out, qn, kn, probs);
  nn::xca_backward(g, q, k, v, tau, qn, kn, probs, dq, dk, dv, dt);
  std::vector<double> Q = dbl(values(q)), K = dbl(values(k)), V = dbl(values(v)), G = dbl(values(g)),
                      TAU = dbl(values(tau));
  auto L = [&]() {
    std::vector<double> o;
    xca_ref(d, Q, K, V, TAU, &o, nullptr);
    return dot(o, G);
  };
  std::string e = grad_close("dq", values(dq), fd(Q, L));
  if (e.empty()) e = grad_close("dk", values(dk), fd(K, L));
  if (e.empty()) e = grad_close("dv", values(dv), fd(V, L));
  if (e.empty()) {
    std::vector<float> got = values(dt);
    for (float& x : got) x -= acc0;  // accumulated onto 0.25
    e = grad_close("dtemperature", got, fd(TAU, L));
  }
  return e.empty() ? passed(d.text()) : failed(d.text() + ": " + e);
}

// ---- invalid arguments

CaseResult invalid_args(Context&) {
  const Dims d{2, 2, 5, 4};
  Tensor q = zeros(d.qkv()), k = zeros(d.qkv()), v = zeros(d.qkv()), out = zeros(d.qkv()),
         probs = zeros({2, 2, 5, 5}), tau = zeros({2}), qn = zeros({2, 2, 4}), kn = zeros({2, 2, 4}),
         xp = zeros({2, 2, 4, 4});
  std::vector<std::string> errs;
  auto chk = [&](const char* what, Code c, const std::function<void()>& f, const std::string& needle) {
    const std::string e = expect_error(what, c, f, needle);
    if (!e.empty()) errs.push_back(e);
  };
  chk("rank-3 q", Code::ShapeMismatch, [&] { nn::attention_forward(q.reshape({4, 5, 4}), k, v, out, probs, 1); },
      "Expected q of rank 4");
  chk("k shape", Code::ShapeMismatch, [&] { nn::attention_forward(q, zeros({2, 2, 6, 4}), v, out, probs, 1); },
      "Expected k of shape [2, 2, 5, 4]");
  chk("probs shape", Code::ShapeMismatch, [&] { nn::attention_forward(q, k, v, out, zeros({2, 2, 5, 4}), 1); },
      "Expected probs of shape [2, 2, 5, 5]");
  chk("scale 0", Code::InvalidArgument, [&] { nn::attention_forward(q, k, v, out, probs, 0.0f); },
      "Expected scale finite and > 0");
  chk("scale NaN", Code::InvalidArgument, [&] { nn::attention_forward(q, k, v, out, probs, NAN); },
      "Expected scale finite and > 0");
  chk("out = q", Code::InvalidArgument, [&] { nn::attention_forward(q, k, v, q, probs, 1); },
      "Expected out not to share memory with q");
  chk("undefined out", Code::InvalidArgument, [&] { nn::attention_forward(q, k, v, Tensor(), probs, 1); },
      "Expected out to be a defined tensor");
  chk("int64 v", Code::InvalidArgument,
      [&] { nn::attention_forward(q, k, Tensor::empty(d.qkv(), DType::I64, kCpu), out, probs, 1); },
      "Expected v of dtype float32");
  chk("backward undefined probs", Code::InvalidArgument,
      [&] { nn::attention_backward(out, q, k, v, Tensor(), q.reshape({2, 2, 5, 4}), Tensor(), Tensor(), 1); },
      "Expected probs to be a defined tensor");
  chk("dq = dk", Code::InvalidArgument,
      [&] {
        Tensor g = zeros(d.qkv());
        nn::attention_backward(out, q, k, v, probs, g, g, Tensor(), 1);
      },
      "Expected dk not to share memory with dq");
  chk("dout shape", Code::ShapeMismatch,
      [&] { nn::attention_backward(zeros({2, 2, 5, 5}), q, k, v, probs, Tensor(), Tensor(), Tensor(), 1); },
      "Expected dout of shape [2, 2, 5, 4]");
  chk("max_threads", Code::InvalidArgument,
      [&] {
        ExecOptions ex;
        ex.max_threads = -1;
        nn::attention_forward(q, k, v, out, probs, 1, ex);
      },
      "Expected max_threads >= 0");
  chk("xca temperature shape", Code::ShapeMismatch, [&] { nn::xca_forward(q, k, v, zeros({4}), out, qn, kn, xp); },
      "Expected temperature of shape [2] (H, the heads of q)");
  chk("xca temperature NaN", Code::InvalidArgument,
      [&] { nn::xca_forward(q, k, v, host({1.0f, NAN}, {2}), out, qn, kn, xp); },
      "Expected temperature[1] finite");
  chk("xca probs shape", Code::ShapeMismatch, [&] { nn::xca_forward(q, k, v, tau, out, qn, kn, probs); },
      "Expected probs of shape [2, 2, 4, 4]");
  chk("xca q_norm shape", Code::ShapeMismatch, [&] { nn::xca_forward(q, k, v, tau, out, zeros({2, 2, 5}), kn, xp); },
      "Expected q_norm of shape [2, 2, 4]");
  chk("xca backward missing k_norm", Code::InvalidArgument,
      [&] { nn::xca_backward(out, q, k, v, tau, qn, Tensor(), xp, Tensor(), Tensor(), Tensor(), Tensor()); },
      "Expected k_norm to be a defined tensor");
  chk("xca dtemperature shape", Code::ShapeMismatch,
      [&] { nn::xca_backward(out, q, k, v, tau, qn, kn, xp, Tensor(), Tensor(), Tensor(), zeros({3})); },
      "Expected dtemperature of shape [2]");
  chk("xca dv = v", Code::InvalidArgument,
      [&] { nn::xca_backward(out, q, k, v, tau, qn, kn, xp, Tensor(), Tensor(), v, Tensor()); },
      "Expected dv not to share memory with v");
  if (!errs.empty()) return failed(errs.front());
  return passed("19/19 invalid arguments throw the named error");
}

// ---- CUDA against the CPU

std::string gpu_close(const char* what, const Tensor& gpu, const Tensor& cpu) {
  const std::vector<float> c = values(cpu);
  return within(what, values(gpu), c, bounds(c, 0.0, 1e-4 * max_abs(c) + 1e-6));
}

CaseResult cuda_mhsa(Context& ctx, Dims d) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.cuda.mhsa", d.text()));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
         g = uniform(rng, d.qkv(), -1, 1);
  Tensor o[2], p[2], dq[2], dk[2], dv[2], oi;
  for (int r = 0; r < 2; ++r) {
    const Device dev = r == 0 ? kCpu : kGpu;
    o[r] = zeros(d.qkv(), dev);
    p[r] = zeros({d.N, d.H, d.T, d.T}, dev);
    dq[r] = zeros(d.qkv(), dev);
    dk[r] = zeros(d.qkv(), dev);
    dv[r] = zeros(d.qkv(), dev);
    const Tensor qd = on(q, dev), kd = on(k, dev), vd = on(v, dev), gd = on(g, dev);
    nn::attention_forward(qd, kd, vd, o[r], p[r], scale);
    nn::attention_backward(gd, qd, kd, vd, p[r], dq[r], dk[r], dv[r], scale);
    if (r == 1) {
      oi = zeros(d.qkv(), dev);
      nn::attention_forward(qd, kd, vd, oi, Tensor(), scale);
    }
  }
  std::string e = gpu_close("out", o[1], o[0]);
  if (e.empty()) e = gpu_close("probs", p[1], p[0]);
  if (e.empty()) e = gpu_close("out (inference)", oi, o[0]);
  if (e.empty()) e = gpu_close("dq", dq[1], dq[0]);
  if (e.empty()) e = gpu_close("dk", dk[1], dk[0]);
  if (e.empty()) e = gpu_close("dv", dv[1], dv[0]);
  return e.empty() ? passed(d.text()) : failed(d.text() + ": " + e);
}

CaseResult cuda_xca(Context& ctx, Dims d) {
  std::mt19937_64 rng = make_rng(ctx, str("attn.cuda.xca", d.text()));
  Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
         g = uniform(rng, d.qkv(), -1, 1), tau = uniform(rng, {d.H}, 0.5f, 3.0f);
  Tensor o[2], qn[2], kn[2], p[2], dq[2], dk[2], dv[2], dt[2], oi;
  for (int r = 0; r < 2; ++r) {
    const Device dev = r == 0 ? kCpu : kGpu;
    o[r] = zeros(d.qkv(), dev);
    qn[r] = zeros({d.N, d.H, d.D}, dev);
    kn[r] = zeros({d.N, d.H, d.D}, dev);
    p[r] = zeros({d.N, d.H, d.D, d.D}, dev);
    dq[r] = zeros(d.qkv(), dev);
    dk[r] = zeros(d.qkv(), dev);
    dv[r] = zeros(d.qkv(), dev);
    dt[r] = host(std::vector<float>(static_cast<size_t>(d.H), 0.25f), {d.H}).to(dev);
    const Tensor qd = on(q, dev), kd = on(k, dev), vd = on(v, dev), gd = on(g, dev), td = on(tau, dev);
    nn::xca_forward(qd, kd, vd, td, o[r], qn[r], kn[r], p[r]);
    nn::xca_backward(gd, qd, kd, vd, td, qn[r], kn[r], p[r], dq[r], dk[r], dv[r], dt[r]);
    if (r == 1) {
      oi = zeros(d.qkv(), dev);
      nn::xca_forward(qd, kd, vd, td, oi, Tensor(), Tensor(), Tensor());
    }
  }
  std::string e = gpu_close("out", o[1], o[0]);
  if (e.empty()) e = gpu_close("q_norm", qn[1], qn[0]);
  if (e.empty()) e = gpu_close("k_norm", kn[1], kn[0]);
  if (e.empty()) e = gpu_close("probs", p[1], p[0]);
  if (e.empty()) e = gpu_close("out (inference)", oi, o[0]);
  if (e.empty()) e = gpu_close("dq", dq[1], dq[0]);
  if (e.empty()) e = gpu_close("dk", dk[1], dk[0]);
  if (e.empty()) e = gpu_close("dv", dv[1], dv[0]);
  if (e.empty()) e = gpu_close("dtemperature", dt[1], dt[0]);
  return e.empty() ? passed(d.text()) : failed(d.text() + ": " + e);
}

// ---- perf (CPU): forward and forward+backward at the backbones' sizes

class PerfCase : public OpCase {
 public:
  PerfCase(bool xca, Dims d) : xca_(xca), d_(d) {}
  std::string op() const override { return xca_ ? "attn.xca.perf" : "attn.mhsa.perf"; }
  std::string params() const override { return str("cpu ", d_.text()); }
  CaseResult perf(Context& ctx) override {
    std::mt19937_64 rng = make_rng(ctx, "attn.perf");
    const Dims& d = d_;
    Tensor q = uniform(rng, d.qkv(), -2, 2), k = uniform(rng, d.qkv(), -2, 2), v = uniform(rng, d.qkv(), -1, 1),
           g = uniform(rng, d.qkv(), -1, 1), tau = uniform(rng, {d.H}, 0.5f, 2);
    Tensor out = zeros(d.qkv()), dq = zeros(d.qkv()), dk = zeros(d.qkv()), dv = zeros(d.qkv());
    Tensor p = xca_ ? zeros({d.N, d.H, d.D, d.D}) : zeros({d.N, d.H, d.T, d.T});
    Tensor qn = zeros({d.N, d.H, d.D}), kn = zeros({d.N, d.H, d.D}), dt = zeros({d.H});
    const float scale = 1.0f / std::sqrt(static_cast<float>(d.D));
    auto fwd = [&] {
      if (xca_) nn::xca_forward(q, k, v, tau, out, qn, kn, p);
      else nn::attention_forward(q, k, v, out, p, scale);
    };
    auto bwd = [&] {
      if (xca_) nn::xca_backward(g, q, k, v, tau, qn, kn, p, dq, dk, dv, dt);
      else nn::attention_backward(g, q, k, v, p, dq, dk, dv, scale);
    };
    const double tf = median_seconds(fwd, 1, 5);
    const double tb = median_seconds(bwd, 1, 5);
    // GEMM flops: MHSA 2 products of 2·T·T·D forward, 4 backward; XCA 2 of 2·T·D·D forward, 5 backward.
    const double unit = 2.0 * d.N * d.H * d.T * d.D * (xca_ ? d.D : d.T);
    const double gf = 2 * unit / tf / 1e9, gb = (xca_ ? 5 : 4) * unit / tb / 1e9;
    CaseResult r;
    r.detail = str("forward ", tf * 1e3, " ms (", gf, " GFLOP/s), backward ", tb * 1e3, " ms (", gb, " GFLOP/s)");
    r.figures = {{"forward_s", tf}, {"backward_s", tb}, {"forward_gflops", gf}, {"backward_gflops", gb}};
    return r;
  }

 private:
  bool xca_;
  Dims d_;
};

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (int i = 0; i < 3; ++i) {
    v.emplace_back(new FnCase("attn.mhsa", str("forward vs float64 + backward vs finite differences #", i), false,
                              [i](Context& c) { return mhsa_forward(c, false, i); },
                              [i](Context& c) { return mhsa_grad(c, i); }));
    v.emplace_back(new FnCase("attn.xca", str("forward vs float64 + backward vs finite differences #", i), false,
                              [i](Context& c) { return xca_forward(c, false, false, i); },
                              [i](Context& c) { return xca_grad(c, i); }));
  }
  v.emplace_back(new FnCase("attn.mhsa", "softmax with logits up to 1.3e4", false,
                            [](Context& c) { return mhsa_forward(c, true, 0); }));
  v.emplace_back(new FnCase("attn.xca", "softmax with temperature 3000", false,
                            [](Context& c) { return xca_forward(c, true, false, 0); }));
  v.emplace_back(new FnCase("attn.xca", "all-zero q channel (norm clamp)", false,
                            [](Context& c) { return xca_forward(c, false, true, 0); }));
  v.emplace_back(new FnCase("attn.both", "bitwise for 1 and all threads", false, threads_bitwise));
  v.emplace_back(new FnCase("attn.both", "invalid arguments", false, invalid_args));
  for (const Dims& d : {Dims{2, 3, 17, 8}, Dims{2, 6, 197, 64}, Dims{1, 8, 144, 64}, Dims{3, 2, 1, 5}}) {
    v.emplace_back(new FnCase("attn.mhsa.cuda", str("vs cpu ", d.text()), true,
                              [d](Context& c) { return cuda_mhsa(c, d); }));
  }
  for (const Dims& d : {Dims{2, 3, 17, 8}, Dims{2, 8, 196, 12}, Dims{2, 8, 49, 20}, Dims{2, 8, 9, 38}}) {
    v.emplace_back(new FnCase("attn.xca.cuda", str("vs cpu ", d.text()), true,
                              [d](Context& c) { return cuda_xca(c, d); }));
  }
  // ViT-S/8 at 112 (1 + 196 tokens, 6 heads × 64), insightface vit_s (144 tokens, 8 × 64), EdgeNeXt-S
  // stage 2 and 3 SDTA (8 heads, 196 tokens × 12, 49 × 20), batch 32.
  v.emplace_back(new PerfCase(false, Dims{32, 6, 197, 64}));
  v.emplace_back(new PerfCase(false, Dims{32, 8, 144, 64}));
  v.emplace_back(new PerfCase(true, Dims{32, 8, 196, 12}));
  v.emplace_back(new PerfCase(true, Dims{32, 8, 49, 20}));
  return v;
}

}  // namespace

FC_REGISTER_CASES(layers_attn, cases);

}  // namespace test
}  // namespace fc
