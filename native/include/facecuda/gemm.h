// @file gemm.h
// @brief CPU SGEMM: C = alpha * op(A) * op(B) + beta * C, row-major, with leading dimensions.
//
// op(A) is M x K (A is M x K row-major with lda >= K, or K x M with lda >= M when trans_a), op(B) is
// K x N (B is K x N with ldb >= N, or N x K with ldb >= K when trans_b), C is M x N with ldc >= N.
// beta == 0 means C is write-only (NaN in C does not propagate), as in BLAS.
//
// Packed and cache-blocked, multi-threaded over the global ThreadPool, with AVX-512 and AVX2/FMA
// micro-kernels chosen at run time and a portable fallback. Deterministic: every output element is
// reduced over K in one fixed order by one thread, so the same inputs give the same bits on every
// run and for every thread count (the harness checks both). FACECUDA_GEMM_BLOCKING=mc,kc,nc (a tuning
// aid) changes kc and with it the rounding order.
#pragma once

#include <cstdint>

namespace fc {

enum class GemmPrecision {
  F32 = 0,   // fp32 multiply, fp32 accumulate
  BF16 = 1,  // inputs rounded to bf16 (AVX-512 BF16 dot products when present), fp32 accumulate
  TF32 = 2,  // CUDA tensor cores with tf32 inputs, fp32 accumulate; the CPU runs it as F32
  F16 = 3,   // inputs rounded to fp16 (overflow → Inf), fp32 accumulate: CUDA tensor cores; the CPU
             // emulates it with fp16-rounded fp32 operands (the mixed-precision path with loss scaling)
};

struct GemmOptions {
  GemmPrecision precision = GemmPrecision::F32;
  int max_threads = 0;  // 0 = the whole pool
  // Optional row epilogue (CPU): after the product, C[i, :] += row_scale[i]·row_src[i·row_src_ld + :]
  // for every row i of C, applied to each C tile while it is still in cache (the margin head's
  // weight-gradient projection). Both null: no epilogue.
  const float* row_scale = nullptr;
  const float* row_src = nullptr;
  int64_t row_src_ld = 0;
};

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
           const GemmOptions& opts = GemmOptions());

// The checks both GEMMs run first (sizes >= 0, leading dimensions, null pointers); throws
// INVALID_ARGUMENT with a message naming the argument, e.g. "Expected lda >= 13 (K, trans_a=false)".
void check_gemm_args(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                     const float* B, int64_t ldb, const float* C, int64_t ldc);

// Which micro-kernel sgemm uses now ("avx512 16x..", "avx2 ..", "portable ..") for `info` and benches.
const char* sgemm_kernel_name(GemmPrecision p = GemmPrecision::F32);

// Measures the peak fp32 FMA rate of this machine in FLOP/s with a register-only FMA loop at the
// widest SIMD level, on `threads` threads (0 = all) for about `seconds` seconds.
double measure_fma_peak(int threads, double seconds);

}  // namespace fc
