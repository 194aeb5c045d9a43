// @file conv_pointwise.cc
// @brief The dispatch of conv_pointwise.h: the AVX-512 kernel when fc::simd_level() allows it
// (FACECUDA_SIMD can lower the level), else none (the 1×1 convolution keeps its GEMM path).
#include "cpu/conv_pointwise.h"

#include "facecuda/cpu_info.h"

namespace fc {
namespace nn {
namespace pointwise {

Fn kernel() {
  static const Fn k = simd_level() == SimdLevel::Avx512 ? kernel_avx512() : nullptr;
  return k;
}

}  // namespace pointwise
}  // namespace nn
}  // namespace fc
