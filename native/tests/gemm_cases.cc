// @file gemm_cases.cc
// @brief Harness cases for fc::sgemm (native/src/cpu/gemm.cc).
//
//   test  every transpose combination over shapes with 0, 1, odd, prime and large sizes (crossing
//         the kc / mc / nc blocks and the GEMV path), alpha/beta including beta == 0 over a NaN-filled
//         C (write-only) and alpha == 0 / K == 0, leading dimensions with sentinel-filled padding that
//         must stay untouched; each SIMD level forced (avx512, avx2, portable); bf16 against a float64
//         reference on bf16-rounded inputs; determinism (run to run, 1 thread vs all); invalid
//         arguments; and, with a usable CUDA device, fc::cuda::sgemm against fc::sgemm.
//   grad  dA, dB of L = sum(G o op(A) op(B)), computed with fc::sgemm, against float64 central
//         finite differences of L.
//   perf  median GFLOP/s for square, face-head and im2col-shaped GEMMs.
//
// The reference is an independent float64 triple loop over the float inputs (no code shared with
// the kernels; bf16 rounding re-derived with frexp/nearbyint).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cpu/gemm_internal.h"
#include "facecuda/cpu_info.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

using gemm::Level;

constexpr double kU = 1.0 / 16777216.0;  // fp32 unit roundoff, 2^-24
constexpr int64_t kGuard = 67;           // sentinel floats after each buffer (catches overruns)
constexpr uint32_t kSentinelBits = 0x7fc0deadu;  // a NaN with a payload: if read into a result, it shows

float sentinel() {
  float f;
  std::memcpy(&f, &kSentinelBits, 4);
  return f;
}

bool is_sentinel(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u == kSentinelBits;
}

const char* level_name(int level) {
  return level == 2 ? "avx512" : level == 1 ? "avx2" : level == 0 ? "portable" : "auto";
}

// bf16 round-to-nearest-even re-derived in double: keep 8 significant bits.
float round_bf16_ref(float x) {
  if (!std::isfinite(x) || x == 0.0f) return x;
  int e = 0;
  const double m = std::frexp(static_cast<double>(x), &e);  // |m| in [0.5, 1)
  return static_cast<float>(std::ldexp(std::nearbyint(std::ldexp(m, 8)), e - 8));
}

// fp16 round-to-nearest-even re-derived in double: 11 significant bits for normal values, a fixed
// quantum of 2^-24 below 2^-14 (subnormals), ±Inf from 65520 (the midpoint above 65504) up.
float round_f16_ref(float x) {
  if (!std::isfinite(x) || x == 0.0f) return x;
  const double ax = std::fabs(static_cast<double>(x));
  double r;
  if (ax < std::ldexp(1.0, -14)) {
    r = std::nearbyint(ax * std::ldexp(1.0, 24)) * std::ldexp(1.0, -24);
  } else {
    int e = 0;
    const double m = std::frexp(ax, &e);
    r = std::ldexp(std::nearbyint(std::ldexp(m, 11)), e - 11);
  }
  if (r > 65504.0) r = HUGE_VAL;
  return static_cast<float>(std::copysign(r, static_cast<double>(x)));
}

// A row-major rows x cols matrix with leading dimension ld, its padding (columns >= cols) and a
// guard tail filled with the sentinel.
struct Mat {
  int64_t rows = 0, cols = 0, ld = 1;
  std::vector<float> v;
  float& at(int64_t i, int64_t j) { return v[static_cast<size_t>(i * ld + j)]; }
  float at(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * ld + j)]; }
  float* data() { return v.empty() ? nullptr : v.data(); }
  const float* data() const { return v.empty() ? nullptr : v.data(); }
};

Mat make_mat(std::mt19937_64& rng, int64_t rows, int64_t cols, int64_t pad, bool fill_nan = false) {
  Mat m;
  m.rows = rows;
  m.cols = cols;
  m.ld = std::max<int64_t>(1, cols + pad);
  m.v.assign(static_cast<size_t>(rows * m.ld + kGuard), sentinel());
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) m.at(i, j) = fill_nan ? std::nanf("") : d(rng);
  return m;
}

// Number of padding/guard entries that no longer hold the sentinel.
size_t padding_damage(const Mat& m) {
  size_t bad = 0;
  for (size_t e = 0; e < m.v.size(); ++e) {
    const int64_t i = static_cast<int64_t>(e) / m.ld, j = static_cast<int64_t>(e) % m.ld;
    const bool inside = i < m.rows && j < m.cols;
    if (!inside && !is_sentinel(m.v[e])) ++bad;
  }
  return bad;
}

// op(X) as a dense double matrix (rows x cols), optionally bf16- or fp16-rounded (prec 1 / 3).
std::vector<double> dense_op(const Mat& x, bool trans, int64_t rows, int64_t cols, int prec) {
  std::vector<double> d(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float f = trans ? x.at(j, i) : x.at(i, j);
      d[static_cast<size_t>(i * cols + j)] = prec == 1 ? round_bf16_ref(f) : prec == 3 ? round_f16_ref(f) : f;
    }
  return d;
}

struct Reference {
  std::vector<double> val;    // alpha * op(A) op(B) + beta * C0 (C0 ignored when beta == 0)
  std::vector<double> scale;  // |alpha| (|op(A)| |op(B)|) + |beta C0|: the magnitude rounding errors scale with
};

Reference reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B,
                    float beta, const Mat& C0, int prec) {
  const std::vector<double> a = dense_op(A, ta, M, K, prec), b = dense_op(B, tb, K, N, prec);
  Reference r;
  r.val.assign(static_cast<size_t>(M * N), 0.0);
  r.scale.assign(static_cast<size_t>(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i) {
    double* v = r.val.data() + i * N;  // data(): the vectors are empty when N == 0
    double* s = r.scale.data() + i * N;
    for (int64_t k = 0; k < K; ++k) {
      const double aik = a[static_cast<size_t>(i * K + k)];
      const double* bk = b.data() + k * N;
      for (int64_t j = 0; j < N; ++j) {
        v[j] += aik * bk[j];
        s[j] += std::fabs(aik * bk[j]);
      }
    }
    for (int64_t j = 0; j < N; ++j) {
      v[j] *= alpha;
      s[j] *= std::fabs(alpha);
      if (beta != 0.0f) {
        v[j] += static_cast<double>(beta) * C0.at(i, j);
        s[j] += std::fabs(static_cast<double>(beta) * C0.at(i, j));
      }
    }
  }
  return r;
}

// fp32 rounding bound: each C element is one chain of K multiply-adds (fused on AVX2/AVX-512,
// separate on the portable kernel: 2 roundings per term; VDPBF16PS: 2 per pair), plus one alpha/beta
// update per kc block, so |got - ref| <= n u scale with n <= 2K + blocks + 2 (Higham's gamma_n;
// blocks <= 8 here). Hence (2K + 16) u, relative to scale. The 1e-30 absolute floor covers exact
// zeros (K == 0 or alpha == 0 with beta == 0). A single lost or doubled term (~scale / K) still
// exceeds this for every K used here (K < 4000).
struct Check {
  size_t faults = 0, worst = 0;
  double max_rel = 0;  // max |got - ref| / scale
};

Check check_result(const Mat& C, const Reference& ref, int64_t M, int64_t N, int64_t K) {
  Check c;
  const double factor = (2.0 * static_cast<double>(K) + 16.0) * kU;
  double worst_ratio = -1;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const size_t e = static_cast<size_t>(i * N + j);
      const double got = C.at(i, j), want = ref.val[e], scale = ref.scale[e];
      const double err = std::fabs(got - want);
      const double tol = factor * scale + 1e-30;
      if (!(err <= tol)) ++c.faults;
      const double rel = scale > 0 ? err / scale : err;
      if (!(rel <= c.max_rel)) c.max_rel = std::isnan(rel) ? HUGE_VAL : std::max(c.max_rel, rel);
      const double ratio = std::isnan(err) ? HUGE_VAL : err / tol;
      if (ratio > worst_ratio) worst_ratio = ratio, c.worst = e;
    }
  return c;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---- accuracy cases

struct Spec {
  int64_t M, N, K;
  bool ta, tb;
  float alpha, beta;
  int64_t pad;            // extra leading-dimension entries (sentinel-filled)
  int level = -1;         // -1: fc::sgemm's own dispatch; else gemm::sgemm_level with this level
  bool bf16 = false;
  bool f16 = false;       // fp16-rounded operands (the emulation of CUDA's fp16 tensor-core GEMM)
  int threads = 0;        // GemmOptions::max_threads
};

void run_spec(const Spec& s, const Mat& A, const Mat& B, Mat& C, int threads) {
  GemmOptions o;
  o.precision = s.bf16 ? GemmPrecision::BF16 : s.f16 ? GemmPrecision::F16 : GemmPrecision::F32;
  o.max_threads = threads;
  if (s.level < 0) {
    sgemm(s.ta, s.tb, s.M, s.N, s.K, s.alpha, A.data(), A.ld, B.data(), B.ld, s.beta, C.data(), C.ld, o);
  } else {
    gemm::sgemm_level(static_cast<Level>(s.level), s.ta, s.tb, s.M, s.N, s.K, s.alpha, A.data(), A.ld, B.data(), B.ld,
                      s.beta, C.data(), C.ld, static_cast<int>(o.precision), threads);
  }
}

std::string level_skip_reason(int level) {
  if (level >= 0 && !gemm::kernels_for(static_cast<Level>(level)))
    return std::string("this CPU cannot run the ") + level_name(level) + " kernels";
  return "";
}

class GemmCase : public OpCase {
 public:
  explicit GemmCase(Spec s) : s_(s) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    char b[256];
    std::snprintf(b, sizeof b, "M=%lld N=%lld K=%lld tA=%d tB=%d alpha=%g beta=%g pad=%lld", (long long)s_.M,
                  (long long)s_.N, (long long)s_.K, s_.ta, s_.tb, s_.alpha, s_.beta, (long long)s_.pad);
    std::string p = b;
    if (s_.bf16) p += " prec=bf16";
    if (s_.f16) p += " prec=f16";
    if (s_.level >= 0) p += std::string(" simd=") + level_name(s_.level);
    if (s_.threads) p += " threads=" + std::to_string(s_.threads);
    return p;
  }

  CaseResult test(Context& ctx) override {
    const std::string why = level_skip_reason(s_.level);
    if (!why.empty()) return CaseResult::skip(why);
    auto rng = make_rng(ctx, params());
    const Mat A = s_.ta ? make_mat(rng, s_.K, s_.M, s_.pad) : make_mat(rng, s_.M, s_.K, s_.pad);
    const Mat B = s_.tb ? make_mat(rng, s_.N, s_.K, s_.pad) : make_mat(rng, s_.K, s_.N, s_.pad);
    // beta == 0: C starts as NaN, which must not reach the result (C is write-only).
    Mat C = make_mat(rng, s_.M, s_.N, s_.pad, s_.beta == 0.0f);
    const Mat C0 = C;
    run_spec(s_, A, B, C, s_.threads);
    CaseResult r;
    const size_t damage = padding_damage(C);
    const Reference ref =
        reference(s_.ta, s_.tb, s_.M, s_.N, s_.K, s_.alpha, A, B, s_.beta, C0, s_.bf16 ? 1 : s_.f16 ? 3 : 0);
    const Check c = check_result(C, ref, s_.M, s_.N, s_.K);
    r.detail = "max_rel=" + fmt("%.3g", c.max_rel) + " tol=" + fmt("%.3g", (2.0 * s_.K + 16) * kU);
    r.figures = {{"max_rel_err", c.max_rel}};
    if (damage) {
      r.status = CaseResult::Fail;
      r.detail += " padding/guard entries of C overwritten: " + std::to_string(damage);
    }
    if (c.faults) {
      r.status = CaseResult::Fail;
      const int64_t i = static_cast<int64_t>(c.worst) / std::max<int64_t>(1, s_.N),
                    j = static_cast<int64_t>(c.worst) % std::max<int64_t>(1, s_.N);
      r.detail += " faults=" + std::to_string(c.faults) + " worst C(" + std::to_string(i) + "," + std::to_string(j) +
                  ") got=" + fmt("%.9g", C.at(i, j)) + " ref=" + fmt("%.9g", ref.val[c.worst]) +
                  " scale=" + fmt("%.3g", ref.scale[c.worst]);
    }
    return r;
  }

 private:
  Spec s_;
};

// ---- fp16 rounding of the emulated F16 GEMM: edge values and random magnitudes over the whole
// fp16 range (subnormals, the overflow threshold) against round_f16_ref, and a 1x1x1 GEMM whose
// operand overflows to Inf.

class F16RoundCase : public OpCase {
 public:
  std::string op() const override { return "gemm"; }
  std::string params() const override { return "f16 rounding edges"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    std::vector<float> xs = {65504.0f, 65519.99f, 65520.0f, 70000.0f, -65520.0f, 1.0f + 1.0f / 2048.0f,
                             1.0f + 3.0f / 2048.0f, std::ldexp(1.0f, -14), std::ldexp(1.0f, -24),
                             std::ldexp(1.0f, -25), std::ldexp(3.0f, -26), std::ldexp(1.0f, -26), -1e-9f, 6.1e-5f};
    std::uniform_real_distribution<double> ex(-28.0, 17.0), sg(-1.0, 1.0);
    for (int i = 0; i < 20000; ++i) xs.push_back(static_cast<float>(std::copysign(std::exp2(ex(rng)), sg(rng))));
    CaseResult r;
    size_t bad = 0;
    for (float x : xs) {
      const float got = gemm::round_to_f16(x), want = round_f16_ref(x);
      if (!(got == want || (std::isnan(got) && std::isnan(want)))) {
        if (bad++ == 0) r.detail = "x=" + fmt("%.9g", x) + " got=" + fmt("%.9g", got) + " want=" + fmt("%.9g", want);
      }
    }
    // An operand above 65504 becomes Inf inside the GEMM: 1x1x1 C = 70000·1.
    float a = 70000.0f, b = 1.0f, c = 0.0f;
    GemmOptions o;
    o.precision = GemmPrecision::F16;
    sgemm(false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1, o);
    const bool inf_ok = std::isinf(c) && c > 0;
    if (bad || !inf_ok) {
      r.status = CaseResult::Fail;
      r.detail += " mismatches=" + std::to_string(bad) + (inf_ok ? "" : " overflowing operand gave C=" + fmt("%g", c));
    } else {
      r.detail = std::to_string(xs.size()) + " values match";
    }
    return r;
  }
};

// ---- determinism: bitwise equal run to run, and for 1 thread vs all threads

class GemmDeterminismCase : public OpCase {
 public:
  explicit GemmDeterminismCase(Spec s) : s_(s) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    char b[160];
    std::snprintf(b, sizeof b, "determinism M=%lld N=%lld K=%lld tA=%d tB=%d%s", (long long)s_.M, (long long)s_.N,
                  (long long)s_.K, s_.ta, s_.tb, s_.bf16 ? " prec=bf16" : "");
    return b;
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Mat A = s_.ta ? make_mat(rng, s_.K, s_.M, 0) : make_mat(rng, s_.M, s_.K, 0);
    const Mat B = s_.tb ? make_mat(rng, s_.N, s_.K, 0) : make_mat(rng, s_.K, s_.N, 0);
    const int T = ThreadPool::global().threads_for(0);
    Mat c1 = make_mat(rng, s_.M, s_.N, 0, true), c2 = c1, c3 = c1;
    run_spec(s_, A, B, c1, 0);
    run_spec(s_, A, B, c2, 0);
    run_spec(s_, A, B, c3, 1);
    const size_t bytes = c1.v.size() * sizeof(float);
    const bool same_runs = std::memcmp(c1.v.data(), c2.v.data(), bytes) == 0;
    const bool same_threads = std::memcmp(c1.v.data(), c3.v.data(), bytes) == 0;
    CaseResult r;
    r.detail = std::string("run-to-run at threads=") + std::to_string(T) + ": " + (same_runs ? "bitwise equal" : "DIFFER") +
               "; threads=1 vs " + std::to_string(T) + ": " + (same_threads ? "bitwise equal" : "DIFFER");
    if (T == 1) r.detail += " (pool has 1 thread)";
    if (!same_runs || !same_threads) r.status = CaseResult::Fail;
    return r;
  }

 private:
  Spec s_;
};

// ---- CUDA (cuBLAS through fc::cuda::sgemm) against the CPU result on the same inputs

struct DeviceBuffer {
  int device = 0;
  void* p = nullptr;
  DeviceBuffer(int dev, size_t bytes) : device(dev), p(cuda::device_alloc(dev, bytes)) {}
  ~DeviceBuffer() {
    if (p) cuda::device_free(device, p);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

class GemmCudaCase : public OpCase {
 public:
  GemmCudaCase(Spec s, cuda::MathMode mode) : s_(s), mode_(mode) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    char b[200];
    std::snprintf(b, sizeof b, "cuda-vs-cpu M=%lld N=%lld K=%lld tA=%d tB=%d alpha=%g beta=%g pad=%lld math=%s",
                  (long long)s_.M, (long long)s_.N, (long long)s_.K, s_.ta, s_.tb, s_.alpha, s_.beta, (long long)s_.pad,
                  mode_ == cuda::MathMode::TF32 ? "tf32" : "f32");
    return b;
  }
  bool uses_cuda() const override { return true; }
  CaseResult test(Context& ctx) override {
    if (!ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    auto rng = make_rng(ctx, params());
    const Mat A = s_.ta ? make_mat(rng, s_.K, s_.M, s_.pad) : make_mat(rng, s_.M, s_.K, s_.pad);
    const Mat B = s_.tb ? make_mat(rng, s_.N, s_.K, s_.pad) : make_mat(rng, s_.K, s_.N, s_.pad);
    const Mat C0 = make_mat(rng, s_.M, s_.N, s_.pad);
    Mat ccpu = C0, cgpu = C0;
    run_spec(s_, A, B, ccpu, 0);
    {
      const int dev = 0;
      DeviceBuffer da(dev, A.v.size() * 4), db(dev, B.v.size() * 4), dc(dev, C0.v.size() * 4);
      cuda::copy_h2d(dev, da.p, A.v.data(), A.v.size() * 4);
      cuda::copy_h2d(dev, db.p, B.v.data(), B.v.size() * 4);
      cuda::copy_h2d(dev, dc.p, C0.v.data(), C0.v.size() * 4);
      cuda::sgemm(dev, s_.ta, s_.tb, s_.M, s_.N, s_.K, s_.alpha, static_cast<const float*>(da.p), A.ld,
                  static_cast<const float*>(db.p), B.ld, s_.beta, static_cast<float*>(dc.p), C0.ld, mode_);
      cuda::copy_d2h(dev, cgpu.v.data(), dc.p, C0.v.size() * 4);
      cuda::synchronize(dev);
    }
    const Reference ref = reference(s_.ta, s_.tb, s_.M, s_.N, s_.K, s_.alpha, A, B, s_.beta, C0, false);
    // Both sides are within (2K + 16) u scale of the exact result (see check_result), so they are
    // within twice that of each other. TF32 rounds both inputs to 10 explicit mantissa bits: each
    // product is off by <= 2 * 2^-11 relative, i.e. up to 2^-10 scale in all.
    const double factor = 2.0 * (2.0 * s_.K + 16) * kU + (mode_ == cuda::MathMode::TF32 ? std::ldexp(1.0, -10) : 0.0);
    size_t faults = 0, worst = 0;
    double max_rel = 0, worst_ratio = -1;
    for (int64_t i = 0; i < s_.M; ++i)
      for (int64_t j = 0; j < s_.N; ++j) {
        const size_t e = static_cast<size_t>(i * s_.N + j);
        const double err = std::fabs(static_cast<double>(cgpu.at(i, j)) - ccpu.at(i, j));
        const double tol = factor * ref.scale[e] + 1e-30;
        if (!(err <= tol)) ++faults;
        max_rel = std::max(max_rel, ref.scale[e] > 0 ? err / ref.scale[e] : err);
        if (!(err / tol <= worst_ratio)) worst_ratio = err / tol, worst = e;
      }
    CaseResult r;
    r.detail = "max_rel=" + fmt("%.3g", max_rel) + " tol=" + fmt("%.3g", factor);
    r.figures = {{"max_rel_err", max_rel}};
    const size_t damage = padding_damage(cgpu);
    if (damage) {
      r.status = CaseResult::Fail;
      r.detail += " padding/guard entries of C overwritten on the device: " + std::to_string(damage);
    }
    if (faults) {
      r.status = CaseResult::Fail;
      r.detail += " faults=" + std::to_string(faults) + " worst@" + std::to_string(worst);
    }
    return r;
  }

 private:
  Spec s_;
  cuda::MathMode mode_;
};

// ---- invalid arguments: fc::Error with Code::InvalidArgument and a message naming the argument

class GemmInvalidCase : public OpCase {
 public:
  GemmInvalidCase(std::string name, std::string expect, std::function<void()> fn)
      : name_(std::move(name)), expect_(std::move(expect)), fn_(std::move(fn)) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override { return "invalid " + name_; }
  CaseResult test(Context&) override {
    CaseResult r;
    try {
      fn_();
      r.status = CaseResult::Fail;
      r.detail = "did not throw";
    } catch (const Error& e) {
      const std::string msg = e.what();
      r.detail = std::string(code_name(e.code())) + ": " + msg;
      if (e.code() != Code::InvalidArgument || msg.find(expect_) == std::string::npos) {
        r.status = CaseResult::Fail;
        r.detail += " (expected INVALID_ARGUMENT containing \"" + expect_ + "\")";
      }
    }
    return r;
  }

 private:
  std::string name_, expect_;
  std::function<void()> fn_;
};

// ---- grad: L = sum_ij G_ij C_ij, C = op(A) op(B)

class GemmGradCase : public OpCase {
 public:
  GemmGradCase(int64_t M, int64_t N, int64_t K, bool ta, bool tb) : M_(M), N_(N), K_(K), ta_(ta), tb_(tb) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    char b[128];
    std::snprintf(b, sizeof b, "grad M=%lld N=%lld K=%lld tA=%d tB=%d", (long long)M_, (long long)N_, (long long)K_,
                  ta_, tb_);
    return b;
  }
  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t M = M_, N = N_, K = K_;
    const Mat A = ta_ ? make_mat(rng, K, M, 0) : make_mat(rng, M, K, 0);
    const Mat B = tb_ ? make_mat(rng, N, K, 0) : make_mat(rng, K, N, 0);
    const Mat G = make_mat(rng, M, N, 0);
    // Analytic, with fc::sgemm: d op(A) = G op(B)^T (M x K), d op(B) = op(A)^T G (K x N); stored
    // transposed when the operand is.
    Mat dA = ta_ ? make_mat(rng, K, M, 0, true) : make_mat(rng, M, K, 0, true);
    Mat dB = tb_ ? make_mat(rng, N, K, 0, true) : make_mat(rng, K, N, 0, true);
    if (!ta_) {
      sgemm(false, !tb_, M, K, N, 1.0f, G.data(), G.ld, B.data(), B.ld, 0.0f, dA.data(), dA.ld);  // G op(B)^T
    } else {
      sgemm(tb_, true, K, M, N, 1.0f, B.data(), B.ld, G.data(), G.ld, 0.0f, dA.data(), dA.ld);  // op(B) G^T
    }
    if (!tb_) {
      sgemm(!ta_, false, K, N, M, 1.0f, A.data(), A.ld, G.data(), G.ld, 0.0f, dB.data(), dB.ld);  // op(A)^T G
    } else {
      sgemm(true, ta_, N, K, M, 1.0f, G.data(), G.ld, A.data(), A.ld, 0.0f, dB.data(), dB.ld);  // G^T op(A)
    }
    // L in float64 from float64 copies of the stored operands (entry (r, c) at r * cols + c).
    auto to_double = [](const Mat& m) {
      std::vector<double> d(static_cast<size_t>(m.rows * m.cols));
      for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t c = 0; c < m.cols; ++c) d[static_cast<size_t>(r * m.cols + c)] = m.at(r, c);
      return d;
    };
    std::vector<double> a = to_double(A), b = to_double(B);
    auto loss = [&] {
      double L = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double c = 0;
          for (int64_t k = 0; k < K; ++k)
            c += a[static_cast<size_t>(ta_ ? k * M + i : i * K + k)] * b[static_cast<size_t>(tb_ ? j * K + k : k * N + j)];
          L += static_cast<double>(G.at(i, j)) * c;
        }
      return L;
    };
    // Central differences: L is linear in each single entry, so the quotient is exact for any h up
    // to float64 rounding of L (~1e-16 * sum |terms| / h < 1e-12 for these shapes and h = 0.25).
    const double h = 0.25;
    size_t faults = 0;
    double max_err = 0;
    std::string worst;
    auto check = [&](std::vector<double>& x, const Mat& dx, const char* name, int64_t inner,
                     const std::function<double(int64_t, int64_t)>& scale) {
      for (int64_t r = 0; r < dx.rows; ++r)
        for (int64_t c = 0; c < dx.cols; ++c) {
          double& e = x[static_cast<size_t>(r * dx.cols + c)];
          const double keep = e;
          e = keep + h;
          const double lp = loss();
          e = keep - h;
          const double lm = loss();
          e = keep;
          const double fd = (lp - lm) / (2.0 * h);
          // The analytic value is an fp32 sgemm over `inner` terms: (2 inner + 16) u relative to
          // sum |terms| (see check_result), plus 1e-9 for the float64 difference quotient.
          const double tol = (2.0 * inner + 16) * kU * scale(r, c) + 1e-9;
          const double err = std::fabs(dx.at(r, c) - fd);
          if (!(err <= tol)) {
            if (!faults) worst = std::string(name) + "(" + std::to_string(r) + "," + std::to_string(c) + ") got=" +
                                 fmt("%.9g", dx.at(r, c)) + " fd=" + fmt("%.9g", fd);
            ++faults;
          }
          max_err = std::max(max_err, err);
        }
    };
    auto opA = [&](int64_t i, int64_t k) { return static_cast<double>(ta_ ? A.at(k, i) : A.at(i, k)); };
    auto opB = [&](int64_t k, int64_t j) { return static_cast<double>(tb_ ? B.at(j, k) : B.at(k, j)); };
    check(a, dA, "dA", N, [&](int64_t r, int64_t c) {
      const int64_t i = ta_ ? c : r, k = ta_ ? r : c;
      double s = 0;
      for (int64_t j = 0; j < N; ++j) s += std::fabs(G.at(i, j) * opB(k, j));
      return s;
    });
    check(b, dB, "dB", M, [&](int64_t r, int64_t c) {
      const int64_t k = tb_ ? c : r, j = tb_ ? r : c;
      double s = 0;
      for (int64_t i = 0; i < M; ++i) s += std::fabs(opA(i, k) * G.at(i, j));
      return s;
    });
    CaseResult res;
    res.detail = "max_abs_err=" + fmt("%.3g", max_err);
    res.figures = {{"max_abs_err", max_err}};
    if (faults) {
      res.status = CaseResult::Fail;
      res.detail += " faults=" + std::to_string(faults) + " first " + worst;
    }
    return res;
  }

 private:
  int64_t M_, N_, K_;
  bool ta_, tb_;
};

// ---- perf

class GemmPerfCase : public OpCase {
 public:
  GemmPerfCase(Spec s, std::string label) : s_(s), label_(std::move(label)) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    char b[200];
    std::snprintf(b, sizeof b, "perf %s M=%lld N=%lld K=%lld tA=%d tB=%d%s threads=%s", label_.c_str(),
                  (long long)s_.M, (long long)s_.N, (long long)s_.K, s_.ta, s_.tb, s_.bf16 ? " prec=bf16" : "",
                  s_.threads ? std::to_string(s_.threads).c_str() : "all");
    return b;
  }
  CaseResult perf(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Mat A = s_.ta ? make_mat(rng, s_.K, s_.M, 0) : make_mat(rng, s_.M, s_.K, 0);
    const Mat B = s_.tb ? make_mat(rng, s_.N, s_.K, 0) : make_mat(rng, s_.K, s_.N, 0);
    Mat C = make_mat(rng, s_.M, s_.N, 0);
    const double flops = 2.0 * s_.M * s_.N * s_.K;
    auto fn = [&] { run_spec(s_, A, B, C, s_.threads); };
    // ~0.5 s of repetitions after a first timed call.
    const double once = median_seconds(fn, 1, 1);
    const int reps = static_cast<int>(std::max(3.0, std::min(200.0, 0.5 / std::max(once, 1e-6))));
    const double t = median_seconds(fn, 1, reps);
    CaseResult r;
    const double gflops = flops / t / 1e9;
    r.detail = fmt("%.1f GFLOP/s", gflops) + fmt(" median %.3f ms", t * 1e3) + " of " + std::to_string(reps) + " (" +
               sgemm_kernel_name(s_.bf16 ? GemmPrecision::BF16 : GemmPrecision::F32) + ", " +
               std::to_string(ThreadPool::global().threads_for(s_.threads)) + " threads)";
    r.figures = {{"gflops", gflops}, {"median_s", t}};
    return r;
  }

 private:
  Spec s_;
  std::string label_;
};

// ---- the tables

struct Shape {
  int64_t M, N, K;
};

std::vector<std::unique_ptr<OpCase>> gemm_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  const bool tr[4][2] = {{false, false}, {false, true}, {true, false}, {true, true}};

  // 1, odd, prime, empty, block-crossing (K > kc = 1024, M > mc = 126, N > nc = 2048) and GEMV shapes.
  const Shape shapes[] = {{1, 1, 1},     {1, 257, 31},  {257, 1, 31},  {1, 1, 127},     {2, 3, 7},
                          {7, 13, 1},    {13, 17, 31},  {17, 31, 61},  {31, 61, 127},   {61, 127, 257},
                          {127, 31, 17}, {257, 61, 13}, {3, 257, 127}, {15, 33, 2},     {29, 65, 513},
                          {300, 517, 1031}, {29, 65, 1500}, {1, 4099, 1031}, {2053, 1, 1031}, {17, 2100, 33}, {5, 7, 0},
                          {0, 7, 5},     {7, 0, 5}};
  const float ab[][2] = {{1, 0}, {0.5f, -1}, {-1.25f, 0.75f}, {1, 1}, {2, 0}, {-0.5f, 0}};
  const int64_t pads[] = {0, 3, 17};
  int n = 0;
  for (const Shape& sh : shapes) {
    for (int t = 0; t < 4; ++t, ++n) {
      Spec s{sh.M, sh.N, sh.K, tr[t][0], tr[t][1], ab[n % 6][0], ab[n % 6][1], pads[n % 3]};
      if (n % 7 == 3) s.threads = 1;
      v.push_back(std::make_unique<GemmCase>(s));
    }
  }
  // alpha == 0: C = beta C, A and B not used; beta == 0 too: C = 0 over NaN.
  v.push_back(std::make_unique<GemmCase>(Spec{13, 17, 31, false, true, 0.0f, 0.5f, 3}));
  v.push_back(std::make_unique<GemmCase>(Spec{13, 17, 31, true, false, 0.0f, 0.0f, 0}));
  v.push_back(std::make_unique<GemmCase>(Spec{9, 11, 0, false, false, 1.5f, 0.0f, 2}));

  // Every SIMD level, whatever fc::simd_level() picks (FACECUDA_SIMD may lower it).
  const Shape level_shapes[] = {{1, 1, 1},     {7, 13, 1},     {13, 17, 31},  {17, 31, 61},    {61, 127, 257},
                                {1, 257, 31},  {257, 1, 31},   {29, 65, 1500}, {127, 300, 700}};
  for (int level = 2; level >= 0; --level) {
    for (const Shape& sh : level_shapes) {
      for (int t = 0; t < 4; ++t, ++n) {
        Spec s{sh.M, sh.N, sh.K, tr[t][0], tr[t][1], ab[n % 6][0], ab[n % 6][1], pads[n % 3]};
        s.level = level;
        v.push_back(std::make_unique<GemmCase>(s));
      }
    }
  }

  // bf16: native VDPBF16PS where the CPU has AVX512_BF16 (avx512 level), emulated elsewhere.
  const Shape bf_shapes[] = {{7, 13, 1}, {13, 17, 31}, {17, 31, 61}, {61, 127, 257}, {1, 257, 31}, {29, 65, 1501},
                             {127, 300, 701}};
  for (int level : {-1, 2, 1, 0}) {
    for (const Shape& sh : bf_shapes) {
      for (int t = 0; t < 4; ++t, ++n) {
        if (level <= 1 && (t % 2) != (n % 2)) continue;  // half the transposes on the emulated levels
        Spec s{sh.M, sh.N, sh.K, tr[t][0], tr[t][1], ab[n % 6][0], ab[n % 6][1], pads[n % 3]};
        s.level = level;
        s.bf16 = true;
        v.push_back(std::make_unique<GemmCase>(s));
      }
    }
  }

  // fp16 (emulated: fp16-rounded operands; products of two fp16 values are exact in fp32, so the
  // fp32 bound holds against the float64 product of the rounded inputs). Operands in [-1, 1];
  // F16RoundCase covers subnormals and overflow.
  const Shape f16_shapes[] = {{7, 13, 1}, {13, 17, 31}, {61, 127, 257}, {1, 257, 31}, {29, 65, 1501}};
  for (int level : {-1, 2, 1, 0}) {
    for (const Shape& sh : f16_shapes) {
      const int t = n % 4;
      ++n;
      Spec s{sh.M, sh.N, sh.K, tr[t][0], tr[t][1], ab[n % 6][0], ab[n % 6][1], pads[n % 3]};
      s.level = level;
      s.f16 = true;
      v.push_back(std::make_unique<GemmCase>(s));
    }
  }
  v.push_back(std::make_unique<F16RoundCase>());

  // Determinism.
  for (const Spec& s : {Spec{300, 517, 1031, false, false, 1, 0, 0}, Spec{300, 517, 1031, true, true, 0.5f, 0, 0},
                        Spec{1, 4099, 1031, false, false, 1, 0, 0}, Spec{2053, 1, 1031, true, false, 1, 0, 0},
                        Spec{1, 4099, 1031, false, true, 1, 0, 0}}) {
    v.push_back(std::make_unique<GemmDeterminismCase>(s));
  }
  Spec dbf{300, 517, 1031, false, true, 1, 0, 0};
  dbf.bf16 = true;
  v.push_back(std::make_unique<GemmDeterminismCase>(dbf));

  // CUDA vs CPU.
  for (int t = 0; t < 4; ++t) {
    v.push_back(std::make_unique<GemmCudaCase>(Spec{7, 13, 1, tr[t][0], tr[t][1], 1, 0, 0}, cuda::MathMode::F32));
    v.push_back(std::make_unique<GemmCudaCase>(Spec{300, 517, 1031, tr[t][0], tr[t][1], 0.5f, -1, 3}, cuda::MathMode::F32));
  }
  v.push_back(std::make_unique<GemmCudaCase>(Spec{1, 4099, 1031, false, true, 1, 0, 0}, cuda::MathMode::F32));
  v.push_back(std::make_unique<GemmCudaCase>(Spec{512, 512, 512, false, true, 1, 0, 0}, cuda::MathMode::TF32));

  // Invalid arguments.
  static float buf[64];
  float* p = buf;
  auto inv = [&](const char* name, const char* expect, std::function<void()> fn) {
    v.push_back(std::make_unique<GemmInvalidCase>(name, expect, std::move(fn)));
  };
  inv("M=-1", "Expected M >= 0 but received -1", [p] { sgemm(false, false, -1, 2, 2, 1, p, 2, p, 2, 0, p, 2); });
  inv("K=-3", "Expected K >= 0 but received -3", [p] { sgemm(false, false, 2, 2, -3, 1, p, 2, p, 2, 0, p, 2); });
  inv("lda<K", "Expected lda >= 13 (K, trans_a=false) but received 7",
      [p] { sgemm(false, false, 3, 4, 13, 1, p, 7, p, 4, 0, p, 4); });
  inv("lda<M tA", "Expected lda >= 5 (M, trans_a=true) but received 4",
      [p] { sgemm(true, false, 5, 4, 3, 1, p, 4, p, 4, 0, p, 4); });
  inv("ldb<N", "Expected ldb >= 9 (N, trans_b=false) but received 8",
      [p] { sgemm(false, false, 2, 9, 3, 1, p, 3, p, 8, 0, p, 9); });
  inv("ldb<K tB", "Expected ldb >= 6 (K, trans_b=true) but received 1",
      [p] { sgemm(false, true, 2, 3, 6, 1, p, 6, p, 1, 0, p, 3); });
  inv("ldc<N", "Expected ldc >= 5 (N) but received 4", [p] { sgemm(false, false, 2, 5, 3, 1, p, 3, p, 5, 0, p, 4); });
  inv("lda=0 K=0", "Expected lda >= 1", [p] { sgemm(false, false, 2, 2, 0, 1, p, 0, p, 2, 0, p, 2); });
  inv("A=null", "Expected a non-null A", [p] { sgemm(false, false, 2, 2, 2, 1, nullptr, 2, p, 2, 0, p, 2); });
  inv("B=null", "Expected a non-null B", [p] { sgemm(false, false, 2, 2, 2, 1, p, 2, nullptr, 2, 0, p, 2); });
  inv("C=null", "Expected a non-null C", [p] { sgemm(false, false, 2, 2, 2, 1, p, 2, p, 2, 0, nullptr, 2); });
  inv("max_threads=-1", "Expected max_threads >= 0", [p] {
    GemmOptions o;
    o.max_threads = -1;
    sgemm(false, false, 2, 2, 2, 1, p, 2, p, 2, 0, p, 2, o);
  });
  inv("precision=7", "Expected precision F32 (0), BF16 (1), TF32 (2) or F16 (3) but received 7", [p] {
    GemmOptions o;
    o.precision = static_cast<GemmPrecision>(7);
    sgemm(false, false, 2, 2, 2, 1, p, 2, p, 2, 0, p, 2, o);
  });
  inv("fma_peak threads=-1", "Expected threads >= 0", [] { measure_fma_peak(-1, 0.01); });
  inv("fma_peak seconds=0", "Expected seconds in (0, 60]", [] { measure_fma_peak(1, 0.0); });
  inv("fma_peak seconds=NaN", "Expected seconds in (0, 60]", [] { measure_fma_peak(1, std::nan("")); });
  return v;
}

std::vector<std::unique_ptr<OpCase>> gemm_grad_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  const Shape shapes[] = {{1, 1, 1}, {3, 5, 7}, {7, 3, 2}, {13, 4, 9}, {5, 17, 3}, {1, 6, 5}, {6, 1, 4}};
  for (const Shape& s : shapes)
    for (int t = 0; t < 4; ++t) v.push_back(std::make_unique<GemmGradCase>(s.M, s.N, s.K, t & 2, t & 1));
  return v;
}

std::vector<std::unique_ptr<OpCase>> gemm_perf_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  auto add = [&](const char* label, int64_t M, int64_t N, int64_t K, bool ta, bool tb, int threads, bool bf16 = false) {
    Spec s{M, N, K, ta, tb, 1, 0, 0};
    s.threads = threads;
    s.bf16 = bf16;
    v.push_back(std::make_unique<GemmPerfCase>(s, label));
  };
  for (int threads : {1, 0}) {
    add("square", 256, 256, 256, false, false, threads);
    add("square", 512, 512, 512, false, false, threads);
    add("square", 1024, 1024, 1024, false, false, threads);
    add("square", 2048, 2048, 2048, false, false, threads);
    add("square-tAtB", 1024, 1024, 1024, true, true, threads);
    add("head-logits", 512, 16384, 512, false, true, threads);    // X W^T
    add("head-dW", 16384, 512, 512, true, false, threads);        // dlogits^T X
    add("conv-56x56", 64, 56 * 56 * 8, 64 * 9, false, false, threads);
    add("conv-7x7", 512, 7 * 7 * 64, 512 * 9, false, false, threads);
    add("gemv-embed", 1, 93431, 512, false, true, threads);
    add("square-bf16", 1024, 1024, 1024, false, false, threads, true);
  }
  return v;
}


// ---- the row epilogue (GemmOptions::row_scale / row_src): C = αAB + βC + diag(e)·S, against float64

class GemmEpilogueCase : public OpCase {
 public:
  GemmEpilogueCase(int64_t M, int64_t N, int64_t K, bool ta, float beta) : M_(M), N_(N), K_(K), ta_(ta), beta_(beta) {}
  std::string op() const override { return "gemm"; }
  std::string params() const override {
    return "row-epilogue M=" + std::to_string(M_) + " N=" + std::to_string(N_) + " K=" + std::to_string(K_) +
           " tA=" + std::to_string(ta_) + " beta=" + std::to_string(static_cast<int>(beta_));
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t lda = std::max<int64_t>(1, ta_ ? M_ : K_), lds = N_ + 3;
    std::vector<float> A(static_cast<size_t>(std::max<int64_t>(1, M_ * K_))), B(static_cast<size_t>(std::max<int64_t>(1, K_ * N_))),
        C(M_ * N_), S(M_ * lds), e(M_);
    fill_uniform(rng, A.data(), A.size(), -1, 1);
    fill_uniform(rng, B.data(), B.size(), -1, 1);
    fill_uniform(rng, C.data(), C.size(), -1, 1);
    fill_uniform(rng, S.data(), S.size(), -2, 2);
    fill_uniform(rng, e.data(), e.size(), -1, 1);
    e[0] = 0.0f;  // a skipped row
    std::vector<double> ref(M_ * N_);
    for (int64_t i = 0; i < M_; ++i)
      for (int64_t j = 0; j < N_; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K_; ++k) acc += double(ta_ ? A[k * lda + i] : A[i * lda + k]) * B[k * N_ + j];
        ref[i * N_ + j] = acc + double(beta_) * C[i * N_ + j] + double(e[i]) * S[i * lds + j];
      }
    GemmOptions o;
    o.row_scale = e.data();
    o.row_src = S.data();
    o.row_src_ld = lds;
    sgemm(ta_, false, M_, N_, K_, 1.0f, A.data(), lda, B.data(), N_, beta_, C.data(), N_, o);
    // fp32 accumulation over K terms of magnitude <= 1 plus two more: (K + 4)·u with u = 2^-24, x4.
    const double atol = 4.0 * (K_ + 4) * 5.96e-8 * 2.0;
    const Compare c = compare(C.data(), ref.data(), ref.size(), atol, 0.0);
    CaseResult r;
    if (!c.ok) r.status = CaseResult::Fail;
    r.detail = c.detail;
    bool threw = false;
    try {
      GemmOptions bad;
      bad.row_scale = e.data();
      sgemm(ta_, false, M_, N_, K_, 1.0f, A.data(), lda, B.data(), N_, beta_, C.data(), N_, bad);
    } catch (const Error& err) {
      threw = err.code() == Code::InvalidArgument;
    }
    if (!threw) {
      r.status = CaseResult::Fail;
      r.detail += "; row_scale without row_src was accepted";
    }
    return r;
  }

 private:
  int64_t M_, N_, K_;
  bool ta_;
  float beta_;
};

std::vector<std::unique_ptr<OpCase>> gemm_epilogue_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  v.push_back(std::make_unique<GemmEpilogueCase>(517, 64, 256, true, 0.0f));   // the head's dW shape, one K block
  v.push_back(std::make_unique<GemmEpilogueCase>(300, 77, 1500, true, 1.0f));  // several K blocks, accumulate
  v.push_back(std::make_unique<GemmEpilogueCase>(1, 33, 40, false, 0.0f));     // the gemv path
  v.push_back(std::make_unique<GemmEpilogueCase>(9, 5, 0, false, 1.0f));       // K = 0: beta·C only
  return v;
}

}  // namespace

FC_REGISTER_CASES(gemm, gemm_cases);
FC_REGISTER_CASES(gemm_grad, gemm_grad_cases);
FC_REGISTER_CASES(gemm_perf, gemm_perf_cases);
FC_REGISTER_CASES(gemm_epilogue, gemm_epilogue_cases);

}  // namespace test
}  // namespace fc
