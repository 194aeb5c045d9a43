// @file scale.cu
// @brief C = beta * C over a row-major matrix with a row stride (the alpha == 0 / K == 0 case of
// sgemm, where BLAS reads neither A nor B). beta == 0 writes zeros without reading C, so NaN or
// uninitialized memory in C does not propagate, as in BLAS.
#include "cuda/common.cuh"

namespace fc {
namespace cuda {
namespace detail {

namespace {

// ---- CUDA kernels

// c: (rows, cols) row-major with row stride ldc, overwritten.
__global__ void scale_matrix_kernel(float* c, int64_t ldc, int64_t rows, int64_t cols, float beta) {
  const int64_t n = rows * cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t r = i / cols;
    float* p = c + r * ldc + (i - r * cols);
    *p = beta == 0.0f ? 0.0f : beta * *p;
  }
}

}  // namespace

// ---- launchers

void scale_matrix(float* c, int64_t ldc, int64_t rows, int64_t cols, float beta, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  const int threads = 256;
  scale_matrix_kernel<<<grid_for(rows * cols, threads), threads, 0, s>>>(c, ldc, rows, cols, beta);
  FC_LAUNCH_CHECK("scale_matrix_kernel", rows, "x", cols, " ldc=", ldc);
}

}  // namespace detail
}  // namespace cuda
}  // namespace fc
