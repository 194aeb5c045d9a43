// @file act_smooth.h
// @brief The CPU kernels of the smooth elementwise activations (SiLU, sigmoid, GELU) of
// facecuda/layers_ext.h, forward and backward, at each SIMD level: portable (act_smooth.cc),
// AVX2 (act_smooth_avx2.cc) and AVX-512 (act_smooth_avx512.cc), all the formulas of
// act_smooth_math.h (accuracy and limits there). layers_ext.cc splits the flat index over threads and
// calls kernels() on each chunk; an element's result depends only on its inputs and the level.
//
// Like gemm_internal.h: the SIMD files include this header, so it declares no inline code.
#pragma once

#include <cstdint>

namespace fc {

enum class SimdLevel;  // facecuda/cpu_info.h

namespace nn {
namespace act_smooth {

using ForwardFn = void (*)(const float* x, float* y, int64_t n);                  // y[i] = f(x[i])
using BackwardFn = void (*)(const float* dy, const float* x, float* dx, int64_t n);  // dx[i] = dy[i]·f'(x[i])

// y may be x; dx may be dy (each element is read before it is written), not x.
struct Kernels {
  const char* name;  // "portable", "avx2", "avx512"
  ForwardFn silu_forward, sigmoid_forward, gelu_forward;
  BackwardFn silu_backward, sigmoid_backward, gelu_backward;
};

const Kernels& kernels_portable();  // act_smooth.cc
const Kernels& kernels_avx2();      // act_smooth_avx2.cc: needs AVX2 + FMA
const Kernels& kernels_avx512();    // act_smooth_avx512.cc: needs AVX-512 F/DQ (+ FMA)

// The kernels of `level`, or nullptr when it is above fc::simd_level() (the CPU, FACECUDA_SIMD).
const Kernels* kernels_for(SimdLevel level);
// The kernels of fc::simd_level().
const Kernels& kernels();

}  // namespace act_smooth
}  // namespace nn
}  // namespace fc
