// @file layers_ext.h
// @brief The layer ops the mobile, EdgeNeXt and transformer backbones add (issue 8; SPEC-BACKBONES
// §9): the elementwise activations ReLU6, hard-sigmoid (PyTorch and Keras forms), hard-swish, SiLU,
// sigmoid and GELU (erf); LayerNorm over the last dim of tokens and over the channels of NCHW maps;
// per-channel layer scale; drop path (stochastic depth); global average pooling and the broadcast
// channel multiply of squeeze-and-excitation. Each is a forward and a backward on the CPU and on
// CUDA, over caller-owned tensors.
//
// The conventions of layers.h hold unchanged: float32, contiguous, one device per call (a tensor on
// another device is INVALID_ARGUMENT naming it), outputs never resized (a wrong shape is
// SHAPE_MISMATCH), checks before any output is touched; activation gradients written (=), parameter
// gradients (dgamma, dbeta) ACCUMULATED (+=), an undefined gradient argument not computed; the
// elementwise ops accept an output that is exactly an input (in place), any other overlap is
// rejected; results bitwise identical run to run and for every thread count.
//
// Layouts (ChannelLayout): kTokens = channels last, x (..., C) of rank >= 1 (ViT tokens (B, T, C),
// EdgeNeXt's channels-last blocks (B, H, W, C)); kNCHW = channels at axis 1, x (N, C, ...) of rank
// >= 2 (EdgeNeXt's LayerNorm2d, ConvNeXt's channels-first LN). A "row" of LayerNorm is one position:
// the C values normalized together (tokens: a contiguous run of C; NCHW: C values S = H·W apart).
//
// Numerics (both devices):
//   - Elementwise activations compute in float with the formulas below. The piecewise ones (ReLU6,
//     hard-sigmoids, hard-swish) are the same float operations on both devices (bitwise). On the CPU,
//     SiLU, sigmoid and GELU run vector kernels (cpu/act_smooth.h: their own exp, and GELU through
//     Φ(−u) = e^(−u²/2)·Q(u)) within ~3 ulp of the exact function everywhere, the tails included;
//     CUDA uses expf/erff (common/activation_math.h): within a few ulps of the CPU in the body, with
//     a larger relative error in GELU's far-left tail, where the values are below 1e-7 of |x|.
//   - LayerNorm row statistics are double sums over the row (two passes: mean, then Σ(x − mean)²),
//     rounded to float once: save_mean[r], save_invstd[r] = 1/sqrt(var + eps). The normalize is
//     x̂ = (x − mean)·invstd, y = x̂·γ + β in float. The backward recomputes x̂ the same way.
//   - Per-channel parameter gradients (LayerNorm dγ/dβ, layer-scale dγ) and per-(n, c) sums (GAP,
//     the SE dg) are double sums in an order fixed by the shapes alone (CPU and CUDA orders differ:
//     they agree within rounding). No float atomics on CUDA.
#pragma once

#include <cstdint>

#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {

// ---- elementwise activations (SPEC §9.1–9.6)
// Forward y = f(x) (y like x, may be x itself). Backward dx = dy·f'(x) from the forward INPUT x
// (dx like x, written; may be dy itself, not x). At the kinks the derivative follows PyTorch:
//   kReLU6            y = min(max(x, 0), 6)               dx = dy·[0 < x < 6]
//   kHardSigmoid      y = clamp((x + 3)/6, 0, 1)          dx = dy/6 on −3 < x < 3, else 0   (PyTorch/timm)
//   kHardSigmoidKeras y = clamp(0.2x + 0.5, 0, 1)         dx = 0.2·dy on −2.5 < x < 2.5, else 0 (Keras/GFN)
//   kHardSwish        y = x·clamp((x + 3)/6, 0, 1)        dx = dy·{0 if x < −3; x/3 + ½ if −3 <= x <= 3; 1 if x > 3}
//   kSiLU             y = x·σ(x)                          dx = dy·σ(x)(1 + x(1 − σ(x)))
//   kSigmoid          y = σ(x) = 1/(1 + e^−x)             dx = dy·σ(x)(1 − σ(x))
//   kGELU             y = ½x(1 + erf(x/√2))  (exact)      dx = dy·(Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π)
// NaN propagates through y (and through dx for the smooth ones).
enum class Activation { kReLU6, kHardSigmoid, kHardSigmoidKeras, kHardSwish, kSiLU, kSigmoid, kGELU };

// "relu6", "hardsigmoid", "hardsigmoid_keras", "hardswish", "silu", "sigmoid", "gelu".
const char* activation_name(Activation a);

void activation_forward(Activation a, const Tensor& x, const Tensor& y, const ExecOptions& ex = ExecOptions());
void activation_backward(Activation a, const Tensor& dy, const Tensor& x, const Tensor& dx,
                         const ExecOptions& ex = ExecOptions());

// ---- LayerNorm (SPEC §9.9)
enum class ChannelLayout { kTokens, kNCHW };

// R = the number of rows: tokens x (..., C): numel/C; NCHW x (N, C, ...): N·(product of the trailing
// axes). Throws like the ops when x's rank does not fit the layout.
int64_t layer_norm_rows(const std::vector<int64_t>& x_shape, ChannelLayout layout);

// y = (x − μ)/sqrt(σ² + eps)·γ + β per row (μ, σ² the row's mean and BIASED variance).
//   x: see ChannelLayout (C >= 1);  gamma, beta: (C), or undefined for 1 and 0
//   y: like x, written (may be x itself: then no backward)
//   save_mean, save_invstd: (R), written, what the backward needs (with x); both or neither
//   eps: > 0 (EdgeNeXt 1e-6, ViT 1e-6 (timm) or 1e-5 (insightface))
void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        const Tensor& save_mean, const Tensor& save_invstd, double eps,
                        ChannelLayout layout = ChannelLayout::kTokens, const ExecOptions& ex = ExecOptions());

// With x̂ = (x − save_mean)·save_invstd and g = dy·γ, per row:
//   dx = invstd·(g − mean_c g − x̂·mean_c(g·x̂))   (written; may be dy itself; undefined: skipped)
//   dgamma += Σ_rows dy·x̂,  dbeta += Σ_rows dy   (per channel; undefined: skipped)
void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                         ChannelLayout layout = ChannelLayout::kTokens, const ExecOptions& ex = ExecOptions());

// ---- per-channel layer scale (SPEC §9.14; EdgeNeXt γ, CaiT-style LayerScale)
// y = γ[c]·x (y like x, written, may be x itself); gamma (C) along the layout's channel axis.
void layer_scale_forward(const Tensor& x, const Tensor& gamma, const Tensor& y,
                         ChannelLayout layout = ChannelLayout::kTokens, const ExecOptions& ex = ExecOptions());
// dx = γ[c]·dy (written, may be dy itself; undefined: skipped); dgamma += Σ dy·x per channel (needs
// the forward's input x; undefined: skipped, x may then be undefined too).
void layer_scale_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& dx,
                          const Tensor& dgamma, ChannelLayout layout = ChannelLayout::kTokens,
                          const ExecOptions& ex = ExecOptions());

// ---- drop path / stochastic depth (SPEC §9.15; timm drop_path with scale_by_keep)
// x is (N, ...) of rank >= 1: sample n is kept iff
//   uniform53(rng_key(seed, kDropPathStream, step), n) >= p
// (the generator of Dropout, on its own stream, indexed by the sample), and a kept sample is
// multiplied by float(1/(1 − p)); a dropped one becomes 0. p == 0 or training == false: identity
// (y = x). p == 1: every sample dropped. Same (seed, step): the same samples on every device and
// thread count; different layers of one model must pass different seeds (or steps).
constexpr uint64_t kDropPathStream = 5;  // after 1–3 (margins, sampling, Dropout), 4 (model init)

// Whether sample n is kept when training: p == 0 always, p == 1 never, else the draw above.
bool drop_path_keep(const DropoutParams& d, int64_t n);

void drop_path_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training,
                       const ExecOptions& ex = ExecOptions());
// dx = kept(n) ? dy·float(1/(1 − p)) : 0 with the forward's (seed, step) (written, may be dy itself).
void drop_path_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training,
                        const ExecOptions& ex = ExecOptions());

// ---- global average pool and the squeeze-and-excitation channel multiply (SPEC §9.7, §9.8)
// GAP: x (N, C, ...) rank >= 2 with S = product of the trailing axes >= 1; y (N, C), written:
// y[n, c] = (1/S)·Σ_s x[n, c, s] (double sum, one rounding).
void global_avg_pool_forward(const Tensor& x, const Tensor& y, const ExecOptions& ex = ExecOptions());
// dx[n, c, s] = dy[n, c]/S (dx (N, C, ...), written; accumulate: added, as the SE block's
// dx = dy ⊙ g + ds/HW needs).
void global_avg_pool_backward(const Tensor& dy, const Tensor& dx, bool accumulate = false,
                              const ExecOptions& ex = ExecOptions());

// y[n, c, s] = x[n, c, s]·g[n, c]: x (N, C, ...) rank >= 2, g (N, C); y like x, written, may be x
// itself (then no backward needing x).
void channel_mul_forward(const Tensor& x, const Tensor& g, const Tensor& y, const ExecOptions& ex = ExecOptions());
// dx = dy·g[n, c] (written; may be dy itself; undefined: skipped);
// dg[n, c] = Σ_s dy·x (WRITTEN: g is an activation; undefined: skipped, x may then be undefined too).
void channel_mul_backward(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& dx, const Tensor& dg,
                          const ExecOptions& ex = ExecOptions());

// ---- strided views: the executor's layout ops (tokens ↔ maps, qkv head split, concat/slice,
// class tokens, positional embeddings)
// dst = alpha·src, or dst += alpha·src with accumulate, element by element over two views of the
// same shape (rank <= 5, any strides; src may broadcast with stride-0 axes, Tensor::expand). dst must
// not overlap src and must not have stride-0 axes. The float operations are alpha·s (+ d): bitwise
// the same on both devices.
void strided_copy(const Tensor& src, const Tensor& dst, float alpha = 1.0f, bool accumulate = false,
                  const ExecOptions& ex = ExecOptions());

// dst[...] = Σ_n src[n, ...] (accumulate: dst += that sum) for src (N, ...) of rank 2..5 with any
// strides and dst contiguous of numel(src)/N elements (any shape): the batch sum of a broadcast
// parameter's gradient (class token, positional embedding). Double sums over n in order, one rounding.
void sum_batch(const Tensor& src, const Tensor& dst, bool accumulate, const ExecOptions& ex = ExecOptions());

}  // namespace nn
}  // namespace fc
