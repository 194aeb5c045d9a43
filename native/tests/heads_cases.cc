// @file heads_cases.cc
// @brief Harness cases for fc::MarginHead and fc::margin_psi (native/src/common/margin_head.cc over the CPU passes,
// native/src/common/margin_math.h).
//
//   test  forward loss, ∂L/∂x and ∂L/∂W of every margin kind/option (NormFace; CosFace 0.35; ArcFace
//         0.5 exact with/without fallback, easy margin, straight-through; Combined (1,0.3,0.2) and
//         (0.9,0.4,0.15)) at s = 64 and 30, shapes 1x2x1, 7x13x5 and 64x1000x128, against a float64
//         reference written here from SPEC §1.3 (own ψ with std::acos/std::cos; nothing shared with
//         margin_math.h), both on the single-chunk path and on the chunked (recompute) path with a
//         ragged last chunk, and chunked against single-chunk; the SPEC §13 ArcFace vectors through
//         fc::margin_psi; invalid inputs (each error code), c = ±1 exactly (finite results);
//         determinism (run to run and 1 thread vs all, bit for bit).
//   grad  ∂L/∂x and ∂L/∂W from backward() against float64 central finite differences of the
//         reference loss (and the head's loss against the reference loss), B=4 C=5 D=6.
//   perf  B=256 C=93431 D=512 forward+backward, median time and GFLOP/s against 6·B·C·D.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/heads.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // fp32 unit roundoff 2^-24
constexpr double kPi = 3.14159265358979323846;

std::string fmtd(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---- the margin configurations

struct Config {
  std::string name;
  MarginParams p;
};

std::vector<Config> configs(double s) {
  std::vector<Config> v;
  auto add = [&](const char* name, MarginKind k, double m1, double m2, double m3, bool easy, bool fb, bool st) {
    Config c;
    c.name = name;
    c.p.kind = k;
    c.p.scale = s;
    c.p.m1 = m1;
    c.p.m2 = m2;
    c.p.m3 = m3;
    c.p.easy_margin = easy;
    c.p.fallback = fb;
    c.p.straight_through = st;
    v.push_back(c);
  };
  add("norm", MarginKind::Norm, 1, 0, 0, false, true, false);
  add("cos0.35", MarginKind::Cos, 1, 0, 0.35, false, true, false);
  add("arc0.5", MarginKind::Arc, 1, 0.5, 0, false, true, false);
  add("arc0.5-nofallback", MarginKind::Arc, 1, 0.5, 0, false, false, false);
  add("arc0.5-easy", MarginKind::Arc, 1, 0.5, 0, true, true, false);
  add("arc0.5-st", MarginKind::Arc, 1, 0.5, 0, false, false, true);
  add("combined(1,0.3,0.2)", MarginKind::Combined, 1, 0.3, 0.2, false, true, false);
  add("combined(0.9,0.4,0.15)", MarginKind::Combined, 0.9, 0.4, 0.15, false, true, false);
  return v;
}

// ---- the independent float64 reference (SPEC §1.3 and the ψ table, written out again)

// ψ and ψ' of the reference. Angular kinds: c clamped to [−1+1e-6, 1−1e-6] first, ψ' = 0 where the
// clamp cuts (straight-through: ψ' = 1 always). ArcFace fallback: c <= cos(π−m) → c − m·sin(π−m).
double ref_psi(const MarginParams& p, double c, double* d) {
  if (p.kind == MarginKind::Norm) {
    *d = 1;
    return c;
  }
  if (p.kind == MarginKind::Cos) {
    *d = 1;
    return c - p.m3;
  }
  const double e = 1e-6;
  const double cc = std::min(std::max(c, -1.0 + e), 1.0 - e);
  const double mask = (c >= -1.0 + e && c <= 1.0 - e) ? 1.0 : 0.0;
  const double th = std::acos(cc);
  if (p.kind == MarginKind::Arc) {
    const double m = p.m2;
    double v, dv;
    if (p.easy_margin && cc <= 0) {
      v = cc;
      dv = 1;
    } else if (!p.easy_margin && p.fallback && cc <= std::cos(kPi - m)) {
      v = cc - std::sin(kPi - m) * m;
      dv = 1;
    } else {
      v = std::cos(th + m);
      dv = std::sin(th + m) / std::sin(th);
    }
    *d = p.straight_through ? 1.0 : dv * mask;
    return v;
  }
  const double a = p.m1 * th + p.m2;
  *d = mask * p.m1 * std::sin(a) / std::sin(th);
  return std::cos(a) - p.m3;
}

struct Problem {
  int64_t B = 0, C = 0, D = 0;
  std::vector<float> x, w;  // [B, D], [C, D]
  std::vector<int32_t> y;
};

struct RefOut {
  double loss = 0;
  std::vector<double> dx, dw;           // gradients
  std::vector<double> bx, bw;           // per-element error scales Σ|terms| (see tolerance())
  double max_dpsi = 0;
  double loss_factor = 0;                // mean_i max(1, |ψ'_i|) + |ψ'_i|
  std::vector<double> tcos;             // target cosines
};

// Full float64 forward/backward over the whole [B, C] matrix. With want_grad = false only the loss.
// frozen (straight-through FD only): the target logit is s·(c + frozen[i]), the offset ψ(c0) − c0
// held fixed at the evaluation point, i.e. the op arcface_torch records (ψ' = 1).
RefOut reference(const MarginParams& p, const Problem& pr, const std::vector<double>& x, const std::vector<double>& w,
                 bool want_grad, const std::vector<double>* frozen = nullptr) {
  const int64_t B = pr.B, C = pr.C, D = pr.D;
  const double s = p.scale;
  std::vector<double> xh(B * D), wh(C * D), xn(B), wn(C);
  for (int64_t i = 0; i < B; ++i) {
    double ss = 0;
    for (int64_t k = 0; k < D; ++k) ss += x[i * D + k] * x[i * D + k];
    xn[i] = std::sqrt(ss);
    for (int64_t k = 0; k < D; ++k) xh[i * D + k] = x[i * D + k] / std::max(xn[i], 1e-12);
  }
  for (int64_t j = 0; j < C; ++j) {
    double ss = 0;
    for (int64_t k = 0; k < D; ++k) ss += w[j * D + k] * w[j * D + k];
    wn[j] = std::sqrt(ss);
    for (int64_t k = 0; k < D; ++k) wh[j * D + k] = w[j * D + k] / std::max(wn[j], 1e-12);
  }
  std::vector<double> c(B * C), z(B * C), P(B * C), dps(B), d2(B);
  RefOut o;
  o.tcos.resize(B);
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t j = 0; j < C; ++j) {
      double a = 0;
      for (int64_t k = 0; k < D; ++k) a += xh[i * D + k] * wh[j * D + k];
      c[i * C + j] = a;
      z[i * C + j] = s * a;
    }
    const int64_t t = pr.y[i];
    double dp = 0;
    z[i * C + t] = frozen ? s * (c[i * C + t] + (*frozen)[i]) : s * ref_psi(p, c[i * C + t], &dp);
    dps[i] = dp;
    o.tcos[i] = c[i * C + t];
    o.max_dpsi = std::max(o.max_dpsi, std::fabs(dp));
    o.loss_factor += (std::max(1.0, std::fabs(dp)) + std::fabs(dp)) / static_cast<double>(B);
    // |ψ''| by a central difference of ψ' (enters only the error scale).
    double dpa = 0, dpb = 0;
    ref_psi(p, c[i * C + t] + 1e-7, &dpa);
    ref_psi(p, c[i * C + t] - 1e-7, &dpb);
    d2[i] = std::fabs(dpa - dpb) / 2e-7;
    double mx = z[i * C];
    for (int64_t j = 1; j < C; ++j) mx = std::max(mx, z[i * C + j]);
    double sum = 0;
    for (int64_t j = 0; j < C; ++j) sum += std::exp(z[i * C + j] - mx);
    for (int64_t j = 0; j < C; ++j) P[i * C + j] = std::exp(z[i * C + j] - mx) / sum;
    o.loss += (mx + std::log(sum) - z[i * C + t]) / static_cast<double>(B);
  }
  if (!want_grad) return o;
  // G and its error scale E (|ΔG| <= ε·E): the off-target p carries a relative error ~s·δc, the
  // target additionally ψ''·δc through ψ'.
  std::vector<double> G(B * C), E(B * C);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const bool tg = j == pr.y[i];
      const double g = s * (P[i * C + j] - (tg ? 1.0 : 0.0)) / B;
      G[i * C + j] = tg ? g * dps[i] : g;
      E[i * C + j] = std::fabs(G[i * C + j]) + s * P[i * C + j] / B * (tg ? std::max(1.0, std::fabs(dps[i])) : 1.0) +
                     (tg ? std::fabs(g) * d2[i] / s : 0.0);
    }
  o.dx.assign(B * D, 0);
  o.bx.assign(B * D, 0);
  o.dw.assign(C * D, 0);
  o.bw.assign(C * D, 0);
  for (int64_t i = 0; i < B; ++i) {
    const double ix = 1.0 / std::max(xn[i], 1e-12);
    const bool proj = xn[i] >= 1e-12;
    for (int64_t j = 0; j < C; ++j) {
      const double g = G[i * C + j], e = E[i * C + j], cij = proj ? c[i * C + j] : 0.0;
      for (int64_t k = 0; k < D; ++k) {
        o.dx[i * D + k] += ix * g * (wh[j * D + k] - cij * xh[i * D + k]);
        o.bx[i * D + k] += ix * e * (std::fabs(wh[j * D + k]) + std::fabs(cij * xh[i * D + k]));
      }
    }
  }
  for (int64_t j = 0; j < C; ++j) {
    const double iw = 1.0 / std::max(wn[j], 1e-12);
    const bool proj = wn[j] >= 1e-12;
    for (int64_t i = 0; i < B; ++i) {
      const double g = G[i * C + j], e = E[i * C + j], cij = proj ? c[i * C + j] : 0.0;
      for (int64_t k = 0; k < D; ++k) {
        o.dw[j * D + k] += iw * g * (xh[i * D + k] - cij * wh[j * D + k]);
        o.bw[j * D + k] += iw * e * (std::fabs(xh[i * D + k]) + std::fabs(cij * wh[j * D + k]));
      }
    }
  }
  return o;
}

std::vector<double> widen(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ---- problem generation

float normal(std::mt19937_64& rng) { return std::normal_distribution<float>(0.0f, 1.0f)(rng); }

// Random x with row norms 10^U(lo_exp, hi_exp), W rows with varied norms, random labels; then
// structure: about half of the rows get a target class row mixed toward x (target cosine 0.2..0.9),
// row 0's target points against x (cosine ≈ −0.95: the Arc fallback branch, c < th = −0.8776), and
// one row gets a non-target class nearly parallel (c ≈ 1 − 1e-8) and another nearly antiparallel.
Problem make_problem(std::mt19937_64& rng, int64_t B, int64_t C, int64_t D, double lo_exp, double hi_exp,
                     bool structure) {
  Problem pr;
  pr.B = B;
  pr.C = C;
  pr.D = D;
  pr.x.resize(B * D);
  pr.w.resize(C * D);
  pr.y.resize(B);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t i = 0; i < B; ++i) {
    const double sc = std::pow(10.0, lo_exp + (hi_exp - lo_exp) * u(rng)) / std::sqrt(double(D));
    for (int64_t k = 0; k < D; ++k) pr.x[i * D + k] = static_cast<float>(normal(rng) * sc);
  }
  for (int64_t j = 0; j < C; ++j) {
    const double sc = std::pow(10.0, -1.0 + 2.0 * u(rng)) / std::sqrt(double(D));
    for (int64_t k = 0; k < D; ++k) pr.w[j * D + k] = static_cast<float>(normal(rng) * sc);
  }
  for (int64_t i = 0; i < B; ++i) pr.y[i] = static_cast<int32_t>(rng() % static_cast<uint64_t>(C));
  if (!structure || D < 2) return pr;
  std::set<int64_t> used;
  auto xnorm = [&](int64_t i) {
    double s = 0;
    for (int64_t k = 0; k < D; ++k) s += double(pr.x[i * D + k]) * pr.x[i * D + k];
    return std::sqrt(s);
  };
  // set w_j = a·x̂_i·r + b·noise·r (r: a random norm)
  auto mix = [&](int64_t j, int64_t i, double a, double b) {
    const double xn = xnorm(i), r = std::pow(10.0, -1.0 + 2.0 * u(rng));
    for (int64_t k = 0; k < D; ++k)
      pr.w[j * D + k] = static_cast<float>(r * (a * pr.x[i * D + k] / xn + b * normal(rng) / std::sqrt(double(D))));
    used.insert(j);
  };
  mix(pr.y[0], 0, -1.0, 0.15);  // fallback branch
  for (int64_t i = 1; i < B; ++i)
    if (!used.count(pr.y[i]) && u(rng) < 0.5) mix(pr.y[i], i, 0.3 + 1.5 * u(rng), 1.0);
  // One row always has a moderately positive, unsaturated target cosine (c ≈ 0.85 ± 0.1): without
  // it, an easy-margin head (margin only where c > 0) can draw a batch whose loss barely depends on
  // the margin, and the 1e-3 mutant check below cannot tell the mutant apart (seen: --seed 134).
  if (B >= 3) {
    const int64_t i = B - 1;
    if (used.count(pr.y[i]))
      for (int64_t q = 0; q < C; ++q)
        if (!used.count(q)) {
          pr.y[i] = static_cast<int32_t>(q);
          break;
        }
    if (!used.count(pr.y[i])) mix(pr.y[i], i, 0.8, 0.5);
  }
  const int64_t ri = B > 1 ? 1 : 0;
  for (int rep = 0; rep < 2; ++rep) {
    int64_t j = -1;
    for (int64_t q = 0; q < C; ++q)
      if (q != pr.y[ri] && !used.count(q)) {
        j = q;
        break;
      }
    if (j < 0) break;
    mix(j, ri, rep == 0 ? 1.0 : -1.0, 1e-4);  // c ≈ ±(1 − 5e-9)
  }
  return pr;
}

struct HeadRun {
  double loss = 0;
  std::vector<float> dx, dw;
  size_t chunk_bytes = 0;
};

HeadRun run_head(const MarginParams& p, const Problem& pr, size_t max_chunk_bytes, int threads = 0) {
  HeadOptions o;
  o.max_chunk_bytes = max_chunk_bytes;
  o.max_threads = threads;
  MarginHead h(pr.D, pr.C, p, o, Device::cpu());
  std::memcpy(h.weight().data(), pr.w.data(), pr.w.size() * 4);
  const Tensor x = Tensor::from_host(pr.x.data(), pr.x.size() * 4, {pr.B, pr.D}, DType::F32, Device::cpu());
  const Tensor y = Tensor::from_host(pr.y.data(), pr.y.size() * 4, {pr.B}, DType::I32, Device::cpu());
  HeadRun r;
  r.loss = h.forward(x, y);
  h.backward();
  r.chunk_bytes = h.last_chunk_bytes();
  r.dx.resize(pr.x.size());
  r.dw.resize(pr.w.size());
  h.grad_embeddings().copy_to_host(r.dx.data());
  h.grad_weight().copy_to_host(r.dw.data());
  return r;
}

// The tolerance factor ε: |head − ref| <= ε·Σ|terms| elementwise (bx/bw), |Δloss| <= tol.loss.
// fp32 cosine error δc: x̂ and winv are rounded (~2u), the fp32 dot over D terms with Σ|x̂_k ŵ_k| <= 1
// (Cauchy–Schwarz) has a random-walk error ~√D·u (worst case D·u, not reached by random data);
// δc = (√D + 4)u. A logit moves by s·δc (s·|ψ'|·δc on the target), p = exp(z − LSE) by a relative
// 2s·δc; the backward GEMMs add (√C + √B + √D + 8)u relative to Σ|terms|. Row i's loss moves by at
// most s·δc·(max(1, |ψ'_i|) + |ψ'_i|); the mean over rows is the loss tolerance. For D=128, s=64:
// ε ≈ 1.3e-4 relative to Σ|terms| and tol.loss ≈ 1.5e-4, both well under a 1e-3 bug.
struct Tol {
  double eps, loss;
};
Tol tolerance(const MarginParams& p, const Problem& pr, double loss_factor) {
  const double dc = (std::sqrt(double(pr.D)) + 4.0) * kU;
  Tol t;
  t.eps = 2.0 * p.scale * dc + (std::sqrt(double(pr.C)) + std::sqrt(double(pr.B)) + std::sqrt(double(pr.D)) + 8.0) * kU;
  t.loss = p.scale * dc * loss_factor + 1e-12;
  return t;
}

// Elementwise |got − ref| <= eps·bound; returns the worst ratio |got − ref| / (eps·bound).
double worst_ratio(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<double>& bound,
                   double eps, size_t* worst_at) {
  double w = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(double(got[i]) - ref[i]);
    const double r = !std::isfinite(got[i]) ? 1e30 : e / (eps * bound[i] + 1e-30);
    if (r > w || std::isnan(r)) {
      w = std::isnan(r) ? 1e30 : r;
      *worst_at = i;
    }
  }
  return w;
}

// ---- test mode: head against the float64 reference, single-chunk and chunked

class HeadRefCase : public OpCase {
 public:
  HeadRefCase(Config c, int64_t B, int64_t C, int64_t D) : c_(std::move(c)), B_(B), C_(C), D_(D) {}
  std::string op() const override { return "head"; }
  std::string params() const override {
    return c_.name + " s=" + fmtd("%g", c_.p.scale) + " B=" + std::to_string(B_) + " C=" + std::to_string(C_) +
           " D=" + std::to_string(D_);
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Problem pr = make_problem(rng, B_, C_, D_, -1.0, 1.0, true);
    const RefOut ref = reference(c_.p, pr, widen(pr.x), widen(pr.w), true);
    const Tol tol = tolerance(c_.p, pr, ref.loss_factor);
    // Chunked: k classes per chunk, k = C/3 − 1 (at least 1) → several chunks, a ragged last one;
    // a byte budget that is not a multiple of 4·B.
    const int64_t k = std::max<int64_t>(1, C_ / 3 - 1);
    const size_t small = static_cast<size_t>(4 * B_ * k + 3);
    const HeadRun single = run_head(c_.p, pr, size_t(256) << 20);
    const HeadRun chunked = run_head(c_.p, pr, small);
    CaseResult r;
    std::string d;
    double worst = 0;
    auto check = [&](const char* what, const HeadRun& h) {
      size_t ax = 0, aw = 0;
      const double rx = worst_ratio(h.dx, ref.dx, ref.bx, tol.eps, &ax);
      const double rw = worst_ratio(h.dw, ref.dw, ref.bw, tol.eps, &aw);
      const double rl = std::fabs(h.loss - ref.loss) / tol.loss;
      worst = std::max({worst, rx, rw, rl});
      if (!(rx <= 1 && rw <= 1 && rl <= 1)) {
        r.status = CaseResult::Fail;
        d += std::string(" ") + what + ": loss " + fmtd("%.9g", h.loss) + " ref " + fmtd("%.9g", ref.loss) +
             " dx[" + std::to_string(ax) + "] " + fmtd("%.6g", h.dx[ax]) + " ref " + fmtd("%.6g", ref.dx[ax]) +
             " dw[" + std::to_string(aw) + "] " + fmtd("%.6g", h.dw[aw]) + " ref " + fmtd("%.6g", ref.dw[aw]) + ";";
      }
      d += std::string(" ") + what + " err/tol loss " + fmtd("%.2g", rl) + " dx " + fmtd("%.2g", rx) + " dw " +
           fmtd("%.2g", rw);
    };
    check("single", single);
    check("chunked", chunked);
    const size_t want_chunk = std::min<size_t>(static_cast<size_t>(4 * B_ * C_), static_cast<size_t>(4 * B_ * k));
    if (single.chunk_bytes != static_cast<size_t>(4 * B_ * C_) || chunked.chunk_bytes != want_chunk) {
      r.status = CaseResult::Fail;
      d += " chunk bytes " + std::to_string(single.chunk_bytes) + "/" + std::to_string(chunked.chunk_bytes);
    }
    // chunked against single: the same cosines (same GEMM per column), only the order of the
    // online LSE merge and of the dX̂ accumulation over chunks differ: the same ε applies.
    size_t a = 0;
    const double cx = worst_ratio(chunked.dx, widen(single.dx), ref.bx, tol.eps, &a);
    const double cw = worst_ratio(chunked.dw, widen(single.dw), ref.bw, tol.eps, &a);
    const double cl = std::fabs(chunked.loss - single.loss) / tol.loss;
    if (!(cx <= 1 && cw <= 1 && cl <= 1)) {
      r.status = CaseResult::Fail;
      d += " chunked!=single";
    }
    // The constructed fallback row (row 0's target points against x) must be below th = cos(π − 0.5).
    if (D_ >= 2 && !(ref.tcos[0] < std::cos(kPi - 0.5))) {
      r.status = CaseResult::Fail;
      d += " fallback branch not reached (c_t[0] = " + fmtd("%.4f", ref.tcos[0]) + ")";
    }
    // Would the tolerances catch a 1e-3 bug? The loss tolerance must be below 1e-3, and a reference
    // with the margin (or, for NormFace, the scale) off by 1e-3 must be told apart from the head.
    if (!(tol.loss < 1e-3)) {
      r.status = CaseResult::Fail;
      d += " loss tolerance too loose";
    }
    if (B_ >= 7) {
      MarginParams q = c_.p;
      if (q.kind == MarginKind::Norm) q.scale *= 1.001;
      if (q.kind == MarginKind::Cos || q.kind == MarginKind::Combined) q.m3 += 1e-3;
      if (q.kind == MarginKind::Arc || q.kind == MarginKind::Combined) q.m2 += 1e-3;
      const double lq = reference(q, pr, widen(pr.x), widen(pr.w), false).loss;
      if (!(std::fabs(lq - single.loss) > tol.loss)) {
        r.status = CaseResult::Fail;
        d += " a 1e-3 margin change is within the loss tolerance";
      }
      d += " | 1e-3 mutant off by " + fmtd("%.2g", std::fabs(lq - single.loss) / tol.loss) + " tol";
    }
    d += " | chunked-vs-single " + fmtd("%.2g", std::max({cx, cw, cl})) + " | eps " + fmtd("%.2g", tol.eps) +
         " tol_loss " + fmtd("%.2g", tol.loss);
    r.detail = d;
    r.figures = {{"worst_err_over_tol", worst}};
    return r;
  }

 private:
  Config c_;
  int64_t B_, C_, D_;
};

// ---- SPEC §13 vectors through fc::margin_psi

class HeadVectorsCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "spec13 arcface m=0.5 target logit vectors"; }
  CaseResult test(Context&) override {
    const double th[] = {2.5, 2.64, 2.8, 3.0, kPi};
    const double nofb[] = {-0.98999, -1.0, -0.98748, -0.93646, -0.87758};
    const double fb[] = {-0.98999, -1.0, -1.18194, -1.22971, -1.23971};
    MarginParams p;
    p.kind = MarginKind::Arc;
    p.m2 = 0.5;
    CaseResult r;
    double worst = 0;
    for (int f = 0; f < 2; ++f) {
      p.fallback = f == 1;
      for (int q = 0; q < 5; ++q) {
        double d = 0;
        const double v = margin_psi(p, std::cos(th[q]), &d);
        const double want = f ? fb[q] : nofb[q];
        // 5 printed digits: 5e-6 (+1e-7 for the clamp's shift of c, ≤ 1e-6). At θ = π the clamp
        // moves θ to arccos(−1 + 1e-6) = π − 1.414e-3, so cos(θ + m) moves by sin(m)·1.414e-3 ≈ 6.8e-4
        // (the fallback branch, linear in c, moves by only 1e-6): allow 7e-4 there and check the
        // clamped value exactly.
        double tol = 5e-6 + 1e-7;
        if (q == 4 && !f) tol = 7e-4;
        if (!(std::fabs(v - want) <= tol) || !std::isfinite(d)) {
          r.status = CaseResult::Fail;
          r.detail += " fallback=" + std::to_string(f) + " theta=" + fmtd("%g", th[q]) + " got " + fmtd("%.7f", v) +
                      " want " + fmtd("%.5f", want) + ";";
        }
        worst = std::max(worst, std::fabs(v - want));
      }
    }
    // θ = π without fallback: the exact clamped value, and ψ' = 0 there (the clamp cuts).
    p.fallback = false;
    double d = 1;
    const double v = margin_psi(p, -1.0, &d);
    const double want = std::cos(std::acos(-1.0 + 1e-6) + 0.5);
    if (!(std::fabs(v - want) <= 1e-12) || d != 0.0) {
      r.status = CaseResult::Fail;
      r.detail += " clamp at c=-1: " + fmtd("%.12f", v) + " dpsi " + fmtd("%g", d);
    }
    // Constants: th = cos(π − m), mm = sin(π − m)·m: the linear branch just below th.
    p.fallback = true;
    const double c0 = -0.8775825619 - 1e-3;
    const double v0 = margin_psi(p, c0, &d);
    if (!(std::fabs(v0 - (c0 - 0.2397127693)) <= 1e-9) || d != 1.0) {
      r.status = CaseResult::Fail;
      r.detail += " mm constant";
    }
    if (r.detail.empty()) r.detail = "10 vectors, max |err| " + fmtd("%.2g", worst);
    return r;
  }
};

// ---- grad mode: backward() against float64 central differences of the reference loss

class HeadGradCase : public OpCase {
 public:
  HeadGradCase(Config c, int64_t B, int64_t C, int64_t D, bool chunked)
      : c_(std::move(c)), B_(B), C_(C), D_(D), chunked_(chunked) {}
  std::string op() const override { return "head"; }
  std::string params() const override {
    return "grad " + c_.name + " s=" + fmtd("%g", c_.p.scale) + " B=" + std::to_string(B_) + " C=" +
           std::to_string(C_) + " D=" + std::to_string(D_) + (chunked_ ? " chunked" : "");
  }
  CaseResult grad(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    // Stay away from the kinks: the fallback switch at c = th, easy margin at c = 0, the clamp at
    // ±(1 − 1e-6) (and the non-target near-parallel rows are left out: D is small).
    Problem pr;
    const double th = std::cos(kPi - 0.5);
    for (int attempt = 0; attempt < 100; ++attempt) {
      pr = make_problem(rng, B_, C_, D_, -0.3, 0.3, false);
      const RefOut o = reference(c_.p, pr, widen(pr.x), widen(pr.w), false);
      bool ok = true;
      for (double c : o.tcos)
        if (std::fabs(c - th) < 2e-2 || std::fabs(c) < 2e-2 || std::fabs(c) > 0.98) ok = false;
      if (ok) break;
    }
    const int64_t k = std::max<int64_t>(1, C_ / 2);
    const HeadRun h = run_head(c_.p, pr, chunked_ ? static_cast<size_t>(4 * B_ * k) : size_t(256) << 20);
    std::vector<double> x = widen(pr.x), w = widen(pr.w);
    const RefOut base = reference(c_.p, pr, x, w, false);
    const double L0 = base.loss;
    // Straight-through: differentiate the recorded op s·(c + sg(ψ(c0) − c0)) instead of the loss.
    std::vector<double> frozen(B_);
    for (int64_t i = 0; i < B_; ++i) {
      double d = 0;
      frozen[i] = ref_psi(c_.p, base.tcos[i], &d) - base.tcos[i];
    }
    const std::vector<double>* fz = c_.p.straight_through ? &frozen : nullptr;
    // Central differences, step 1e-6 relative to the row norm: truncation ~h²·|L'''| (s³/‖x‖³ scale,
    // ≲ 1e-7 relative here), rounding ~1e-16·|L|/h ≲ 1e-9.
    auto fd = [&](std::vector<double>& v, size_t idx, double scale) {
      const double h0 = 1e-6 * scale, keep = v[idx];
      v[idx] = keep + h0;
      const double lp = reference(c_.p, pr, x, w, false, fz).loss;
      v[idx] = keep - h0;
      const double lm = reference(c_.p, pr, x, w, false, fz).loss;
      v[idx] = keep;
      return (lp - lm) / (2 * h0);
    };
    auto rownorm = [](const std::vector<double>& v, size_t r, int64_t D) {
      double s = 0;
      for (int64_t q = 0; q < D; ++q) s += v[r * D + q] * v[r * D + q];
      return std::sqrt(s);
    };
    std::vector<double> gx(x.size()), gw(w.size());
    for (size_t q = 0; q < x.size(); ++q) gx[q] = fd(x, q, rownorm(x, q / D_, D_));
    for (size_t q = 0; q < w.size(); ++q) gw[q] = fd(w, q, rownorm(w, q / D_, D_));
    // Tolerance: the head is fp32; relative to the largest gradient entry of each tensor (rows of
    // x and W have comparable norms here, 10^±0.3): ε as in test mode plus 1e-6 for the FD error.
    const Tol tol = tolerance(c_.p, pr, 8.0);
    auto cmp = [&](const std::vector<float>& got, const std::vector<double>& ref, double* worst_rel) {
      double mx = 0, e = 0;
      for (double v : ref) mx = std::max(mx, std::fabs(v));
      for (size_t q = 0; q < ref.size(); ++q) e = std::max(e, std::isfinite(got[q]) ? std::fabs(got[q] - ref[q]) : 1e30);
      *worst_rel = e / std::max(mx, 1e-30);
      return *worst_rel <= 4 * tol.eps + 1e-6;
    };
    double ex = 0, ew = 0;
    const bool okx = cmp(h.dx, gx, &ex), okw = cmp(h.dw, gw, &ew);
    const bool okl = std::fabs(h.loss - L0) <= tol.loss;
    CaseResult r;
    if (!(okx && okw && okl)) r.status = CaseResult::Fail;
    r.detail = "dx max err/max|g| " + fmtd("%.2g", ex) + " dW " + fmtd("%.2g", ew) + " (tol " +
               fmtd("%.2g", 4 * tol.eps + 1e-6) + ") loss " + fmtd("%.9g", h.loss) + " ref " + fmtd("%.9g", L0);
    r.figures = {{"dx_rel", ex}, {"dw_rel", ew}};
    return r;
  }

 private:
  Config c_;
  int64_t B_, C_, D_;
  bool chunked_;
};

// ---- invalid inputs: each error has its fc::Code (and names the argument / row)

class HeadInvalidCase : public OpCase {
 public:
  HeadInvalidCase(std::string label, Code code, std::string must_contain, std::function<void()> fn)
      : label_(std::move(label)), code_(code), msg_(std::move(must_contain)), fn_(std::move(fn)) {}
  std::string op() const override { return "head"; }
  std::string params() const override { return "invalid " + label_; }
  CaseResult test(Context&) override {
    CaseResult r;
    try {
      fn_();
      r.status = CaseResult::Fail;
      r.detail = "did not throw";
    } catch (const Error& e) {
      const std::string m = e.what();
      if (e.code() != code_ || m.find(msg_) == std::string::npos) {
        r.status = CaseResult::Fail;
        r.detail = std::string("got ") + code_name(e.code()) + ": " + m;
      } else {
        r.detail = std::string(code_name(e.code())) + ": " + m;
      }
    }
    return r;
  }

 private:
  std::string label_;
  Code code_;
  std::string msg_;
  std::function<void()> fn_;
};

Tensor ftensor(const std::vector<int64_t>& shape, float fill = 0.5f) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = fill + 0.01f * static_cast<float>(i % 7);
  return t;
}
Tensor itensor(const std::vector<int32_t>& v) {
  return Tensor::from_host(v.data(), v.size() * 4, {static_cast<int64_t>(v.size())}, DType::I32, Device::cpu());
}

std::vector<std::unique_ptr<OpCase>> invalid_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  auto add = [&](const char* label, Code code, const char* msg, std::function<void()> fn) {
    v.push_back(std::make_unique<HeadInvalidCase>(label, code, msg, std::move(fn)));
  };
  auto head = [](int64_t D = 4, int64_t C = 5) {
    auto h = std::make_unique<MarginHead>(D, C, MarginParams(), HeadOptions(), Device::cpu());
    float* w = h->weight().data_as<float>();
    for (int64_t i = 0; i < C * D; ++i) w[i] = 0.1f * static_cast<float>((i * 7) % 11) - 0.5f;
    return h;
  };
  add("C=1", Code::InvalidArgument, "num_classes", [] { MarginHead h(4, 1, MarginParams(), HeadOptions(), Device::cpu()); });
  add("D=0", Code::InvalidArgument, "embedding_size", [] { MarginHead h(0, 5, MarginParams(), HeadOptions(), Device::cpu()); });
#if !FACECUDA_WITH_CUDA
  add("cuda device without the CUDA backend", Code::CudaUnavailable, "CUDA is not available",
      [] { MarginHead h(4, 5, MarginParams(), HeadOptions(), Device::cuda(0)); });
#endif
  add("x 1-D", Code::ShapeMismatch, "x", [=] { head()->forward(ftensor({4}), itensor({0})); });
  add("x wrong D", Code::ShapeMismatch, "4 columns", [=] { head()->forward(ftensor({2, 3}), itensor({0, 1})); });
  add("x int32", Code::InvalidArgument, "float32", [=] {
    Tensor x = Tensor::empty({2, 4}, DType::I32, Device::cpu());
    head()->forward(x, itensor({0, 1}));
  });
  add("x non-contiguous", Code::InvalidArgument, "contiguous",
      [=] { head()->forward(ftensor({2, 5}).narrow(1, 0, 4), itensor({0, 1})); });
  add("B=0", Code::InvalidArgument, "at least 1", [=] { head()->forward(ftensor({0, 4}), itensor({})); });
  add("labels count", Code::ShapeMismatch, "labels", [=] { head()->forward(ftensor({3, 4}), itensor({0, 1})); });
  add("labels float", Code::InvalidArgument, "labels", [=] { head()->forward(ftensor({2, 4}), ftensor({2})); });
  add("label 93431 of C=93431", Code::OutOfRange, "Expected labels in [0, 93431) but received 93431 at row 7", [] {
    MarginHead h(1, 93431, MarginParams(), HeadOptions(), Device::cpu());
    h.forward(ftensor({8, 1}), itensor({0, 1, 2, 3, 4, 5, 6, 93431}));
  });
  add("label -1", Code::OutOfRange, "received -1 at row 1", [=] { head()->forward(ftensor({2, 4}), itensor({0, -1})); });
  add("NaN in x", Code::InvalidArgument, "at row 2", [=] {
    Tensor x = ftensor({3, 4});
    x.data_as<float>()[2 * 4 + 1] = std::nanf("");
    head()->forward(x, itensor({0, 1, 2}));
  });
  add("Inf in x", Code::InvalidArgument, "at row 0", [=] {
    Tensor x = ftensor({3, 4});
    x.data_as<float>()[3] = INFINITY;
    head()->forward(x, itensor({0, 1, 2}));
  });
  add("NaN in W", Code::InvalidArgument, "at class 3", [=] {
    auto h = head();
    h->weight().data_as<float>()[3 * 4 + 2] = std::nanf("");
    h->forward(ftensor({2, 4}), itensor({0, 1}));
  });
  add("backward without forward", Code::InvalidArgument, "forward", [=] { head()->backward(); });
  add("backward twice", Code::InvalidArgument, "forward", [=] {
    auto h = head();
    h->forward(ftensor({2, 4}), itensor({0, 1}));
    h->backward();
    h->backward();
  });
  add("backward after a failed forward", Code::InvalidArgument, "forward", [=] {
    auto h = head();
    h->forward(ftensor({2, 4}), itensor({0, 1}));
    try {
      h->forward(ftensor({2, 4}), itensor({0, 9}));
    } catch (const Error&) {
    }
    h->backward();
  });
  add("logits wrong D", Code::ShapeMismatch, "4 columns", [=] { head()->logits(ftensor({2, 3})); });
  return v;
}

// ---- c = ±1 exactly, zero rows: finite loss and gradients for every kind

class HeadParallelCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "x parallel/antiparallel to its target, zero rows: finite"; }
  CaseResult test(Context&) override {
    CaseResult r;
    const int64_t B = 4, C = 3, D = 3;
    // row 0: w_{y} = 2·x (c = 1 exactly in fp32: x̂ = ŵ bit for bit); row 1: w_y = −x (c = −1);
    // row 2: x = 0 (‖x‖ < eps); class 2 has w = 0 (‖w‖ < eps).
    std::vector<float> x = {0.6f, 0.8f, 0.0f, 0.0f, 0.6f, 0.8f, 0.0f, 0.0f, 0.0f, 1.0f, 2.0f, 2.0f};
    std::vector<float> w = {1.2f, 1.6f, 0.0f, 0.0f, -0.6f, -0.8f, 0.0f, 0.0f, 0.0f};
    std::vector<int32_t> y = {0, 1, 0, 2};
    for (double s : {64.0, 30.0})
      for (const Config& c : configs(s)) {
        HeadOptions o;
        MarginHead h(D, C, c.p, o, Device::cpu());
        std::memcpy(h.weight().data(), w.data(), w.size() * 4);
        const double L = h.forward(Tensor::from_host(x.data(), x.size() * 4, {B, D}, DType::F32, Device::cpu()),
                                   itensor(y));
        h.backward();
        std::vector<float> dx(B * D), dw(C * D);
        h.grad_embeddings().copy_to_host(dx.data());
        h.grad_weight().copy_to_host(dw.data());
        bool ok = std::isfinite(L);
        for (float f : dx) ok = ok && std::isfinite(f);
        for (float f : dw) ok = ok && std::isfinite(f);
        Tensor lg = h.logits(Tensor::from_host(x.data(), x.size() * 4, {B, D}, DType::F32, Device::cpu()));
        for (int64_t q = 0; q < lg.numel(); ++q) ok = ok && std::isfinite(lg.data_as<float>()[q]);
        if (!ok) {
          r.status = CaseResult::Fail;
          r.detail += " " + c.name + " s=" + fmtd("%g", s) + " not finite (loss " + fmtd("%g", L) + ");";
        }
      }
    if (r.detail.empty()) r.detail = "16 configurations finite";
    return r;
  }
};

// ---- logits(): s·x̂·ŵᵀ against the reference cosines

class HeadLogitsCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "logits B=9 C=37 D=20 s=64"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Problem pr = make_problem(rng, 9, 37, 20, -1, 1, true);
    MarginParams p;
    p.kind = MarginKind::Arc;
    p.m2 = 0.5;
    MarginHead h(pr.D, pr.C, p, HeadOptions(), Device::cpu());
    std::memcpy(h.weight().data(), pr.w.data(), pr.w.size() * 4);
    Tensor lg = h.logits(Tensor::from_host(pr.x.data(), pr.x.size() * 4, {pr.B, pr.D}, DType::F32, Device::cpu()));
    std::vector<double> ref(pr.B * pr.C);
    for (int64_t i = 0; i < pr.B; ++i)
      for (int64_t j = 0; j < pr.C; ++j) {
        double a = 0, nx = 0, nw = 0;
        for (int64_t k = 0; k < pr.D; ++k) {
          a += double(pr.x[i * pr.D + k]) * pr.w[j * pr.D + k];
          nx += double(pr.x[i * pr.D + k]) * pr.x[i * pr.D + k];
          nw += double(pr.w[j * pr.D + k]) * pr.w[j * pr.D + k];
        }
        ref[i * pr.C + j] = 64.0 * a / std::sqrt(nx * nw);
      }
    // s·δc absolute (δc as in tolerance(), times 2)
    const double atol = 64.0 * 2.0 * (2.0 * std::sqrt(20.0) + 8.0) * kU;
    const Compare c = compare(lg.data_as<float>(), ref.data(), ref.size(), atol, 0.0);
    CaseResult r;
    if (!c.ok || lg.size(0) != pr.B || lg.size(1) != pr.C) r.status = CaseResult::Fail;
    r.detail = c.detail;
    return r;
  }
};

// ---- determinism: run to run and 1 thread vs all, bit for bit

class HeadDeterminismCase : public OpCase {
 public:
  explicit HeadDeterminismCase(bool chunked) : chunked_(chunked) {}
  std::string op() const override { return "head"; }
  std::string params() const override {
    return std::string("determinism arc0.5 B=33 C=517 D=40") + (chunked_ ? " chunked" : "");
  }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Problem pr = make_problem(rng, 33, 517, 40, -1, 1, true);
    MarginParams p;
    p.kind = MarginKind::Arc;
    p.m2 = 0.5;
    const size_t mcb = chunked_ ? static_cast<size_t>(4 * 33 * 100) : size_t(256) << 20;
    const HeadRun a = run_head(p, pr, mcb), b = run_head(p, pr, mcb), one = run_head(p, pr, mcb, 1);
    auto same = [](const HeadRun& u, const HeadRun& v) {
      return std::memcmp(&u.loss, &v.loss, 8) == 0 && std::memcmp(u.dx.data(), v.dx.data(), u.dx.size() * 4) == 0 &&
             std::memcmp(u.dw.data(), v.dw.data(), u.dw.size() * 4) == 0;
    };
    CaseResult r;
    const bool rr = same(a, b), rt = same(a, one);
    if (!rr || !rt) r.status = CaseResult::Fail;
    r.detail = std::string("run-to-run ") + (rr ? "identical" : "DIFFERENT") + ", 1 vs " +
               std::to_string(ThreadPool::global().num_threads()) + " threads " + (rt ? "identical" : "DIFFERENT");
    return r;
  }

 private:
  bool chunked_;
};

// ---- perf: the face-recognition head shape

class HeadPerfCase : public OpCase {
 public:
  HeadPerfCase(int threads, double s, size_t max_chunk_bytes = size_t(256) << 20)
      : threads_(threads), s_(s), mcb_(max_chunk_bytes) {}
  std::string op() const override { return "head"; }
  std::string params() const override {
    return "perf arc0.5 B=256 C=93431 D=512 fwd+bwd threads=" + (threads_ ? std::to_string(threads_) : std::string("all")) +
           (mcb_ < (size_t(256) << 20) ? " max_chunk=" + std::to_string(mcb_ >> 20) + "MiB (recompute)" : "");
  }
  CaseResult perf(Context& ctx) override {
    const int64_t B = 256, C = 93431, D = 512;
    auto rng = make_rng(ctx, params());
    std::vector<float> x(B * D);
    std::vector<int32_t> y(B);
    fill_uniform(rng, x.data(), x.size(), -1, 1);
    for (auto& v : y) v = static_cast<int32_t>(rng() % C);
    MarginParams p;
    p.kind = MarginKind::Arc;
    p.m2 = 0.5;
    p.scale = s_;
    HeadOptions o;
    o.max_threads = threads_;
    o.max_chunk_bytes = mcb_;
    MarginHead h(D, C, p, o, Device::cpu());
    fill_uniform(rng, h.weight().data_as<float>(), static_cast<size_t>(C * D), -0.02f, 0.02f);
    const Tensor xt = Tensor::from_host(x.data(), x.size() * 4, {B, D}, DType::F32, Device::cpu());
    const Tensor yt = itensor(y);
    double loss = 0;
    auto fn = [&] {
      loss = h.forward(xt, yt);
      h.backward();
    };
    const double t = median_seconds(fn, 1, 3);
    const double tf = median_seconds([&] { loss = h.forward(xt, yt); }, 0, 3);
    const double gflops = 6.0 * B * C * D / t / 1e9;
    CaseResult r;
    r.detail = fmtd("%.1f ms", t * 1e3) + " (forward " + fmtd("%.1f ms", tf * 1e3) + ") " + fmtd("%.1f GFLOP/s", gflops) +
               " on " + std::to_string(ThreadPool::global().threads_for(threads_)) + " threads, chunk " +
               fmtd("%.1f MiB", h.last_chunk_bytes() / 1048576.0) + ", loss " + fmtd("%.4f", loss);
    r.figures = {{"median_s", t}, {"forward_s", tf}, {"gflops", gflops}, {"chunk_bytes", double(h.last_chunk_bytes())}};
    return r;
  }

 private:
  int threads_;
  double s_;
  size_t mcb_;
};

// ---- the tables

std::vector<std::unique_ptr<OpCase>> head_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  struct S {
    int64_t B, C, D;
  };
  for (double s : {64.0, 30.0})
    for (const Config& c : configs(s))
      for (S sh : {S{1, 2, 1}, S{7, 13, 5}, S{64, 1000, 128}}) v.push_back(std::make_unique<HeadRefCase>(c, sh.B, sh.C, sh.D));
  v.push_back(std::make_unique<HeadVectorsCase>());
  for (auto& c : invalid_cases()) v.push_back(std::move(c));
  v.push_back(std::make_unique<HeadParallelCase>());
  v.push_back(std::make_unique<HeadLogitsCase>());
  v.push_back(std::make_unique<HeadDeterminismCase>(false));
  v.push_back(std::make_unique<HeadDeterminismCase>(true));
  return v;
}

std::vector<std::unique_ptr<OpCase>> head_grad_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (double s : {64.0, 30.0})
    for (const Config& c : configs(s)) {
      v.push_back(std::make_unique<HeadGradCase>(c, 4, 5, 6, false));
      v.push_back(std::make_unique<HeadGradCase>(c, 3, 7, 4, true));
    }
  return v;
}

std::vector<std::unique_ptr<OpCase>> head_perf_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  v.push_back(std::make_unique<HeadPerfCase>(1, 64.0));
  v.push_back(std::make_unique<HeadPerfCase>(0, 64.0));
  v.push_back(std::make_unique<HeadPerfCase>(0, 64.0, size_t(16) << 20));  // chunked: one extra GEMM pass
  return v;
}

}  // namespace

FC_REGISTER_CASES(head, head_cases);
FC_REGISTER_CASES(head_grad, head_grad_cases);
FC_REGISTER_CASES(head_perf, head_perf_cases);

}  // namespace test
}  // namespace fc
