// @file heads_ext_cases.cc
// @brief Harness cases for the head kinds and options beyond the first slice (AdaFace, ElasticFace,
// SphereFace, Softmax, sub-centers, Partial FC, shards, accumulate, eval) on the CPU.
//
// The float64 values of these kinds are checked against the independent numpy reference
// (test/fixtures/gen_heads.py → heads.json, run by test/unit/heads.test.ts). The cases here check
// what a fixture cannot: invariants on fresh random inputs of realistic sizes.
//   - chunked (online log-sum-exp, recomputed backward) equals single-chunk within float rounding;
//   - bitwise determinism run to run and 1 thread vs all;
//   - sharded == unsharded (3 uneven shards combined with the distributed softmax rule, SPEC §7.3);
//   - Partial FC: the sampled set contains every positive and has floor(r·C) classes; rows not sampled
//     get exactly zero gradient; accumulate adds; the same seed/step samples the same set;
//   - AdaFace: SPEC §4's test vector through the head's EMA state; SphereFace: §13's λ values;
//   - ElasticFace: the counter-based margins have mean m and std σ over a large batch, depend on
//     (seed, step), and plus assigns the smallest margin to the largest target cosine.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "facecuda/error.h"
#include "facecuda/heads.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

struct Prob {
  int64_t B, C, D, R;
  std::vector<float> x, w, bias;
  std::vector<int32_t> y;
};

Prob make(std::mt19937_64& rng, int64_t B, int64_t C, int64_t D, int64_t K = 1) {
  Prob p{B, C, D, C * K, {}, {}, {}, {}};
  p.x.resize(B * D);
  p.w.resize(C * K * D);
  p.bias.resize(C);
  fill_uniform(rng, p.x.data(), p.x.size(), -1, 1);
  fill_uniform(rng, p.w.data(), p.w.size(), -1, 1);
  fill_uniform(rng, p.bias.data(), p.bias.size(), -0.5f, 0.5f);
  // Row norms from 0.5 to ~8 (AdaFace and SphereFace depend on them).
  for (int64_t i = 0; i < B; ++i) {
    const float f = 0.5f + 7.5f * static_cast<float>(i % 7) / 6.0f;
    for (int64_t k = 0; k < D; ++k) p.x[i * D + k] *= f;
  }
  std::uniform_int_distribution<int32_t> lab(0, static_cast<int32_t>(C - 1));
  p.y.resize(B);
  for (auto& v : p.y) v = lab(rng);
  return p;
}

Tensor ft(const std::vector<float>& v, std::vector<int64_t> shape) {
  return Tensor::from_host(v.data(), v.size() * 4, shape, DType::F32, Device::cpu());
}
Tensor it(const std::vector<int32_t>& v) {
  return Tensor::from_host(v.data(), v.size() * 4, {static_cast<int64_t>(v.size())}, DType::I32, Device::cpu());
}

struct Out {
  double loss = 0;
  std::vector<float> dx, dw, db;
  ForwardStats st;
};

void load(MarginHead& h, const Prob& p) {
  std::memcpy(h.weight().data(), p.w.data(), h.weight().nbytes());
  if (h.bias().defined()) std::memcpy(h.bias().data(), p.bias.data(), h.bias().nbytes());
}

Out step(MarginHead& h, const Prob& p, bool accumulate = false, const float* gm = nullptr, const double* gs = nullptr) {
  Out o;
  o.st = h.forward_stats(ft(p.x, {p.B, p.D}), it(p.y));
  o.loss = o.st.loss;
  h.backward(accumulate, gm, gs);
  o.dx.resize(p.B * p.D);
  h.grad_embeddings().copy_to_host(o.dx.data());
  o.dw.resize(h.grad_weight().numel());
  h.grad_weight().copy_to_host(o.dw.data());
  if (h.grad_bias().defined()) {
    o.db.resize(h.grad_bias().numel());
    h.grad_bias().copy_to_host(o.db.data());
  }
  return o;
}

// max |a − b| / max |b|
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 1e-30, e = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::fabs(double(b[i])));
    e = std::max(e, std::fabs(double(a[i]) - b[i]));
  }
  return e / m;
}

struct Cfg {
  std::string name;
  MarginParams p;
  HeadOptions o;
};

std::vector<Cfg> configs() {
  std::vector<Cfg> v;
  auto add = [&](std::string n, MarginParams p, HeadOptions o = HeadOptions()) { v.push_back({n, p, o}); };
  MarginParams ada;
  ada.kind = MarginKind::Ada;
  ada.m2 = 0.4;
  add("ada", ada);
  MarginParams ea;
  ea.kind = MarginKind::Elastic;
  ea.m2 = 0.5;
  ea.elastic_std = 0.05;
  add("elastic-arc", ea);
  MarginParams ec = ea;
  ec.elastic_cos = true;
  ec.m2 = 0.35;
  ec.elastic_plus = true;
  ec.elastic_std = 0.02;
  add("elastic-cos-plus", ec);
  MarginParams sp;
  sp.kind = MarginKind::Sphere;
  sp.m1 = 4;
  add("sphere", sp);
  MarginParams sm;
  sm.kind = MarginKind::Softmax;
  add("softmax", sm);
  MarginParams arc;
  arc.kind = MarginKind::Arc;
  arc.m2 = 0.5;
  HeadOptions k3;
  k3.sub_centers = 3;
  add("arc K=3", arc, k3);
  HeadOptions pfc;
  pfc.sample_rate = 0.3;
  pfc.seed = 11;
  add("arc r=0.3", arc, pfc);
  MarginParams cos;
  cos.kind = MarginKind::Cos;
  cos.m3 = 0.35;
  HeadOptions both;
  both.sub_centers = 2;
  both.sample_rate = 0.5;
  add("cos K=2 r=0.5", cos, both);
  return v;
}

// ---- chunked == single, and bitwise determinism (run to run, 1 thread vs all)

class ExtConsistencyCase : public OpCase {
 public:
  explicit ExtConsistencyCase(Cfg c) : c_(std::move(c)) {}
  std::string op() const override { return "head"; }
  std::string params() const override { return c_.name + " B=24 C=301 D=33 chunked==single, deterministic"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Prob p = make(rng, 24, 301, 33, c_.o.sub_centers);
    auto run = [&](size_t mcb, int threads) {
      HeadOptions o = c_.o;
      o.max_chunk_bytes = mcb;
      o.max_threads = threads;
      MarginHead h(p.D, p.C, c_.p, o, Device::cpu());
      load(h, p);
      Out a = step(h, p);
      Out b = step(h, p);  // a second step: AdaFace's EMA, ElasticFace's and PFC's step counter move
      a.dx.insert(a.dx.end(), b.dx.begin(), b.dx.end());
      a.dw.insert(a.dw.end(), b.dw.begin(), b.dw.end());
      a.loss += 1000 * b.loss;
      return a;
    };
    const Out single = run(size_t(256) << 20, 0), again = run(size_t(256) << 20, 0), one = run(size_t(256) << 20, 1);
    const Out chunked = run(static_cast<size_t>(24) * 40 * (c_.o.sub_centers > 1 ? 5 + 4 * c_.o.sub_centers : 4), 0);
    auto same = [](const Out& u, const Out& v) {
      return std::memcmp(&u.loss, &v.loss, 8) == 0 && u.dx == v.dx && u.dw == v.dw && u.db == v.db;
    };
    CaseResult r;
    const double ex = rel(chunked.dx, single.dx), ew = rel(chunked.dw, single.dw);
    const double el = std::fabs(chunked.loss - single.loss) / std::max(1.0, std::fabs(single.loss));
    // Chunking changes only the order of the Σexp merge (float rounding): 1e-4 of the largest
    // gradient and 1e-5 relative on the (combined) loss leave a factor ~100 over what we observe.
    const bool chunk_ok = ex < 1e-4 && ew < 1e-4 && el < 1e-5;
    const bool det = same(single, again) && same(single, one);
    if (!chunk_ok || !det || !std::isfinite(single.loss)) r.status = CaseResult::Fail;
    r.detail = "chunked vs single dx " + fmt("%.2g", ex) + " dw " + fmt("%.2g", ew) + " loss " + fmt("%.2g", el) +
               (det ? ", run-to-run and 1-vs-all threads identical" : ", NOT DETERMINISTIC");
    return r;
  }

 private:
  Cfg c_;
};

// ---- sharded == unsharded

class ShardCase : public OpCase {
 public:
  explicit ShardCase(int K) : K_(K) {}
  std::string op() const override { return "head"; }
  std::string params() const override { return "arc0.5 K=" + std::to_string(K_) + " B=19 C=230 D=24 3 shards == unsharded"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Prob p = make(rng, 19, 230, 24, K_);
    MarginParams mp;
    mp.kind = MarginKind::Arc;
    mp.m2 = 0.5;
    HeadOptions o;
    o.sub_centers = K_;
    MarginHead full(p.D, p.C, mp, o, Device::cpu());
    load(full, p);
    const Out ref = step(full, p);
    const int64_t starts[4] = {0, 80, 160, 230};
    std::vector<std::unique_ptr<MarginHead>> shards;
    std::vector<ForwardStats> st;
    for (int s = 0; s < 3; ++s) {
      HeadOptions so = o;
      so.class_start = starts[s];
      so.num_local = starts[s + 1] - starts[s];
      shards.push_back(std::make_unique<MarginHead>(p.D, p.C, mp, so, Device::cpu()));
      std::memcpy(shards[s]->weight().data(), p.w.data() + starts[s] * K_ * p.D, shards[s]->weight().nbytes());
      st.push_back(shards[s]->forward_stats(ft(p.x, {p.B, p.D}), it(p.y)));
    }
    // Combine: M = max_s M_s, S = Σ_s S_s·exp(M_s − M), loss_i = M + log S − z_t (owner shard).
    std::vector<float> M(p.B);
    std::vector<double> S(p.B);
    double loss = 0;
    for (int64_t i = 0; i < p.B; ++i) {
      double m = -INFINITY, zt = NAN;
      for (auto& s : st) m = std::max<double>(m, s.row_max[i]);
      double sum = 0;
      for (auto& s : st) {
        sum += s.row_sum[i] * std::exp(double(s.row_max[i]) - m);
        if (!std::isnan(s.target_logit[i])) zt = s.target_logit[i];
      }
      M[i] = static_cast<float>(m);
      S[i] = sum;
      loss += m + std::log(sum) - zt;
    }
    loss /= p.B;
    std::vector<float> dx(p.B * p.D, 0.0f), dw;
    for (int s = 0; s < 3; ++s) {
      shards[s]->backward(false, M.data(), S.data());
      std::vector<float> a(p.B * p.D), b(shards[s]->grad_weight().numel());
      shards[s]->grad_embeddings().copy_to_host(a.data());
      shards[s]->grad_weight().copy_to_host(b.data());
      for (size_t q = 0; q < a.size(); ++q) dx[q] += a[q];
      dw.insert(dw.end(), b.begin(), b.end());
    }
    CaseResult r;
    bool nan_loss = std::isnan(st[0].loss);
    bool threw = false;
    try {
      shards[0]->forward(ft(p.x, {p.B, p.D}), it(p.y));
      shards[0]->backward();
    } catch (const Error& e) {
      threw = e.code() == Code::InvalidArgument;
    }
    const double ex = rel(dx, ref.dx), ew = rel(dw, ref.dw), el = std::fabs(loss - ref.loss) / std::fabs(ref.loss);
    // Only the Σexp merge order differs from the unsharded head (float rounding).
    if (!(ex < 1e-4 && ew < 1e-4 && el < 1e-6) || !nan_loss || !threw) r.status = CaseResult::Fail;
    r.detail = "combined loss " + fmt("%.2g", el) + " dx " + fmt("%.2g", ex) + " dw " + fmt("%.2g", ew) +
               (nan_loss ? ", shard loss NaN" : ", shard loss NOT NaN") +
               (threw ? ", backward without global stats rejected" : ", backward without global stats ACCEPTED");
    return r;
  }

 private:
  int K_;
};

// ---- Partial FC invariants

class SampleCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "partial-fc arc0.5 K=2 r=0.25 B=40 C=999 D=16 invariants"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Prob p = make(rng, 40, 999, 16, 2);
    MarginParams mp;
    mp.kind = MarginKind::Arc;
    mp.m2 = 0.5;
    HeadOptions o;
    o.sub_centers = 2;
    o.sample_rate = 0.25;
    o.seed = 5;
    MarginHead h(p.D, p.C, mp, o, Device::cpu());
    load(h, p);
    std::string why;
    const Out a = step(h, p);
    const std::vector<int64_t> s0 = h.sampled_classes();
    if (static_cast<int64_t>(s0.size()) != 249) why += " sampled " + std::to_string(s0.size()) + " != 249;";
    if (!std::is_sorted(s0.begin(), s0.end())) why += " not ascending;";
    const std::set<int64_t> set0(s0.begin(), s0.end());
    for (int32_t y : p.y)
      if (!set0.count(y)) why += " positive " + std::to_string(y) + " not sampled;";
    size_t nz_outside = 0, nz_inside = 0;
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t q = 0; q < 2 * p.D; ++q) {
        const float g = a.dw[c * 2 * p.D + q];
        if (!set0.count(c) && g != 0.0f) ++nz_outside;
        if (set0.count(c) && g != 0.0f) ++nz_inside;
      }
    if (nz_outside) why += " " + std::to_string(nz_outside) + " nonzero gradients outside the sample;";
    if (!nz_inside) why += " no gradient inside the sample;";
    // Step 1 samples another set; accumulate adds into dW (rows of step 0 keep their values where not resampled).
    h.forward(ft(p.x, {p.B, p.D}), it(p.y));
    const std::vector<int64_t> s1 = h.sampled_classes();
    h.backward(true);
    std::vector<float> acc(h.grad_weight().numel());
    h.grad_weight().copy_to_host(acc.data());
    if (s1 == s0) why += " step 1 drew the same sample;";
    const std::set<int64_t> set1(s1.begin(), s1.end());
    size_t bad = 0;
    for (int64_t c = 0; c < p.C; ++c)
      if (!set1.count(c))
        for (int64_t q = 0; q < 2 * p.D; ++q) bad += acc[c * 2 * p.D + q] != a.dw[c * 2 * p.D + q];
    if (bad) why += " accumulate changed " + std::to_string(bad) + " rows outside the step-1 sample;";
    // Same seed, step 0 again → same sample.
    HeadState st = h.state();
    st.step = 0;
    h.set_state(st);
    h.forward(ft(p.x, {p.B, p.D}), it(p.y));
    if (h.sampled_classes() != s0) why += " step 0 replay drew a different sample;";
    // r = 0: positives only.
    HeadOptions o0 = o;
    o0.sample_rate = 0;
    MarginHead h0(p.D, p.C, mp, o0, Device::cpu());
    load(h0, p);
    h0.forward(ft(p.x, {p.B, p.D}), it(p.y));
    std::set<int64_t> pos(p.y.begin(), p.y.end());
    if (std::set<int64_t>(h0.sampled_classes().begin(), h0.sampled_classes().end()) != pos)
      why += " r=0 did not sample exactly the positives;";
    // Eval mode: the full class set.
    h.set_training(false);
    h.forward(ft(p.x, {p.B, p.D}), it(p.y));
    if (static_cast<int64_t>(h.sampled_classes().size()) != p.C) why += " eval did not use every class;";
    CaseResult r;
    if (!why.empty()) r.status = CaseResult::Fail;
    r.detail = why.empty() ? "249 sampled, positives kept, zero gradient outside, accumulate, replay, r=0, eval ok" : why;
    return r;
  }
};

// ---- SPEC vectors: AdaFace §4, SphereFace §13; ElasticFace margin statistics

class SpecVectorCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "spec vectors adaface §4, sphereface λ §13, elastic margins"; }
  CaseResult test(Context& ctx) override {
    std::string why;
    // AdaFace: norms [10, 20, 30, 40], fresh buffers → EMA mean 20.05, std 99.1291.
    {
      MarginParams p;
      p.kind = MarginKind::Ada;
      p.m2 = 0.4;
      MarginHead h(2, 3, p, HeadOptions(), Device::cpu());
      std::vector<float> w = {1, 0, 0, 1, -1, 1};
      std::memcpy(h.weight().data(), w.data(), 24);
      std::vector<float> x = {10, 0, 0, 20, 18, 24, 0, -40};
      h.forward(ft(x, {4, 2}), it({0, 1, 2, 0}));
      const HeadState s = h.state();
      if (std::fabs(s.batch_mean - 20.05) > 1e-9 || std::fabs(s.batch_std - 99.1291) > 1e-4)
        why += " adaface EMA " + fmt("%.6f", s.batch_mean) + "/" + fmt("%.6f", s.batch_std) + ";";
      // A batch of one leaves the EMA unchanged (facecuda §00).
      h.forward(ft({3, 4}, {1, 2}), it({1}));
      const HeadState s1 = h.state();
      if (std::fabs(s1.batch_std - s.batch_std) > 0 || std::fabs(s1.batch_mean - s.batch_mean) > 0)
        why += " adaface B=1 changed the EMA;";
      // Eval does not move it either.
      h.set_training(false);
      h.forward(ft(x, {4, 2}), it({0, 1, 2, 0}));
      if (h.state().batch_mean != s.batch_mean) why += " adaface eval changed the EMA;";
    }
    // SphereFace λ (Caffe): iter 1, 10, 100, 1000 → 892.857, 454.545, 76.923, 8.264.
    {
      MarginParams p;
      p.kind = MarginKind::Sphere;
      const int64_t it_[4] = {1, 10, 100, 1000};
      const double want[4] = {892.857, 454.545, 76.923, 8.264};
      for (int q = 0; q < 4; ++q)
        if (std::fabs(sphere_lambda(p, it_[q]) - want[q]) > 6e-4)
          why += " λ(" + std::to_string(it_[q]) + ") = " + fmt("%.4f", sphere_lambda(p, it_[q])) + ";";
      if (sphere_lambda(p, 5000) != 5.0) why += " λ floor;";
    }
    // ElasticFace: margins over B = 20000 rows have mean ≈ m and std ≈ σ; (seed, step) keyed.
    double mean = 0, sd = 0;
    {
      auto rng = make_rng(ctx, params());
      const Prob pr = make(rng, 20000, 5, 4);
      MarginParams p;
      p.kind = MarginKind::Elastic;
      p.m2 = 0.5;
      p.elastic_std = 0.05;
      HeadOptions o;
      o.seed = 3;
      MarginHead h(4, 5, p, o, Device::cpu());
      load(h, pr);
      h.forward(ft(pr.x, {pr.B, 4}), it(pr.y));
      const std::vector<double> m0 = h.last_margins();
      h.forward(ft(pr.x, {pr.B, 4}), it(pr.y));
      const std::vector<double> m1 = h.last_margins();
      for (double v : m0) mean += v;
      mean /= m0.size();
      for (double v : m0) sd += (v - mean) * (v - mean);
      sd = std::sqrt(sd / (m0.size() - 1));
      // Standard errors: σ/√n = 3.5e-4 for the mean, σ/√(2n) = 2.5e-4 for the std: 5 of each.
      if (std::fabs(mean - 0.5) > 1.8e-3 || std::fabs(sd - 0.05) > 1.3e-3)
        why += " elastic mean " + fmt("%.5f", mean) + " std " + fmt("%.5f", sd) + ";";
      if (m0 == m1) why += " elastic step 1 drew the step-0 margins;";
      MarginHead h2(4, 5, p, o, Device::cpu());
      load(h2, pr);
      h2.forward(ft(pr.x, {pr.B, 4}), it(pr.y));
      if (h2.last_margins() != m0) why += " elastic same seed/step differs;";
      h2.set_training(false);
      h2.forward(ft(pr.x, {pr.B, 4}), it(pr.y));
      for (double v : h2.last_margins())
        if (v != 0.5) {
          why += " elastic eval margin not m;";
          break;
        }
    }
    CaseResult r;
    if (!why.empty()) r.status = CaseResult::Fail;
    r.detail = why.empty() ? "adaface EMA 20.05/99.1291, B=1 and eval keep it; λ vectors; elastic mean " +
                                 fmt("%.4f", mean) + " std " + fmt("%.4f", sd) + ", keyed by (seed, step)"
                           : why;
    return r;
  }
};

// ---- ElasticFace plus: the largest target cosine gets the smallest margin

class ElasticPlusCase : public OpCase {
 public:
  std::string op() const override { return "head"; }
  std::string params() const override { return "elastic-arc plus pairing B=64 C=50 D=12"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const Prob p = make(rng, 64, 50, 12);
    MarginParams mp;
    mp.kind = MarginKind::Elastic;
    mp.m2 = 0.5;
    mp.elastic_std = 0.0175;
    mp.elastic_plus = true;
    MarginHead h(p.D, p.C, mp, HeadOptions(), Device::cpu());
    load(h, p);
    const ForwardStats st = h.forward_stats(ft(p.x, {p.B, p.D}), it(p.y));
    (void)st;
    // Target cosines in double from the inputs.
    std::vector<double> ct(p.B);
    for (int64_t i = 0; i < p.B; ++i) {
      double a = 0, nx = 0, nw = 0;
      for (int64_t k = 0; k < p.D; ++k) {
        const double xv = p.x[i * p.D + k], wv = p.w[p.y[i] * p.D + k];
        a += xv * wv;
        nx += xv * xv;
        nw += wv * wv;
      }
      ct[i] = a / std::sqrt(nx * nw);
    }
    const std::vector<double>& m = h.last_margins();
    size_t inversions = 0;
    for (int64_t i = 0; i < p.B; ++i)
      for (int64_t j = 0; j < p.B; ++j)
        if (ct[i] > ct[j] + 1e-6 && m[i] > m[j]) ++inversions;
    CaseResult r;
    if (inversions || m.size() != static_cast<size_t>(p.B)) r.status = CaseResult::Fail;
    r.detail = std::to_string(inversions) + " pairs where a larger target cosine got a larger margin";
    return r;
  }
};

std::vector<std::unique_ptr<OpCase>> ext_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (Cfg& c : configs()) v.push_back(std::make_unique<ExtConsistencyCase>(c));
  v.push_back(std::make_unique<ShardCase>(1));
  v.push_back(std::make_unique<ShardCase>(3));
  v.push_back(std::make_unique<SampleCase>());
  v.push_back(std::make_unique<SpecVectorCase>());
  v.push_back(std::make_unique<ElasticPlusCase>());
  return v;
}

}  // namespace

FC_REGISTER_CASES(heads_ext, ext_cases);

}  // namespace test
}  // namespace fc
