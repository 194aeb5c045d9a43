// @file layers_view_cases.cc
// @brief Harness cases for strided_copy and sum_batch (facecuda/layers_ext.h), the layout moves of
// the model executor: the views it uses (qkv head split and merge, tokens ↔ maps, channel narrow for
// concat/slice, stride-0 class-token broadcast) on fresh random data.
//
//   test  strided_copy against an element-by-element reference over the views' own index math, in
//         the same float operations (alpha·s, + d): the WHOLE destination storage must match
//         bitwise (so nothing outside the view is written); with 1 thread and all threads.
//         sum_batch against a float64 sum in n order (one rounding: bitwise). Argument errors.
//         CUDA (skipped without a device): both ops bitwise equal to the CPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using namespace layer_util;

// A view over a fresh contiguous base: make(base) builds it.
struct ViewSpec {
  std::string name;
  std::vector<int64_t> src_base, dst_base;
  std::function<Tensor(const Tensor&)> src_view, dst_view;
  float alpha;
  bool accumulate;
};

// Element-by-element reference over the views' shapes and strides (offsets relative to each base).
std::vector<float> reference_copy(const Tensor& src, const Tensor& dst, const std::vector<float>& sbase,
                                  std::vector<float> dbase, float alpha, bool accumulate) {
  const std::vector<int64_t> shape = src.shape();
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = i, so = src.offset(), doff = dst.offset();
    for (int a = src.rank() - 1; a >= 0; --a) {
      const int64_t c = r % shape[a];
      r /= shape[a];
      so += c * src.stride(a);
      doff += c * dst.stride(a);
    }
    const float s = alpha * sbase[static_cast<size_t>(so)];
    dbase[static_cast<size_t>(doff)] = accumulate ? s + dbase[static_cast<size_t>(doff)] : s;
  }
  return dbase;
}

std::vector<ViewSpec> view_specs() {
  const int64_t N = 2, T = 5, H = 3, D = 4, C = H * D;
  auto qkv = [=](const Tensor& t) {
    return t.reshape({N, T, 3, H, D}).transpose(0, 2).transpose(1, 2).transpose(2, 3);
  };
  std::vector<ViewSpec> v;
  v.push_back({"qkv split [N,T,3C] -> [3,N,H,T,D]", {N, T, 3 * C}, {3, N, H, T, D}, qkv,
               [](const Tensor& t) { return t; }, 1.0f, false});
  v.push_back({"qkv merge, accumulate", {3, N, H, T, D}, {N, T, 3 * C}, [](const Tensor& t) { return t; }, qkv, 1.0f,
               true});
  v.push_back({"heads out [N,H,T,D] -> [N,T,C]", {N, H, T, D}, {N, T, C}, [](const Tensor& t) { return t; },
               [=](const Tensor& t) { return t.reshape({N, T, H, D}).transpose(1, 2); }, 1.0f, false});
  v.push_back({"to tokens [N,C,H,W] -> [N,HW,C]", {N, 6, 3, 4}, {N, 12, 6},
               [=](const Tensor& t) { return t.reshape({N, 6, 12}).transpose(1, 2); },
               [](const Tensor& t) { return t; }, 1.0f, false});
  // Large enough (>= 32 on both sides) for the tiled transpose of strided_copy, partial tiles included.
  v.push_back({"to tokens, tiled [N,40,6,7] -> [N,42,40]", {N, 40, 6, 7}, {N, 42, 40},
               [=](const Tensor& t) { return t.reshape({N, 40, 42}).transpose(1, 2); },
               [](const Tensor& t) { return t; }, 1.0f, false});
  v.push_back({"to map, tiled, scaled and accumulated [N,42,40] -> [N,40,6,7]", {N, 42, 40}, {N, 40, 6, 7},
               [](const Tensor& t) { return t; },
               [=](const Tensor& t) { return t.reshape({N, 40, 42}).transpose(1, 2); }, -0.75f, true});
  v.push_back({"heads split, tiled [N,T,3,H,D] with T=33, D=35", {N, 33, 3 * 2 * 35}, {3, N, 2, 35, 33},
               [=](const Tensor& t) { return t.reshape({N, 33, 3, 2, 35}).transpose(0, 2).transpose(1, 2).transpose(2, 3).transpose(3, 4); },
               [](const Tensor& t) { return t; }, 1.0f, false});
  v.push_back({"channel slice into a concat", {N, 7, 3, 3}, {N, 9, 3, 3},
               [](const Tensor& t) { return t.narrow(1, 2, 4); }, [](const Tensor& t) { return t.narrow(1, 5, 4); },
               0.5f, true});
  v.push_back({"class token broadcast [1,1,D] -> [N,1,D] of [N,T,D]", {1, 1, D}, {N, T, D},
               [=](const Tensor& t) { return t.expand({N, 1, D}); }, [](const Tensor& t) { return t.narrow(1, 0, 1); },
               1.0f, false});
  v.push_back({"pos embed add [1,T,D] over N", {1, T, D}, {N, T, D}, [=](const Tensor& t) { return t.expand({N, T, D}); },
               [](const Tensor& t) { return t; }, 1.0f, true});
  v.push_back({"padded interior [N,C,H,W] -> narrow(2).narrow(3)", {N, 3, 5, 6}, {N, 3, 6, 7},
               [](const Tensor& t) { return t; }, [](const Tensor& t) { return t.narrow(2, 0, 5).narrow(3, 1, 6); },
               1.0f, false});
  return v;
}

CaseResult copy_test(Context& ctx, const ViewSpec& s, bool cuda) {
  auto rng = make_rng(ctx, s.name);
  const Tensor sb = uniform(rng, s.src_base, -2, 2);
  const Tensor db = uniform(rng, s.dst_base, -2, 2);
  const std::vector<float> ref =
      reference_copy(s.src_view(sb), s.dst_view(db), values(sb), values(db), s.alpha, s.accumulate);
  std::string err;
  for (int threads : {1, 0}) {
    const Device dev = cuda ? Device::cuda(0) : Device::cpu();
    const Tensor sdev = sb.to(dev), ddev = db.to(dev);
    nn::ExecOptions ex;
    ex.max_threads = threads;
    nn::strided_copy(s.src_view(sdev), s.dst_view(ddev), s.alpha, s.accumulate, ex);
    const std::vector<float> got = values(ddev);
    for (size_t i = 0; i < got.size() && err.empty(); ++i) {
      if (!(got[i] == ref[i])) err = str("threads ", threads, ": dst storage[", i, "] = ", got[i], ", expected ", ref[i]);
    }
    if (cuda) break;
  }
  return err.empty() ? passed(str(count(s.dst_base), " dst values bitwise")) : failed(err);
}

CaseResult sum_batch_test(Context& ctx, bool cuda) {
  auto rng = make_rng(ctx, "sum_batch");
  const int64_t N = 7, T = 6, D = 5;
  const Tensor x = uniform(rng, {N, T, D}, -3, 3);
  const std::vector<float> xv = values(x);
  const Device dev = cuda ? Device::cuda(0) : Device::cpu();
  std::string err;
  // (a) the token-0 slice [N, 1, D] into [1, 1, D], accumulating; (b) a transposed [N, D, T] view.
  const Tensor d0 = uniform(rng, {1, 1, D}, -1, 1);
  std::vector<float> ref0 = values(d0);
  for (int64_t d = 0; d < D; ++d) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += xv[static_cast<size_t>((n * T + 0) * D + d)];
    ref0[d] = static_cast<float>(static_cast<double>(ref0[d]) + acc);
  }
  std::vector<float> ref1(static_cast<size_t>(D * T));
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += xv[static_cast<size_t>((n * T + t) * D + d)];
      ref1[static_cast<size_t>(d * T + t)] = static_cast<float>(acc);
    }
  }
  const Tensor xd = x.to(dev);
  const Tensor g0 = d0.to(dev);
  const Tensor g1 = Tensor::empty({D, T}, DType::F32, dev);
  nn::sum_batch(xd.narrow(1, 0, 1), g0, true);
  nn::sum_batch(xd.transpose(1, 2), g1, false);
  const std::vector<float> a = values(g0), b = values(g1);
  for (size_t i = 0; i < a.size() && err.empty(); ++i)
    if (!(a[i] == ref0[i])) err = str("token sum[", i, "] = ", a[i], ", expected ", ref0[i]);
  for (size_t i = 0; i < b.size() && err.empty(); ++i)
    if (!(b[i] == ref1[i])) err = str("transposed sum[", i, "] = ", b[i], ", expected ", ref1[i]);
  return err.empty() ? passed("bitwise (double sums in n order)") : failed(err);
}

CaseResult args_case(Context&) {
  std::string err;
  auto add = [&](const std::string& e) {
    if (err.empty()) err = e;
  };
  const Tensor a = Tensor::empty({2, 3, 4}, DType::F32, Device::cpu());
  const Tensor b = Tensor::empty({2, 4, 3}, DType::F32, Device::cpu());
  const Tensor i32 = Tensor::empty({2, 3, 4}, DType::I32, Device::cpu());
  add(expect_error("shape", Code::ShapeMismatch, [&] { nn::strided_copy(a, b); }, "Expected dst of shape"));
  add(expect_error("dtype", Code::InvalidArgument, [&] { nn::strided_copy(i32, a); }, "float32"));
  add(expect_error("undefined", Code::InvalidArgument, [&] { nn::strided_copy(Tensor(), a); }, "src"));
  const Tensor row = Tensor::empty({1, 3, 4}, DType::F32, Device::cpu());
  add(expect_error("broadcast dst", Code::InvalidArgument, [&] { nn::strided_copy(a, row.expand({2, 3, 4})); },
                   "stride-0"));
  add(expect_error("overlap", Code::InvalidArgument, [&] { nn::strided_copy(a.narrow(1, 0, 2), a.narrow(1, 1, 2)); },
                   "share memory"));
  add(expect_error("sum numel", Code::ShapeMismatch,
                   [&] { nn::sum_batch(a, Tensor::empty({11}, DType::F32, Device::cpu()), false); }, "12 elements"));
  add(expect_error("sum rank", Code::ShapeMismatch,
                   [&] { nn::sum_batch(Tensor::empty({4}, DType::F32, Device::cpu()), row, false); }, "rank 2"));
  add(expect_error("expand size", Code::ShapeMismatch, [&] { a.expand({2, 5, 4}); }, "size 1"));
  return err.empty() ? passed("8 errors") : failed(err);
}

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  for (const ViewSpec& s : view_specs()) {
    v.emplace_back(new FnCase("layer_view.strided_copy", s.name, false, [=](Context& c) { return copy_test(c, s, false); }));
    v.emplace_back(new FnCase("cuda.layer_view.strided_copy", s.name, true, [=](Context& c) { return copy_test(c, s, true); }));
  }
  v.emplace_back(new FnCase("layer_view.sum_batch", "token slice, transposed", false,
                            [](Context& c) { return sum_batch_test(c, false); }));
  v.emplace_back(new FnCase("cuda.layer_view.sum_batch", "token slice, transposed", true,
                            [](Context& c) { return sum_batch_test(c, true); }));
  v.emplace_back(new FnCase("layer_view.args", "invalid arguments", false, args_case));
  return v;
}

}  // namespace

FC_REGISTER_CASES(layers_view, cases);

}  // namespace test
}  // namespace fc
