// @file conv_pointwise.h
// @brief A direct 1×1 convolution kernel for small input-channel counts (the expand/project convs
// of MobileNetV3, EfficientNet and GhostNet), with the bias and an activation fused into its
// epilogue. One image: y[m, p] = act(Σ_k w[m, k]·x[k, p] + b[m]), x [K, P] and y [M, P] row-major,
// w [M, K]. No packing: a tile of 6 output channels × 64 positions is accumulated in registers over
// k = 0..K−1 in order (one FMA chain per output: the result does not depend on the thread split),
// reading the input rows in place; the tile is written once, activated.
//
// Only an AVX-512 kernel exists (conv_pointwise_avx512.cc); kernel() is null elsewhere and the
// caller keeps its GEMM path. Like gemm_internal.h, the SIMD file includes this header, so it
// declares no inline code.
#pragma once
#include <cstdint>

namespace fc {
namespace nn {
namespace pointwise {

// The activation applied after the bias (values of facecuda/layers.h's ConvEpilogue).
enum class Act : int { kNone = 0, kReLU = 1, kReLU6 = 2, kHardSwish = 3, kSiLU = 4 };

// Columns [p0, p1) of one image (the caller splits P over threads; p0 a multiple of 64 except the
// first). SiLU calls `silu` (act_smooth's kernel of the same SIMD level) on each finished row span.
using SiluFn = void (*)(const float* x, float* y, int64_t n);
// stream: write whole 64-byte lines with non-temporal stores (for outputs far larger than the caches).
using Fn = void (*)(const float* x, const float* w, const float* b, float* y, int64_t M, int64_t K, int64_t P,
                    int64_t p0, int64_t p1, Act act, SiluFn silu, bool stream);

Fn kernel_avx512();  // conv_pointwise_avx512.cc
// The kernel for this CPU (fc::simd_level() >= Avx512), else nullptr.
Fn kernel();

constexpr int64_t kTileP = 64;   // positions per tile (4 vectors)
// Outputs above this many bytes are streamed past the caches (see Fn).
constexpr int64_t kStreamBytes = int64_t{16} << 20;
// The direct kernel is used while the weights (M·K floats, re-read for every tile) stay in L2: up to
// 64Ki of them (256 KiB). Larger layers keep the packed GEMM (measured on EfficientNet-B0's 1×1
// convs at batch 32: all direct 205–221 ms, all GEMM 190 ms, direct up to 64Ki weights 167 ms).
constexpr int64_t kMaxWeights = 65536;

}  // namespace pointwise
}  // namespace nn
}  // namespace fc
