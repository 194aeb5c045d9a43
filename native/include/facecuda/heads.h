// @file heads.h
// @brief Fused margin-softmax heads (SPEC §1.3, §3): L2-normalized embeddings times L2-normalized
// class weights, the margin ψ on the target cosine, scale, softmax cross entropy (mean over the
// batch), and the gradients with respect to the raw embeddings and the raw weights.
//
// This first slice covers the normalized family with a cosine-based ψ: NormFace (ψ = c), CosFace
// (c − m), ArcFace (cos(θ + m) with the th/mm fallback or easy margin, exact or straight-through
// gradient) and the combined margin cos(m1·θ + m2) − m3 (true gradient), on the CPU. AdaFace,
// ElasticFace, SphereFace, Softmax, sub-centers, Partial FC, shards and CUDA extend it.
//
// Memory: besides W [C, D] and dW [C, D] the head keeps O(B·D + C) buffers and one chunk of at
// most `max_chunk_bytes` of cosines. When the whole [B, C] block fits in one chunk the forward keeps
// it for the backward; otherwise the forward streams class chunks with an online log-sum-exp and
// the backward recomputes each chunk's cosines (one extra GEMM pass).
//
// Numerics: norms divide by max(‖v‖, 1e-12) (F.normalize); sums in fp32 or wider; exponentials are
// max-subtracted. For the angular ψ the target cosine is clamped to [−1 + 1e-6, 1 − 1e-6] before
// θ = arccos(c) so that ψ and ψ' stay finite at c = ±1; the clamp's gradient is 0 outside (SPEC §1.3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "facecuda/gemm.h"
#include "facecuda/tensor.h"

namespace fc {

enum class MarginKind : int {
  Norm = 0,      // ψ(c) = c
  Cos = 1,       // ψ(c) = c − m3
  Arc = 2,       // ψ(c) = cos(θ + m2); fallback: c − sin(π − m2)·m2 when c <= cos(π − m2); easy: c when c <= 0
  Combined = 3,  // ψ(c) = cos(m1·θ + m2) − m3 (true gradient, no fallback)
};

struct MarginParams {
  MarginKind kind = MarginKind::Norm;
  double scale = 64.0;
  double m1 = 1.0, m2 = 0.0, m3 = 0.0;
  bool easy_margin = false;       // Arc only
  bool fallback = true;           // Arc only (ignored when easy_margin)
  bool straight_through = false;  // Arc only: ψ' = 1 in the backward (arcface_torch since Dec 2022)
};

// The clamp of the target cosine for angular ψ (see the file comment).
constexpr double kCosClampEps = 1e-6;
// F.normalize's epsilon.
constexpr double kNormEps = 1e-12;

struct HeadOptions {
  GemmPrecision precision = GemmPrecision::F32;
  size_t max_chunk_bytes = size_t(256) << 20;
  int max_threads = 0;  // 0 = the whole CPU pool
};

// One head: owns W [C, D], dW [C, D], dX [B, D] and its workspaces. Not thread-safe; each call runs
// on the head's device queue.
class MarginHead {
 public:
  MarginHead(int64_t embedding_size, int64_t num_classes, const MarginParams& margin, const HeadOptions& options,
             const Device& device);
  ~MarginHead();
  MarginHead(const MarginHead&) = delete;
  MarginHead& operator=(const MarginHead&) = delete;

  int64_t embedding_size() const;
  int64_t num_classes() const;
  const MarginParams& margin() const;

  // The parameters and gradients (contiguous f32, on the head's device). weight() may be written.
  Tensor& weight();
  const Tensor& grad_weight() const;       // [C, D], valid after backward()
  const Tensor& grad_embeddings() const;   // [B, D], valid after backward()

  // Mean loss over the batch. x: [B, D] f32; labels: [B] i32 in [0, C). Keeps what backward needs.
  // Throws INVALID_ARGUMENT (B = 0, NaN/Inf in x or W, dtypes), SHAPE_MISMATCH (D, label count),
  // OUT_OF_RANGE (a label outside [0, C), naming the row).
  double forward(const Tensor& x, const Tensor& labels);
  // Gradients of the last forward's mean loss: writes (=, not +=) grad_embeddings and grad_weight.
  // Throws INVALID_ARGUMENT when there was no forward since the last backward.
  void backward();
  // Scaled cosines s·x̂·ŵᵀ [B, C] without margin, for inference.
  Tensor logits(const Tensor& x);

  // Bytes of the largest cosine chunk the last forward/backward used (for memory tests and benches).
  size_t last_chunk_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The margin function on one target cosine, as used by the head (exposed for tests and references):
// returns ψ(c) and writes ψ'(c) (0 where the clamp cuts the gradient; 1 for straight-through).
double margin_psi(const MarginParams& p, double c, double* dpsi);

}  // namespace fc
