// Search cases: fc::search top-k against a float64 brute force (both CPU paths, f32 and f16 storage,
// odd dims that exercise the SIMD tails, filters, k past n), the SIMD kernels of every level this CPU
// has against float64, the Index (copy-on-write snapshots, removal that zeroes the vacated row), and
// CUDA: topk_cuda against topk_cpu on a device, or the CUDA_UNAVAILABLE path without one.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "cpu/search_internal.h"
#include "facecuda/cpu_info.h"
#include "facecuda/cuda.h"
#include "facecuda/dtype.h"
#include "facecuda/error.h"
#include "facecuda/search.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

namespace fs = fc::search;

CaseResult fail(const std::string& why) {
  CaseResult r;
  r.status = CaseResult::Fail;
  r.detail = why;
  return r;
}

struct Ref {
  double s;
  int64_t id;
};

// Brute force over the stored values (f16 rows widened exactly), float64 accumulation.
std::vector<Ref> brute(const fs::Store& st, const float* q, const std::vector<uint64_t>* allow) {
  std::vector<Ref> out;
  for (int64_t r = 0; r < st.n; ++r) {
    if (allow && !(((*allow)[r >> 6] >> (r & 63)) & 1u)) continue;
    double s = 0;
    for (int64_t d = 0; d < st.dim; ++d) {
      const double g = st.storage == fs::Storage::F32 ? st.f32[r * st.dim + d] : f16_to_f32(st.f16[r * st.dim + d]);
      s += g * q[d];
    }
    out.push_back({s, st.ids[r]});
  }
  std::sort(out.begin(), out.end(), [](const Ref& a, const Ref& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); });
  return out;
}

// Checks one query's k slots against the brute force: the j-th score within tol of the j-th best,
// the returned id truly scoring that, best-first order, and padding past the available count.
std::string check_row(const int64_t* ids, const float* sc, int64_t k, const std::vector<Ref>& ref, double tol) {
  const int64_t avail = std::min<int64_t>(k, static_cast<int64_t>(ref.size()));
  for (int64_t j = 0; j < k; ++j) {
    if (j >= avail) {
      if (ids[j] != -1 || sc[j] != -std::numeric_limits<float>::infinity()) return str("slot ", j, " should be empty");
      continue;
    }
    if (std::fabs(sc[j] - ref[j].s) > tol) return str("rank ", j, ": score ", sc[j], " vs ", ref[j].s);
    bool found = false;
    for (const Ref& e : ref)
      if (e.id == ids[j] && std::fabs(e.s - ref[j].s) <= 2 * tol) found = true;
    if (!found) return str("rank ", j, ": id ", ids[j], " does not score ", ref[j].s);
    if (j && !(sc[j - 1] > sc[j] || (sc[j - 1] == sc[j] && ids[j - 1] < ids[j]))) return str("rank ", j, ": order");
  }
  return "";
}

class TopKCase : public OpCase {
 public:
  TopKCase(int64_t n, int64_t dim, int64_t Q, int64_t k, fs::Storage st, fs::Path path, bool filter)
      : n_(n), dim_(dim), Q_(Q), k_(k), st_(st), path_(path), filter_(filter) {}
  std::string op() const override { return "search_topk"; }
  std::string params() const override {
    return str("n=", n_, " dim=", dim_, " Q=", Q_, " k=", k_, " ", st_ == fs::Storage::F16 ? "f16" : "f32", " path=",
               path_ == fs::Path::Scan ? "scan" : path_ == fs::Path::Gemm ? "gemm" : "auto", filter_ ? " filter" : "");
  }
  bool uses_cuda() const override { return true; }

  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    fs::Index ix(dim_, st_);
    std::vector<float> v(static_cast<size_t>(n_ * dim_));
    fill_uniform(rng, v.data(), v.size(), -1, 1);
    std::vector<int64_t> ids(n_);
    for (int64_t i = 0; i < n_; ++i) ids[i] = static_cast<int64_t>(rng() % 1000000007ULL);
    // A few duplicate vectors under other ids: exact ties broken by id.
    for (int64_t i = 0; i + 1 < n_ && i < 8; ++i) std::copy(v.begin() + i * dim_, v.begin() + (i + 1) * dim_, v.begin() + (n_ - 1 - i) * dim_);
    ix.add(ids.data(), v.data(), n_);
    auto snap = ix.snapshot();
    std::vector<float> q(static_cast<size_t>(Q_ * dim_));
    fill_uniform(rng, q.data(), q.size(), -1, 1);
    std::vector<uint64_t> allow;
    if (filter_) {
      allow.assign(static_cast<size_t>((n_ + 63) / 64), 0);
      for (int64_t r = 0; r < n_; ++r)
        if (rng() % 3 == 0) allow[r >> 6] |= uint64_t(1) << (r & 63);
    }
    fs::SearchOptions o;
    o.path = path_;
    o.allow = filter_ ? allow.data() : nullptr;
    std::vector<int64_t> oi(static_cast<size_t>(Q_ * k_));
    std::vector<float> os(static_cast<size_t>(Q_ * k_));
    fs::topk_cpu(snap->view(), q.data(), Q_, k_, oi.data(), os.data(), o);
    // fp32 dot products of dim terms of magnitude <= 1: error well under dim * 2^-24 * (sum |terms|).
    const double tol = 4e-7 * dim_ * std::sqrt(static_cast<double>(dim_)) + 1e-6;
    for (int64_t qi = 0; qi < Q_; ++qi) {
      auto ref = brute(*snap, q.data() + qi * dim_, filter_ ? &allow : nullptr);
      std::string e = check_row(oi.data() + qi * k_, os.data() + qi * k_, k_, ref, tol);
      if (!e.empty()) return fail(str("cpu query ", qi, ": ", e));
    }
    CaseResult res;
    res.detail = "cpu ok";
    if (!ctx.cuda_available || k_ > fs::kMaxKCuda) return res;
    // CUDA against the brute force (fp16 GEMMs round the queries to fp16 too: a wider tolerance).
    fs::DeviceGallery dg(0, *snap);
    std::vector<int64_t> gi(oi.size());
    std::vector<float> gs(os.size());
    fs::topk_cuda(dg, q.data(), Q_, k_, gi.data(), gs.data(), o.allow);
    const double gtol = st_ == fs::Storage::F16 && Q_ > fs::kScanMaxQueries ? 2e-3 * std::sqrt(static_cast<double>(dim_)) : tol;
    for (int64_t qi = 0; qi < Q_; ++qi) {
      auto ref = brute(*snap, q.data() + qi * dim_, filter_ ? &allow : nullptr);
      std::string e = check_row(gi.data() + qi * k_, gs.data() + qi * k_, k_, ref, gtol);
      if (!e.empty()) return fail(str("cuda query ", qi, ": ", e));
    }
    res.detail = "cpu ok, cuda ok";
    return res;
  }

 private:
  int64_t n_, dim_, Q_, k_;
  fs::Storage st_;
  fs::Path path_;
  bool filter_;
};

// Every SIMD level this CPU has: scores of odd dims (tails), the f16 widening, the threshold pass.
class KernelCase : public OpCase {
 public:
  explicit KernelCase(int64_t dim) : dim_(dim) {}
  std::string op() const override { return "search_kernels"; }
  std::string params() const override { return str("dim=", dim_); }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t nr = 23, nq = 3;
    std::vector<float> g(static_cast<size_t>(40 * dim_)), q(static_cast<size_t>(nq * dim_));
    fill_uniform(rng, g.data(), g.size(), -1, 1);
    fill_uniform(rng, q.data(), q.size(), -1, 1);
    std::vector<uint16_t> gh(g.size());
    for (size_t i = 0; i < g.size(); ++i) gh[i] = f32_to_f16(g[i]);
    std::vector<int64_t> rows(nr);
    for (int64_t i = 0; i < nr; ++i) rows[i] = static_cast<int64_t>(rng() % 40);
    std::vector<const fs::kern::Kernels*> levels = {&fs::kern::kernels_portable()};
    if (cpu_info().avx2 && cpu_info().fma && cpu_info().f16c) levels.push_back(&fs::kern::kernels_avx2());
    if (cpu_info().avx512f && cpu_info().avx512bw && cpu_info().avx512vl) levels.push_back(&fs::kern::kernels_avx512());
    std::string names;
    for (const auto* ks : levels) {
      names += str(ks->name, " ");
      for (int half = 0; half < 2; ++half) {
        for (int gathered = 0; gathered < 2; ++gathered) {
          std::vector<float> out(static_cast<size_t>(nq * nr));
          if (half)
            ks->score_f16(gh.data(), gathered ? rows.data() : nullptr, 5, nr, dim_, q.data(), nq, out.data(), nr);
          else
            ks->score_f32(g.data(), gathered ? rows.data() : nullptr, 5, nr, dim_, q.data(), nq, out.data(), nr);
          for (int64_t qi = 0; qi < nq; ++qi)
            for (int64_t i = 0; i < nr; ++i) {
              const int64_t r = gathered ? rows[i] : 5 + i;
              double ref = 0;
              for (int64_t d = 0; d < dim_; ++d)
                ref += (half ? f16_to_f32(gh[r * dim_ + d]) : g[r * dim_ + d]) * static_cast<double>(q[qi * dim_ + d]);
              if (std::fabs(out[qi * nr + i] - ref) > 1e-6 * dim_ + 1e-6)
                return fail(str(ks->name, half ? " f16" : " f32", gathered ? " gathered" : "", " q", qi, " row ", i, ": ",
                                out[qi * nr + i], " vs ", ref));
            }
        }
      }
      std::vector<float> w(gh.size());
      ks->widen_f16(gh.data(), w.data(), static_cast<int64_t>(gh.size()) - 3);
      for (size_t i = 0; i + 3 < gh.size(); ++i)
        if (w[i] != f16_to_f32(gh[i])) return fail(str(ks->name, " widen_f16 at ", i));
      std::vector<int32_t> idx(g.size());
      const float thr = 0.25f;
      const int64_t c = ks->select_ge(g.data(), static_cast<int64_t>(g.size()) - 1, thr, idx.data());
      int64_t want = 0;
      for (size_t i = 0; i + 1 < g.size(); ++i)
        if (g[i] >= thr) {
          if (want >= c || idx[want] != static_cast<int32_t>(i)) return fail(str(ks->name, " select_ge at ", i));
          ++want;
        }
      if (want != c) return fail(str(ks->name, " select_ge count ", c, " vs ", want));
    }
    CaseResult r;
    r.detail = names;
    return r;
  }

 private:
  int64_t dim_;
};

class IndexCase : public OpCase {
 public:
  std::string op() const override { return "search_index"; }
  std::string params() const override { return "copy-on-write, removal, errors"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t D = 5;
    fs::Index ix(D, fs::Storage::F32);
    std::vector<float> v(static_cast<size_t>(6 * D));
    fill_uniform(rng, v.data(), v.size(), -1, 1);
    const int64_t ids[6] = {10, 11, 12, 11, 14, 15};
    ix.add(ids, v.data(), 6);
    if (ix.max_rows_per_id() != 2 || ix.num_ids() != 5) return fail("row/id counts");
    auto before = ix.snapshot();
    const int64_t rm = 11;
    if (ix.remove(&rm, 1) != 2) return fail("remove should take both rows of id 11");
    if (before->n != 6 || ix.size() != 4) return fail("the snapshot changed or the index did not");
    auto after = ix.snapshot();
    // The vacated tail is zeroed: the capacity beyond n holds no removed values.
    const float* tail = after->f32.data() + after->n * D;
    for (int64_t i = 0; i < 2 * D && after->f32.capacity() >= static_cast<size_t>((after->n + 2) * D); ++i)
      if (tail[i] != 0.0f) return fail("a removed row's values remain past the end");
    for (int64_t r = 0; r < after->n; ++r)
      if (after->ids[r] == 11) return fail("id 11 still has a row");
    bool threw = false;
    try {
      ix.update(999, v.data());
    } catch (const Error& e) {
      threw = e.code() == Code::OutOfRange;
    }
    if (!threw) return fail("update of an unknown id must be OUT_OF_RANGE");
    threw = false;
    v[3] = std::numeric_limits<float>::quiet_NaN();
    try {
      ix.add(ids, v.data(), 1);
    } catch (const Error& e) {
      threw = e.code() == Code::InvalidArgument;
    }
    if (!threw || ix.size() != 4) return fail("NaN must be INVALID_ARGUMENT and add nothing");
    threw = false;
    try {
      std::vector<int64_t> oi(3);
      std::vector<float> os(3);
      fs::topk_cpu(after->view(), v.data() + D, 1, 0, oi.data(), os.data());
    } catch (const Error& e) {
      threw = e.code() == Code::OutOfRange;
    }
    if (!threw) return fail("k = 0 must be OUT_OF_RANGE");
    auto means = fs::Index::means_of(*before);
    if (means->n != 5 || means->ids[1] != 11) return fail("means_of rows");
    double nrm = 0;
    for (int64_t d = 0; d < D; ++d) nrm += static_cast<double>(means->f32[D + d]) * means->f32[D + d];
    if (std::fabs(nrm - 1) > 1e-6) return fail("means_of rows must be unit");
    return CaseResult();
  }
};

// Without a usable device every CUDA entry point throws CUDA_UNAVAILABLE (never aborts).
class NoDeviceCase : public OpCase {
 public:
  std::string op() const override { return "search_cuda_unavailable"; }
  std::string params() const override { return "DeviceGallery without a device"; }
  CaseResult test(Context& ctx) override {
    if (ctx.cuda_available) return CaseResult::skip("a CUDA device is available (the search_topk cases run on it)");
    fs::Store s;
    s.dim = 4;
    try {
      fs::DeviceGallery g(0, s);
    } catch (const Error& e) {
      if (e.code() != Code::CudaUnavailable) return fail(str("code ", code_name(e.code())));
      CaseResult r;
      r.detail = e.what();
      return r;
    }
    return fail("DeviceGallery did not throw");
  }
};

class PerfCase : public OpCase {
 public:
  PerfCase(int64_t n, int64_t Q, fs::Storage st) : n_(n), Q_(Q), st_(st) {}
  std::string op() const override { return "search_perf"; }
  std::string params() const override { return str("n=", n_, " dim=512 Q=", Q_, " k=10 ", st_ == fs::Storage::F16 ? "f16" : "f32"); }
  CaseResult perf(Context& ctx) override {
    auto rng = make_rng(ctx, params());
    const int64_t D = 512;
    fs::Index ix(D, st_);
    std::vector<float> v(static_cast<size_t>(n_ * D));
    fill_uniform(rng, v.data(), v.size(), -0.05f, 0.05f);
    std::vector<int64_t> ids(n_);
    for (int64_t i = 0; i < n_; ++i) ids[i] = i;
    ix.add(ids.data(), v.data(), n_);
    std::vector<float> q(static_cast<size_t>(Q_ * D));
    fill_uniform(rng, q.data(), q.size(), -0.05f, 0.05f);
    std::vector<int64_t> oi(static_cast<size_t>(Q_ * 10));
    std::vector<float> os(oi.size());
    auto snap = ix.snapshot();
    const double t = median_seconds([&] { fs::topk_cpu(snap->view(), q.data(), Q_, 10, oi.data(), os.data()); }, 1, 3);
    CaseResult r;
    const double gbs = n_ * static_cast<double>(snap->row_bytes()) / t / 1e9;
    const double gflops = 2.0 * Q_ * n_ * D / t / 1e9;
    r.detail = str(Q_ / t, " q/s, ", gbs, " GB/s, ", gflops, " GFLOP/s");
    r.figures = {{"queries_per_second", Q_ / t}, {"gb_per_second", gbs}, {"gflops", gflops}};
    return r;
  }

 private:
  int64_t n_, Q_;
  fs::Storage st_;
};

std::vector<std::unique_ptr<OpCase>> search_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  using S = fs::Storage;
  using P = fs::Path;
  for (S st : {S::F32, S::F16}) {
    for (P p : {P::Scan, P::Gemm}) {
      v.push_back(std::make_unique<TopKCase>(1500, 37, 3, 10, st, p, false));
      v.push_back(std::make_unique<TopKCase>(2000, 64, 11, 100, st, p, true));
      v.push_back(std::make_unique<TopKCase>(700, 512, 2, 1024, st, p, false));   // k > n
      v.push_back(std::make_unique<TopKCase>(5000, 5, 9, 1, st, p, false));
    }
    v.push_back(std::make_unique<TopKCase>(9000, 128, 1, 50, st, P::Auto, true));
    v.push_back(std::make_unique<TopKCase>(9000, 96, 300, 10, st, P::Auto, false));
  }
  for (int64_t d : {1, 7, 15, 16, 17, 33, 100}) v.push_back(std::make_unique<KernelCase>(d));
  v.push_back(std::make_unique<IndexCase>());
  v.push_back(std::make_unique<NoDeviceCase>());
  for (S st : {S::F32, S::F16})
    for (int64_t Q : {1, 256}) v.push_back(std::make_unique<PerfCase>(200000, Q, st));
  return v;
}

}  // namespace

FC_REGISTER_CASES(search, search_cases);

}  // namespace test
}  // namespace fc
