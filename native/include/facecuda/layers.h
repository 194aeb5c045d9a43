// @file layers.h
// @brief The layer library's ops on the CPU and on CUDA (issue 4, "Layers"): Conv2d, BatchNorm1d/2d,
// PReLU, ReLU, Dropout, Linear, Flatten, residual add and the fused BatchNorm+PReLU, each a forward
// and a backward, as functions over
// caller-owned tensors. The backbones (SPEC §8.1 IResNet, §8.2 MobileFaceNet) are built from them; a
// layer object records what its backward needs (the inputs named below) and a model owns the
// activation buffers, so these functions never allocate outputs.
//
// Conventions shared by every op:
//   - Tensors: float32, contiguous, NCHW, all on one device: the CPU, or one CUDA device (the op then
//     runs there; a tensor on another device is INVALID_ARGUMENT naming it, e.g. "Expected w on cuda:0
//     but received float32[8, 3, 3, 3] on cpu"). An undefined tensor (Tensor()) is allowed only where a
//     parameter says so. Outputs are never resized: a wrong shape throws.
//   - Errors: fc::Error with INVALID_ARGUMENT (bad option, dtype, device, layout, aliasing) or
//     SHAPE_MISMATCH, with a message that names the argument and states what was expected, e.g.
//     "Expected w of shape [64, 3, 3, 3] (Cout, Cin/groups, KH, KW) but received [64, 3, 3]". Nothing
//     aborts. Checks run before any output is touched.
//   - Gradients: activation gradients (dx) are WRITTEN (=), or added when an `accumulate` flag says so;
//     parameter gradients (dw, dbias, dgamma, dbeta, dalpha) are ACCUMULATED (+=), as PyTorch's .grad:
//     zero them once per step. A parameter-gradient argument left undefined is not computed.
//   - Aliasing: the elementwise ops (batch_norm_forward_*, prelu_forward, relu_forward,
//     dropout_forward, add) and the dx = dy of their backwards accept an output that is exactly an
//     input (same data, same size: in place); any other overlap between an output and an input is
//     rejected (convolutions and Linear are never in place). A backward that needs an input (PReLU's x, BatchNorm's x) needs
//     the original values, so run its forward in place only when the backward will not be called.
//   - Threads: fc::ThreadPool::global(), at most ExecOptions::max_threads. Results are bitwise
//     identical run to run and for every thread count: every output element (and every per-channel
//     statistic) is reduced by one task in an order fixed by the shapes alone, and fc::sgemm has the
//     same property.
//   - Reductions: per-channel sums (BatchNorm statistics and gradients, dalpha, bias gradients) are
//     float partial sums over runs of at most 32 elements per lane, added in double.
//
// On CUDA (same checks and messages; the work is enqueued on the device's stream; call from the
// device's queue thread):
//   - Convolutions run through cuDNN 9 (legacy API, NCHW; NHWC is the measured-fastest layout for
//     tensor cores on Hopper and is left for when it can be measured). The algorithm is found once per
//     (device, shapes, parameters, precision, direction) with cudnnFind*AlgorithmEx and cached: the
//     fastest deterministic one whose workspace fits ExecOptions::max_workspace_bytes (0 = 256 MiB on
//     CUDA), else the fastest that fits. conv results are NOT bitwise equal to the CPU's (another
//     summation order); with a deterministic algorithm they are run to run.
//   - ExecOptions::precision on CUDA: F32 = fp32 FMA math only (CUDNN_FMA_MATH, cuBLAS COMPUTE_32F:
//     no TF32 whatever NVIDIA_TF32_OVERRIDE says); TF32 = tensor-op math on fp32 data (cuDNN
//     CUDNN_TENSOR_OP_MATH, cuBLAS 32F_FAST_TF32); BF16 = op-level mixed precision: the convolution
//     runs on bf16 copies of its inputs (x, w or dy, rounded to nearest even by a cast kernel into
//     scratch) with fp32 accumulation; cuDNN's legacy API has no bf16-in/fp32-out configuration, so
//     the convolution's result is rounded to bf16 once before it is widened and written (or added) to
//     the fp32 output; Linear uses cuBLAS 32F_FAST_16BF (fp32 output). max_threads is ignored.
//   - BatchNorm, PReLU, ReLU, Dropout, add, bias and fold are own kernels. Per-channel reductions are
//     per-thread double sums over fixed element ranges, combined in a fixed tree, then over fixed
//     partitions in order: deterministic and independent of the GPU, but not bitwise the CPU's
//     order (agreement within float rounding; elementwise formulas use the CPU's exact float
//     operations, without FMA contraction). Dropout draws bitwise the CPU's mask.
//
// Convolution algorithms (chosen from the shapes and ExecOptions only; conv2d_algorithm names the choice):
//   "direct"      groups > 1 with at most 8 input and 8 output channels per group (depthwise, MobileFaceNet's
//                 groups=64 conv, the GDC 7×7): loops over output rows (the forward fuses every tap of a
//                 row into one vectorized pass); forward and backward-data are one task per (image,
//                 channel) plane, backward-filter one task per output channel reducing over the batch
//                 in order.
//   "gemm-1x1"    1×1, stride 1, no padding: fc::sgemm on the input itself, no im2col.
//   "im2col-gemm" everything else: per group Y_g = W_g · col_g with col the im2col matrix.
//   "winograd"    CPU forward only, ExecOptions::allow_winograd (default true), precision F32 or TF32:
//                 3×3, stride 1, padding 0 or 1, groups 1, Cin and Cout >= 16, output >= 4×4 and at
//                 least 32 output tiles of 4×4 in the batch (so the per-call weight transform pays
//                 off). Winograd F(4×4, 3×3) (points 0, ±1, ±2, ∞): the weights are transformed on
//                 every call (no cache: 36·Cout·Cin floats, 4× w), the input in blocks of tile rows
//                 whose transformed input and product (36·(Cin + Cout) floats per tile) stay within
//                 max_workspace_bytes (0 = 16 MiB), one fc::sgemm per frequency, the output transform
//                 fused with the bias. 2.25–4× fewer multiplies than the direct convolution. NOT
//                 bitwise equal to im2col-gemm; error |y − y_exact| <= 2·(Cin + 64)·2⁻²⁴·Σ|w·x| (tested;
//                 measured <= 0.4 of that), i.e. about 1e-5 of max|y| at Cin = 256..512 (im2col-gemm:
//                 ~1e-6). Deterministic like the others (bitwise for every thread count and workspace);
//                 the AVX-512 and portable builds of its transforms may differ in the last bits (FMA).
//                 The backward passes always use the GEMM algorithms.
// The GEMM algorithms work on column tiles of the (image, output pixel) space: a band of output rows
// of one image when an image is large (the output is written in place through ldc), or several whole
// images when an image has fewer than 1024 output pixels (the GEMM is then wide enough to run well;
// the result is scattered back to NCHW). A tile's col buffer stays within max_workspace_bytes
// (default 8 MiB; one output row of one image at least), so the workspace is bounded whatever the
// batch. The forward result does not depend on the tiling (each output is one fixed K-order GEMM
// reduction); backward-filter sums tiles in order, so its rounding depends on max_workspace_bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "facecuda/gemm.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {

struct ExecOptions {
  int max_threads = 0;                           // 0 = the whole pool
  GemmPrecision precision = GemmPrecision::F32;  // GEMM-based convolutions and Linear; BF16 rounds
                                                 // the GEMM operands (the "direct" convolution is fp32)
                                                 // (CUDA: every convolution, see the file comment)
  size_t max_workspace_bytes = 0;                // 0 = 8 MiB; the im2col tile budget (see above)
                                                 // (winograd: 0 = 16 MiB for its V/M blocks)
                                                 // (CUDA: cuDNN's workspace limit, 0 = 256 MiB)
  bool allow_winograd = true;                    // CPU conv2d_forward may pick "winograd" (see above)
};

// ---- Conv2d (no dilation)

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;  // zero padding on both sides
  int64_t groups = 1;
  // CPU only (forward): an activation applied to y after the bias, exactly as the separate layer
  // computes it; the model executor sets it when it fuses conv → activation in eval mode.
  // 0 none, 1 ReLU, 2 ReLU6, 3 hard-swish, 4 SiLU (cpu/conv_pointwise.h's Act). CUDA refuses it.
  int epilogue = 0;
  Conv2dParams() = default;
  Conv2dParams(int64_t stride, int64_t pad, int64_t groups_ = 1)
      : stride_h(stride), stride_w(stride), pad_h(pad), pad_w(pad), groups(groups_) {}
};

// [N, Cout, OH, OW] for x [N, Cin, H, W] and w [Cout, Cin/groups, KH, KW], with
// OH = (H + 2·pad_h − KH) / stride_h + 1 (floor), likewise OW. Throws when the shapes or the
// parameters are invalid (strides >= 1, pads >= 0, groups dividing Cin and Cout, OH, OW >= 1).
std::vector<int64_t> conv2d_output_shape(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                                         const Conv2dParams& p);

// "direct", "gemm-1x1", "im2col-gemm" or "winograd": what the CPU conv2d_forward runs with these
// options (see the file comment; the backward passes never use "winograd"). Validates like
// conv2d_output_shape.
const char* conv2d_algorithm(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                             const Conv2dParams& p, const ExecOptions& ex = ExecOptions());

// y = conv(x, w) + bias.
//   x:    (N, Cin, H, W)
//   w:    (Cout, Cin/groups, KH, KW)
//   bias: (Cout) or undefined (no bias; the backbones' convolutions have none, folded ones do)
//   y:    (N, Cout, OH, OW), written
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const Conv2dParams& p,
                    const ExecOptions& ex = ExecOptions());

// dx = conv_transpose(dy, w): the gradient with respect to x.
//   dy: (N, Cout, OH, OW);  w: (Cout, Cin/groups, KH, KW)
//   dx: (N, Cin, H, W), written (accumulate: added to its contents; a residual branch's gradient)
void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, const Conv2dParams& p,
                          bool accumulate = false, const ExecOptions& ex = ExecOptions());

// dw += Σ_n dy_n ⋆ x_n: the gradient with respect to w, accumulated.
//   x: (N, Cin, H, W);  dy: (N, Cout, OH, OW);  dw: (Cout, Cin/groups, KH, KW)
void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Conv2dParams& p,
                            const ExecOptions& ex = ExecOptions());

// db[c] += Σ_{n, pixels} dy[n, c, ...]: the bias gradient, accumulated. dy: (N, C, ...) rank >= 2.
void conv2d_backward_bias(const Tensor& dy, const Tensor& db, const ExecOptions& ex = ExecOptions());

// ---- BatchNorm1d / BatchNorm2d
// x is (N, C) (BatchNorm1d), (N, C, L) or (N, C, H, W) (BatchNorm2d): statistics per channel (axis 1)
// over the M = N·(product of the trailing axes) values of that channel.

struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;      // running = (1 − momentum)·running + momentum·batch (PyTorch convention)
  bool freeze_gamma = false;  // the backward leaves dgamma untouched (IResNet's `features` BatchNorm1d)
};

// Training forward: y = (x − mean)·invstd·gamma + beta with the batch mean and the BIASED batch
// variance, invstd = 1/sqrt(var + eps); the running statistics (if defined) are updated with the
// batch mean and the UNBIASED variance var·M/(M − 1), as PyTorch. M must be > 1.
//   gamma, beta:               (C), or undefined for 1 and 0 (affine=False)
//   running_mean, running_var: (C), updated in place; undefined: not tracked (both or neither)
//   y:                         like x, written (may be x itself)
//   save_mean, save_invstd:    (C), written: what batch_norm_backward_train needs (with x)
void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& y, const Tensor& save_mean,
                              const Tensor& save_invstd, const BatchNormOptions& o = BatchNormOptions(),
                              const ExecOptions& ex = ExecOptions());

// Eval forward: y = (x − running_mean)/sqrt(running_var + eps)·gamma + beta. y may be x itself.
void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const Tensor& y, const BatchNormOptions& o = BatchNormOptions(),
                             const ExecOptions& ex = ExecOptions());

// Training backward, through the batch statistics:
//   dx = gamma·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)), x̂ = (x − save_mean)·save_invstd   (written)
//   dgamma += Σ dy·x̂,  dbeta += Σ dy   (per channel)
// dx, dgamma, dbeta may each be undefined (not computed); freeze_gamma also skips dgamma. dx may be dy
// itself.
void batch_norm_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                               const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                               const BatchNormOptions& o = BatchNormOptions(), const ExecOptions& ex = ExecOptions());

// Eval backward (the running statistics are constants): dx = dy·gamma/sqrt(running_var + eps),
// dgamma += Σ dy·x̂, dbeta += Σ dy with x̂ from the running statistics. Undefined outputs skipped.
void batch_norm_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                              const BatchNormOptions& o = BatchNormOptions(), const ExecOptions& ex = ExecOptions());

// Folds an eval BatchNorm that follows a convolution or a Linear layer into that layer:
//   s = gamma/sqrt(running_var + eps);  w_out[c, ...] = w[c, ...]·s[c];  b_out = beta + (bias − running_mean)·s
// computed in double.
//   w:     (Cout, ...) rank 2 (Linear) or 4 (Conv2d);  bias: (Cout) or undefined (0)
//   gamma, beta: (Cout) or undefined (1 and 0);  running_mean, running_var: (Cout)
//   w_out: like w, written (may be w itself);  b_out: (Cout), written (may be bias itself)
// conv2d_forward(x, w_out, b_out) then equals batch_norm_forward_eval(conv2d_forward(x, w, bias)).
void fold_batch_norm(const Tensor& w, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                     const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& w_out,
                     const Tensor& b_out);

// ---- Fused BatchNorm + PReLU (IResNet's bn → prelu pairs; one pass over the data, no z buffer)
// With per-channel scale/shift as the unfused BatchNorm computes them,
//   z = (x − m[c])·k[c] + b[c]        (float: one subtraction, one product, one sum)
//   y = z > 0 ? z : alpha[c]·z        (as prelu_forward)
// forward train: m = the batch mean (saved as save_mean), k = float(gamma·invstd) with the batch
//   invstd in double (saved as save_invstd, rounded), b = beta; running statistics updated as
//   batch_norm_forward_train. Equal to batch_norm_forward_train then prelu_forward, bit for bit on the
//   CPU. y may be x itself (then no backward is possible).
// forward eval: m = running_mean, k = float(gamma/sqrt(running_var + eps)), b = beta; equal to
//   batch_norm_forward_eval then prelu_forward, bit for bit on the CPU.
// backward: recomputes z from x and the statistics instead of storing it (a model keeps x and y per
//   pair), with k = float(gamma·save_invstd) in training (the saved invstd is the forward's rounded
//   to float, so z may differ from the forward's by one rounding) and the eval k above in eval. Then
//     dz = z > 0 ? dy : alpha[c]·dy;  dalpha[c] += Σ_{z <= 0} dy·z          (as prelu_backward)
//     dx, dgamma, dbeta from dz exactly as batch_norm_backward_train / _eval (dx written, may be dy).
//   Equal to prelu_backward(dy, z) then batch_norm_backward_*(dz, x) within float rounding.
// gamma, beta: (C) or undefined (1 and 0); alpha: (C) or (1); dalpha like alpha or undefined.
void batch_norm_prelu_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                    const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                    const Tensor& save_mean, const Tensor& save_invstd,
                                    const BatchNormOptions& o = BatchNormOptions(),
                                    const ExecOptions& ex = ExecOptions());
void batch_norm_prelu_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& alpha,
                                   const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                   const BatchNormOptions& o = BatchNormOptions(),
                                   const ExecOptions& ex = ExecOptions());
void batch_norm_prelu_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     const Tensor& alpha, const Tensor& save_mean, const Tensor& save_invstd,
                                     const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                     const BatchNormOptions& o = BatchNormOptions(),
                                     const ExecOptions& ex = ExecOptions());
void batch_norm_prelu_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                    const Tensor& alpha, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta, const Tensor& dalpha,
                                    const BatchNormOptions& o = BatchNormOptions(),
                                    const ExecOptions& ex = ExecOptions());

// ---- PReLU (per channel, PyTorch semantics)
// x: (N, C, ...) rank >= 2; alpha: (C) or (1) (one slope for every channel).
// y = x > 0 ? x : alpha[c]·x   (y written, may be x itself)
void prelu_forward(const Tensor& x, const Tensor& alpha, const Tensor& y, const ExecOptions& ex = ExecOptions());
// dx = x > 0 ? dy : alpha[c]·dy (written, may be dy itself; undefined: skipped)
// dalpha[c] += Σ_{x <= 0} dy·x  (undefined: skipped)
void prelu_backward(const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& dx, const Tensor& dalpha,
                    const ExecOptions& ex = ExecOptions());

// ---- ReLU
// y = max(x, 0) (y may be x itself).
void relu_forward(const Tensor& x, const Tensor& y, const ExecOptions& ex = ExecOptions());
// dx = y > 0 ? dy : 0, from the forward OUTPUT y (so an in-place forward keeps the backward possible);
// dx may be dy or y itself.
void relu_backward(const Tensor& dy, const Tensor& y, const Tensor& dx, const ExecOptions& ex = ExecOptions());

// ---- Dropout (counter-based: no mask is stored, the backward regenerates it)
// Element i (flat index in the contiguous tensor) is kept iff
//   uniform53(rng_key(seed, kDropoutStream, step), i) >= p      (margin_math.h's generator)
// and a kept value is multiplied by 1/(1 − p) (as float). p == 0, or training == false: identity
// (y = x). p == 1: every element dropped (y = 0). The same (seed, step) gives the same mask on every
// device and thread count; a training loop passes its step counter.
constexpr uint64_t kDropoutStream = 3;  // after 1 = ElasticFace margins, 2 = Partial FC sampling

struct DropoutParams {
  double p = 0.0;  // in [0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;
};

void dropout_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training,
                     const ExecOptions& ex = ExecOptions());
// dx = kept ? dy/(1 − p) : 0 with the forward's (seed, step) (dx written, may be dy itself).
void dropout_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training,
                      const ExecOptions& ex = ExecOptions());

// ---- Linear: y = x·wᵀ + bias
//   x: (N, in);  w: (out, in);  bias: (out) or undefined;  y: (N, out), written
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y,
                    const ExecOptions& ex = ExecOptions());
// dx = dy·w (written);  dw += dyᵀ·x;  db += Σ_n dy   (each may be undefined: not computed)
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor& dw,
                     const Tensor& db, const ExecOptions& ex = ExecOptions());

// ---- Flatten and residual add
// (N, ...) → (N, product of the rest): a view of the same storage (x must be contiguous). Its backward
// is the same reshape of the gradient.
Tensor flatten(const Tensor& x);

// y = a + b (same shapes; y may be a or b itself). The backward of a residual add passes dy unchanged
// to both branches; add(dx, dy_shortcut, dx) sums two branch gradients in place.
void add(const Tensor& a, const Tensor& b, const Tensor& y, const ExecOptions& ex = ExecOptions());

}  // namespace nn
}  // namespace fc
