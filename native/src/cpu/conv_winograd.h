// @file conv_winograd.h
// @brief Winograd F(4×4, 3×3) forward convolution on the CPU (internal; layers_conv.cc dispatches to
// it, see the "winograd" algorithm in facecuda/layers.h).
//
// y = Aᵀ[(G w Gᵀ) ⊙ (Bᵀ d B)]A per 6×6 input tile d (stride 4) and output tile 4×4, with Lavin's
// interpolation points 0, ±1, ±2, ∞. Per frequency ξ (36 of them) the channel sum is one GEMM:
//   M_ξ [Cout × tiles] = U_ξ [Cout × Cin] · V_ξ [Cin × tiles]
// with U the transformed weights (float32) and V the transformed input.
//
// The kernel structs below are shared with conv_winograd_avx512.cc, which is compiled with the
// AVX-512 flags: plain data only, no inline functions (see gemm_internal.h for why).
#pragma once

#include <cstddef>
#include <cstdint>

#include "facecuda/gemm.h"

namespace fc {
namespace nn {
namespace winograd {

constexpr int kTile = 4;    // output tile edge (m)
constexpr int kAlpha = 6;   // input tile edge (m + r − 1)
constexpr int kFreq = 36;   // kAlpha²
constexpr int kLanes = 16;  // tiles per vector in the transform kernels

// One block of tile rows: rows [row0, row0 + nrows) of the (image, tile row) grid, tW tiles each.
// The tiles of the block are numbered t = (row − row0)·tW + tx, the GEMM column.
struct Block {
  int64_t N, H, W;       // input
  int64_t OH, OW;        // output
  int64_t ph, pw;        // padding
  int64_t tH, tW;        // tiles per image: ceil(OH/4), ceil(OW/4)
  int64_t row0, nrows;   // tile rows of the block (row = n·tH + ty)
  int64_t ld;            // floats between consecutive channel rows of V / M (>= tiles + kLanes)
};

// Plane strides (U, V, M) are padded by one cache line beyond their matrix so that the 36 streams of
// a transform do not all map to the same cache sets.
//
// U[ξ·plane + k·C + c] = (G w[k][c] Gᵀ)[ξ] (float32) for output channels [k0, k1) of w (K, C, 3, 3).
struct WeightArgs {
  int64_t K, C;
  const float* w;
  float* U;
  int64_t plane;  // >= K·C
};

// V[ξ·plane + c·ld + t] = (Bᵀ d B)[ξ] for channels [c0, c1) of x (N, C, H, W), every tile of the block.
// Lanes t in [tiles, tiles + kLanes) may be written (slack). work: 12·wp floats of scratch, private
// to the call, wp = 64·ceil(tW/16) + 16 (>= W + 2·pw + 14: the padded row plus one vector).
struct InputArgs {
  Block b;
  int64_t C;
  const float* x;
  float* V;
  int64_t plane;  // >= C·ld
  int64_t wp;
  float* work;
};

// y[n, k, 4ty + r, 4tx + s] = (Aᵀ M A)[r][s] + bias[k] for output channels [k0, k1) (the parts inside
// OH × OW), M[ξ·plane + k·ld + t]. Reads up to kLanes − 1 slack lanes after each row of M.
struct OutputArgs {
  Block b;
  int64_t K;
  const float* M;
  int64_t plane;  // >= K·ld
  const float* bias;  // or null
  float* y;
};

// The SIMD levels (same contract, the same arithmetic in the same order; the AVX-512 build may fuse
// a multiply and an add into one FMA, so the two levels can differ in the last bits).
void weight_transform_portable(const WeightArgs& a, int64_t k0, int64_t k1);
void weight_transform_avx512(const WeightArgs& a, int64_t k0, int64_t k1);
void input_transform_portable(const InputArgs& a, int64_t c0, int64_t c1);
void output_transform_portable(const OutputArgs& a, int64_t k0, int64_t k1);
void input_transform_avx512(const InputArgs& a, int64_t c0, int64_t c1);
void output_transform_avx512(const OutputArgs& a, int64_t k0, int64_t k1);

}  // namespace winograd
}  // namespace nn
}  // namespace fc

namespace fc {
namespace nn {
namespace winograd {

// True when the Winograd path can run this convolution: 3×3, stride 1, padding 0 or 1 on each axis,
// one group, an output of at least 4×4, and Cin, Cout >= kMinChannels. (Whether it is worth it is
// layers_conv.cc's choice.)
constexpr int64_t kMinChannels = 16;
bool shape_eligible(int64_t C, int64_t K, int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                    int64_t groups, int64_t OH, int64_t OW);

// Tiles of the whole batch: N·ceil(OH/4)·ceil(OW/4).
int64_t tile_count(int64_t N, int64_t OH, int64_t OW);

// y = conv3×3(x, w) + bias (bias may be null) for an eligible shape; x (N, C, H, W), w (K, C, 3, 3),
// y (N, K, OH, OW), all contiguous. Workspace: the transformed weights (36·K·C floats, 4× w) and
// blocks of tile rows whose transformed input and GEMM output (36·(C + K) floats per tile) stay
// within max_workspace_bytes (0 = kDefaultWorkspace), one tile row at least. Deterministic: every
// output is one fixed sequence of operations whatever the thread count and the block size.
constexpr size_t kDefaultWorkspace = size_t(16) << 20;
void forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t ph, int64_t pw, const float* x,
             const float* w, const float* bias, float* y, int max_threads, size_t max_workspace_bytes);

}  // namespace winograd
}  // namespace nn
}  // namespace fc
