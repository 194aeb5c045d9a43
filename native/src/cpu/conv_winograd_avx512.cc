// @file conv_winograd_avx512.cc
// @brief The Winograd transform kernels (conv_winograd_kernels.h) compiled with the AVX-512 flags:
// the 16-lane vectors become zmm registers and the two-source shuffles vpermt2ps. conv_winograd.cc
// calls these when fc::simd_level() is Avx512.
#include <cstdint>
#include <cstring>

#include "cpu/conv_winograd.h"

namespace fc {
namespace nn {
namespace winograd {

namespace {
#include "cpu/conv_winograd_kernels.h"
}  // namespace

void weight_transform_avx512(const WeightArgs& a, int64_t k0, int64_t k1) { weight_transform_impl(a, k0, k1); }
void input_transform_avx512(const InputArgs& a, int64_t c0, int64_t c1) { input_transform_impl(a, c0, c1); }
void output_transform_avx512(const OutputArgs& a, int64_t k0, int64_t k1) { output_transform_impl(a, k0, k1); }

}  // namespace winograd
}  // namespace nn
}  // namespace fc
