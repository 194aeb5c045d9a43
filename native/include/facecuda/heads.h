// @file heads.h
// @brief Fused margin-softmax heads (SPEC §1–§7): embeddings times class weights, the margin on the
// target logit, scale, softmax cross entropy (mean over the batch), and the gradients with respect to
// the raw embeddings, the raw weights (and the bias of the plain softmax head), on the CPU and CUDA.
//
// Kinds (fc::MarginKind):
//   Norm, Cos, Arc, Combined   normalized x and W, constant scale s, ψ from margin_math.h
//   Ada                        AdaFace (§4): per-row angular/additive margins from the feature norms
//                              (EMA statistics kept by the head), every cosine clamped to ±(1 − eps)
//   Elastic                    ElasticFace (§5): per-row margins m + σ·N(0,1) from a counter-based
//                              generator keyed by (seed, step, row); arc or cos form; "plus" pairing
//   Sphere                     SphereFace (§2): raw x, normalized W, logits ‖x‖·cos, target
//                              ‖x‖·(λ·c + ψ_m(c))/(1 + λ), λ annealed by the head's step counter
//   Softmax                    plain FC with bias (§1.1): z = W·x + b
// Options on every normalized kind: K sub-centers per class (max over the K cosines, §7.1), Partial
// FC sampling (§7.2, rows not sampled get exactly zero gradient), and a sharded mode (§7.3) where the
// head holds classes [class_start, class_start + num_local) of num_classes and its forward reports
// each row's local max and Σexp so a distributed softmax can combine shards.
//
// Memory: besides W, dW and O(B·D + C) buffers the head holds one chunk of at most max_chunk_bytes
// of [B, classes] scratch (cosines; with K > 1 also the [B, classes·K] raw dots and the argmax).
// When everything fits in one chunk the forward keeps it for the backward; otherwise chunks are
// streamed with an online log-sum-exp and the backward recomputes each chunk (one more GEMM pass).
// Partial FC gathers the sampled rows of W (and their gradient) into buffers of sampled·K·D floats.
//
// Numerics: norms divide by max(‖v‖, 1e-12) (F.normalize); sums in fp32 or wider; exponentials are
// max-subtracted. Angular ψ clamp the target cosine to [−1 + 1e-6, 1 − 1e-6] (AdaFace: 1e-3 on every
// cosine, its own clamp) so ψ and ψ' stay finite at c = ±1; the clamp's gradient is 0 outside.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "facecuda/gemm.h"
#include "facecuda/tensor.h"

namespace fc {

enum class MarginKind : int {
  Norm = 0,      // ψ(c) = c
  Cos = 1,       // ψ(c) = c − m3
  Arc = 2,       // ψ(c) = cos(θ + m2); fallback: c − sin(π − m2)·m2 when c <= cos(π − m2); easy: c when c <= 0
  Combined = 3,  // ψ(c) = cos(m1·θ + m2) − m3 (true gradient, no fallback)
  Ada = 4,       // AdaFace: margin = m2 (0.4), ada_h, ada_t_alpha, ada_eps
  Elastic = 5,   // ElasticFace: elastic_cos ? c − m_i : cos(θ + m_i), m_i = m2 + elastic_std·N(0, 1)
  Sphere = 6,    // SphereFace: integer margin m1 (4), λ schedule sphere_*
  Softmax = 7,   // plain FC with bias; scale and margins unused
};

struct MarginParams {
  MarginKind kind = MarginKind::Norm;
  double scale = 64.0;
  double m1 = 1.0, m2 = 0.0, m3 = 0.0;
  bool easy_margin = false;       // Arc only
  bool fallback = true;           // Arc only (ignored when easy_margin)
  bool straight_through = false;  // Arc only: ψ' = 1 in the backward (arcface_torch since Dec 2022)
  // AdaFace (§4): m = m2.
  double ada_h = 0.333, ada_t_alpha = 0.01, ada_eps = 1e-3;
  // ElasticFace (§5): mean margin m2, std elastic_std; cos form when elastic_cos; plus pairing.
  double elastic_std = 0.05;
  bool elastic_cos = false, elastic_plus = false;
  // SphereFace (§2.2): λ = max(base·(1 + gamma·iteration)^(−power), min), iteration = step + 1.
  double sphere_base = 1000.0, sphere_gamma = 0.12, sphere_power = 1.0, sphere_min = 5.0;
};

// The clamp of the target cosine for angular ψ (see the file comment).
constexpr double kCosClampEps = 1e-6;
// F.normalize's epsilon.
constexpr double kNormEps = 1e-12;

struct HeadOptions {
  GemmPrecision precision = GemmPrecision::F32;  // CUDA: F32, TF32 or BF16; CPU: TF32 runs as F32
  size_t max_chunk_bytes = size_t(256) << 20;
  int max_threads = 0;  // CPU: 0 = the whole pool
  int sub_centers = 1;  // K >= 1; W has num_local·K rows, class-major (row c·K + k)
  double sample_rate = 1.0;  // Partial FC: in [0, 1]; 1 = every class
  uint64_t seed = 0;         // ElasticFace margins and Partial FC sampling (with the step counter)
  // Sharded mode: this head holds classes [class_start, class_start + num_local) of num_classes.
  // num_local = 0 means the whole range (not sharded).
  int64_t class_start = 0;
  int64_t num_local = 0;
};

// What a forward reports besides the mean loss (all arrays have B entries).
struct ForwardStats {
  double loss = 0;              // mean loss; NaN in sharded mode (combine the shards' stats instead)
  std::vector<float> row_max;   // max logit of the row over this head's (sampled) classes
  std::vector<double> row_sum;  // Σ_j exp(z_ij − row_max_i) over the same classes
  std::vector<float> target_logit;  // the target's logit, NaN where the target is not on this head
};

// Per-head state that changes with training steps (for checkpoints): the step counter (training
// forwards so far), AdaFace's EMA statistics, SphereFace's current λ (derived, read only).
struct HeadState {
  int64_t step = 0;
  double batch_mean = 20.0, batch_std = 100.0;
  double lambda = 0.0;
};

// One head: owns W [num_local·K, D], dW, the bias (Softmax), dX [B, D] and its workspaces. Not
// thread-safe; each call runs on the head's device queue.
class MarginHead {
 public:
  // num_classes is the global class count (labels are in [0, num_classes)).
  MarginHead(int64_t embedding_size, int64_t num_classes, const MarginParams& margin, const HeadOptions& options,
             const Device& device);
  ~MarginHead();
  MarginHead(const MarginHead&) = delete;
  MarginHead& operator=(const MarginHead&) = delete;

  int64_t embedding_size() const;
  int64_t num_classes() const;      // global C
  int64_t num_local_classes() const;  // classes held (C when not sharded)
  int64_t weight_rows() const;      // num_local · K
  const MarginParams& margin() const;
  const HeadOptions& options() const;
  const Device& device() const;

  // The parameters and gradients (contiguous f32, on the head's device). weight()/bias() may be
  // written between steps (the optimizer updates them in place).
  Tensor& weight();                        // [weight_rows, D]
  Tensor& bias();                          // [num_local] (Softmax only; undefined otherwise)
  const Tensor& grad_weight() const;       // [weight_rows, D], valid after backward()
  const Tensor& grad_bias() const;         // [num_local] (Softmax), valid after backward()
  const Tensor& grad_embeddings() const;   // [B, D], valid after backward()

  // Training mode (default): forward advances the step counter, updates AdaFace's EMA, draws
  // ElasticFace margins and Partial FC samples, and keeps what backward needs. Eval mode: the loss
  // only, with the full class set, ElasticFace's mean margin, the current EMA / λ; no backward.
  void set_training(bool training);
  bool training() const;

  // Mean loss over the batch. x: [B, D] f32; labels: [B] i32 in [0, num_classes).
  // Throws INVALID_ARGUMENT (B = 0, NaN/Inf in x or W, dtypes), SHAPE_MISMATCH (D, label count),
  // OUT_OF_RANGE (a label outside [0, C), naming the row).
  double forward(const Tensor& x, const Tensor& labels);
  // The same, with the per-row statistics (the sharded mode's output).
  ForwardStats forward_stats(const Tensor& x, const Tensor& labels);

  // Gradients of the last forward's mean loss. accumulate = false writes (=) grad_weight/grad_bias,
  // true adds (+=) into them (gradient accumulation; rows not sampled are left as they are);
  // grad_embeddings is always written. In sharded mode pass the global per-row max and Σexp
  // (combined over every shard, same B entries); otherwise pass nullptr for both.
  // loss_scale multiplies every gradient (the gradients of loss_scale · mean loss: mixed-precision
  // loss scaling, so that small fp16 gradients do not flush to zero).
  // Throws INVALID_ARGUMENT when there was no training forward since the last backward.
  void backward(bool accumulate = false, const float* global_row_max = nullptr,
                const double* global_row_sum = nullptr, double loss_scale = 1.0);

  // Logits without margin, for inference: s·cos (Sphere: ‖x‖·cos; Softmax: W·x + b; K > 1: the max
  // over sub-centers) [B, num_local].
  Tensor logits(const Tensor& x);

  // Partial FC: the sampled local class indices of the last training forward (ascending; all classes
  // when sample_rate = 1). Rows of W outside them got no gradient.
  const std::vector<int64_t>& sampled_classes() const;
  // ElasticFace: the per-row margins of the last forward (empty for other kinds).
  const std::vector<double>& last_margins() const;

  HeadState state() const;
  void set_state(const HeadState& s);  // step, batch_mean, batch_std (lambda is derived)

  // Bytes of the largest scratch chunk the last forward/backward used (for memory tests and benches).
  size_t last_chunk_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The margin function on one target cosine, as used by the head (exposed for tests and references):
// returns ψ(c) and writes ψ'(c) (0 where the clamp cuts the gradient; 1 for straight-through).
// Kinds Norm, Cos, Arc, Combined only.
double margin_psi(const MarginParams& p, double c, double* dpsi);

// SphereFace λ at a 1-based iteration (SPEC §2.2, §13).
double sphere_lambda(const MarginParams& p, int64_t iteration);

// Center loss (SPEC §6, facecuda §00): L = λ/(2B)·Σ‖x_i − c_{y_i}‖², ∂L/∂x_i = λ(x_i − c_{y_i})/B,
// centers updated by the Caffe rule c_j ← c_j − α·Σ_{i: y_i = j}(c_j − x_i)/(1 + n_j).
class CenterLoss {
 public:
  CenterLoss(int64_t embedding_size, int64_t num_classes, double lambda, double alpha, const Device& device);
  ~CenterLoss();
  CenterLoss(const CenterLoss&) = delete;
  CenterLoss& operator=(const CenterLoss&) = delete;

  Tensor& centers();                      // [C, D]
  const Tensor& grad_embeddings() const;  // [B, D], valid after backward()
  double forward(const Tensor& x, const Tensor& labels);
  // Writes grad_embeddings; then, when update_centers, applies the α update with the forward's x.
  void backward(bool update_centers = true);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fc
