// @file search_internal.h
// @brief The contract between the search driver (search.cc) and its per-SIMD-level kernels
// (search_avx512.cc, search_avx2.cc, the portable ones inside search.cc).
//
// Numerics every level keeps: a row's score is one fp32 dot product whose summation order depends
// only on dim (never on the row's position in a block, the block size or the thread), so identical
// rows always get identical scores and results do not depend on the thread count.
//
// Like gemm_internal.h, nothing declared here may be inline or a template: the SIMD files are built
// with -m flags and keep their helpers in anonymous namespaces.
#pragma once

#include <cstdint>

namespace fc {
namespace search {
namespace kern {

// out[q * ldo + i] = dot(Q[q * dim .. +dim), row r_i) for q < nq, i < nr, where r_i = rows[i] when
// rows is non-null, else r0 + i. G is the gallery base (n x dim fp32, or fp16 bits for score_f16).
using ScoreF32 = void (*)(const float* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim, const float* Q,
                          int64_t nq, float* out, int64_t ldo);
using ScoreF16 = void (*)(const uint16_t* G, const int64_t* rows, int64_t r0, int64_t nr, int64_t dim,
                          const float* Q, int64_t nq, float* out, int64_t ldo);
// dst[i] = float(src[i]) for i < n (IEEE half to fp32, exact).
using WidenF16 = void (*)(const uint16_t* src, float* dst, int64_t n);
// Writes the indices i < n with s[i] >= thr (ordered comparison: NaN never passes) to idx in
// increasing order; returns how many.
using SelectGe = int64_t (*)(const float* s, int64_t n, float thr, int32_t* idx);

struct Kernels {
  const char* name;
  ScoreF32 score_f32;
  ScoreF16 score_f16;
  WidenF16 widen_f16;
  SelectGe select_ge;
};

const Kernels& kernels_avx512();
const Kernels& kernels_avx2();
const Kernels& kernels_portable();

}  // namespace kern
}  // namespace search
}  // namespace fc
