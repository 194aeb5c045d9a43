// @file conv_winograd.cc
// @brief The "winograd" forward convolution (conv_winograd.h): weight transform, block plan, the three
// phases per block, and the baseline-ISA copy of the transform kernels (conv_winograd_kernels.h).
//
// Per call:
//   U[ξ][k][c] = (G w[k][c] Gᵀ)[ξ]            float32; one task per output channel
//   per block of tile rows (sequentially):
//     V[ξ][c][t] = (Bᵀ d Bᵀ)[ξ]                 one task per input channel
//     M_ξ = U_ξ · V_ξ  for ξ = 0..35             one task per frequency, fc::sgemm on one thread
//     y = Aᵀ M A + bias                          one task per output channel
// Every output is computed by one task in a fixed order, so the result does not depend on the thread
// count; nor on the block size: a tile's transforms and a GEMM element's K-order reduction (sgemm's
// kc depends on K only) are the same in every block.
#include "cpu/conv_winograd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "facecuda/cpu_info.h"
#include "facecuda/gemm.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "cpu/layers_internal.h"

namespace fc {
namespace nn {
namespace winograd {

namespace {
#include "cpu/conv_winograd_kernels.h"
}  // namespace

void weight_transform_portable(const WeightArgs& a, int64_t k0, int64_t k1) { weight_transform_impl(a, k0, k1); }
void input_transform_portable(const InputArgs& a, int64_t c0, int64_t c1) { input_transform_impl(a, c0, c1); }
void output_transform_portable(const OutputArgs& a, int64_t k0, int64_t k1) { output_transform_impl(a, k0, k1); }

namespace {

using detail::ceil_div;
using detail::parallel_for;

using WeightFn = void (*)(const WeightArgs&, int64_t, int64_t);
using InputFn = void (*)(const InputArgs&, int64_t, int64_t);
using OutputFn = void (*)(const OutputArgs&, int64_t, int64_t);

Tensor scratch(int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::cpu()); }

}  // namespace

bool shape_eligible(int64_t C, int64_t K, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                    int64_t groups, int64_t OH, int64_t OW) {
  return KH == 3 && KW == 3 && sh == 1 && sw == 1 && ph >= 0 && ph <= 1 && pw >= 0 && pw <= 1 && groups == 1 &&
         OH >= kTile && OW >= kTile && C >= kMinChannels && K >= kMinChannels;
}

int64_t tile_count(int64_t N, int64_t OH, int64_t OW) { return N * ceil_div(OH, kTile) * ceil_div(OW, kTile); }

void forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t ph, int64_t pw, const float* x,
             const float* w, const float* bias, float* y, int max_threads, size_t max_workspace_bytes) {
  const bool avx512 = simd_level() == SimdLevel::Avx512;
  const WeightFn w_fn = avx512 ? weight_transform_avx512 : weight_transform_portable;
  const InputFn in_fn = avx512 ? input_transform_avx512 : input_transform_portable;
  const OutputFn out_fn = avx512 ? output_transform_avx512 : output_transform_portable;

  Block b{};
  b.N = N, b.H = H, b.W = W, b.ph = ph, b.pw = pw;
  b.OH = H + 2 * ph - 2, b.OW = W + 2 * pw - 2;
  b.tH = ceil_div(b.OH, kTile), b.tW = ceil_div(b.OW, kTile);
  const int64_t rows_total = N * b.tH;

  // Block plan: tile rows per block so that V and M (36·(C + K) floats per tile) fit the budget.
  const size_t budget = max_workspace_bytes ? max_workspace_bytes : kDefaultWorkspace;
  const int64_t per_row = kFreq * (C + K) * b.tW * static_cast<int64_t>(sizeof(float));
  const int64_t rows_per_block = std::max<int64_t>(1, std::min<int64_t>(rows_total, static_cast<int64_t>(budget) / per_row));
  const int64_t max_tiles = rows_per_block * b.tW;
  b.ld = (max_tiles + 2 * kLanes - 1) / kLanes * kLanes;  // >= tiles + kLanes, a multiple of 16

  // Plane strides padded by one cache line (conv_winograd.h).
  const int64_t uplane = K * C + kLanes, vplane = C * b.ld + kLanes, mplane = K * b.ld + kLanes;
  Tensor u_t = scratch(kFreq * uplane), v_t = scratch(kFreq * vplane), m_t = scratch(kFreq * mplane);
  float* U = u_t.data_as<float>();
  float* V = v_t.data_as<float>();
  float* M = m_t.data_as<float>();
  for (int64_t f = 0; f < kFreq; ++f)
    for (int64_t k = 0; k < K; ++k) std::memset(M + f * mplane + k * b.ld + max_tiles, 0, sizeof(float) * (b.ld - max_tiles));

  const WeightArgs wa{K, C, w, U, uplane};
  parallel_for(K, 1, max_threads, [&](int64_t k0, int64_t k1) { w_fn(wa, k0, k1); });

  GemmOptions go;
  go.max_threads = 1;
  ThreadPool& pool = ThreadPool::global();
  for (int64_t row0 = 0; row0 < rows_total; row0 += rows_per_block) {
    b.row0 = row0, b.nrows = std::min(rows_per_block, rows_total - row0);
    const int64_t tiles = b.nrows * b.tW;
    const int64_t wp = 64 * ceil_div(b.tW, kLanes) + kLanes;
    parallel_for(C, 1, max_threads, [&](int64_t c0, int64_t c1) {
      std::vector<float> work(static_cast<size_t>(12 * wp));
      const InputArgs ia{b, C, x, V, vplane, wp, work.data()};
      in_fn(ia, c0, c1);
    });
    pool.run(
        kFreq,
        [&](int64_t f, int) {
          sgemm(false, false, K, tiles, C, 1.0f, U + f * uplane, C, V + f * vplane, b.ld, 0.0f, M + f * mplane, b.ld, go);
        },
        max_threads);
    const OutputArgs oa{b, K, M, mplane, bias, y};
    parallel_for(K, 1, max_threads, [&](int64_t k0, int64_t k1) { out_fn(oa, k0, k1); });
  }
}

}  // namespace winograd
}  // namespace nn
}  // namespace fc
