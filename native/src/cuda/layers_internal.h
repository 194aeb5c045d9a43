// @file layers_internal.h
// @brief What the CUDA layer files share: the kernels cuda/layers_conv.cc (cuDNN, compiled by the
// host compiler) launches from cuda/layers_kernels.cu. Each launcher enqueues on `s`, returns at once
// when there is no work and throws fc::Error when the launch fails.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fc {
namespace nn {
namespace cuda_nn {
namespace detail {

// out[i] = bf16(in[i]), round to nearest even (the CPU's f32_to_bf16); out holds n 16-bit words.
void cast_to_bf16(const float* in, void* out, int64_t n, cudaStream_t s);
// out[i] = float(in[i]) (accumulate: out[i] + float(in[i])); in holds n bf16 words.
void widen_bf16(const void* in, float* out, int64_t n, bool accumulate, cudaStream_t s);
// y[n, c, :] += b[c] for y (N, C, S).
void add_channel_bias(float* y, const float* b, int64_t N, int64_t C, int64_t S, cudaStream_t s);

}  // namespace detail
}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
