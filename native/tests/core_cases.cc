// @file core_cases.cc
// @brief Harness cases for the engine core: dtype conversions, thread pool, work queue, tensor views.
// References are written independently of the code under test (ldexp-based half decoding, plain
// index arithmetic for strided views).
#include <atomic>
#include <cmath>
#include <cstring>
#include <future>
#include <set>
#include <stdexcept>

#include "facecuda/device.h"
#include "facecuda/dtype.h"
#include "facecuda/error.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

using Fn = std::function<CaseResult(Context&)>;

class CoreCase : public OpCase {
 public:
  CoreCase(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string op() const override { return "core"; }
  std::string params() const override { return name_; }
  CaseResult test(Context& ctx) override { return fn_(ctx); }

 private:
  std::string name_;
  Fn fn_;
};

CaseResult fail(const std::string& why) {
  CaseResult r;
  r.status = CaseResult::Fail;
  r.detail = why;
  return r;
}

// IEEE half decoded with ldexp: the reference for f16_to_f32.
double half_ref(uint16_t h) {
  int sign = (h >> 15) ? -1 : 1;
  int e = (h >> 10) & 0x1f;
  int m = h & 0x3ff;
  if (e == 0) return sign * std::ldexp(m, -24);
  if (e == 31) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + m, e - 25);
}

CaseResult half_exhaustive(Context&) {
  size_t bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    double ref = half_ref(static_cast<uint16_t>(h));
    bool same = std::isnan(ref) ? std::isnan(f) : (static_cast<double>(f) == ref);
    // Every half is exactly representable in float, and converts back to itself (NaN: stays NaN).
    uint16_t back = f32_to_f16(f);
    bool round_trip = std::isnan(ref) ? ((back & 0x7c00) == 0x7c00 && (back & 0x3ff)) : back == h;
    if (!same || !round_trip) ++bad;
  }
  if (bad) return fail(str(bad, " of 65536 half values decode or round-trip wrongly"));
  CaseResult r;
  r.detail = "65536 values";
  return r;
}

CaseResult half_rounding(Context& ctx) {
  // Random floats: the chosen half must be the nearest one (ties to even), checked against the
  // neighbours computed with ldexp.
  auto rng = make_rng(ctx, "half_rounding");
  std::uniform_real_distribution<float> mag(-20.f, 17.f);
  size_t bad = 0;
  for (int i = 0; i < 200000; ++i) {
    float f = std::ldexp(1.0f + (rng() % 1000000) / 1e6f, static_cast<int>(mag(rng))) * ((rng() & 1) ? -1.f : 1.f);
    uint16_t h = f32_to_f16(f);
    double got = half_ref(h);
    if (std::fabs(f) >= 65520.0) {
      if (!std::isinf(got)) ++bad;
      continue;
    }
    // Neighbours of h toward and away from zero.
    double err = std::fabs(got - f);
    double up = half_ref(static_cast<uint16_t>(h + 1));
    double down = (h & 0x7fff) ? half_ref(static_cast<uint16_t>(h - 1)) : got;
    if (std::fabs(up - f) < err || std::fabs(down - f) < err) ++bad;
  }
  if (bad) return fail(str(bad, " of 200000 floats were not rounded to the nearest half"));
  return CaseResult();
}

CaseResult bf16_rounding(Context& ctx) {
  auto rng = make_rng(ctx, "bf16");
  size_t bad = 0;
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng());
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) {
      if (!std::isnan(bf16_to_f32(f32_to_bf16(f)))) ++bad;
      continue;
    }
    uint16_t b = f32_to_bf16(f);
    double got = bf16_to_f32(b);
    double lo = bf16_to_f32(static_cast<uint16_t>(bits >> 16));
    double hi = bf16_to_f32(static_cast<uint16_t>((bits >> 16) + 1));
    // Past the largest finite bfloat16 the next step up is 2^128 in magnitude: IEEE rounds to
    // infinity exactly when the value is nearer to 2^128 than to the largest finite value.
    if (std::isinf(hi)) hi = std::copysign(std::ldexp(1.0, 128), hi);
    double dlo = std::fabs(f - lo), dhi = std::fabs(hi - f);
    double want = dlo < dhi ? lo : dhi < dlo ? hi : (((bits >> 16) & 1) ? hi : lo);
    if (std::fabs(want) == std::ldexp(1.0, 128)) want = std::copysign(INFINITY, want);
    if (!(got == want)) ++bad;
  }
  if (bad) return fail(str(bad, " of 200000 floats were not rounded to the nearest bfloat16 (ties to even)"));
  return CaseResult();
}

CaseResult pool_partition(Context&) {
  ThreadPool& pool = ThreadPool::global();
  for (int64_t n : {1, 2, 3, 7, 64, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (auto& h : hits) h = 0;
    std::vector<int> owner(static_cast<size_t>(n), -1);
    pool.run(n, [&](int64_t t, int thread) {
      hits[static_cast<size_t>(t)]++;
      owner[static_cast<size_t>(t)] = thread;
    });
    int T = std::min<int64_t>(pool.threads_for(0), n);
    for (int64_t t = 0; t < n; ++t) {
      if (hits[static_cast<size_t>(t)] != 1) return fail(str("task ", t, " of ", n, " ran ", hits[static_cast<size_t>(t)].load(), " times"));
      if (owner[static_cast<size_t>(t)] != static_cast<int>(t % T)) return fail(str("task ", t, " ran on thread ", owner[static_cast<size_t>(t)], ", expected ", t % T));
    }
  }
  // Exceptions reach the caller; nested runs execute serially on the calling thread.
  bool caught = false;
  try {
    pool.run(16, [](int64_t t, int) {
      if (t == 5) throw Error(Code::InvalidArgument, "boom");
    });
  } catch (const Error& e) {
    caught = e.code() == Code::InvalidArgument;
  }
  if (!caught) return fail("an exception thrown in a task did not reach the caller");
  std::atomic<int> inner{0};
  pool.run(4, [&](int64_t, int) { pool.run(3, [&](int64_t, int th) { inner += th == 0 ? 1 : 100; }); });
  if (inner != 12) return fail(str("nested run did not execute serially (", inner.load(), ")"));
  return CaseResult();
}

CaseResult queue_order(Context&) {
  WorkQueue q("test");
  std::vector<int> order;
  std::mutex mu;
  std::promise<void> all;
  const int n = 200;
  std::atomic<int> done{0};
  std::atomic<int> errors{0};
  for (int i = 0; i < n; ++i) {
    q.submit(
        [&, i] {
          std::lock_guard<std::mutex> lk(mu);
          order.push_back(i);
          if (i % 50 == 7) throw Error(Code::OutOfRange, "task failed on purpose");
        },
        [&, i](std::exception_ptr e) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const Error& err) {
              if (err.code() == Code::OutOfRange && i % 50 == 7) ++errors;
            }
          }
          if (++done == n) all.set_value();
        });
  }
  all.get_future().wait();
  for (int i = 0; i < n; ++i) {
    if (order[static_cast<size_t>(i)] != i) return fail(str("task ", order[static_cast<size_t>(i)], " ran in position ", i));
  }
  if (errors != 4) return fail(str("expected 4 task errors delivered to completions, got ", errors.load()));
  bool threw = false;
  try {
    q.run_sync([] { throw Error(Code::CorruptFile, "x"); });
  } catch (const Error& e) {
    threw = e.code() == Code::CorruptFile;
  }
  if (!threw) return fail("run_sync did not rethrow the task's error");
  return CaseResult();
}

CaseResult tensor_views(Context& ctx) {
  auto rng = make_rng(ctx, "views");
  const int64_t A = 3, B = 4, C = 5;
  std::vector<float> v(A * B * C);
  fill_uniform(rng, v.data(), v.size(), -1, 1);
  Tensor t = Tensor::from_host(v.data(), v.size() * 4, {A, B, C}, DType::F32, Device::cpu());
  // transpose(0, 2) then narrow(1, 1, 2): element [c, b, a] = v[a, b + 1, c]
  Tensor w = t.transpose(0, 2).narrow(1, 1, 2);
  if (w.is_contiguous()) return fail("a transposed view claims to be contiguous");
  std::vector<float> out(static_cast<size_t>(w.numel()));
  w.copy_to_host(out.data());
  size_t k = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t a = 0; a < A; ++a, ++k)
        if (out[k] != v[static_cast<size_t>((a * B + b + 1) * C + c)]) return fail(str("strided copy wrong at ", k));
  Tensor r = t.reshape({-1, C});
  if (r.size(0) != A * B || r.data() != t.data()) return fail("reshape did not make a view of [12, 5]");
  Tensor copy = w.to(Device::cpu());
  if (!copy.is_contiguous() || std::memcmp(copy.data(), out.data(), out.size() * 4) != 0) return fail("to(cpu) of a view");
  // Errors are fc::Error with codes, never crashes.
  struct Bad {
    const char* what;
    Code code;
    std::function<void()> fn;
  } bad[] = {
      {"reshape to a wrong size", Code::ShapeMismatch, [&] { t.reshape({7, 7}); }},
      {"reshape of a strided view", Code::InvalidArgument, [&] { w.reshape({30}); }},
      {"narrow past the end", Code::OutOfRange, [&] { t.narrow(1, 3, 2); }},
      {"rank 6", Code::InvalidArgument, [&] { Tensor::empty({1, 1, 1, 1, 1, 1}, DType::F32, Device::cpu()); }},
      {"negative dimension", Code::InvalidArgument, [&] { Tensor::empty({2, -1}, DType::F32, Device::cpu()); }},
      {"byte count mismatch", Code::ShapeMismatch, [&] { Tensor::from_host(v.data(), 8, {3}, DType::F32, Device::cpu()); }},
      {"huge shape", Code::InvalidArgument, [&] { Tensor::empty({1 << 30, 1 << 30, 1 << 30}, DType::F32, Device::cpu()); }},
      {"data of an empty tensor handle", Code::Disposed, [&] { Tensor().data(); }},
      {"bad device name", Code::InvalidArgument, [&] { parse_device("gpu0"); }},
  };
  for (auto& b : bad) {
    try {
      b.fn();
      return fail(str(b.what, ": no error"));
    } catch (const Error& e) {
      if (e.code() != b.code) return fail(str(b.what, ": code ", code_name(e.code()), " instead of ", code_name(b.code)));
    }
  }
  return CaseResult();
}

std::vector<std::unique_ptr<OpCase>> core_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  v.emplace_back(new CoreCase("f16 decode + round trip (exhaustive)", half_exhaustive));
  v.emplace_back(new CoreCase("f32->f16 nearest-even (random)", half_rounding));
  v.emplace_back(new CoreCase("f32->bf16 nearest-even (random bits)", bf16_rounding));
  v.emplace_back(new CoreCase("thread pool static partition, errors, nesting", pool_partition));
  v.emplace_back(new CoreCase("work queue order and errors", queue_order));
  v.emplace_back(new CoreCase("tensor views, strided copies, error codes", tensor_views));
  return v;
}

}  // namespace

FC_REGISTER_CASES(core, core_cases);

}  // namespace test
}  // namespace fc
