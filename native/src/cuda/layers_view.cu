// @file layers_view.cu
// @brief strided_copy and sum_batch (facecuda/layers_ext.h) on CUDA, as cpu/layers_view.cc hands
// them over after its checks (common/layers_ext_cuda.h).
//
// strided_copy: one thread per element (grid-stride, int64 indices), the element's coordinates
// decoded from its row-major index; alpha·s (+ d) in float without FMA contraction (__fmul_rn,
// __fadd_rn), as the CPU. sum_batch: one thread per output element, a double sum over n in order
// (the CPU's order: bitwise the same result), no atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/layers_ext_cuda.h"
#include "cuda/common.cuh"
#include "cuda/internal.h"
#include "facecuda/error.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

namespace {

using fc::cuda::detail::grid_for;

#include "cuda/layers_common.cuh"

__global__ void __launch_bounds__(kThreads)
    strided_copy_kernel(int64_t n, StridedView v, float alpha, bool accumulate, const float* __restrict__ src,
                        float* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i, so = 0, doff = 0;
    for (int a = v.rank - 1; a >= 0; --a) {
      const int64_t c = r % v.size[a];
      r /= v.size[a];
      so += c * v.src[a];
      doff += c * v.dst[a];
    }
    const float s = __fmul_rn(alpha, src[so]);
    dst[doff] = accumulate ? __fadd_rn(s, dst[doff]) : s;
  }
}

__global__ void __launch_bounds__(kThreads)
    sum_batch_kernel(int64_t M, int64_t N, StridedView v, bool accumulate, const float* __restrict__ src,
                     float* __restrict__ dst) {
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < M; m += int64_t(gridDim.x) * blockDim.x) {
    int64_t off = 0, r = m;
    for (int a = v.rank - 1; a >= 1; --a) {
      off += (r % v.size[a]) * v.src[a];
      r /= v.size[a];
    }
    double acc = 0;
    for (int64_t k = 0; k < N; ++k) acc += static_cast<double>(src[off + k * v.src[0]]);
    dst[m] = accumulate ? static_cast<float>(static_cast<double>(dst[m]) + acc) : static_cast<float>(acc);
  }
}

}  // namespace

void strided_copy(const Tensor& src, const Tensor& dst, const StridedView& v, float alpha, bool accumulate) {
  const On on(src);
  const int64_t n = src.numel();
  if (n == 0) return;
  strided_copy_kernel<<<grid_for(n, kThreads), kThreads, 0, on.s>>>(n, v, alpha, accumulate, src.data_as<float>(),
                                                                    dst.data_as<float>());
  FC_LAUNCH_CHECK("strided_copy_kernel", "n=", n, " rank=", v.rank);
}

void sum_batch(const Tensor& src, const Tensor& dst, const StridedView& v, bool accumulate) {
  const On on(src);
  const int64_t N = v.size[0];
  const int64_t M = dst.numel();
  if (M == 0) return;
  sum_batch_kernel<<<grid_for(M, kThreads), kThreads, 0, on.s>>>(M, N, v, accumulate, src.data_as<float>(),
                                                                 dst.data_as<float>());
  FC_LAUNCH_CHECK("sum_batch_kernel", "M=", M, " N=", N);
}

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
