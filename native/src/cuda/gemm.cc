// @file gemm.cc
// @brief fc::cuda::sgemm: row-major SGEMM through cuBLAS, with the contract of the CPU fc::sgemm
// (gemm.h): C = alpha * op(A) * op(B) + beta * C, beta == 0 means C is write-only, and alpha == 0 or
// K == 0 means C = beta * C without reading A or B. Argument checks and their messages are the CPU
// ones, plus the int32 range cuBLAS takes.
//
// Row-major on column-major cuBLAS: a row-major M x N matrix with row stride ldc is, read
// column-major, its N x M transpose with leading dimension ldc. So C^T = op(B)^T * op(A)^T is one
// column-major GEMM with the operands swapped: m = N, n = M, k = K, first operand B (transposed iff
// trans_b), second A (transposed iff trans_a), same leading dimensions.
//
// MathMode picks the cuBLAS compute type, fp32 in and out in every case: F32 -> CUBLAS_COMPUTE_32F
// (default math: no tensor-core down-conversion), TF32 -> CUBLAS_COMPUTE_32F_FAST_TF32, BF16 ->
// CUBLAS_COMPUTE_32F_FAST_16BF (inputs rounded to bf16 inside cuBLAS, fp32 accumulate).
//
// Asynchronous: the GEMM is enqueued on the device stream (cuBLAS handle bound to it); A, B and C
// must be device memory of `device`. Call on the device's queue thread (the handle is created there
// on first use).
#include <algorithm>
#include <climits>

#include "cuda/cublas_api.h"
#include "cuda/internal.h"
#include "facecuda/cuda.h"

namespace fc {
namespace cuda {

namespace {

const char* mode_name(MathMode m) {
  switch (m) {
    case MathMode::F32: return "f32";
    case MathMode::TF32: return "tf32";
    case MathMode::BF16: return "bf16";
    case MathMode::F16: return "f16";
  }
  return "?";
}

void validate(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, const float* C, int64_t ldc, MathMode mode) {
  check_gemm_args(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  const int m = static_cast<int>(mode);
  FC_CHECK(m >= 0 && m <= 3, InvalidArgument,
           "Expected math mode F32 (0), TF32 (1), BF16 (2) or F16 (3) but received ", m);
  // cublasGemmEx takes int dimensions and leading dimensions.
  const int64_t lim = INT_MAX;
  FC_CHECK(M <= lim && N <= lim && K <= lim && lda <= lim && ldb <= lim && ldc <= lim, InvalidArgument,
           "Expected M, N, K and leading dimensions <= ", lim, " for the CUDA sgemm but received M=", M, " N=", N,
           " K=", K, " lda=", lda, " ldb=", ldb, " ldc=", ldc);
}

}  // namespace

void sgemm(int device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, MathMode mode) {
  require_device(device);  // CUDA_UNAVAILABLE first, as in the no-CUDA build
  validate(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, mode);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    if (beta == 1.0f) return;
    cudaStream_t s = detail::stream(device);
    detail::DeviceGuard g(device);
    detail::scale_matrix(C, ldc, M, N, beta, s);
    return;
  }
  const blas::Api& api = blas::api();  // CUDA_UNAVAILABLE with the places searched
  blas::Handle h = blas::handle(device);
  detail::DeviceGuard g(device);
  blas::ComputeType compute = mode == MathMode::TF32   ? blas::kCompute32FFastTF32
                              : mode == MathMode::BF16 ? blas::kCompute32FFast16BF
                              : mode == MathMode::F16  ? blas::kCompute32FFast16F
                                                       : blas::kCompute32F;
  blas::Status st = api.gemm_ex(h, trans_b ? blas::kOpT : blas::kOpN, trans_a ? blas::kOpT : blas::kOpN,
                                static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_32F,
                                static_cast<int>(ldb), A, CUDA_R_32F, static_cast<int>(lda), &beta, C, CUDA_R_32F,
                                static_cast<int>(ldc), compute, blas::kGemmDefault);
  if (st != blas::kStatusSuccess) {
    blas::throw_status(st, "cublasGemmEx",
                       str("sgemm cuda:", device, " M=", M, " N=", N, " K=", K, " trans_a=", trans_a,
                           " trans_b=", trans_b, " lda=", lda, " ldb=", ldb, " ldc=", ldc, " mode=", mode_name(mode)));
  }
}

}  // namespace cuda
}  // namespace fc
