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

// out[i] = bf16(in[i]) or fp16(in[i]) (half: true), round to nearest even (the CPU's to_bf16 /
// round_to_f16; fp16 overflows to ±Inf); out holds n 16-bit words.
void cast_to_16bit(const float* in, void* out, int64_t n, bool half, cudaStream_t s);
// out[i] = float(in[i]) (accumulate: out[i] + float(in[i])); in holds n bf16 (or fp16) words.
void widen_16bit(const void* in, float* out, int64_t n, bool half, bool accumulate, cudaStream_t s);
// y[n, c, :] += b[c] for y (N, C, S).
void add_channel_bias(float* y, const float* b, int64_t N, int64_t C, int64_t S, cudaStream_t s);

}  // namespace detail
}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
