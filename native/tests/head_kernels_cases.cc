// @file head_kernels_cases.cc
// @brief Harness cases for the CUDA head passes (native/src/cuda/head_kernels.cu) against the CPU ones
// (native/src/cpu/head_kernels.cc): every fc::heads::Kernels method runs on the same fresh random
// inputs through make_cpu_kernels(F32) and make_cuda_kernels(cuda:0, F32), and the outputs are
// compared within tolerances derived below (each one next to its check).
//
//   test  row_norms (aligned and ragged D, zero / tiny / Inf / NaN rows), gemm, gather/scatter (= and
//         +=), fill_zero, add_inplace, scale_copy, scale_columns (wv/bias on and off), dx_final,
//         weight_grad_project, target_cosines (K = 1, 3; target −1), center_diff, center_update,
//         subcenter_max (K = 3 with exact ties: the first k wins) and subcenter_expand, and
//         forward_chunk + backward_chunk over chunk shapes that cover: the float4 path and the scalar
//         path (n % 4 != 0, a misaligned wv), one and several column tiles with a ragged last one,
//         targets inside and outside the chunk and −1 (the target fields of rows whose target is not in
//         the chunk must stay untouched), every margin kind, has_bias with wv null (Softmax),
//         clamp_all with cosines beyond [lo, hi] and exactly at ±1 and at the bounds, dbias off / = /
//         +=. Each chunk case also reruns the GPU passes on the same inputs (bitwise equal: no
//         scheduling dependence) and on a misaligned copy of the chunk (the scalar path must give the
//         same bits as the float4 path).
//   perf  forward_chunk + backward_chunk at B = 512, n = 131072 (the default 256 MiB chunk) on the GPU:
//         median time and effective bandwidth (each pass reads and writes the chunk once).
// Without a usable CUDA device every case skips with the reason, except "unavailable", which checks
// that make_cuda_kernels then throws CUDA_UNAVAILABLE (and skips when a device is present).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/head_kernels.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/heads.h"
#include "facecuda/tensor.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

using heads::ChunkRowStats;
using heads::ElementConfig;
using heads::Fn;
using heads::Kernels;
using heads::RowTable;

constexpr double kU = 1.0 / 16777216.0;          // fp32 unit roundoff 2^-24 (1 ulp <= 2u)
constexpr double kUd = 1.0 / 9007199254740992.0;  // fp64 unit roundoff 2^-53
constexpr int kDev = 0;

std::string fmtd(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::vector<float> uniform(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  fill_uniform(rng, v.data(), n, lo, hi);
  return v;
}

// ---- device arrays (from the caching allocator; synchronous copies)

template <typename T>
class Dev {
 public:
  explicit Dev(size_t count)
      : n_(count),
        t_(Tensor::empty({static_cast<int64_t>(std::max<size_t>(count * sizeof(T), 1))}, DType::U8,
                         Device::cuda(kDev))) {}
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { put(v); }
  T* p() const { return t_.data_as<T>(); }
  void put(const std::vector<T>& v, size_t at = 0) const {
    cuda::copy_h2d(kDev, p() + at, v.data(), v.size() * sizeof(T));
  }
  std::vector<T> get(size_t at = 0, size_t count = SIZE_MAX) const {
    std::vector<T> out(count == SIZE_MAX ? n_ - at : count);
    cuda::copy_d2h(kDev, out.data(), p() + at, out.size() * sizeof(T));
    return out;
  }

 private:
  size_t n_;
  Tensor t_;
};

// ---- comparisons

class Checks {
 public:
  // |got − ref| <= atol + rtol·scale_k, scale_k = |ref_k| when `scale` is null; NaN matches NaN and
  // Inf matches the same Inf. Entries with mask[k] == 0 are not compared.
  template <typename G, typename R>
  void close(const std::string& what, const std::vector<G>& got, const std::vector<R>& ref, double atol, double rtol,
             const std::vector<double>* scale = nullptr, const std::vector<uint8_t>* mask = nullptr) {
    ++checks_;
    if (got.size() != ref.size()) return fail(what + ": " + std::to_string(got.size()) + " values vs " +
                                              std::to_string(ref.size()));
    size_t faults = 0, worst = 0;
    double worst_ratio = 0;
    for (size_t k = 0; k < ref.size(); ++k) {
      if (mask && !(*mask)[k]) continue;
      const double g = static_cast<double>(got[k]), r = static_cast<double>(ref[k]);
      if ((std::isnan(g) && std::isnan(r)) || (std::isinf(r) && g == r)) continue;
      const double tol = atol + rtol * (scale ? (*scale)[k] : std::fabs(r));
      const double err = std::fabs(g - r);
      const double ratio = err <= tol ? (tol > 0 ? err / tol : 0.0) : HUGE_VAL;
      if (!(err <= tol)) ++faults;
      if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = k;
    }
    if (std::isfinite(worst_ratio)) max_ratio_ = std::max(max_ratio_, worst_ratio);
    if (faults) {
      char b[256];
      std::snprintf(b, sizeof b, ": %zu faults, worst @%zu got=%.9g ref=%.9g tol=%.3g", faults, worst,
                    static_cast<double>(got[worst]), static_cast<double>(ref[worst]),
                    atol + rtol * (scale ? (*scale)[worst] : std::fabs(static_cast<double>(ref[worst]))));
      fail(what + b);
    }
  }

  // Bit-for-bit equality.
  template <typename T>
  void same(const std::string& what, const std::vector<T>& a, const std::vector<T>& b) {
    ++checks_;
    if (a.size() != b.size()) return fail(what + ": sizes differ");
    for (size_t k = 0; k < a.size(); ++k) {
      if (std::memcmp(&a[k], &b[k], sizeof(T)) != 0) {
        return fail(what + ": first difference @" + std::to_string(k) + " (" + fmtd("%.9g", double(a[k])) + " vs " +
                    fmtd("%.9g", double(b[k])) + ")");
      }
    }
  }

  void expect(bool cond, const std::string& what) {
    ++checks_;
    if (!cond) fail(what);
  }

  CaseResult result() const {
    CaseResult r;
    if (!failures_.empty()) {
      r.status = CaseResult::Fail;
      r.detail = failures_;
    } else {
      r.detail = std::to_string(checks_) + " checks, worst err/tol " + fmtd("%.3g", max_ratio_);
    }
    r.figures = {{"checks", double(checks_)}, {"max_err_over_tol", max_ratio_}};
    return r;
  }

 private:
  void fail(const std::string& why) {
    if (failures_.size() < 600) failures_ += (failures_.empty() ? "" : "; ") + why;
  }
  std::string failures_;
  int checks_ = 0;
  double max_ratio_ = 0;
};

// ---- the case classes

struct Env {
  std::mt19937_64 rng;
  std::unique_ptr<Kernels> cpu, gpu;
};
using Body = std::function<void(Env&, Checks&)>;

class KernelsCase : public OpCase {
 public:
  KernelsCase(std::string name, Body body) : name_(std::move(name)), body_(std::move(body)) {}
  std::string op() const override { return "head_kernels"; }
  std::string params() const override { return name_; }
  bool uses_cuda() const override { return true; }
  CaseResult test(Context& ctx) override {
    if (!ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    Env env{make_rng(ctx, name_), heads::make_cpu_kernels(GemmPrecision::F32, 0),
            heads::make_cuda_kernels(Device::cuda(kDev), GemmPrecision::F32)};
    Checks ch;
    body_(env, ch);
    return ch.result();
  }

 private:
  std::string name_;
  Body body_;
};

// ---- row_norms

void row_norms_body(Env& e, Checks& ch, int64_t rows, int64_t D, bool with_vhat) {
  std::vector<float> v = uniform(e.rng, static_cast<size_t>(rows * D), -1, 1);
  // Row 0: zeros (norm 0 < eps); row 1: tiny (norm ~1e-13 < eps); row 2: Inf; row 3: NaN.
  std::fill(v.begin(), v.begin() + D, 0.0f);
  for (int64_t k = 0; k < D; ++k) v[D + k] *= 1e-14f;
  v[2 * D + D / 2] = std::numeric_limits<float>::infinity();
  v[3 * D] = std::numeric_limits<float>::quiet_NaN();
  const size_t R = static_cast<size_t>(rows);
  std::vector<float> vh_c(v.size(), 0.0f), inv_c(R, 0.0f);
  std::vector<uint8_t> sm_c(R, 7);
  std::vector<double> nrm_c(R), nrm_g(R);
  e.cpu->row_norms(v.data(), rows, D, with_vhat ? vh_c.data() : nullptr, inv_c.data(), sm_c.data(), nrm_c.data());
  Dev<float> dv(v), dvh(v.size()), dinv(R);
  Dev<uint8_t> dsm(R);
  e.gpu->row_norms(dv.p(), rows, D, with_vhat ? dvh.p() : nullptr, dinv.p(), dsm.p(), nrm_g.data());
  // ‖v‖: the squares are exact in double (float·float), only the summation order differs (8 lanes vs
  // 32 lanes + tree): |Δss| <= 2D·2^-53·ss, so the norm is within (D + 2)·2^-53 relative.
  ch.close("host_norm", nrm_g, nrm_c, 0.0, (D + 2) * kUd);
  // inv, vhat, small are unspecified for non-finite rows (2, 3).
  std::vector<uint8_t> finite(R, 1);
  finite[2] = finite[3] = 0;
  // inv = float(1/max(n, eps)): the norms agree to ~1e-14, so the float rounding flips at most 1 ulp.
  ch.close("inv", dinv.get(), inv_c, 0.0, 2 * kU, nullptr, &finite);
  std::vector<uint8_t> sm_g = dsm.get();
  for (size_t i = 0; i < R; ++i)
    if (finite[i] && sm_g[i] != sm_c[i]) ch.expect(false, "small differs at row " + std::to_string(i));
  ch.expect(sm_g[0] == 1 && sm_g[1] == 1 && sm_g[4] == 0, "small flags of the zero / tiny / normal rows");
  if (with_vhat) {
    std::vector<uint8_t> vmask(v.size(), 1);
    std::fill(vmask.begin() + 2 * D, vmask.begin() + 4 * D, 0);
    // vhat = float(v·iv) with iv double on both sides: at most 1 ulp apart.
    ch.close("vhat", dvh.get(), vh_c, 0.0, 2 * kU, nullptr, &vmask);
  }
}

// ---- gemm (the head's GEMM is fc::cuda::sgemm; checked here only as part of the interface)

void gemm_body(Env& e, Checks& ch, bool ta, bool tb) {
  const int64_t M = 37, N = 29, K = 130;
  std::vector<float> A = uniform(e.rng, M * K, -1, 1), B = uniform(e.rng, K * N, -1, 1),
                     C = uniform(e.rng, M * N, -1, 1);
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  std::vector<float> Cc = C;
  e.cpu->gemm(ta, tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, 0.5f, Cc.data(), N);
  Dev<float> dA(A), dB(B), dC(C);
  e.gpu->gemm(ta, tb, M, N, K, 0.75f, dA.p(), lda, dB.p(), ldb, 0.5f, dC.p(), N);
  // Both are within (2K + 16)·u·(|α|Σ|a||b| + |β||c|) of the exact value (gemm_cases.cc), so within twice
  // that of each other.
  std::vector<double> scale(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        const float a = ta ? A[k * lda + i] : A[i * lda + k];
        const float b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += std::fabs(double(a) * b);
      }
      scale[i * N + j] = 0.75 * s + 0.5 * std::fabs(C[i * N + j]);
    }
  ch.close("C", dC.get(), Cc, 0.0, 2.0 * (2.0 * K + 16) * kU, &scale);
}

// ---- small passes

void copy_passes_body(Env& e, Checks& ch, int64_t D) {
  const int64_t R = 50;
  std::vector<float> src = uniform(e.rng, R * D, -1, 1), dst0 = uniform(e.rng, R * D, -1, 1);
  std::vector<int64_t> idx;
  for (int64_t r = 0; r < R; ++r)
    if (e.rng() % 3 != 0) idx.push_back(r);
  const int64_t n = static_cast<int64_t>(idx.size());
  Dev<float> dsrc(src);
  {  // gather: an exact copy
    std::vector<float> out_c(static_cast<size_t>(n * D), -3.0f);
    Dev<float> dout(out_c);
    e.cpu->gather_rows(src.data(), idx, D, out_c.data());
    e.gpu->gather_rows(dsrc.p(), idx, D, dout.p());
    ch.same("gather_rows", dout.get(), out_c);
  }
  for (bool acc : {false, true}) {  // scatter: copies or one float addition per entry, exact either way
    std::vector<float> small = uniform(e.rng, static_cast<size_t>(n * D), -1, 1), out_c = dst0;
    Dev<float> dsmall(small), dout(dst0);
    e.cpu->scatter_rows(small.data(), idx, D, out_c.data(), acc);
    e.gpu->scatter_rows(dsmall.p(), idx, D, dout.p(), acc);
    ch.same(acc ? "scatter_rows +=" : "scatter_rows =", dout.get(), out_c);
  }
  {  // fill_zero, add_inplace (one addition), scale_copy (one multiplication): exact
    Dev<float> d(src), d2(dst0), d3(src.size());
    e.gpu->fill_zero(d.p(), src.size() * sizeof(float));
    ch.same("fill_zero", d.get(), std::vector<float>(src.size(), 0.0f));
    std::vector<float> a = dst0;
    e.cpu->add_inplace(a.data(), src.data(), static_cast<int64_t>(a.size()));
    e.gpu->add_inplace(d2.p(), dsrc.p(), static_cast<int64_t>(a.size()));
    ch.same("add_inplace", d2.get(), a);
    std::vector<float> y(src.size());
    e.cpu->scale_copy(src.data(), -0.37f, static_cast<int64_t>(y.size()), y.data());
    e.gpu->scale_copy(dsrc.p(), -0.37f, static_cast<int64_t>(y.size()), d3.p());
    ch.same("scale_copy", d3.get(), y);
  }
}

void scale_columns_body(Env& e, Checks& ch) {
  const int64_t B = 23, n = 1003, off = 5;  // wv/bias start at an odd offset (unaligned)
  std::vector<float> out = uniform(e.rng, B * n, -1, 1), wv = uniform(e.rng, n + off, 0.5f, 2.0f),
                     bias = uniform(e.rng, n + off, -0.5f, 0.5f), s = uniform(e.rng, B, 1.0f, 64.0f);
  Dev<float> dwv(wv), dbias(bias);
  for (int mode = 0; mode < 4; ++mode) {
    const bool w = mode & 1, b = mode & 2;
    std::vector<float> oc = out;
    Dev<float> dout(out);
    e.cpu->scale_columns(oc.data(), w ? wv.data() + off : nullptr, b ? bias.data() + off : nullptr, s.data(), B, n);
    e.gpu->scale_columns(dout.p(), w ? dwv.p() + off : nullptr, b ? dbias.p() + off : nullptr, s.data(), B, n);
    // Each step is rounded separately on both sides (same bits); 1 ulp of |out| + |bias| covers a
    // contracted multiply-add on either side.
    std::vector<double> scale(oc.size());
    for (size_t k = 0; k < oc.size(); ++k) scale[k] = std::fabs(oc[k]) + (b ? std::fabs(bias[off + k % n]) : 0.0);
    ch.close(std::string("scale_columns wv=") + (w ? "1" : "0") + " bias=" + (b ? "1" : "0"), dout.get(), oc, 0.0,
             2 * kU, &scale);
  }
}

void dx_final_body(Env& e, Checks& ch, int64_t B, int64_t D) {
  std::vector<float> g = uniform(e.rng, B * D, -1, 1), h = uniform(e.rng, B * D, -1, 1),
                     xinv = uniform(e.rng, B, 0.1f, 3.0f);
  std::vector<double> a(static_cast<size_t>(B));
  for (auto& v : a) v = std::uniform_real_distribution<double>(-2, 2)(e.rng);
  Dev<float> dg(g), dh(h), dxinv(xinv);
  for (bool with_inv : {true, false}) {
    std::vector<float> dx(g.size());
    Dev<float> ddx(g.size());
    e.cpu->dx_final(g.data(), h.data(), with_inv ? xinv.data() : nullptr, a.data(), B, D, dx.data());
    e.gpu->dx_final(dg.p(), dh.p(), with_inv ? dxinv.p() : nullptr, a.data(), B, D, ddx.p());
    // s·g + a·h: two products and a sum, each side may contract one into an FMA: 4u·(|s·g| + |a·h|).
    std::vector<double> scale(g.size());
    for (size_t k = 0; k < g.size(); ++k) {
      const size_t i = k / static_cast<size_t>(D);
      scale[k] = std::fabs((with_inv ? xinv[i] : 1.0f) * g[k]) + std::fabs(static_cast<float>(a[i]) * h[k]);
    }
    ch.close(with_inv ? "dx_final xinv" : "dx_final xinv=null", ddx.get(), dx, 0.0, 4 * kU, &scale);
  }
}

void weight_grad_project_body(Env& e, Checks& ch, int64_t n, int64_t D) {
  std::vector<float> dw = uniform(e.rng, n * D, -1, 1), w = uniform(e.rng, n * D, -1, 1),
                     winv = uniform(e.rng, n, 0.2f, 3.0f);
  std::vector<uint8_t> small(static_cast<size_t>(n));
  std::vector<double> colsum(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    small[j] = j % 7 == 3;
    colsum[j] = std::uniform_real_distribution<double>(-1, 1)(e.rng);
  }
  std::vector<float> out = dw;
  e.cpu->weight_grad_project(out.data(), w.data(), winv.data(), small.data(), colsum.data(), n, D);
  Dev<float> ddw(dw), dw_(w), dwinv(winv);
  Dev<uint8_t> dsmall(small);
  Dev<double> dcol(colsum);
  e.gpu->weight_grad_project(ddw.p(), dw_.p(), dwinv.p(), dsmall.p(), dcol.p(), n, D);
  // f = float(colsum·winv²) is the same double expression on both sides; dw − f·w may be contracted
  // into an FMA on either side: 2u·(|dw'| + |f·w|).
  std::vector<double> scale(out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    const size_t j = k / static_cast<size_t>(D);
    const float f = static_cast<float>(colsum[j] * double(winv[j]) * double(winv[j]));
    scale[k] = std::fabs(out[k]) + std::fabs(f * w[k]);
  }
  ch.close("weight_grad_project", ddw.get(), out, 0.0, 2 * kU, &scale);
}

void target_cosines_body(Env& e, Checks& ch, int64_t K) {
  const int64_t B = 40, D = 130, C = 17;
  std::vector<float> x = uniform(e.rng, B * D, -1, 1), w = uniform(e.rng, C * K * D, -1, 1),
                     winv = uniform(e.rng, C * K, 0.05f, 0.2f);
  std::vector<int32_t> t(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) t[i] = i % 5 == 2 ? -1 : static_cast<int32_t>(e.rng() % C);
  std::vector<double> oc(static_cast<size_t>(B)), og(static_cast<size_t>(B));
  e.cpu->target_cosines(x.data(), w.data(), winv.data(), t, D, K, oc.data());
  Dev<float> dx(x), dw(w), dwinv(winv);
  e.gpu->target_cosines(dx.p(), dw.p(), dwinv.p(), t, D, K, og.data());
  // Products of floats are exact in double; only the summation order differs: 2D·2^-53·Σ|x·w|·winv.
  std::vector<double> scale(static_cast<size_t>(B), 0.0);
  for (int64_t i = 0; i < B; ++i) {
    if (t[i] < 0) continue;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = t[i] * K + k;
      double s = 0;
      for (int64_t q = 0; q < D; ++q) s += std::fabs(double(x[i * D + q]) * w[r * D + q]);
      scale[i] = std::max(scale[i], s * winv[r]);
    }
  }
  ch.close("target_cosines K=" + std::to_string(K), og, oc, 0.0, (2.0 * D + 4) * kUd, &scale);
  for (int64_t i = 0; i < B; ++i)
    if (t[i] < 0) ch.expect(std::isnan(og[i]), "target −1 gives NaN at row " + std::to_string(i));
}

void center_body(Env& e, Checks& ch) {
  const int64_t B = 57, D = 131, C = 11;
  std::vector<float> x = uniform(e.rng, B * D, -2, 2), centers = uniform(e.rng, C * D, -2, 2);
  std::vector<int32_t> y(static_cast<size_t>(B));
  for (auto& v : y) v = static_cast<int32_t>(e.rng() % (C - 2));  // classes C−2, C−1 never present
  std::vector<float> diff_c(x.size());
  Dev<float> dx(x), dcent(centers), ddiff(x.size());
  const double lc = e.cpu->center_diff(x.data(), y, centers.data(), D, diff_c.data());
  const double lg = e.gpu->center_diff(dx.p(), y, dcent.p(), D, ddiff.p());
  ch.same("center_diff diff", ddiff.get(), diff_c);  // one float subtraction per entry
  // The squares are exact in double; only the order of the B·D-term sum differs.
  ch.close("center_diff sum", std::vector<double>{lg}, std::vector<double>{lc}, 0.0, 2.0 * B * D * kUd);
  std::vector<int32_t> classes;
  std::vector<std::vector<int32_t>> rows_of;
  std::vector<double> coef;
  for (int32_t c = 0; c < C; ++c) {
    std::vector<int32_t> r;
    for (int32_t i = 0; i < B; ++i)
      if (y[i] == c) r.push_back(i);
    if (r.empty()) continue;
    classes.push_back(c);
    rows_of.push_back(r);
    coef.push_back(-0.5 / (1.0 + static_cast<double>(r.size())));
  }
  std::vector<float> cc = centers;
  e.cpu->center_update(diff_c.data(), classes, rows_of, coef, D, cc.data());
  e.gpu->center_update(ddiff.p(), classes, rows_of, coef, D, dcent.p());
  // Same rows in the same order, summed in double on both sides; the update c + coef·Σ may be an FMA
  // in double on one side only: at most 1 ulp after rounding to float (atol: the double difference,
  // ~1e-16, should c + coef·Σ cancel to almost 0).
  ch.close("center_update", dcent.get(), cc, 1e-12, 2 * kU);
}

// ---- sub-centers

void subcenter_body(Env& e, Checks& ch, int64_t B, int64_t n, int64_t K) {
  std::vector<float> raw = uniform(e.rng, B * n * K, -1, 1), winv = uniform(e.rng, n * K, 0.5f, 2.0f);
  // Exact ties: equal raw dots and equal winv give equal products in any precision; the first k must win.
  int64_t ties = 0;
  for (int64_t c = 0; c < n; c += 2)
    for (int64_t k = 1; k < K; ++k) winv[c * K + k] = winv[c * K];
  for (int64_t i = 0; i < B; ++i)
    for (int64_t c = 0; c < n; c += 2) {
      float* r = raw.data() + (i * n + c) * K;
      if ((i + c) % 3 == 0) r[K - 1] = r[0] = std::max(r[0], r[K - 1]), ++ties;
      if (K > 2 && (i + c) % 5 == 0) r[1] = r[2] = std::max(r[1], r[2]), ++ties;
    }
  const size_t Bn = static_cast<size_t>(B * n);
  std::vector<float> cos_c(Bn);
  std::vector<uint8_t> am_c(Bn);
  e.cpu->subcenter_max(raw.data(), winv.data(), B, n, K, cos_c.data(), am_c.data());
  Dev<float> draw(raw), dwinv(winv), dcos(Bn);
  Dev<uint8_t> dam(Bn);
  e.gpu->subcenter_max(draw.p(), dwinv.p(), B, n, K, dcos.p(), dam.p());
  // One float multiplication per candidate and the same strict comparison: identical bits.
  ch.same("subcenter_max cos", dcos.get(), cos_c);
  ch.same("subcenter_max amax", dam.get(), am_c);
  ch.expect(ties > 0, "the case has ties");

  std::vector<float> g = uniform(e.rng, Bn, -0.02f, 0.02f), raw_c = raw;
  std::vector<double> cs_c(static_cast<size_t>(n * K), 1e300);
  Dev<float> dg(g);
  Dev<uint8_t> dam_c(am_c);  // the same arg-max on both sides
  Dev<double> dcs(cs_c);     // garbage: colsum must be written (=)
  e.cpu->subcenter_expand(g.data(), am_c.data(), winv.data(), B, n, K, raw_c.data(), cs_c.data());
  e.gpu->subcenter_expand(dg.p(), dam_c.p(), dwinv.p(), B, n, K, draw.p(), dcs.p());
  ch.same("subcenter_expand raw", draw.get(), raw_c);  // G·winv (one multiplication) or 0
  // Each term G·cos is a float product, exact in double; only the order of the B-term sums differs.
  std::vector<double> scale(cs_c.size(), 0.0);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t c = 0; c < n; ++c) {
      const int64_t k = am_c[i * n + c];
      scale[c * K + k] += std::fabs(double(g[i * n + c]) * (raw[(i * n + c) * K + k] * winv[c * K + k]));
    }
  ch.close("subcenter_expand colsum", dcs.get(), cs_c, 0.0, (2.0 * B + 2) * kUd, &scale);
}

// ---- forward_chunk + backward_chunk

enum class Rows { Mixed, Ada, Softmax };

struct ChunkSpec {
  std::string name;
  int64_t B, n, j0, classes;  // the chunk is active classes [j0, j0 + n) of `classes`
  bool wv, bias, clamp;
  Rows rows;
  int dbias;  // 0 none, 1 assign (=), 2 accumulate (+=)
};

struct ChunkData {
  std::vector<float> raw, winv, bias;  // raw [B, n]; winv, bias [classes]
  RowTable rows;
  ElementConfig cfg;
  std::vector<double> rowsum0;  // host_rowsum before the backward (+=)
  std::vector<float> dbias0;    // dbias before the backward (+= case)
  // backward inputs (from the CPU forward)
  std::vector<float> row_max, inv_sum, gscale;
  std::vector<double> target_g;
};

struct ChunkResult {
  std::vector<float> cb_fwd;  // c after the forward
  ChunkRowStats st;
  std::vector<float> cb_bwd;  // G·wv after the backward
  std::vector<double> colsum, rowsum;
  std::vector<float> dbias;
};

constexpr double kSentinel = -12345.0;

ChunkRowStats fresh_stats(int64_t B) {
  ChunkRowStats s;
  s.max.assign(static_cast<size_t>(B), 0.0f);
  s.sum.assign(static_cast<size_t>(B), 0.0);
  s.target_cos.assign(static_cast<size_t>(B), kSentinel);
  s.target_dpsi.assign(static_cast<size_t>(B), kSentinel);
  s.target_z.assign(static_cast<size_t>(B), static_cast<float>(kSentinel));
  return s;
}

Fn row_fn(Rows kind, int64_t i, std::mt19937_64& rng) {
  using namespace margin;
  std::uniform_real_distribution<double> u(0, 1);
  if (kind == Rows::Softmax) return make_margin_fn<double>(kNorm, 1, 0, 0, false, true, false, kCosClampEps);
  if (kind == Rows::Ada) {  // per-row margins as AdaFace builds them: g_ang = −m·ĥ, g_add = m·ĥ + m
    const double h = 2 * u(rng) - 1;
    return make_margin_fn<double>(kAda, 1, -0.4 * h, 0.4 * h + 0.4, false, true, false, 1e-3);
  }
  switch (i % 8) {
    case 0: return make_margin_fn<double>(kNorm, 1, 0, 0, false, true, false, kCosClampEps);
    case 1: return make_margin_fn<double>(kCos, 1, 0, 0.35, false, true, false, kCosClampEps);
    case 2: return make_margin_fn<double>(kArc, 1, 0.5, 0, false, true, false, kCosClampEps);
    case 3: return make_margin_fn<double>(kArc, 1, 0.5, 0, true, true, false, kCosClampEps);
    case 4: return make_margin_fn<double>(kArc, 1, 0.5, 0, false, false, true, kCosClampEps);
    case 5: return make_margin_fn<double>(kCombined, 0.9, 0.4, 0.15, false, true, false, kCosClampEps);
    case 6: return make_margin_fn<double>(kAda, 1, 0.2, 0.3, false, true, false, 1e-3);
    default: {
      Fn f = make_margin_fn<double>(kSphere, 4, 0, 0, false, true, false, kCosClampEps);
      f.lambda = 5.0;
      return f;
    }
  }
}

ChunkData make_chunk(const ChunkSpec& s, std::mt19937_64& rng) {
  ChunkData d;
  const size_t B = static_cast<size_t>(s.B), n = static_cast<size_t>(s.n);
  d.winv = uniform(rng, static_cast<size_t>(s.classes), 0.5f, 2.0f);
  d.bias = uniform(rng, static_cast<size_t>(s.classes), -0.5f, 0.5f);
  d.cfg.clamp_all = s.clamp;
  d.cfg.lo = static_cast<float>(-1 + 1e-3);
  d.cfg.hi = static_cast<float>(1 - 1e-3);
  d.cfg.has_bias = s.bias;
  // Cosines in (−0.95, 0.95); with the clamp, (−1.2, 1.2) plus entries exactly at ±1 and at the bounds.
  const float span = s.clamp ? 1.2f : 0.95f;
  std::vector<float> c = uniform(rng, B * n, -span, span);
  if (s.rows == Rows::Softmax) c = uniform(rng, B * n, -8, 8);  // plain logits
  if (s.clamp) {
    const float special[4] = {1.0f, -1.0f, d.cfg.lo, d.cfg.hi};
    for (size_t k = 0; k < c.size(); k += 7) c[k] = special[(k / 7) % 4];
  }
  d.raw.resize(B * n);
  for (size_t k = 0; k < c.size(); ++k) d.raw[k] = s.wv ? c[k] / d.winv[s.j0 + k % n] : c[k];
  d.rows.fn.resize(B);
  d.rows.scale.resize(B);
  d.rows.target.resize(B);
  std::uniform_real_distribution<float> sc(1.0f, 64.0f);
  for (size_t i = 0; i < B; ++i) {
    d.rows.fn[i] = row_fn(s.rows, static_cast<int64_t>(i), rng);
    d.rows.scale[i] = s.rows == Rows::Softmax ? 1.0f : (i % 3 == 0 ? 64.0f : sc(rng));
    // ~60% in the chunk (the first and last columns and the tile edges included), the rest before or
    // after it, or −1.
    const uint64_t r = rng() % 20;
    int64_t t;
    if (r < 2) t = -1;
    else if (r < 4) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(s.classes));
    else if (r == 4) t = s.j0;
    else if (r == 5) t = s.j0 + s.n - 1;
    else if (r == 6) t = s.j0 + std::min<int64_t>(s.n - 1, 2047);
    else if (r == 7) t = s.j0 + std::min<int64_t>(s.n - 1, 2048);
    else t = s.j0 + static_cast<int64_t>(rng() % static_cast<uint64_t>(s.n));
    d.rows.target[i] = static_cast<int32_t>(t);
  }
  d.rowsum0.resize(B);
  for (auto& v : d.rowsum0) v = std::uniform_real_distribution<double>(-1, 1)(rng);
  d.dbias0 = uniform(rng, n, -1, 1);
  return d;
}

bool in_chunk(const ChunkSpec& s, int32_t t) { return t >= 0 && t - s.j0 >= 0 && t - s.j0 < s.n; }

// The backward inputs as the orchestration derives them, from the CPU forward's statistics.
void backward_inputs(const ChunkSpec& s, ChunkData& d, const ChunkRowStats& st) {
  const size_t B = static_cast<size_t>(s.B);
  d.row_max = st.max;
  d.inv_sum.resize(B);
  d.gscale.resize(B);
  d.target_g.assign(B, 0.0);
  for (size_t i = 0; i < B; ++i) {
    d.inv_sum[i] = static_cast<float>(1.0 / st.sum[i]);
    d.gscale[i] = static_cast<float>(static_cast<double>(d.rows.scale[i]) / static_cast<double>(s.B));
    if (!in_chunk(s, d.rows.target[i])) continue;
    const double p = std::exp(static_cast<double>(st.target_z[i]) - (st.max[i] + std::log(st.sum[i])));
    d.target_g[i] = static_cast<double>(d.rows.scale[i]) / s.B * (p - 1.0) * st.target_dpsi[i];
  }
}

ChunkResult run_cpu(Kernels& k, const ChunkSpec& s, ChunkData& d) {
  ChunkResult r;
  r.cb_fwd = d.raw;
  r.st = fresh_stats(s.B);
  k.forward_chunk(r.cb_fwd.data(), s.wv ? d.winv.data() + s.j0 : nullptr, s.bias ? d.bias.data() + s.j0 : nullptr,
                  s.B, s.n, s.j0, d.rows, d.cfg, r.st);
  backward_inputs(s, d, r.st);
  r.cb_bwd = r.cb_fwd;
  r.colsum.assign(static_cast<size_t>(s.n), 1e300);
  r.rowsum = d.rowsum0;
  r.dbias = d.dbias0;
  k.backward_chunk(r.cb_bwd.data(), s.wv ? d.winv.data() + s.j0 : nullptr, s.B, s.n, s.j0, d.rows, d.cfg,
                   d.row_max.data(), d.inv_sum.data(), d.gscale.data(), d.target_g.data(), r.colsum.data(),
                   r.rowsum.data(), s.dbias ? r.dbias.data() : nullptr, s.dbias == 1);
  return r;
}

// The GPU forward on d.raw and the backward on `cb_in` (the CPU forward's output, so both backends get
// the same backward input), with the chunk placed `offset` floats into its buffer.
ChunkResult run_gpu(Kernels& k, const ChunkSpec& s, const ChunkData& d, const std::vector<float>& cb_in,
                    size_t offset) {
  ChunkResult r;
  const size_t Bn = static_cast<size_t>(s.B * s.n);
  Dev<float> cb(Bn + offset), winv(d.winv), bias(d.bias), dbias(d.dbias0);
  Dev<double> colsum(std::vector<double>(static_cast<size_t>(s.n), 1e300));
  cb.put(d.raw, offset);
  r.st = fresh_stats(s.B);
  k.forward_chunk(cb.p() + offset, s.wv ? winv.p() + s.j0 : nullptr, s.bias ? bias.p() + s.j0 : nullptr, s.B, s.n,
                  s.j0, d.rows, d.cfg, r.st);
  r.cb_fwd = cb.get(offset, Bn);
  cb.put(cb_in, offset);
  r.rowsum = d.rowsum0;
  k.backward_chunk(cb.p() + offset, s.wv ? winv.p() + s.j0 : nullptr, s.B, s.n, s.j0, d.rows, d.cfg, d.row_max.data(),
                   d.inv_sum.data(), d.gscale.data(), d.target_g.data(), colsum.p(), r.rowsum.data(),
                   s.dbias ? dbias.p() : nullptr, s.dbias == 1);
  r.cb_bwd = cb.get(offset, Bn);
  r.colsum = colsum.get();
  r.dbias = dbias.get();
  return r;
}

void chunk_body(Env& e, Checks& ch, const ChunkSpec& s) {
  ChunkData d = make_chunk(s, e.rng);
  const ChunkResult c = run_cpu(*e.cpu, s, d);
  const ChunkResult g = run_gpu(*e.gpu, s, d, c.cb_fwd, 0);
  const size_t B = static_cast<size_t>(s.B), n = static_cast<size_t>(s.n);

  // ---- forward
  // c = raw·wv (+ bias), clamped: the same separately rounded float operations on both sides; 1 ulp of
  // |c| + |bias| leaves room for a contracted multiply-add on one side.
  std::vector<double> cscale(B * n);
  for (size_t k = 0; k < cscale.size(); ++k)
    cscale[k] = std::fabs(c.cb_fwd[k]) + (s.bias ? std::fabs(d.bias[s.j0 + k % n]) : 0.0);
  ch.close("forward c", g.cb_fwd, c.cb_fwd, 0.0, 2 * kU, &cscale);
  // The row max is one of the float logits s·c (exact products of equal c) or z_t: at most 1 ulp.
  ch.close("forward max", g.st.max, c.st.max, 0.0, 2 * kU);
  // Σexp: the same arguments z − max; expf (CUDA, <= 2 ulp) vs the CPU's polynomial (about 1 ulp), the
  // terms positive: 16u relative covers both plus the summation roundings.
  ch.close("forward sum", g.st.sum, c.st.sum, 0.0, 16 * kU);
  std::vector<uint8_t> hit(B), miss(B);
  for (size_t i = 0; i < B; ++i) hit[i] = in_chunk(s, d.rows.target[i]), miss[i] = !hit[i];
  std::vector<double> tscale(B);
  for (size_t i = 0; i < B; ++i) {
    const int64_t t = d.rows.target[i] - s.j0;
    tscale[i] = std::fabs(c.st.target_cos[i]) + (s.bias && hit[i] ? std::fabs(d.bias[s.j0 + t]) : 0.0);
  }
  ch.close("target_cos", g.st.target_cos, c.st.target_cos, 0.0, 2 * kU, &tscale, &hit);
  // ψ'(c_t) of the same c_t in double: only the device libm differs (acos, cos, sin <= 2 ulp in double),
  // so 1e-9 is a wide margin even where 1/sin θ is large near the clamp.
  ch.close("target_dpsi", g.st.target_dpsi, c.st.target_dpsi, 1e-9, 1e-9, nullptr, &hit);
  // z_t = float(s·ψ): ψ agrees to ~1e-15 relative, so the float rounding differs by at most 1 ulp.
  ch.close("target_z", g.st.target_z, c.st.target_z, 1e-30, 2 * kU, nullptr, &hit);
  std::vector<double> sent(B, kSentinel);
  ch.close("target_cos untouched", g.st.target_cos, sent, 0.0, 0.0, nullptr, &miss);
  ch.close("target_dpsi untouched", g.st.target_dpsi, sent, 0.0, 0.0, nullptr, &miss);
  ch.close("target_z untouched", g.st.target_z, sent, 0.0, 0.0, nullptr, &miss);

  // ---- backward (same inputs on both sides)
  // |G| bounds for the sum tolerances, in double from the formula (the clamp mask ignored: a bound).
  std::vector<double> gabs(B * n), colscale(n, 0.0), rowscale(B, 0.0), bscale(n, 0.0);
  for (size_t i = 0; i < B; ++i)
    for (size_t j = 0; j < n; ++j) {
      const float cij = c.cb_fwd[i * n + j];
      const bool tgt = hit[i] && static_cast<int64_t>(j) == d.rows.target[i] - s.j0;
      const double G = tgt ? std::fabs(d.target_g[i])
                           : std::exp(double(d.rows.scale[i] * cij) - d.row_max[i]) * d.inv_sum[i] * d.gscale[i];
      gabs[i * n + j] = G * (s.wv ? d.winv[s.j0 + j] : 1.0f);
      colscale[j] += G * std::fabs(cij);
      rowscale[i] += G * std::fabs(cij);
      bscale[j] += G;
    }
  // G = exp(z − max)·inv_sum·gscale, then ·wv: exp differs by <= 3 ulp (see sum), three products
  // rounded: 16u of |G·wv|. Below e^−87 the CPU's exp flushes to 0 while expf returns tiny values:
  // atol 1e-35 (> e^−87·64).
  ch.close("backward G·wv", g.cb_bwd, c.cb_bwd, 1e-35, 16 * kU, &gabs);
  // Σ_i G·c (double): each term within 16u of |G·c|, so the sum within 16u·Σ|G·c|.
  ch.close("colsum", g.colsum, c.colsum, 1e-300, 16 * kU, &colscale);
  // host_rowsum += Σ_j G·c: the same 16u·Σ|G·c|, plus the double rounding of the addition to the
  // previous value (rtol 1 below: the scale vectors are the tolerances themselves).
  std::vector<double> rtol(B);
  for (size_t i = 0; i < B; ++i) rtol[i] = 16 * kU * rowscale[i] + 4 * kUd * std::fabs(d.rowsum0[i]) + 1e-300;
  ch.close("host_rowsum +=", g.rowsum, c.rowsum, 0.0, 1.0, &rtol);
  if (s.dbias) {
    // The CPU sums Σ_i G in float in row order ((B + 1)u·Σ|G| at worst), the GPU in double (the terms
    // themselves within 16u); += rounds the sum with the previous value once more (2u of |dbias0|).
    std::vector<double> dtol(n);
    for (size_t j = 0; j < n; ++j)
      dtol[j] = (B + 17) * kU * bscale[j] + (s.dbias == 2 ? 2 * kU * std::fabs(d.dbias0[j]) : 0.0) + 1e-30;
    ch.close(s.dbias == 1 ? "dbias =" : "dbias +=", g.dbias, c.dbias, 0.0, 1.0, &dtol);
  } else {
    ch.same("dbias untouched", g.dbias, d.dbias0);
  }

  // ---- determinism: a rerun and the scalar path (misaligned chunk) give the same bits
  for (size_t offset : {size_t(0), size_t(1)}) {
    const ChunkResult h = run_gpu(*e.gpu, s, d, c.cb_fwd, offset);
    const std::string tag = offset ? " (misaligned rerun)" : " (rerun)";
    ch.same("forward c" + tag, h.cb_fwd, g.cb_fwd);
    ch.same("forward max" + tag, h.st.max, g.st.max);
    ch.same("forward sum" + tag, h.st.sum, g.st.sum);
    ch.same("target_z" + tag, h.st.target_z, g.st.target_z);
    ch.same("target_dpsi" + tag, h.st.target_dpsi, g.st.target_dpsi);
    ch.same("backward G·wv" + tag, h.cb_bwd, g.cb_bwd);
    ch.same("colsum" + tag, h.colsum, g.colsum);
    ch.same("host_rowsum" + tag, h.rowsum, g.rowsum);
    ch.same("dbias" + tag, h.dbias, g.dbias);
  }
}

// ---- perf: the element passes at the production shape

class ChunkPerfCase : public OpCase {
 public:
  std::string op() const override { return "head_kernels"; }
  std::string params() const override { return "perf forward_chunk+backward_chunk B=512 n=131072 cuda"; }
  bool uses_cuda() const override { return true; }
  CaseResult perf(Context& ctx) override {
    if (!ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    const ChunkSpec s{"perf", 512, 131072, 0, 131072, false, false, false, Rows::Mixed, 0};  // raw = c
    auto rng = make_rng(ctx, params());
    ChunkData d = make_chunk(s, rng);
    std::unique_ptr<Kernels> k = heads::make_cuda_kernels(Device::cuda(kDev), GemmPrecision::F32);
    // wv = 1: the pass reads and applies it as usual, and the repeated in-place forwards leave c unchanged.
    Dev<float> cb(d.raw), winv(std::vector<float>(static_cast<size_t>(s.n), 1.0f));
    Dev<double> colsum(static_cast<size_t>(s.n));
    ChunkRowStats st = fresh_stats(s.B);
    k->forward_chunk(cb.p(), winv.p(), nullptr, s.B, s.n, 0, d.rows, d.cfg, st);
    backward_inputs(s, d, st);
    std::vector<double> rowsum(static_cast<size_t>(s.B), 0.0);
    // Both passes end with a synchronous copy of their host results, so wall time is device time.
    const double tf =
        median_seconds([&] { k->forward_chunk(cb.p(), winv.p(), nullptr, s.B, s.n, 0, d.rows, d.cfg, st); }, 2, 10);
    const double tb = median_seconds([&] {
      k->backward_chunk(cb.p(), winv.p(), s.B, s.n, 0, d.rows, d.cfg, d.row_max.data(), d.inv_sum.data(),
                        d.gscale.data(), d.target_g.data(), colsum.p(), rowsum.data(), nullptr, true);
    }, 2, 10);
    const double bytes = 2.0 * 4.0 * s.B * s.n;  // each pass reads and writes the chunk once
    CaseResult r;
    r.detail = "forward " + fmtd("%.1f us", tf * 1e6) + " (" + fmtd("%.0f GB/s", bytes / tf / 1e9) + "), backward " +
               fmtd("%.1f us", tb * 1e6) + " (" + fmtd("%.0f GB/s", bytes / tb / 1e9) + ")";
    r.figures = {{"forward_s", tf}, {"backward_s", tb}, {"forward_gbps", bytes / tf / 1e9},
                 {"backward_gbps", bytes / tb / 1e9}};
    return r;
  }
};

// ---- without a device

class UnavailableCase : public OpCase {
 public:
  std::string op() const override { return "head_kernels"; }
  std::string params() const override { return "unavailable"; }
  bool uses_cuda() const override { return true; }
  CaseResult test(Context& ctx) override {
    if (ctx.cuda_available) return CaseResult::skip("a CUDA device is available: the other cases cover it");
    CaseResult r;
    try {
      heads::make_cuda_kernels(Device::cuda(kDev), GemmPrecision::F32);
      r.status = CaseResult::Fail;
      r.detail = "make_cuda_kernels returned without a usable device";
    } catch (const Error& e) {
      if (e.code() != Code::CudaUnavailable) {
        r.status = CaseResult::Fail;
        r.detail = str("expected CUDA_UNAVAILABLE but got ", code_name(e.code()), ": ", e.what());
      } else {
        r.detail = str("CUDA_UNAVAILABLE: ", e.what());
      }
    }
    return r;
  }
};

std::vector<std::unique_ptr<OpCase>> make_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  auto add = [&](const std::string& name, Body b) { v.push_back(std::make_unique<KernelsCase>(name, std::move(b))); };
  v.push_back(std::make_unique<UnavailableCase>());
  add("row_norms rows=300 D=512 vhat", [](Env& e, Checks& c) { row_norms_body(e, c, 300, 512, true); });
  add("row_norms rows=37 D=130 vhat", [](Env& e, Checks& c) { row_norms_body(e, c, 37, 130, true); });
  add("row_norms rows=1000 D=64 no-vhat", [](Env& e, Checks& c) { row_norms_body(e, c, 1000, 64, false); });
  add("gemm tA=0 tB=1", [](Env& e, Checks& c) { gemm_body(e, c, false, true); });
  add("gemm tA=1 tB=0", [](Env& e, Checks& c) { gemm_body(e, c, true, false); });
  add("gather/scatter/fill/add/scale_copy D=512", [](Env& e, Checks& c) { copy_passes_body(e, c, 512); });
  add("gather/scatter/fill/add/scale_copy D=37", [](Env& e, Checks& c) { copy_passes_body(e, c, 37); });
  add("scale_columns B=23 n=1003", [](Env& e, Checks& c) { scale_columns_body(e, c); });
  add("dx_final B=64 D=512", [](Env& e, Checks& c) { dx_final_body(e, c, 64, 512); });
  add("dx_final B=9 D=61", [](Env& e, Checks& c) { dx_final_body(e, c, 9, 61); });
  add("weight_grad_project n=700 D=512", [](Env& e, Checks& c) { weight_grad_project_body(e, c, 700, 512); });
  add("weight_grad_project n=33 D=130", [](Env& e, Checks& c) { weight_grad_project_body(e, c, 33, 130); });
  add("target_cosines K=1", [](Env& e, Checks& c) { target_cosines_body(e, c, 1); });
  add("target_cosines K=3", [](Env& e, Checks& c) { target_cosines_body(e, c, 3); });
  add("center_diff+center_update", [](Env& e, Checks& c) { center_body(e, c); });
  add("subcenter K=3 B=19 n=57 ties", [](Env& e, Checks& c) { subcenter_body(e, c, 19, 57, 3); });
  add("subcenter K=2 B=64 n=1000 ties", [](Env& e, Checks& c) { subcenter_body(e, c, 64, 1000, 2); });
  const std::vector<ChunkSpec> chunks = {
      {"mixed kinds B=64 n=1000 j0=0 wv (float4)", 64, 1000, 0, 1300, true, false, false, Rows::Mixed, 0},
      {"mixed kinds B=300 n=6144 j0=4096 wv (3 tiles)", 300, 6144, 4096, 12000, true, false, false, Rows::Mixed, 0},
      {"ada clamp_all B=33 n=4099 j0=517 wv (scalar, ragged)", 33, 4099, 517, 5000, true, false, true, Rows::Ada, 0},
      {"ada clamp_all B=40 n=2048 j0=0 wv=null", 40, 2048, 0, 2048, false, false, true, Rows::Ada, 0},
      {"softmax bias wv=null B=7 n=3 j0=2 dbias=", 7, 3, 2, 9, false, true, false, Rows::Softmax, 1},
      {"softmax bias wv=null B=50 n=2500 j0=100 dbias+=", 50, 2500, 100, 3000, false, true, false, Rows::Softmax, 2},
      {"bias+clamp+wv B=17 n=4100 j0=8 dbias=", 17, 4100, 8, 4200, true, true, true, Rows::Mixed, 1},
      {"single column B=5 n=1 j0=3", 5, 1, 3, 6, true, false, false, Rows::Mixed, 0},
  };
  for (const ChunkSpec& s : chunks) add("chunk " + s.name, [s](Env& e, Checks& c) { chunk_body(e, c, s); });
  v.push_back(std::make_unique<ChunkPerfCase>());
  return v;
}

}  // namespace

FC_REGISTER_CASES(head_kernels, make_cases);

}  // namespace test
}  // namespace fc
