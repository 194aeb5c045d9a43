// @file conv_dw.h
// @brief The depthwise ("direct" algorithm) Conv2d forward on the CPU for the kernels mobile
// backbones use: square 3×3, 5×5, 7×7, 9×9 at stride 1 or 2 (internal; layers_conv.cc dispatches to
// it for groups > 1 with <= 8 channels per group).
//
// Design (conv_dw_kernels.h): one task per output plane (n, co), as before. For each input channel
// of the group the plane is first copied into a zero-padded scratch (so no tap ever needs a bounds
// check), for stride 2 split by column parity into two phase rows (padded column 2q + φ at P[r][φ][q]),
// so that every tap reads a contiguous run of V = 16 (or 8 for OW <= 8) floats. Output rows are then
// computed RB at a time, one vector of columns at a time: each loaded input vector feeds every
// output row of the block it touches, the accumulators stay in registers across all KH·KW taps, and
// the bias (or, for the 2nd.. channel of a group, the partial output) seeds them. The result of a
// plane depends only on the shapes, never on the thread split.
//
// The kernels are compiled three times: conv_dw_avx512.cc (zmm), conv_dw_avx2.cc (ymm pairs) and
// conv_dw.cc (portable); conv_dw.cc picks one with fc::simd_level(). The SIMD files see plain data
// only (no std:: templates: an inline function instantiated with AVX-512 flags could be the copy the
// linker keeps for everyone).
#pragma once

#include <cstdint>

namespace fc {
namespace nn {
namespace dw {

struct Args {
  int64_t C, H, W;          // input channels and plane
  int64_t K, KH, KW;        // output channels, kernel
  int64_t OH, OW;           // output plane
  int64_t sh, sw, ph, pw;   // stride, padding
  int64_t Cg, Kg;           // channels per group in / out
  const float* x;           // (N, C, H, W)
  const float* w;           // (K, Cg, KH, KW)
  const float* bias;        // (K) or null
  float* y;                 // (N, K, OH, OW)
};

// True when forward() handles the shape (square kernel 3/5/7/9, stride 1 or 2 in both directions).
bool supported(const Args& a);

// Output planes [p0, p1) of y (plane = n·K + co). Thread-safe; the scratch is per thread.
void forward(const Args& a, int64_t p0, int64_t p1);

// ---- internal: the per-ISA entry points (scratch: scratch_floats(a) floats, private to the call)
int64_t scratch_floats(const Args& a);
void forward_portable(const Args& a, int64_t p0, int64_t p1, float* scratch);
void forward_avx2(const Args& a, int64_t p0, int64_t p1, float* scratch);
void forward_avx512(const Args& a, int64_t p0, int64_t p1, float* scratch);

}  // namespace dw
}  // namespace nn
}  // namespace fc
