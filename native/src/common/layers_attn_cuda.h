// @file layers_attn_cuda.h
// @brief The CUDA implementations of the attention ops (facecuda/layers_attn.h), as the CPU entry
// points (cpu/layers_attn.cc) hand them over: cuda/layers_attn.cu with nvcc,
// cuda_stub/layers_attn_stub.cc (CUDA_UNAVAILABLE) without. Same contract as common/layers_cuda.h:
// called only after the argument checks, every tensor on one CUDA device, float32, contiguous, of the
// checked shapes; nothing is validated again; work is enqueued on the device's stream.
#pragma once

#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace cuda_nn {

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& probs,
                       float scale, const ExecOptions& ex);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
                        const Tensor& dq, const Tensor& dk, const Tensor& dv, float scale, const ExecOptions& ex);
void xca_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature, const Tensor& out,
                 const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const ExecOptions& ex);
void xca_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& temperature,
                  const Tensor& q_norm, const Tensor& k_norm, const Tensor& probs, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dtemperature, const ExecOptions& ex);

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
