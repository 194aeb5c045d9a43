// @file common.cuh
// @brief Helpers every CUDA kernel file uses: grid sizing and the post-launch check.
//
// Launchers return before launching when there is no work (a zero-sized grid is an error), take the
// device stream, and call FC_LAUNCH_CHECK right after the launch so a bad configuration becomes an
// fc::Error naming the kernel instead of surfacing at an unrelated later call.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/internal.h"

namespace fc {
namespace cuda {
namespace detail {

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, at most 65535 * 8.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

}  // namespace detail
}  // namespace cuda
}  // namespace fc

#define FC_LAUNCH_CHECK(kernel_name, ...) FC_CUDA_CHECK(cudaGetLastError(), "launching " kernel_name " ", __VA_ARGS__)
