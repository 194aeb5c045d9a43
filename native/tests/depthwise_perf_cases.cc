// @file depthwise_perf_cases.cc
// @brief Perf cases for the depthwise Conv2d forward (the "direct" algorithm of
// native/src/cpu/layers_conv.cc) over the mobile backbones' shapes (MobileNetV3, EfficientNet-B0,
// GhostNet, EdgeNeXt): kernels 3, 5, 7, 9 at stride 1 and 2, with the folded-BatchNorm bias, NCHW
// float32, groups = C.
//
//   perf  median forward time at batch 32 (and a few at batch 1): ms, GFLOP/s (2 flops per tap inside
//         the padded input) and GB/s (input read + output written once)
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

struct DwShape {
  int64_t N, C, H, W, k, s, p;
  int64_t OH() const { return (H + 2 * p - k) / s + 1; }
  int64_t OW() const { return (W + 2 * p - k) / s + 1; }
};

Tensor random_tensor(std::mt19937_64& rng, const std::vector<int64_t>& shape) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  fill_uniform(rng, t.data_as<float>(), static_cast<size_t>(t.numel()), -1, 1);
  return t;
}

class DwPerf : public OpCase {
 public:
  explicit DwPerf(DwShape s) : s_(s) {}
  std::string op() const override { return "layer.conv2d.depthwise"; }
  std::string params() const override {
    char b[160];
    std::snprintf(b, sizeof b, "perf dw k%lld s%lld p%lld C=%lld %lldx%lld->%lldx%lld N=%lld forward+bias",
                  (long long)s_.k, (long long)s_.s, (long long)s_.p, (long long)s_.C, (long long)s_.H,
                  (long long)s_.W, (long long)s_.OH(), (long long)s_.OW(), (long long)s_.N);
    return b;
  }
  CaseResult perf(Context&) override {
    std::mt19937_64 rng(4321);
    const Tensor x = random_tensor(rng, {s_.N, s_.C, s_.H, s_.W}), w = random_tensor(rng, {s_.C, 1, s_.k, s_.k}),
                 b = random_tensor(rng, {s_.C});
    Tensor y = Tensor::empty({s_.N, s_.C, s_.OH(), s_.OW()}, DType::F32, Device::cpu());
    nn::Conv2dParams p;
    p.stride_h = p.stride_w = s_.s, p.pad_h = p.pad_w = s_.p, p.groups = s_.C;
    const int reps = s_.N >= 32 ? 7 : 51;
    const double t = median_seconds([&] { nn::conv2d_forward(x, w, b, y, p); }, 2, reps);
    const double flops = 2.0 * s_.N * s_.C * s_.OH() * s_.OW() * s_.k * s_.k;
    const double bytes = 4.0 * s_.N * s_.C * (s_.H * s_.W + s_.OH() * s_.OW());
    CaseResult r;
    char d[160];
    std::snprintf(d, sizeof d, "%.3f ms  %.1f GFLOP/s  %.1f GB/s (%d threads)", t * 1e3, flops / t / 1e9,
                  bytes / t / 1e9, ThreadPool::global().num_threads());
    r.detail = d;
    r.figures = {{"median_s", t}, {"gflops", flops / t / 1e9}, {"gbps", bytes / t / 1e9}};
    return r;
  }

 private:
  DwShape s_;
};

std::vector<std::unique_ptr<OpCase>> depthwise_perf_cases() {
  const std::vector<DwShape> shapes = {
      // k3 s1 p1
      {32, 32, 112, 112, 3, 1, 1},
      {32, 48, 56, 56, 3, 1, 1},
      {32, 144, 56, 56, 3, 1, 1},
      {32, 240, 28, 28, 3, 1, 1},
      {32, 480, 14, 14, 3, 1, 1},
      {32, 672, 14, 14, 3, 1, 1},
      // k3 s2 p1
      {32, 96, 112, 112, 3, 2, 1},
      {32, 72, 56, 56, 3, 2, 1},
      // k5 s1 p2
      {32, 96, 28, 28, 5, 1, 2},
      {32, 240, 28, 28, 5, 1, 2},
      {32, 672, 14, 14, 5, 1, 2},
      {32, 960, 7, 7, 5, 1, 2},
      // k5 s2 p2
      {32, 144, 56, 56, 5, 2, 2},
      {32, 672, 14, 14, 5, 2, 2},
      // k7 s1 p3, k9 s1 p4 (EdgeNeXt)
      {32, 160, 14, 14, 7, 1, 3},
      {32, 304, 7, 7, 9, 1, 4},
      // batch 1
      {1, 32, 112, 112, 3, 1, 1},
      {1, 96, 112, 112, 3, 2, 1},
      {1, 672, 14, 14, 5, 1, 2},
      {1, 960, 7, 7, 5, 1, 2},
  };
  std::vector<std::unique_ptr<OpCase>> v;
  for (const DwShape& s : shapes) v.push_back(std::make_unique<DwPerf>(s));
  return v;
}

FC_REGISTER_CASES(depthwise_perf, depthwise_perf_cases);

}  // namespace
}  // namespace test
}  // namespace fc
