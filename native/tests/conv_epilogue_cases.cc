// @file conv_epilogue_cases.cc
// @brief Harness cases for Conv2dParams::epilogue (the eval-mode conv → activation fusion of the model
// executor) and the direct 1×1 kernel of cpu/conv_pointwise.h behind it.
//
//   test  conv2d_forward with each epilogue (none, ReLU, ReLU6, hard-swish, SiLU) against a float64
//         convolution followed by the float64 activation, on fresh random data: 1×1 convs over the
//         kernel's range (Cout·Cin up to 64Ki: the direct kernel, partial channel blocks and position
//         tiles, outputs above 16 MiB (streamed stores); above it: the GEMM path) and other convs (3×3 strided, depthwise, asymmetric padding via
//         the executor's path is covered by the model tests), batch 1 and 3; with 1 thread and all
//         threads the results must be bitwise equal (the split never changes a sum). Tolerance: the
//         float32 sum's error bound, 4·K·eps·Σ|w·x| per output, plus the activation's few ulp.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "harness.h"
#include "layer_test_util.h"

namespace fc {
namespace test {
namespace {

using namespace layer_util;

struct Spec {
  int64_t N, Cin, Cout, H, W, k, stride, pad, groups;
  int epilogue;
};

double act64(int e, double v) {
  switch (e) {
    case 1: return v > 0 ? v : 0;
    case 2: return std::min(std::max(v, 0.0), 6.0);
    case 3: return v * std::min(std::max(v / 6 + 0.5, 0.0), 1.0);
    case 4: return v / (1 + std::exp(-v));
    default: return v;
  }
}

const char* epi_name(int e) {
  static const char* names[] = {"none", "relu", "relu6", "hardswish", "silu"};
  return names[e];
}

CaseResult run(Context& ctx, const Spec& s) {
  const std::string name = str("N", s.N, " C", s.Cin, "->", s.Cout, " ", s.H, "x", s.W, " k", s.k, " s", s.stride, " g",
                               s.groups, " ", epi_name(s.epilogue));
  auto rng = make_rng(ctx, name);
  const int64_t cg = s.Cin / s.groups, og = s.Cout / s.groups;
  const Tensor x = uniform(rng, {s.N, s.Cin, s.H, s.W}, -2, 2);
  const Tensor w = uniform(rng, {s.Cout, cg, s.k, s.k}, -1, 1);
  const Tensor b = uniform(rng, {s.Cout}, -1, 1);
  nn::Conv2dParams p(s.stride, s.pad, s.groups);
  p.epilogue = s.epilogue;
  const std::vector<int64_t> ys = nn::conv2d_output_shape(x.shape(), w.shape(), p);
  const int64_t OH = ys[2], OW = ys[3];
  const std::vector<float> xv = values(x), wv = values(w), bv = values(b);
  std::vector<double> ref(static_cast<size_t>(s.N * s.Cout * OH * OW)), bound(ref.size());
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.Cout; ++o)
      for (int64_t y = 0; y < OH; ++y)
        for (int64_t z = 0; z < OW; ++z) {
          double acc = bv[o], mag = std::fabs(bv[o]);
          const int64_t g = o / og;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t i = 0; i < s.k; ++i)
              for (int64_t j = 0; j < s.k; ++j) {
                const int64_t iy = y * s.stride - s.pad + i, iz = z * s.stride - s.pad + j;
                if (iy < 0 || iy >= s.H || iz < 0 || iz >= s.W) continue;
                const double t = static_cast<double>(wv[((o * cg + c) * s.k + i) * s.k + j]) *
                                 xv[((n * s.Cin + g * cg + c) * s.H + iy) * s.W + iz];
                acc += t;
                mag += std::fabs(t);
              }
          const size_t at = static_cast<size_t>(((n * s.Cout + o) * OH + y) * OW + z);
          ref[at] = act64(s.epilogue, acc);
          // the sum's float32 error (slope of the activation <= 1.1), then a few ulp of the activation
          bound[at] = 4.0 * (cg * s.k * s.k + 1) * 6e-8 * mag * 1.1 + 8 * 6e-8 * std::fabs(ref[at]) + 1e-30;
        }
  std::vector<float> first;
  for (int threads : {1, 0}) {
    const Tensor y = Tensor::empty(ys, DType::F32, Device::cpu());
    nn::ExecOptions ex;
    ex.max_threads = threads;
    nn::conv2d_forward(x, w, b, y, p, ex);
    const std::vector<float> got = values(y);
    if (first.empty()) {
      for (size_t i = 0; i < got.size(); ++i) {
        if (!(std::fabs(got[i] - ref[i]) <= bound[i])) {
          return failed(str(name, ": y[", i, "] = ", got[i], ", float64 ", ref[i], " (bound ", bound[i], ")"));
        }
      }
      first = got;
    } else {
      for (size_t i = 0; i < got.size(); ++i) {
        if (!(got[i] == first[i])) return failed(str(name, ": all threads differ from 1 thread at ", i));
      }
    }
  }
  return passed(str(ref.size(), " outputs within the float32 bound, bitwise across thread counts"));
}

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  std::vector<Spec> specs;
  // 1×1 (the direct kernel up to 64Ki weights; 600·120 the GEMM path), partial channel blocks (M % 6) and tiles (P % 64)
  for (int e = 0; e <= 4; ++e) {
    specs.push_back({3, 16, 13, 9, 11, 1, 1, 0, 1, e});
    specs.push_back({1, 40, 24, 8, 8, 1, 1, 0, 1, e});
  }
  specs.push_back({2, 1, 6, 5, 5, 1, 1, 0, 1, 4});
  specs.push_back({1, 96, 5, 20, 13, 1, 1, 0, 1, 3});
  specs.push_back({1, 512, 7, 3, 7, 1, 1, 0, 1, 2});
  specs.push_back({2, 600, 120, 4, 4, 1, 1, 0, 1, 4});
  specs.push_back({1, 24, 144, 28, 28, 1, 1, 0, 1, 1});
  // an output above 16 MiB: written with non-temporal stores
  specs.push_back({4, 16, 96, 112, 112, 1, 1, 0, 1, 4});
  specs.push_back({3, 8, 150, 112, 112, 1, 1, 0, 1, 3});
  // other convolutions keep their algorithm and apply the activation after it
  specs.push_back({2, 8, 12, 9, 9, 3, 2, 1, 1, 3});
  specs.push_back({2, 24, 24, 10, 10, 5, 1, 2, 24, 4});
  specs.push_back({1, 16, 16, 14, 14, 3, 2, 1, 16, 2});
  for (const Spec& s : specs) {
    v.emplace_back(new FnCase("layer.conv2d.epilogue",
                              str("N", s.N, " C", s.Cin, "->", s.Cout, " ", s.H, "x", s.W, " k", s.k, " s", s.stride,
                                  " g", s.groups, " ", epi_name(s.epilogue)),
                              false, [=](Context& c) { return run(c, s); }));
  }
  return v;
}

}  // namespace

FC_REGISTER_CASES(conv_epilogue, cases);

}  // namespace test
}  // namespace fc
