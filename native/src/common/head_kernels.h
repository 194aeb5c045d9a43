// @file head_kernels.h
// @brief The device passes of the fused margin head (and the center loss): one interface, a CPU
// implementation (native/src/cpu/head_kernels.cc) and a CUDA one (native/src/cuda/head_kernels.cu).
// The orchestration (chunking, the online log-sum-exp merge across chunks, the per-row margin
// tables, AdaFace statistics, ElasticFace draws, Partial FC sampling, shards, the loss) is written
// once in native/src/common/margin_head.cc on top of these passes.
//
// Conventions
// - "dev" pointers live on the head's device (host memory for the CPU backend; device memory from
//   fc::Tensor::empty for CUDA). "host" pointers/vectors are always host memory. The CUDA backend
//   copies host inputs to the device and results back itself (synchronously where the host needs
//   them), on the device's one stream.
// - Matrices are row-major and contiguous: x̂ [B, D], W [R, D], chunk buffers [B, n] (row stride n).
// - Every pass is deterministic: a fixed reduction order that does not depend on thread counts or
//   scheduling (per-block partials merged in block order; no float atomics).
// - Nothing here validates user input (the orchestration does); passes may assume valid shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/margin_math.h"
#include "facecuda/device.h"
#include "facecuda/gemm.h"

namespace fc {
namespace heads {

using Fn = margin::MarginFn<double>;

// Per-row inputs of the element passes (host; B entries each), rebuilt every forward.
struct RowTable {
  std::vector<Fn> fn;           // the margin function applied to the row's target cosine
  std::vector<float> scale;     // s_i: the constant scale, ‖x_i‖ (Sphere) or 1 (Softmax)
  std::vector<int32_t> target;  // the row's target as an ACTIVE class index (after sharding and
                                // sampling), or −1 when the target is not among this head's classes
};

// Constant for a head.
struct ElementConfig {
  bool clamp_all = false;       // AdaFace: every cosine clamped to [lo, hi] in the forward (in
  float lo = -1.0f, hi = 1.0f;  // place, in the chunk buffer); the backward gives 0 where c <= lo or c >= hi
  bool has_bias = false;        // Softmax: c += bias[j] in the forward (in place)
};

// Per-row outputs of one forward chunk (host; B entries each).
struct ChunkRowStats {
  std::vector<float> max;        // max_j z_ij over the chunk (an exact float logit)
  std::vector<double> sum;       // Σ_j exp(z_ij − max_i) over the chunk
  // For rows whose target lies in this chunk (others untouched): the target cosine c_t (after the
  // clamp of clamp_all, before ψ), ψ'(c_t) and the target logit z_t = s_i·ψ(c_t) rounded to float.
  std::vector<double> target_cos, target_dpsi;
  std::vector<float> target_z;
};

class Kernels {
 public:
  virtual ~Kernels() = default;

  // Row norms of v [rows, D] (dev). inv[i] = 1/max(‖v_i‖, 1e-12) (dev), small[i] = ‖v_i‖ < 1e-12
  // (dev), vhat = v·inv (dev; skipped when null), host_norm[i] = ‖v_i‖ in double (NaN or Inf when the
  // row has a non-finite value; vhat/inv of such rows are unspecified).
  virtual void row_norms(const float* v, int64_t rows, int64_t D, float* vhat, float* inv, uint8_t* small,
                         double* host_norm) = 0;

  // C[M, N] = alpha·op(A)·op(B) + beta·C, the fc::sgemm contract, with the head's precision.
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;

  // dst[r] = src[idx[r]] for r < n (rows of D floats; idx host, ascending).
  virtual void gather_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst) = 0;
  // dst[idx[r]] (= or +=) src[r]; rows of dst not in idx are left alone.
  virtual void scatter_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst,
                            bool accumulate) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  // dst (dev) += src (dev), n floats.
  virtual void add_inplace(float* dst, const float* src, int64_t n) = 0;

  // Sub-centers: raw [B, n·K] holds x̂·w_r (no winv); winv [n·K]. cos[i, c] = max_k raw[i, c·K+k]·winv[c·K+k]
  // (the first k on ties), amax[i, c] = that k.
  virtual void subcenter_max(const float* raw, const float* winv, int64_t B, int64_t n, int64_t K, float* cos,
                             uint8_t* amax) = 0;
  // Sub-centers, backward: g [B, n] holds G (dL/dcos of the reduced cosines, winv not applied).
  // raw [B, n·K] is overwritten with G·winv at the arg-max sub-center and 0 elsewhere, after
  // colsum[c·K + k] = Σ_{i: amax[i,c] = k} G[i,c]·cos_{i,c·K+k} (cos recomputed from raw·winv before
  // the overwrite) is written.
  virtual void subcenter_expand(const float* g, const uint8_t* amax, const float* winv, int64_t B, int64_t n, int64_t K,
                                float* raw, double* colsum) = 0;

  // Forward element pass over one chunk of n active classes starting at active class j0.
  // cb [B, n] (dev) holds the raw dots x̂·w_j; wv [n] (dev, winv of the chunk) multiplies them in
  // place when not null (null: cb already holds cosines); bias [n] (dev) is added in place when
  // cfg.has_bias; then clamp_all clamps in place. So afterwards cb holds c. The logits are
  // z_ij = scale_i·c_ij, except the target (rows.target[i] − j0 in [0, n)): z_t = float(scale_i·ψ(c_t)).
  // Writes the chunk's per-row max and Σexp and the target fields of `out` (sized B by the caller).
  virtual void forward_chunk(float* cb, const float* wv, const float* bias, int64_t B, int64_t n, int64_t j0,
                             const RowTable& rows, const ElementConfig& cfg, ChunkRowStats& out) = 0;

  // Backward element pass over one chunk whose cb holds c (as the forward left it).
  //   G_ij = exp(scale_i·c_ij − row_max_i)·inv_sum_i·gscale_i          (non-target; 0 where clamp_all cuts)
  //   G_it = target_g_i                                                (target, given by the caller)
  // Then colsum[j] = Σ_i G_ij·c_ij (dev, double, written =), host_rowsum[i] += Σ_j G_ij·c_ij (double),
  // dbias[j] (= when bias_assign, else +=) Σ_i G_ij when dbias is not null, and cb ← G·wv (wv null: G).
  // row_max, inv_sum, gscale, target_g: host, B entries (gscale_i = scale_i / B).
  virtual void backward_chunk(float* cb, const float* wv, int64_t B, int64_t n, int64_t j0, const RowTable& rows,
                              const ElementConfig& cfg, const float* row_max, const float* inv_sum,
                              const float* gscale, const double* target_g, double* colsum,
                              double* host_rowsum, float* dbias, bool bias_assign) = 0;

  // dw_j −= colsum_j·winv_j²·w_j for each of n rows, skipping rows with small_j (dev arrays).
  virtual void weight_grad_project(float* dw, const float* w, const float* winv, const uint8_t* small,
                                   const double* colsum, int64_t n, int64_t D) = 0;

  // The weight gradient of a chunk: dw = gᵀ·xhat (beta 0) or dw += gᵀ·xhat (beta 1), with g [B, n]
  // (row stride n) and xhat [B, D]; then, when project, dw_j −= colsum_j·winv_j²·w_j for rows without
  // small_j. The default is gemm + weight_grad_project; the CPU fuses the projection into the GEMM's
  // tiles (one pass less over W and dW).
  virtual void weight_grad(const float* g, const float* xhat, int64_t B, int64_t n, int64_t D, float beta,
                           const float* w, const float* winv, const uint8_t* small, const double* colsum,
                           bool project, float* dw) {
    gemm(true, false, n, D, B, 1.0f, g, n, xhat, D, beta, dw, D);
    if (project) weight_grad_project(dw, w, winv, small, colsum, n, D);
  }

  // dx_i = xinv_i·dxhat_i + a_i·xhat_i (xinv dev, a host double [B]); xinv null means 1.
  virtual void dx_final(const float* dxhat, const float* xhat, const float* xinv, const double* a, int64_t B,
                        int64_t D, float* dx) = 0;

  // Inference logits: out[i, j] = scale_i·out[i, j]·wv[j] (+ bias[j]); wv/bias may be null.
  virtual void scale_columns(float* out, const float* wv, const float* bias, const float* host_scale, int64_t B,
                             int64_t n) = 0;

  // Target cosines (ElasticFace plus): c_t[i] = max_k x̂_i·w_r·winv_r over the K rows r of active class
  // target[i] (host out; rows with target −1 get NaN).
  virtual void target_cosines(const float* xhat, const float* w, const float* winv, const std::vector<int32_t>& target,
                              int64_t D, int64_t K, double* host_out) = 0;

  // ---- center loss
  // Returns Σ_i ‖x_i − c_{y_i}‖² (double) and writes diff = x_i − c_{y_i} (dev [B, D]).
  virtual double center_diff(const float* x, const std::vector<int32_t>& labels, const float* centers, int64_t D,
                             float* diff) = 0;
  // c_j += coef_j·Σ_{i: y_i = j} diff_i for every class j present (classes: unique labels ascending,
  // rows_of[k]: the rows of classes[k] ascending; coef host double per present class).
  virtual void center_update(const float* diff, const std::vector<int32_t>& classes,
                             const std::vector<std::vector<int32_t>>& rows_of, const std::vector<double>& coef,
                             int64_t D, float* centers) = 0;
  // y = a·x (dev, n floats).
  virtual void scale_copy(const float* x, float a, int64_t n, float* y) = 0;
};

// The CPU passes (multi-threaded on the global pool, AVX-512 where available).
std::unique_ptr<Kernels> make_cpu_kernels(GemmPrecision precision, int max_threads);
// The CUDA passes on `device` (cuBLAS GEMMs with precision F32/TF32/BF16). The no-nvcc build throws
// CUDA_UNAVAILABLE.
std::unique_ptr<Kernels> make_cuda_kernels(const Device& device, GemmPrecision precision);

}  // namespace heads
}  // namespace fc
