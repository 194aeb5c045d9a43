// @file layers_attn.cc
// @brief The attention ops (facecuda/layers_attn.h) on the CPU, their argument checks (one wording
// for both devices) and their hand-over to CUDA (common/layers_attn_cuda.h).
//
// One task per (n, h) slice on the global pool, dealt statically; each runs its GEMMs with fc::sgemm,
// which inside a pool task runs serially on the task's thread, so every output element is reduced by
// one thread in a fixed order: bitwise identical for every thread count. Per-thread scratch (T×T for
// MHSA, a few T×D and D×D for XCA) is allocated once per call.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/layers_attn_cuda.h"
#include "cpu/layers_internal.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/layers_attn.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;

struct Dims {
  int64_t N, H, T, D;
  int64_t slices() const { return N * H; }
};

const char* kQkvWhat = "N, H, T, D of q";

// q [N, H, T, D] defines the dims; k, v (and `more`) must match it.
Dims check_qkv(const Tensor& q, const Tensor& k, const Tensor& v) {
  check_tensor(q, "q");
  FC_CHECK(q.rank() == 4, ShapeMismatch, "Expected q of rank 4 [N, H, T, D] but received ", shape_str(q.shape()));
  const Dims d{q.size(0), q.size(1), q.size(2), q.size(3)};
  check_tensor(k, "k");
  check_shape(k, "k", q.shape(), kQkvWhat);
  check_tensor(v, "v");
  check_shape(v, "v", q.shape(), kQkvWhat);
  return d;
}

void check_out(const Tensor& t, const char* name, const std::vector<int64_t>& shape, const char* what,
               const std::vector<std::pair<const Tensor*, const char*>>& inputs) {
  if (!t.defined()) return;
  check_tensor(t, name);
  check_shape(t, name, shape, what);
  for (const auto& in : inputs) check_alias(t, name, *in.first, in.second, false);
}

void check_scale(float scale) {
  FC_CHECK(std::isfinite(scale) && scale > 0, InvalidArgument, "Expected scale finite and > 0 but received ", scale);
}

GemmOptions gemm_opts(const ExecOptions& ex) {
  GemmOptions g;
  g.precision = ex.precision == GemmPrecision::TF32 ? GemmPrecision::F32 : ex.precision;
  return g;
}

// exp(x) for x <= 0 (the max-subtracted logits): Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, a
// degree-6 Taylor polynomial for e^r (truncation < 2e-8 relative) and 2^n from the exponent bits.
// Arguments below −87 are raised to −87 (e^−87 ≈ 1.6e-38 instead of less: nothing next to a row sum
// >= 1). About 2 ulp. The SSE2 form (4 lanes; x86-64 baseline, so no dispatch) performs the same IEEE
// operations in the same order (no FMA), so both give the same bits.
constexpr float kExpMagic = 12582912.0f;  // 1.5·2^23: adding and subtracting it rounds to an integer
constexpr float kLog2e = 1.44269504f, kLn2Hi = 0.693145752f, kLn2Lo = 1.42860677e-6f;  // ln2 = hi + lo

inline float exp_nonpositive(float x) {
  const float xc = std::max(x, -87.0f);
  const float n = (xc * kLog2e + kExpMagic) - kExpMagic;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// row[c] = exp_nonpositive(row[c] − m) for c < cols.
void exp_shifted(float* row, int64_t cols, float m) {
  int64_t c = 0;
#if defined(__SSE2__)
  const __m128 vm = _mm_set1_ps(m), lo = _mm_set1_ps(-87.0f), magic = _mm_set1_ps(kExpMagic);
  for (; c + 4 <= cols; c += 4) {
    const __m128 x = _mm_max_ps(_mm_sub_ps(_mm_loadu_ps(row + c), vm), lo);
    const __m128 n = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(kLog2e)), magic), magic);
    const __m128 r =
        _mm_sub_ps(_mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(kLn2Hi))), _mm_mul_ps(n, _mm_set1_ps(kLn2Lo)));
    __m128 p = _mm_set1_ps(1.0f / 720);
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f / 120));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f / 24));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f / 6));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(0.5f));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.0f));
    const __m128i bits = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
    _mm_storeu_ps(row + c, _mm_mul_ps(p, _mm_castsi128_ps(bits)));
  }
#endif
  for (; c < cols; ++c) row[c] = exp_nonpositive(row[c] - m);
}

// Row softmax in place over rows×cols (row stride cols) of logits·mult: max-subtracted, fp32 values
// and exp, the row sum over 16 fixed float lanes then added in double (a fixed order).
void softmax_rows(float* p, int64_t rows, int64_t cols, float mult) {
  constexpr int kLanes = 16;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = p + r * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] *= mult;
    float mx[kLanes];
    for (int l = 0; l < kLanes; ++l) mx[l] = -INFINITY;
    int64_t j = 0;
    for (; j + kLanes <= cols; j += kLanes)
      for (int l = 0; l < kLanes; ++l) mx[l] = std::max(mx[l], row[j + l]);
    for (int l = 0; j < cols; ++j, ++l) mx[l] = std::max(mx[l], row[j]);
    float m = -INFINITY;
    for (int l = 0; l < kLanes; ++l) m = std::max(m, mx[l]);
    exp_shifted(row, cols, m);
    float lane[kLanes] = {};
    j = 0;
    for (; j + kLanes <= cols; j += kLanes)
      for (int l = 0; l < kLanes; ++l) lane[l] += row[j + l];
    for (int l = 0; j < cols; ++j, ++l) lane[l] += row[j];
    double s = 0;
    for (int l = 0; l < kLanes; ++l) s += lane[l];
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t c = 0; c < cols; ++c) row[c] *= inv;
  }
}

// dS = P ⊙ (dP − rowsum(dP ⊙ P)), in place in dp; returns Σ dS ⊙ a when a is given (double).
double softmax_backward_rows(const float* p, float* dp, int64_t rows, int64_t cols, const float* a) {
  double acc = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * cols;
    float* g = dp + r * cols;
    double s = 0;
    for (int64_t j = 0; j < cols; ++j) s += static_cast<double>(g[j]) * pr[j];
    const float sf = static_cast<float>(s);
    for (int64_t j = 0; j < cols; ++j) {
      g[j] = pr[j] * (g[j] - sf);
      if (a) acc += static_cast<double>(g[j]) * a[r * cols + j];
    }
  }
  return acc;
}

// Per-thread scratch of `per` floats.
struct Scratch {
  std::vector<std::vector<float>> buf;
  Scratch(int threads, int64_t per) : buf(static_cast<size_t>(threads), std::vector<float>(static_cast<size_t>(per))) {}
  float* at(int thread) { return buf[static_cast<size_t>(thread)].data(); }
};

// Channel norms of x (T×D, row stride D) over T: nrm[i] = max(‖x[:, i]‖, eps); xh = x / nrm.
void l2_normalize_columns(const float* x, int64_t T, int64_t D, float* nrm, float* xh) {
  for (int64_t i = 0; i < D; ++i) {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) s += static_cast<double>(x[t * D + i]) * x[t * D + i];
    nrm[i] = std::max(static_cast<float>(std::sqrt(s)), kXcaNormEps);
  }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) xh[t * D + i] = x[t * D + i] / nrm[i];
}

// dx[:, i] = (g[:, i] − xh[:, i]·(xh[:, i]·g[:, i])) / nrm[i] (just g/eps where the norm was clamped:
// x/eps is linear; the clamp is re-derived from x as the forward decided it).
void l2_normalize_backward(const float* g, const float* xh, const float* nrm, const float* x, int64_t T, int64_t D,
                           float* dx) {
  for (int64_t i = 0; i < D; ++i) {
    double s = 0, n2 = 0;
    for (int64_t t = 0; t < T; ++t) {
      s += static_cast<double>(xh[t * D + i]) * g[t * D + i];
      n2 += static_cast<double>(x[t * D + i]) * x[t * D + i];
    }
    const bool clamped = static_cast<float>(std::sqrt(n2)) < kXcaNormEps;  // as the forward's clamp
    const float dot = clamped ? 0.0f : static_cast<float>(s);
    for (int64_t t = 0; t < T; ++t) dx[t * D + i] = (g[t * D + i] - xh[t * D + i] * dot) / nrm[i];
  }
}

}  // namespace

// ---- Multi-head self-attention

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& probs,
                       float scale, const ExecOptions& ex) {
  const OpDevice dev(q);
  const Dims d = check_qkv(q, k, v);
  check_scale(scale);
  check_threads(ex);
  const std::vector<std::pair<const Tensor*, const char*>> ins = {{&q, "q"}, {&k, "k"}, {&v, "v"}};
  check_tensor(out, "out");
  check_out(out, "out", q.shape(), kQkvWhat, ins);
  check_out(probs, "probs", {d.N, d.H, d.T, d.T}, "N, H, T, T of q", ins);
  check_alias(probs, "probs", out, "out", false);
  if (dev.cuda()) return cuda_nn::attention_forward(q, k, v, out, probs, scale, ex);
  if (d.slices() == 0 || d.T == 0 || d.D == 0) {
    if (d.D == 0 && probs.defined()) {  // softmax of zeros: uniform
      float* p = probs.data_as<float>();
      std::fill(p, p + probs.numel(), d.T > 0 ? 1.0f / static_cast<float>(d.T) : 0.0f);
    }
    return;
  }
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.threads_for(ex.max_threads);
  const int64_t TT = d.T * d.T, TD = d.T * d.D;
  Scratch sc(probs.defined() ? 0 : threads, TT);
  const float *Q = q.data_as<float>(), *K = k.data_as<float>(), *V = v.data_as<float>();
  float* O = out.data_as<float>();
  float* Pall = probs.defined() ? probs.data_as<float>() : nullptr;
  const GemmOptions go = gemm_opts(ex);
  pool.run(
      d.slices(),
      [&](int64_t s, int thread) {
        float* P = Pall ? Pall + s * TT : sc.at(thread);
        sgemm(false, true, d.T, d.T, d.D, scale, Q + s * TD, d.D, K + s * TD, d.D, 0.0f, P, d.T, go);
        softmax_rows(P, d.T, d.T, 1.0f);
        sgemm(false, false, d.T, d.D, d.T, 1.0f, P, d.T, V + s * TD, d.D, 0.0f, O + s * TD, d.D, go);
      },
      ex.max_threads);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale, const ExecOptions& ex) {
  const OpDevice dev(dout);
  check_tensor(dout, "dout");
  const Dims d = check_qkv(q, k, v);
  check_shape(dout, "dout", q.shape(), kQkvWhat);
  check_tensor(probs, "probs");
  check_shape(probs, "probs", {d.N, d.H, d.T, d.T}, "N, H, T, T of q");
  check_scale(scale);
  check_threads(ex);
  const std::vector<std::pair<const Tensor*, const char*>> ins = {
      {&dout, "dout"}, {&q, "q"}, {&k, "k"}, {&v, "v"}, {&probs, "probs"}};
  check_out(dq, "dq", q.shape(), kQkvWhat, ins);
  check_out(dk, "dk", q.shape(), kQkvWhat, ins);
  check_out(dv, "dv", q.shape(), kQkvWhat, ins);
  check_alias(dk, "dk", dq, "dq", false);
  check_alias(dv, "dv", dq, "dq", false);
  check_alias(dv, "dv", dk, "dk", false);
  if (dev.cuda()) return cuda_nn::attention_backward(dout, q, k, v, probs, dq, dk, dv, scale, ex);
  if (d.slices() == 0 || d.T == 0 || d.D == 0) return;  // every gradient is empty
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.threads_for(ex.max_threads);
  const int64_t TT = d.T * d.T, TD = d.T * d.D;
  const bool need_ds = dq.defined() || dk.defined();
  Scratch sc(need_ds ? threads : 0, TT);
  const float *G = dout.data_as<float>(), *Q = q.data_as<float>(), *K = k.data_as<float>(), *V = v.data_as<float>(),
              *Pall = probs.data_as<float>();
  const GemmOptions go = gemm_opts(ex);
  pool.run(
      d.slices(),
      [&](int64_t s, int thread) {
        const float* P = Pall + s * TT;
        if (dv.defined())
          sgemm(true, false, d.T, d.D, d.T, 1.0f, P, d.T, G + s * TD, d.D, 0.0f, dv.data_as<float>() + s * TD, d.D, go);
        if (!need_ds) return;
        float* dS = sc.at(thread);
        sgemm(false, true, d.T, d.T, d.D, 1.0f, G + s * TD, d.D, V + s * TD, d.D, 0.0f, dS, d.T, go);
        softmax_backward_rows(P, dS, d.T, d.T, nullptr);
        if (dq.defined())
          sgemm(false, false, d.T, d.D, d.T, scale, dS, d.T, K + s * TD, d.D, 0.0f, dq.data_as<float>() + s * TD, d.D,
                go);
        if (dk.defined())
          sgemm(true, false, d.T, d.D, d.T, scale, dS, d.T, Q + s * TD, d.D, 0.0f, dk.data_as<float>() + s * TD, d.D,
                go);
      },
      ex.max_threads);
}

// ---- XCA

namespace {

void check_temperature(const Tensor& temperature, int64_t H) {
  check_tensor(temperature, "temperature");
  check_shape(temperature, "temperature", {H}, "H, the heads of q");
}

}  // namespace

void xca_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature, const Tensor& out,
                 const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const ExecOptions& ex) {
  const OpDevice dev(q);
  const Dims d = check_qkv(q, k, v);
  check_temperature(temperature, d.H);
  check_threads(ex);
  const std::vector<std::pair<const Tensor*, const char*>> ins = {
      {&q, "q"}, {&k, "k"}, {&v, "v"}, {&temperature, "temperature"}};
  check_tensor(out, "out");
  check_out(out, "out", q.shape(), kQkvWhat, ins);
  check_out(q_norm, "q_norm", {d.N, d.H, d.D}, "N, H, D of q", ins);
  check_out(k_norm, "k_norm", {d.N, d.H, d.D}, "N, H, D of q", ins);
  check_out(probs, "probs", {d.N, d.H, d.D, d.D}, "N, H, D, D of q", ins);
  check_alias(q_norm, "q_norm", out, "out", false);
  check_alias(k_norm, "k_norm", out, "out", false);
  check_alias(probs, "probs", out, "out", false);
  check_alias(k_norm, "k_norm", q_norm, "q_norm", false);
  check_alias(probs, "probs", q_norm, "q_norm", false);
  check_alias(probs, "probs", k_norm, "k_norm", false);
  if (d.slices() > 0 && d.H > 0) {
    // The temperature is read on the host only on the CPU; on CUDA its finiteness is the caller's.
    if (!dev.cuda()) {
      const float* tp = temperature.data_as<float>();
      for (int64_t h = 0; h < d.H; ++h)
        FC_CHECK(std::isfinite(tp[h]), InvalidArgument, "Expected temperature[", h, "] finite but received ", tp[h]);
    }
  }
  if (dev.cuda()) return cuda_nn::xca_forward(q, k, v, temperature, out, q_norm, k_norm, probs, ex);
  if (d.slices() == 0 || d.D == 0) return;
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.threads_for(ex.max_threads);
  const int64_t TD = d.T * d.D, DD = d.D * d.D;
  // per thread: q̂, k̂ (T×D each), norms (2·D), P (D×D)
  Scratch sc(threads, 2 * TD + 2 * d.D + DD);
  const float *Q = q.data_as<float>(), *K = k.data_as<float>(), *V = v.data_as<float>(),
              *tau = temperature.data_as<float>();
  float* O = out.data_as<float>();
  const GemmOptions go = gemm_opts(ex);
  pool.run(
      d.slices(),
      [&](int64_t s, int thread) {
        float* qh = sc.at(thread);
        float* kh = qh + TD;
        float* qn = q_norm.defined() ? q_norm.data_as<float>() + s * d.D : kh + TD;
        float* kn = k_norm.defined() ? k_norm.data_as<float>() + s * d.D : kh + TD + d.D;
        float* P = probs.defined() ? probs.data_as<float>() + s * DD : kh + TD + 2 * d.D;
        l2_normalize_columns(Q + s * TD, d.T, d.D, qn, qh);
        l2_normalize_columns(K + s * TD, d.T, d.D, kn, kh);
        if (d.T > 0) {
          sgemm(true, false, d.D, d.D, d.T, 1.0f, qh, d.D, kh, d.D, 0.0f, P, d.D, go);
        } else {
          std::fill(P, P + DD, 0.0f);
        }
        softmax_rows(P, d.D, d.D, tau[s % d.H]);
        if (d.T > 0) sgemm(false, true, d.T, d.D, d.D, 1.0f, V + s * TD, d.D, P, d.D, 0.0f, O + s * TD, d.D, go);
      },
      ex.max_threads);
}

void xca_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature,
                  const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dtemperature, const ExecOptions& ex) {
  const OpDevice dev(dout);
  check_tensor(dout, "dout");
  const Dims d = check_qkv(q, k, v);
  check_shape(dout, "dout", q.shape(), kQkvWhat);
  check_temperature(temperature, d.H);
  check_tensor(q_norm, "q_norm");
  check_shape(q_norm, "q_norm", {d.N, d.H, d.D}, "N, H, D of q");
  check_tensor(k_norm, "k_norm");
  check_shape(k_norm, "k_norm", {d.N, d.H, d.D}, "N, H, D of q");
  check_tensor(probs, "probs");
  check_shape(probs, "probs", {d.N, d.H, d.D, d.D}, "N, H, D, D of q");
  check_threads(ex);
  const std::vector<std::pair<const Tensor*, const char*>> ins = {
      {&dout, "dout"},     {&q, "q"},           {&k, "k"},          {&v, "v"},
      {&temperature, "temperature"}, {&q_norm, "q_norm"}, {&k_norm, "k_norm"}, {&probs, "probs"}};
  check_out(dq, "dq", q.shape(), kQkvWhat, ins);
  check_out(dk, "dk", q.shape(), kQkvWhat, ins);
  check_out(dv, "dv", q.shape(), kQkvWhat, ins);
  check_out(dtemperature, "dtemperature", {d.H}, "H, the heads of q", ins);
  check_alias(dk, "dk", dq, "dq", false);
  check_alias(dv, "dv", dq, "dq", false);
  check_alias(dv, "dv", dk, "dk", false);
  check_alias(dtemperature, "dtemperature", dq, "dq", false);
  check_alias(dtemperature, "dtemperature", dk, "dk", false);
  check_alias(dtemperature, "dtemperature", dv, "dv", false);
  if (dev.cuda()) {
    return cuda_nn::xca_backward(dout, q, k, v, temperature, q_norm, k_norm, probs, dq, dk, dv, dtemperature, ex);
  }
  if (d.slices() == 0 || d.D == 0) return;
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.threads_for(ex.max_threads);
  const int64_t TD = d.T * d.D, DD = d.D * d.D;
  // per thread: q̂, k̂, dq̂/dk̂ (T×D each), A and dS (D×D each)
  Scratch sc(threads, 3 * TD + 2 * DD);
  std::vector<double> dtau_part(static_cast<size_t>(d.slices()), 0.0);
  const float *G = dout.data_as<float>(), *Q = q.data_as<float>(), *K = k.data_as<float>(), *V = v.data_as<float>(),
              *tau = temperature.data_as<float>(), *QN = q_norm.data_as<float>(), *KN = k_norm.data_as<float>(),
              *Pall = probs.data_as<float>();
  const bool need_ds = dq.defined() || dk.defined() || dtemperature.defined();
  const GemmOptions go = gemm_opts(ex);
  pool.run(
      d.slices(),
      [&](int64_t s, int thread) {
        const float* P = Pall + s * DD;
        if (dv.defined() && d.T > 0)
          sgemm(false, false, d.T, d.D, d.D, 1.0f, G + s * TD, d.D, P, d.D, 0.0f, dv.data_as<float>() + s * TD, d.D,
                go);
        if (!need_ds || d.T == 0) {
          // T = 0: A = 0 and dP = 0, so every gradient is zero (dq, dk, dv are empty)
          return;
        }
        float* qh = sc.at(thread);
        float* kh = qh + TD;
        float* g = kh + TD;
        float* A = g + TD;
        float* dS = A + DD;
        const float *qn = QN + s * d.D, *kn = KN + s * d.D;
        for (int64_t t = 0; t < d.T; ++t)
          for (int64_t i = 0; i < d.D; ++i) {
            qh[t * d.D + i] = Q[s * TD + t * d.D + i] / qn[i];
            kh[t * d.D + i] = K[s * TD + t * d.D + i] / kn[i];
          }
        const float tv = tau[s % d.H];
        sgemm(true, false, d.D, d.D, d.T, 1.0f, G + s * TD, d.D, V + s * TD, d.D, 0.0f, dS, d.D, go);  // dP
        const bool want_dtau = dtemperature.defined();
        if (want_dtau) sgemm(true, false, d.D, d.D, d.T, 1.0f, qh, d.D, kh, d.D, 0.0f, A, d.D, go);
        dtau_part[static_cast<size_t>(s)] = softmax_backward_rows(P, dS, d.D, d.D, want_dtau ? A : nullptr);
        if (dq.defined()) {
          sgemm(false, true, d.T, d.D, d.D, tv, kh, d.D, dS, d.D, 0.0f, g, d.D, go);  // τ·k̂·dSᵀ
          l2_normalize_backward(g, qh, qn, Q + s * TD, d.T, d.D, dq.data_as<float>() + s * TD);
        }
        if (dk.defined()) {
          sgemm(false, false, d.T, d.D, d.D, tv, qh, d.D, dS, d.D, 0.0f, g, d.D, go);  // τ·q̂·dS
          l2_normalize_backward(g, kh, kn, K + s * TD, d.T, d.D, dk.data_as<float>() + s * TD);
        }
      },
      ex.max_threads);
  if (dtemperature.defined()) {
    float* dt = dtemperature.data_as<float>();
    for (int64_t h = 0; h < d.H; ++h) {
      double acc = 0;
      for (int64_t n = 0; n < d.N; ++n) acc += dtau_part[static_cast<size_t>(n * d.H + h)];
      dt[h] += static_cast<float>(acc);
    }
  }
}

}  // namespace nn
}  // namespace fc
