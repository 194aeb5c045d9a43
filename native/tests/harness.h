// @file harness.h
// @brief The native op test harness (after ggml's test-backend-ops): every op registers a table of
// cases; the runner executes them in one of four modes and prints one line per case.
//
//   test     CPU result against an independent float64 reference; and, when a CUDA device is usable,
//            the CUDA result against the CPU result (NMSE / symmetric relative error)
//   grad     backward formulas against float64 central finite differences, on the CPU
//   perf     median time of repeated runs after warm-up, with FLOP/s or bytes/s
//   support  which devices can run which op (prints a table; never fails)
//
// Usage: facecuda_tests [--mode test|grad|perf|support|all] [--filter SUBSTR] [--seed N]
//                       [--json FILE] [--cuda-only] [--list]
// The last line is "N passed, N failed, N skipped"; the exit status is 1 when anything failed.
//
// Adding an op: write a class deriving from OpCase in native/tests/<op>_cases.cc and register a
// factory with FC_REGISTER_CASES. Every tolerance carries a comment with its reason.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace fc {
namespace test {

enum class Mode { Test, Grad, Perf, Support };

struct Context {
  Mode mode = Mode::Test;
  uint64_t seed = 0;        // fresh per run unless --seed is given; printed so failures reproduce
  bool cuda_available = false;
  std::string cuda_reason;  // why not, for skip messages
  bool cuda_only = false;   // gpu:check: run only the cases that involve CUDA
};

struct CaseResult {
  enum Status { Pass, Fail, Skip } status = Pass;
  std::string detail;  // error figures, timing or the skip reason; printed on the case line
  // Figures for --json (name -> value), e.g. {"max_rel_err", 1e-6} or {"gflops", 310.2}.
  std::vector<std::pair<std::string, double>> figures;

  static CaseResult skip(std::string why) {
    CaseResult r;
    r.status = Skip;
    r.detail = std::move(why);
    return r;
  }
};

class OpCase {
 public:
  virtual ~OpCase() = default;
  virtual std::string op() const = 0;      // e.g. "gemm"
  virtual std::string params() const = 0;  // e.g. "M=7 N=13 K=1 tA=0 tB=1 alpha=0.5 beta=-1"
  virtual bool uses_cuda() const { return false; }  // for --cuda-only
  // Default implementations return Skip("mode not applicable").
  virtual CaseResult test(Context& ctx);
  virtual CaseResult grad(Context& ctx);
  virtual CaseResult perf(Context& ctx);
};

using CaseFactory = std::function<std::vector<std::unique_ptr<OpCase>>()>;

struct Registrar {
  Registrar(const char* name, CaseFactory factory);
};
std::vector<std::pair<std::string, CaseFactory>>& registry();

#define FC_REGISTER_CASES(ident, factory) \
  static ::fc::test::Registrar fc_test_registrar_##ident(#ident, factory)

// ---- helpers shared by cases

// Deterministic generator for a case: seeded from ctx.seed and the case's name.
std::mt19937_64 make_rng(const Context& ctx, const std::string& salt);
void fill_uniform(std::mt19937_64& rng, float* p, size_t n, float lo, float hi);

// Comparison after llm.c's validate_result: |got - ref| <= atol + rtol * |ref| elementwise; reports
// the worst element, the max abs and relative errors and the count of faults in the detail string.
struct Compare {
  bool ok = true;
  double max_abs = 0, max_rel = 0, nmse = 0;
  size_t faults = 0, worst = 0;
  std::string detail;
};
Compare compare(const float* got, const double* ref, size_t n, double atol, double rtol);
Compare compare(const float* got, const float* ref, size_t n, double atol, double rtol);

// Median of repeated timings: runs fn `warmup` times, then `reps` times; seconds.
double median_seconds(const std::function<void()>& fn, int warmup, int reps);

}  // namespace test
}  // namespace fc
