// @file harness.cc
// @brief The shared pieces of the native op test harness (harness.h): the case registry, default
// mode implementations, seeded generators, the elementwise comparison and the timing helper.
#include "harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace fc {
namespace test {

CaseResult OpCase::test(Context&) { return CaseResult::skip("mode not applicable"); }
CaseResult OpCase::grad(Context&) { return CaseResult::skip("mode not applicable"); }
CaseResult OpCase::perf(Context&) { return CaseResult::skip("mode not applicable"); }

std::vector<std::pair<std::string, CaseFactory>>& registry() {
  static std::vector<std::pair<std::string, CaseFactory>> r;
  return r;
}

Registrar::Registrar(const char* name, CaseFactory factory) { registry().emplace_back(name, std::move(factory)); }

std::mt19937_64 make_rng(const Context& ctx, const std::string& salt) {
  // FNV-1a of the salt mixed with the run seed: each case draws the same data for a given --seed,
  // whatever the filter or the order in which cases run.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : salt) {
    h ^= c;
    h *= 1099511628211ull;
  }
  std::seed_seq seq{static_cast<uint32_t>(ctx.seed), static_cast<uint32_t>(ctx.seed >> 32),
                    static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
  return std::mt19937_64(seq);
}

void fill_uniform(std::mt19937_64& rng, float* p, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  for (size_t i = 0; i < n; ++i) p[i] = dist(rng);
}

namespace {

template <typename Ref>
Compare compare_impl(const float* got, const Ref* ref, size_t n, double atol, double rtol) {
  Compare c;
  double worst_ratio = -1, sum_err2 = 0, sum_ref2 = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], r = static_cast<double>(ref[i]);
    const bool both_nan = std::isnan(g) && std::isnan(r);
    const double err = both_nan ? 0.0 : std::fabs(g - r);  // NaN when only one side is NaN
    const double tol = atol + rtol * std::fabs(r);
    const bool bad = !(err <= tol);  // catches NaN
    if (bad) ++c.faults;
    if (!both_nan && std::isfinite(err)) {
      c.max_abs = std::max(c.max_abs, err);
      if (r != 0) c.max_rel = std::max(c.max_rel, err / std::fabs(r));
      sum_err2 += err * err;
      sum_ref2 += r * r;
    }
    const double ratio = bad ? HUGE_VAL : err / (tol > 0 ? tol : 1e-300);
    if (ratio > worst_ratio) worst_ratio = ratio, c.worst = i;
  }
  c.nmse = sum_ref2 > 0 ? sum_err2 / sum_ref2 : sum_err2;
  c.ok = c.faults == 0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "max_abs=%.3g max_rel=%.3g nmse=%.3g", c.max_abs, c.max_rel, c.nmse);
  c.detail = buf;
  if (!c.ok) {
    std::snprintf(buf, sizeof buf, " faults=%zu worst@%zu got=%.9g ref=%.9g", c.faults, c.worst,
                  static_cast<double>(got[c.worst]), static_cast<double>(ref[c.worst]));
    c.detail += buf;
  }
  return c;
}

}  // namespace

Compare compare(const float* got, const double* ref, size_t n, double atol, double rtol) {
  return compare_impl(got, ref, n, atol, rtol);
}

Compare compare(const float* got, const float* ref, size_t n, double atol, double rtol) {
  return compare_impl(got, ref, n, atol, rtol);
}

double median_seconds(const std::function<void()>& fn, int warmup, int reps) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  t.reserve(static_cast<size_t>(std::max(reps, 1)));
  for (int i = 0; i < std::max(reps, 1); ++i) {
    const auto t0 = clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  const size_t m = t.size() / 2;
  return t.size() % 2 ? t[m] : 0.5 * (t[m - 1] + t[m]);
}

}  // namespace test
}  // namespace fc
