// @file conv_dw_avx2.cc
// @brief The depthwise forward kernels (conv_dw_kernels.h) compiled with the AVX2 flags (-mavx2 -mfma): 16-lane
// vectors are pairs of ymm registers. conv_dw.cc calls this when
// fc::simd_level() is Avx2.
#include <cstdint>

#include "cpu/conv_dw.h"

namespace fc {
namespace nn {
namespace dw {

namespace {
#include "cpu/conv_dw_kernels.h"
}  // namespace

void forward_avx2(const Args& a, int64_t p0, int64_t p1, float* scratch) { dw_run(a, p0, p1, scratch); }

}  // namespace dw
}  // namespace nn
}  // namespace fc
