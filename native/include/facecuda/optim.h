// @file optim.h
// @brief Fused multi-tensor optimizer steps (SGD with momentum, AdamW), global-norm gradient
// clipping and the finite check, on the CPU (thread pool) and CUDA, over a whole list of
// (param, grad, state...) tensors in one call: one call = one job on the device queue per step.
//
// One step (fc::optim::step) runs two passes over the gradients:
//   1. Σ g² per item, in double, over a fixed partition of each item into chunks of kChunkElements
//      (sparse items: of whole listed rows); chunk sums are added per item in chunk order, item sums
//      per clip group and in total in item order. The partition depends only on the shapes, so the
//      sums (hence the clip scales) do not depend on the thread count. CUDA sums inside a chunk in a
//      different (fixed) order, so its norms may differ from the CPU's in the last bits of a double.
//   2. If any item's sum is not finite (a NaN or ±Inf gradient, or one large enough to overflow a
//      double sum, which float32 cannot reach) the step is SKIPPED: no parameter, no gradient and no
//      state buffer is written, and the result names the first such item. Otherwise every item is
//      updated in place with its group's clip scale applied on the fly (the gradients are not
//      modified by step(); clip_grad_norm() scales them in place like PyTorch).
//
// Clipping (torch.nn.utils.clip_grad_norm_, norm_type 2): per clip group,
//   norm = sqrt(Σ_group g²);  scale = min(1, max_norm / (norm + 1e-6)).
// A scale of exactly 1 leaves the gradients as they are. (This is torch's rule, clip_coef clamped to
// 1; it also scales, by a factor within 1e-6/max_norm of 1, when max_norm − 1e-6 < norm <= max_norm.)
//
// Per-element arithmetic (shared by both backends below, so the CPU and CUDA give the same bits):
// every value is widened to double, the formula is evaluated in double with each operation rounded
// separately (no fused multiply-add on either backend), and only stored values are rounded to
// float32. Values read back from a state buffer in the same step are the rounded ones.
//
//   d = g·scale + wd·p                                   (wd = the item's weight decay; 0: skipped)
//   SGD (PyTorch torch.optim.SGD):
//     momentum = 0:  p ← p − lr·d
//     momentum > 0:  buf ← first ? d : momentum·buf + (1 − dampening)·d
//                    p ← p − lr·(nesterov ? d + momentum·buf : buf)
//     `first` is the item's first step (step == 1): buf is initialized to d itself (no dampening),
//     exactly as PyTorch does when the momentum buffer does not exist yet.
//   AdamW (torch.optim.AdamW, amsgrad off; decoupled decay, so g is NOT given wd·p):
//     p ← p·(1 − lr·wd)
//     m ← β1·m + (1 − β1)·g·scale;   v ← β2·v + (1 − β2)·(g·scale)²
//     p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)      t = the item's step (>= 1)
//   Clip only (clip_grad_norm): g ← g·scale.
//
// Sparse items (Partial FC, SPEC §00 / §7.2 v1 semantics): the parameter is viewed as
// [rows, numel / rows] (rows = its first dimension) and only the listed rows (strictly ascending,
// each in [0, rows)) are read or written: their gradient rows enter the norm and the finite check,
// their parameter rows and state rows are updated (with weight decay and momentum); every other row
// of the parameter and of its state is left exactly as it is (no decay, no momentum carry-over).
// State rows start at 0: with momentum, a row first listed at a later step of the item gets
// buf = momentum·0 + (1 − dampening)·d (equal to d when dampening is 0), and AdamW bias correction
// uses the item's step count, not a per-row count (as torch.optim.SparseAdam).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "facecuda/tensor.h"

namespace fc {
namespace optim {

enum class Algo : int { SGD = 0, AdamW = 1, ClipOnly = 2 };

// Hyper-parameters shared by every item of a step.
struct Hyper {
  Algo algo = Algo::SGD;
  double momentum = 0.0;   // SGD, >= 0
  double dampening = 0.0;  // SGD
  bool nesterov = false;   // SGD (needs momentum > 0 and dampening 0, as PyTorch)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
};

// One parameter tensor and its state. All tensors float32, contiguous, with param's element count,
// on one device (the same for every item of the call).
struct Item {
  Tensor param;   // updated in place
  Tensor grad;    // read only (except by clip_grad_norm)
  Tensor state1;  // SGD: momentum buffer (needed iff momentum > 0); AdamW: exp_avg (m)
  Tensor state2;  // AdamW: exp_avg_sq (v)
  double lr = 0.0;            // effective learning rate (group scale applied), finite
  double weight_decay = 0.0;  // finite, >= 0
  int64_t step = 1;           // this update's 1-based step number for the item (see the file comment)
  int clip_group = -1;        // index into StepOptions::clip_norms, or -1 (not clipped)
  bool sparse = false;        // update only `rows` (see the file comment)
  std::vector<int32_t> rows;  // strictly ascending row indices, each in [0, param.size(0))
};

struct StepOptions {
  std::vector<double> clip_norms;  // max norm per clip group (> 0)
  int max_threads = 0;             // CPU: 0 = the whole pool
  // Multiplies every gradient before anything else (mixed-precision unscaling: 1 / loss scale): the
  // norms, item sums and clip scales are those of the multiplied gradients. Finite, > 0.
  double grad_scale = 1.0;
};

struct StepResult {
  bool skipped = false;
  int64_t nonfinite_item = -1;      // the first item whose gradient is not finite (skipped only)
  double grad_norm = 0.0;           // sqrt(Σ g²) over every item (sparse: the listed rows), pre-clip
  std::vector<double> group_norms;  // per clip group, pre-clip
  std::vector<double> group_scales; // per clip group, the scale applied (1: none; skipped: 1)
  std::vector<double> item_sumsq;   // Σ g² per item (NaN/Inf where not finite)
};

// Elements per chunk of the fixed partition (the unit of work and of the norm's summation order).
constexpr int64_t kChunkElements = int64_t(1) << 16;

// Validates the items (INVALID_ARGUMENT, SHAPE_MISMATCH, OUT_OF_RANGE), then runs the step on the
// items' device. Call it on that device's queue thread.
StepResult step(std::vector<Item>& items, const Hyper& hyper, const StepOptions& options);

// torch.nn.utils.clip_grad_norm_ over the items' gradients (param/state unused; sparse rows honoured):
// computes the norm and multiplies the gradients in place by the scale. A non-finite norm scales
// nothing and is reported as skipped.
StepResult clip_grad_norm(std::vector<Item>& items, double max_norm, int max_threads = 0);

// g ← g·factor in place for every item (GradScaler.unscale_: factor = 1 / loss scale), after the same
// finite check as step(): a NaN or ±Inf gradient writes nothing and is reported as skipped (the
// loss scaler's "found inf"). grad_norm and item_sumsq are those of the multiplied gradients.
StepResult scale_grads(std::vector<Item>& items, double factor, int max_threads = 0);

namespace detail {

// A fixed chunk of an item: dense items cover elements [begin, end); sparse items cover the listed
// rows rows[begin .. end).
struct Chunk {
  int32_t item;
  int64_t begin, end;
};

// Per-item constants of pass 2, computed once on the host.
struct ItemConsts {
  double scale;      // clip scale
  double lr;         // SGD/AdamW
  double wd;         // SGD: coupled decay coefficient
  double decay;      // AdamW: 1 − lr·wd
  double step_size;  // AdamW: lr / (1 − β1^t)
  double bc2_sqrt;   // AdamW: sqrt(1 − β2^t)
  int first;         // SGD: first step of the item
};

// The chunk list of `items` (shared by both backends).
std::vector<Chunk> make_chunks(const std::vector<Item>& items);
// The pass-2 constants of item i (scale from its group's result).
ItemConsts item_consts(const Item& item, const Hyper& h, double scale);

#if defined(__CUDACC__)
#define FC_OPTIM_HD __host__ __device__ __forceinline__
#else
#define FC_OPTIM_HD inline
#endif

// Separately rounded double operations: plain operators on the host (x86-64 SSE2 double arithmetic
// is IEEE and the engine's host flags enable no FMA contraction), the _rn intrinsics on the device
// (which nvcc never contracts into FMAs).
FC_OPTIM_HD double op_add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
FC_OPTIM_HD double op_mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FC_OPTIM_HD double op_div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
FC_OPTIM_HD double op_sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// SGD on one element (see the file comment). buf is read and written only when momentum > 0.
FC_OPTIM_HD void sgd_element(float* p, float g, float* buf, const ItemConsts& c, double momentum,
                             double one_minus_dampening, bool nesterov) {
  double pv = static_cast<double>(*p);
  double d = op_mul(static_cast<double>(g), c.scale);
  if (c.wd != 0.0) d = op_add(d, op_mul(c.wd, pv));
  if (momentum != 0.0) {
    double b = c.first ? d : op_add(op_mul(momentum, static_cast<double>(*buf)), op_mul(one_minus_dampening, d));
    float bf = static_cast<float>(b);
    *buf = bf;
    d = nesterov ? op_add(d, op_mul(momentum, static_cast<double>(bf))) : static_cast<double>(bf);
  }
  *p = static_cast<float>(op_add(pv, -op_mul(c.lr, d)));
}

// AdamW on one element (see the file comment).
FC_OPTIM_HD void adamw_element(float* p, float g, float* m, float* v, const ItemConsts& c, double beta1,
                               double beta2, double eps) {
  double d = op_mul(static_cast<double>(g), c.scale);
  double pv = op_mul(static_cast<double>(*p), c.decay);
  float mf = static_cast<float>(op_add(op_mul(beta1, static_cast<double>(*m)), op_mul(op_add(1.0, -beta1), d)));
  float vf = static_cast<float>(op_add(op_mul(beta2, static_cast<double>(*v)), op_mul(op_add(1.0, -beta2), op_mul(d, d))));
  *m = mf;
  *v = vf;
  double denom = op_add(op_div(op_sqrt(static_cast<double>(vf)), c.bc2_sqrt), eps);
  *p = static_cast<float>(op_add(pv, -op_mul(c.step_size, op_div(static_cast<double>(mf), denom))));
}

// CUDA backend (native/src/cuda/optim.cu; native/src/cuda_stub/optim_stub.cc throws
// CUDA_UNAVAILABLE). The items are already validated; fills `result` (per-item sums of pass 1, then
// finish_norms) and runs pass 2 unless skipped (Algo::ClipOnly: clip_grad_norm's in-place scaling).
void cuda_step(std::vector<Item>& items, const Hyper& hyper, const StepOptions& options, StepResult& result);

// Shared by both backends: from the per-item sums, fills grad_norm, group norms/scales, and decides
// skipped / nonfinite_item.
void finish_norms(const std::vector<Item>& items, const StepOptions& options, StepResult& result);

}  // namespace detail
}  // namespace optim
}  // namespace fc
