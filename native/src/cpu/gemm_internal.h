// @file gemm_internal.h
// @brief The contract between the SGEMM driver (gemm.cc) and the per-SIMD-level kernels
// (gemm_avx512.cc, gemm_avx2.cc, the portable ones inside gemm.cc).
//
// The driver validates, picks the level, blocks and packs; a level supplies a register-blocked
// micro-kernel over packed panels, GEMV kernels for M == 1 / N == 1, and an FMA peak loop.
//
// Packed layouts (every panel is zero-padded to full mr rows / nr columns, so micro-kernels never
// see a ragged panel; only the C update is masked to m x n):
//   fp32 A micro-panel (mr rows of op(A), kc deep):  ap[k * mr + i]
//   fp32 B micro-panel (nr cols of op(B), kc deep):  bp[k * nr + j]
//   bf16 A micro-panel: uint16 ap[(k / 2) * 2 * mr + 2 * i + (k % 2)]   (kc padded to even with 0)
//   bf16 B micro-panel: uint16 bp[(k / 2) * 2 * nr + 2 * j + (k % 2)]
//   i.e. pairs of consecutive k next to each other, the operand order of VDPBF16PS.
//
// Numerics every micro-kernel keeps (the determinism of fc::sgemm rests on it): element (i, j) is one
// fp32 accumulator reduced over k = 0 .. kc-1 in order (bf16: pair by pair), whatever the tile
// position, the edge masks or the thread; then C = alpha * acc + beta * C (beta == 0: C is not read).
//
// The *_avx2.cc / *_avx512.cc files are compiled with -m flags, so nothing declared here may be an
// inline function or template: an inline body emitted in those files could be picked by the linker
// for the whole program and run on a CPU without the instructions. Those files keep their helpers in
// anonymous namespaces and do not include engine headers with inline code.
#pragma once

#include "facecuda/gemm.h"
#include <cstdint>

namespace fc {
namespace gemm {

// c: the top-left of the m x n tile of C (row-major, ldc); m <= mr, n <= nr. ldbp: elements between
// consecutive k steps of the B panel: nr for a packed fp32 panel, or ldb when the fp32 kernel reads
// full nr-wide panels of a row-major op(B) in place (then n == nr); 2 * nr (per k pair) for bf16.
using MicroKernel = void (*)(int64_t kc, const void* ap, const void* bp, int64_t ldbp, float* c, int64_t ldc,
                             int m, int n, float alpha, float beta);

// y[r * incy] = alpha * dot(x[0..K), a[r * lda + 0 .. K)) + beta * y[r * incy] for r in [0, rows)
// (beta == 0: y not read). Each row is reduced in one fixed order, independent of `rows`.
using GemvDot = void (*)(int64_t K, const float* x, const float* a, int64_t lda, int64_t rows, float* y,
                         int64_t incy, float alpha, float beta);
// y[j * incy] = alpha * sum_k x[k] * a[k * lda + j] + beta * y[j * incy] for j in [0, cols), summed
// over k in order (one FMA chain per element).
using GemvAxpy = void (*)(int64_t K, const float* x, const float* a, int64_t lda, int64_t cols, float* y,
                          int64_t incy, float alpha, float beta);

// Packs micro-panels (fp32 or bf16-pair layout above, zero-padded) of `on` outer indices (rows of
// op(A) or columns of op(B)) from o0, k in [k0, k0 + kn), w wide. Element (o, k) is src[o * ld + k]
// when k_contig, else src[k * ld + o]. bf16 packers round to nearest even.
using PackFn = void (*)(const float* src, int64_t ld, bool k_contig, int64_t o0, int64_t on, int64_t k0,
                        int64_t kn, int w, void* dst);

struct KernelSet {
  const char* name;            // "avx512 14x32"
  const char* bf16_emul_name;  // the name when BF16 is emulated with this set's fp32 kernel
  int mr, nr;                  // fp32 register tile
  MicroKernel f32;
  // Native bf16 micro-kernel (operands in the bf16 pair layout) with its own tile, or null: the
  // driver then emulates BF16 by packing bf16-rounded values as fp32 and running `f32`.
  const char* bf16_name;  // "avx512_bf16 14x32 (vdpbf16ps)"
  int bf16_mr, bf16_nr;
  MicroKernel bf16;
  PackFn pack_f32;   // vectorized packers (fp32 panels, bf16 pair panels for `bf16`), or null for
  PackFn pack_bf16;  // the driver's generic ones
  GemvDot gemv_dot;
  GemvAxpy gemv_axpy;
  // Runs `iters` iterations of a register-only loop of independent FMA chains; returns the FLOPs
  // done (and stores a checksum in *sink so the loop is not optimized away).
  double (*fma_loop)(int64_t iters, float* sink);
};

// Defined in gemm_avx512.cc / gemm_avx2.cc / gemm.cc. Calling a level's kernels on a CPU without it
// is undefined: use kernels_for(), which never goes above fc::simd_level()'s detected hardware.
const KernelSet& kernels_avx512();
const KernelSet& kernels_avx2();
const KernelSet& kernels_portable();

// ---- driver entry points (gemm.cc), for tests and benchmarks

enum class Level { Portable = 0, Avx2 = 1, Avx512 = 2 };

// The kernel set for `level`, or null when this CPU cannot run it (hardware check, not the
// FACECUDA_SIMD override, so tests can reach every level the machine has).
const KernelSet* kernels_for(Level level);

// Set when the level has a native bf16 kernel and the CPU has AVX512_BF16.
bool native_bf16(Level level);

// fc::sgemm with the kernel level forced (validation included). Throws InvalidArgument when the CPU
// cannot run `level`.
void sgemm_level(Level level, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                 int precision, int max_threads, const fc::GemmOptions* epilogue = nullptr);

// Rounds fp32 to bf16 bits, round to nearest even (NaN stays NaN). The driver's packers use it.
uint16_t to_bf16(float x);

// Rounds fp32 to the nearest fp16 value (ties to even), returned as fp32: |x| above 65504 (from 65520
// up) becomes ±Inf, values below 2^-14 land on the subnormal grid of 2^-24, below 2^-25 on ±0.
float round_to_f16(float x);

// Operand rounding of a GEMM (GemmPrecision BF16 / F16 on the CPU).
enum class Rounding { None, Bf16, F16 };

// Cache blocking in use (detected from sysconf, overridable for tuning with FACECUDA_GEMM_BLOCKING
// = "mc,kc,nc"; the kc in use decides the rounding order, so results stay reproducible for a given
// blocking).
struct Blocking {
  int64_t mc, kc, nc;
};
Blocking blocking_for(const KernelSet& ks, bool bf16);

}  // namespace gemm
}  // namespace fc
