// @file activation_math.h
// @brief The scalar formulas of the elementwise activations of facecuda/layers_ext.h: the CUDA
// kernels (cuda/layers_ext.cu) use all of them; the CPU (cpu/layers_ext.cc) uses the piecewise ones
// (ReLU6, the hard-sigmoids, hard-swish: the same float operations on both devices) and computes
// SiLU, sigmoid and GELU with the vector kernels of cpu/act_smooth.h instead (their own exp and
// Φ = e^−x²/2·Q, within ~3 ulp everywhere, the tails included, where the expf/erff forms below lose
// relative accuracy: 1 + erf cancels in GELU's left tail, 1 − σ in the right tail of σ'). The
// arithmetic is spelled out with mul/add/sub/div helpers that are __fmul_rn & co. on the device, so
// nvcc cannot contract them into FMAs. The operation orders follow PyTorch's CPU kernels, including
// the derivative conventions at the kinks (SPEC-BACKBONES §9.1–9.6, §10).
#pragma once

#include <math.h>

#include "common/host_device.h"
#include "facecuda/layers_ext.h"

namespace fc {
namespace nn {
namespace act {

FC_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FC_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FC_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
FC_HOST_DEVICE inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Clamp to [lo, hi] that lets NaN through (both comparisons are false for NaN).
FC_HOST_DEVICE inline float clamp_nan(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

FC_HOST_DEVICE inline float sigmoid(float x) { return div(1.0f, add(1.0f, expf(-x))); }

constexpr float kSqrtHalf = 0.70710678118654752440f;     // 1/√2
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;   // 1/√(2π)

template <Activation A>
FC_HOST_DEVICE inline float forward(float x) {
  switch (A) {
    case Activation::kReLU6:
      return clamp_nan(x, 0.0f, 6.0f);
    case Activation::kHardSigmoid:  // min(max(x + 3, 0), 6) / 6
      return div(clamp_nan(add(x, 3.0f), 0.0f, 6.0f), 6.0f);
    case Activation::kHardSigmoidKeras:  // clip(0.2·x + 0.5, 0, 1)
      return clamp_nan(add(mul(0.2f, x), 0.5f), 0.0f, 1.0f);
    case Activation::kHardSwish:  // x · min(max(x + 3, 0), 6) / 6
      return div(mul(x, clamp_nan(add(x, 3.0f), 0.0f, 6.0f)), 6.0f);
    case Activation::kSiLU:  // x / (1 + e^−x)
      return div(x, add(1.0f, expf(-x)));
    case Activation::kSigmoid:
      return sigmoid(x);
    case Activation::kGELU:  // x · ½ · (1 + erf(x/√2))
      return mul(mul(x, 0.5f), add(1.0f, erff(mul(x, kSqrtHalf))));
  }
  return x;
}

template <Activation A>
FC_HOST_DEVICE inline float backward(float dy, float x) {
  switch (A) {
    case Activation::kReLU6:
      return (x > 0.0f && x < 6.0f) ? dy : 0.0f;
    case Activation::kHardSigmoid:
      return (x > -3.0f && x < 3.0f) ? mul(dy, 1.0f / 6.0f) : 0.0f;
    case Activation::kHardSigmoidKeras:
      return (x > -2.5f && x < 2.5f) ? mul(dy, 0.2f) : 0.0f;
    case Activation::kHardSwish:
      if (x < -3.0f) return 0.0f;
      if (x <= 3.0f) return mul(dy, add(div(x, 3.0f), 0.5f));
      return dy;
    case Activation::kSiLU: {  // σ(x)·(1 + x·σ(−x)): σ(−x), not 1 − σ(x), which cancels for large x
      const float s = sigmoid(x);
      return mul(mul(dy, s), add(1.0f, mul(x, sigmoid(-x))));
    }
    case Activation::kSigmoid: {  // σ(x)σ(−x) = t/(1 + t)², t = e^−|x|: accurate in both tails
      const float t = expf(-fabsf(x));
      const float d = add(1.0f, t);
      return mul(dy, div(t, mul(d, d)));
    }
    case Activation::kGELU: {
      const float cdf = mul(0.5f, add(1.0f, erff(mul(x, kSqrtHalf))));
      const float pdf = mul(expf(mul(-0.5f, mul(x, x))), kInvSqrt2Pi);
      return mul(dy, add(cdf, mul(x, pdf)));
    }
  }
  return dy;
}

}  // namespace act
}  // namespace nn
}  // namespace fc
