// @file layers_attn.h
// @brief The attention cores of the transformer backbones (issue 8; SPEC-BACKBONES §9.10, §9.11):
// multi-head self-attention (ViT/DeiT, insightface ViT, Face Transformer) and EdgeNeXt's transposed
// (cross-covariance) attention XCA, forward and backward, on the CPU and on CUDA. Only the core: the
// qkv and output Linear layers around it are linear_forward/linear_backward of layers.h.
//
// Layout (both ops): q, k, v, out and their gradients are [N, H, T, D] float32, contiguous: batch N,
// heads H, tokens T, head width D (= C/H). timm packs q, k, v into one Linear C → 3C whose output
// [N, T, 3·C] reads as [N, T, 3, H, D]; the caller permutes it to three [N, H, T, D] tensors (and
// `out` back to [N, T, H·D]) — the executor's job, not these ops'. Both ops keep what their backward
// needs in caller-owned tensors (never allocated here), and the conventions of layers.h hold: same
// device for every tensor, checks before any output is touched, fc::Error INVALID_ARGUMENT /
// SHAPE_MISMATCH naming the argument, activation gradients written (=), parameter gradients
// (dtemperature) accumulated (+=), no output may overlap an input.
//
// Multi-head self-attention, per (n, h):  S = scale·Q·Kᵀ (T×T), P = row-softmax(S), O = P·V.
//   The softmax is fp32 with the row maximum subtracted first (any finite logits, no overflow). CPU:
//   exp by a Cody–Waite reduction and a degree-6 polynomial (about 2 ulp; SSE2 lanes), arguments below
//   −87 raised to −87, the row sum over 16 fixed float lanes then in double. CUDA: expf, the row sum
//   by a fixed warp tree in fp32. P [N, H, T, T] is what
//   the backward needs (T <= 197 at face sizes: 150 KiB per (n, h)).
//   Backward: dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P)); dQ = scale·dS·K; dK = scale·dSᵀ·Q.
//
// XCA (EdgeNeXt SDTA, timm CrossCovarianceAttn), per (n, h) with q, k, v the T×D slices:
//   q̂[:, i] = q[:, i] / max(‖q[:, i]‖₂, 1e-12) — each CHANNEL normalized over the T tokens (k̂ alike);
//   A = q̂ᵀ·k̂ (D×D), P = row-softmax(temperature[h]·A) (fp32, max-subtracted);
//   out = v·Pᵀ, i.e. out[t, i] = Σ_j P[i, j]·v[t, j] (timm: (attn @ v) in the transposed D×T layout).
//   Saved for the backward: the clamped norms max(‖q[:, i]‖, 1e-12), max(‖k[:, i]‖, 1e-12) [N, H, D]
//   and P [N, H, D, D]; q̂ and k̂ are recomputed from q and k.
//   Backward: dv = dout·P; dP = doutᵀ·v; dS = P ⊙ (dP − rowsum(dP ⊙ P));
//   dtemperature[h] += Σ_n Σ_ij dS_ij·A_ij; dq̂ = temperature·k̂·dSᵀ; dk̂ = temperature·q̂·dS;
//   dq[:, i] = (dq̂[:, i] − q̂[:, i]·(q̂[:, i]·dq̂[:, i])) / ‖q[:, i]‖ (dq̂[:, i]/1e-12 where the norm
//   was clamped, as torch.nn.functional.normalize); dk alike.
//
// CPU: one task per (n, h) on fc::ThreadPool::global() (at most ExecOptions::max_threads), each
// running fc::sgemm serially (nested pool calls run on the calling thread) with ExecOptions::precision
// (TF32 runs as F32); bitwise identical for every thread count. dtemperature: one double partial per
// (n, h), summed over n in order.
// CUDA: cuBLAS strided-batched GEMMs over the N·H slices (fc::cuda compute type from
// ExecOptions::precision, F32 = no TF32) and own kernels for the row softmax (one warp per row), the
// softmax backward, the L2 norms and their backward; scratch is at most one [N·H, T, T] (MHSA
// backward: dP) or a few [N, H, T, D] tensors (XCA: q̂, k̂ and dq̂/dk̂) from the caching allocator. Not
// bitwise the CPU's (another summation order); deterministic run to run.
#pragma once

#include <cstdint>

#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {

// ---- Multi-head self-attention core

// out = softmax(scale·q·kᵀ)·v per (n, h).
//   q, k, v: [N, H, T, D]; scale finite and > 0 (ViT: D^-1/2; Face Transformer: C^-1/2)
//   out:     [N, H, T, D], written
//   probs:   [N, H, T, T], written (P, for attention_backward); undefined for inference (CPU: one T×T
//            scratch per thread; CUDA: a [N·H, T, T] scratch)
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& probs,
                       float scale, const ExecOptions& ex = ExecOptions());

// dq, dk, dv (each [N, H, T, D], written; any may be undefined: not computed) from dout [N, H, T, D]
// and the forward's q, k, v, probs.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale,
                        const ExecOptions& ex = ExecOptions());

// ---- Cross-covariance (transposed) attention, XCA

// The clamp of the L2 norms (torch.nn.functional.normalize's eps).
constexpr float kXcaNormEps = 1e-12f;

// out = v·softmax(temperature[h]·q̂ᵀk̂)ᵀ per (n, h) (see the file comment).
//   q, k, v:      [N, H, T, D]
//   temperature:  [H] (timm's parameter (H, 1, 1) flattened), finite (checked on the CPU; on CUDA
//                 the values stay on the device and are the caller's responsibility)
//   out:          [N, H, T, D], written
//   q_norm, k_norm: [N, H, D], written: max(‖·‖₂ over T, 1e-12) per channel (undefined: not saved)
//   probs:        [N, H, D, D], written (undefined: not saved; the backward needs all three)
void xca_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature, const Tensor& out,
                 const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs,
                 const ExecOptions& ex = ExecOptions());

// dq, dk, dv ([N, H, T, D], written; each may be undefined) and dtemperature ([H], accumulated; may be
// undefined) from dout [N, H, T, D] and the forward's q, k, v, temperature, q_norm, k_norm, probs.
void xca_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature,
                  const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dtemperature, const ExecOptions& ex = ExecOptions());

}  // namespace nn
}  // namespace fc
