// @file main.cc
// @brief Runner of the native op test harness (usage in harness.h). Prints the seed first, one line
// per case and mode ("ok   ", "FAIL ", "skip " + op + params + detail + [seconds]), then exactly
// "N passed, N failed, N skipped"; exits 1 when anything failed (2 on a usage error).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "facecuda/cpu_info.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "harness.h"

namespace {

using fc::test::CaseResult;
using fc::test::Context;
using fc::test::Mode;
using fc::test::OpCase;

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Test: return "test";
    case Mode::Grad: return "grad";
    case Mode::Perf: return "perf";
    default: return "support";
  }
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          o += b;
        } else {
          o += c;
        }
    }
  }
  return o;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

struct Record {
  std::string op, params, mode, status, detail;
  double seconds = 0;
  std::vector<std::pair<std::string, double>> figures;
};

int usage(const char* msg) {
  if (msg) std::fprintf(stderr, "%s\n", msg);
  std::fprintf(stderr,
               "usage: facecuda_tests [--mode test|grad|perf|support|all] [--filter SUBSTR] [--seed N]\n"
               "                      [--json FILE] [--cuda-only] [--list]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Mode> modes = {Mode::Test};
  bool all_modes = false, list = false;
  std::string filter, json_path;
  Context ctx;
  bool seed_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "Expected a value after %s\n", name);
        std::exit(usage(nullptr));
      }
      return argv[++i];
    };
    if (a == "--mode") {
      const std::string m = value("--mode");
      if (m == "test") modes = {Mode::Test};
      else if (m == "grad") modes = {Mode::Grad};
      else if (m == "perf") modes = {Mode::Perf};
      else if (m == "support") modes = {Mode::Support};
      else if (m == "all") modes = {Mode::Test, Mode::Grad, Mode::Perf, Mode::Support}, all_modes = true;
      else return usage(("Expected test, grad, perf, support or all for --mode but received " + m).c_str());
    } else if (a == "--filter") {
      filter = value("--filter");
    } else if (a == "--seed") {
      const char* v = value("--seed");
      char* end = nullptr;
      ctx.seed = std::strtoull(v, &end, 10);
      if (!end || *end) return usage((std::string("Expected an unsigned integer for --seed but received ") + v).c_str());
      seed_given = true;
    } else if (a == "--json") {
      json_path = value("--json");
    } else if (a == "--cuda-only") {
      ctx.cuda_only = true;
    } else if (a == "--list") {
      list = true;
    } else if (a == "--help" || a == "-h") {
      usage(nullptr);
      return 0;
    } else {
      return usage(("Unknown argument " + a).c_str());
    }
  }
  if (!seed_given) ctx.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();

  // Build every case once (factories may be costly: keep the objects for all modes).
  std::vector<std::unique_ptr<OpCase>> cases;
  for (auto& entry : fc::test::registry()) {
    for (auto& c : entry.second()) {
      const std::string name = c->op() + " " + c->params();
      if (!filter.empty() && name.find(filter) == std::string::npos) continue;
      if (ctx.cuda_only && !c->uses_cuda()) continue;
      cases.push_back(std::move(c));
    }
  }
  if (list) {
    for (auto& c : cases) std::printf("%s %s%s\n", c->op().c_str(), c->params().c_str(), c->uses_cuda() ? " [cuda]" : "");
    std::printf("%zu cases\n", cases.size());
    return 0;
  }

  std::printf("seed %llu (reproduce with --seed %llu)\n", static_cast<unsigned long long>(ctx.seed),
              static_cast<unsigned long long>(ctx.seed));
  const fc::cuda::Status& cs = fc::cuda::status();
  ctx.cuda_available = cs.available;
  ctx.cuda_reason = cs.available ? "" : (cs.reason.empty() ? "CUDA unavailable" : cs.reason);
  std::printf("cpu: %s, simd %s, sgemm %s; cuda: %s\n", fc::cpu_info().model.c_str(),
              fc::simd_level_name(fc::simd_level()), fc::sgemm_kernel_name(),
              cs.available ? (std::to_string(cs.devices.size()) + " device(s)").c_str() : ctx.cuda_reason.c_str());
  std::fflush(stdout);

  int passed = 0, failed = 0, skipped = 0;
  std::vector<Record> records;
  for (Mode mode : modes) {
    ctx.mode = mode;
    if (mode == Mode::Support) {
      // One row per op: where it can run. Never fails.
      std::map<std::string, std::pair<bool, bool>> ops;  // op -> (has a CPU-only case, has a CUDA case)
      for (auto& c : cases) {
        auto& o = ops[c->op()];
        (c->uses_cuda() ? o.second : o.first) = true;
      }
      std::printf("%-16s %-6s %s\n", "op", "cpu", "cuda");
      for (auto& o : ops) {
        const std::string cpu = o.second.first ? "yes" : "no";
        const std::string cuda =
            !o.second.second ? "no (no CUDA path)" : (ctx.cuda_available ? "yes" : "no (" + ctx.cuda_reason + ")");
        std::printf("%-16s %-6s %s\n", o.first.c_str(), cpu.c_str(), cuda.c_str());
        Record r{o.first, "", "support", "ok", "cpu=" + cpu + " cuda=" + cuda, 0, {}};
        records.push_back(r);
        ++passed;
      }
      continue;
    }
    for (auto& c : cases) {
      CaseResult res;
      const auto t0 = std::chrono::steady_clock::now();
      try {
        switch (mode) {
          case Mode::Test: res = c->test(ctx); break;
          case Mode::Grad: res = c->grad(ctx); break;
          default: res = c->perf(ctx); break;
        }
      } catch (const fc::Error& e) {
        res.status = CaseResult::Fail;
        res.detail = std::string("threw fc::Error ") + fc::code_name(e.code()) + ": " + e.what();
      } catch (const std::exception& e) {
        res.status = CaseResult::Fail;
        res.detail = std::string("threw: ") + e.what();
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // A case that does not apply to the mode (no grad for an argument check) is not reported.
      if (res.status == CaseResult::Skip && res.detail == "mode not applicable") continue;
      const char* tag = res.status == CaseResult::Pass ? "ok  " : (res.status == CaseResult::Fail ? "FAIL" : "skip");
      std::string op = c->op();
      if (all_modes) op += std::string("/") + mode_name(mode);
      if (res.status == CaseResult::Skip) {
        std::printf("%s %s %s (%s)\n", tag, op.c_str(), c->params().c_str(), res.detail.c_str());
      } else {
        std::printf("%s %s %s %s [%.2fs]\n", tag, op.c_str(), c->params().c_str(), res.detail.c_str(), secs);
      }
      std::fflush(stdout);
      if (res.status == CaseResult::Pass) ++passed;
      else if (res.status == CaseResult::Fail) ++failed;
      else ++skipped;
      records.push_back(Record{c->op(), c->params(), mode_name(mode),
                               res.status == CaseResult::Pass ? "ok" : (res.status == CaseResult::Fail ? "fail" : "skip"),
                               res.detail, secs, res.figures});
    }
  }

  if (!json_path.empty()) {
    std::ofstream f(json_path);
    if (!f) {
      std::fprintf(stderr, "could not write %s\n", json_path.c_str());
      ++failed;
    } else {
      f << "{\"seed\":" << ctx.seed << ",\"cpu\":\"" << json_escape(fc::cpu_info().model) << "\",\"simd\":\""
        << fc::simd_level_name(fc::simd_level()) << "\",\"cuda_available\":" << (ctx.cuda_available ? "true" : "false")
        << ",\"cuda_reason\":\"" << json_escape(ctx.cuda_reason) << "\",\"cases\":[";
      for (size_t i = 0; i < records.size(); ++i) {
        const Record& r = records[i];
        f << (i ? "," : "") << "{\"op\":\"" << json_escape(r.op) << "\",\"params\":\"" << json_escape(r.params)
          << "\",\"mode\":\"" << r.mode << "\",\"status\":\"" << r.status << "\",\"detail\":\"" << json_escape(r.detail)
          << "\",\"seconds\":" << json_number(r.seconds) << ",\"figures\":{";
        for (size_t j = 0; j < r.figures.size(); ++j)
          f << (j ? "," : "") << "\"" << json_escape(r.figures[j].first) << "\":" << json_number(r.figures[j].second);
        f << "}}";
      }
      f << "],\"passed\":" << passed << ",\"failed\":" << failed << ",\"skipped\":" << skipped << "}\n";
    }
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}
