// @file optim.cu
// @brief The CUDA backend of fc::optim (facecuda/optim.h): one fused multi-tensor step as two
// kernels over the same fixed chunk list as the CPU (detail::make_chunks), one block per chunk.
//
//   optim_sumsq_kernel   pass 1: block b writes Σ g² (double) of chunk b to partial[b]; each thread
//                        accumulates a fixed strided subset, then a fixed shared-memory tree, so the
//                        value is deterministic (its order differs from the CPU's, see optim.h).
//   optim_update_kernel  pass 2: block b updates the elements of chunk b with the per-element
//                        functions of optim.h (double math, separately rounded: bitwise equal to the
//                        CPU for equal inputs and scales).
// Between the passes the chunk sums come back to the host (one small D2H copy), which adds them per
// item in chunk order, decides skip / clip scales (detail::finish_norms, shared with the CPU) and
// uploads the per-item constants. Item and chunk tables are uploaded once per step into buffers from
// the caching allocator. Everything runs on the device's stream; the step synchronizes at the end so
// that a kernel fault is reported by this step.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda/common.cuh"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/optim.h"
#include "facecuda/tensor.h"

namespace fc {
namespace optim {
namespace detail {

namespace {

constexpr int kThreads = 256;

// Device view of one item.
struct DevItem {
  float* p;
  float* g;
  float* s1;
  float* s2;
  const int32_t* rows;  // sparse: the listed rows (device); nullptr for dense items
  int64_t row_size;
};

// Pass-2 parameters shared by every item.
struct DevHyper {
  int algo;
  int nesterov;
  double momentum, one_minus_dampening, beta1, beta2, eps;
};

// Maps the k-th element of chunk c to its flat offset in the item (dense: begin + k; sparse: row-major
// over the listed rows of the chunk).
__device__ __forceinline__ int64_t element_offset(const DevItem& it, const Chunk& c, int64_t k) {
  if (it.rows == nullptr) return c.begin + k;
  const int64_t r = k / it.row_size;
  return static_cast<int64_t>(it.rows[c.begin + r]) * it.row_size + (k - r * it.row_size);
}

__device__ __forceinline__ int64_t chunk_elements(const DevItem& it, const Chunk& c) {
  return it.rows == nullptr ? c.end - c.begin : (c.end - c.begin) * it.row_size;
}

// ---- CUDA kernels

// items: (num_items), chunks: (num_chunks), partial: (num_chunks) written.
__global__ void optim_sumsq_kernel(const DevItem* items, const Chunk* chunks, double* partial) {
  __shared__ double sh[kThreads];
  const Chunk c = chunks[blockIdx.x];
  const DevItem it = items[c.item];
  const int64_t n = chunk_elements(it, c);
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    const double x = static_cast<double>(it.g[element_offset(it, c, k)]);
    s = op_add(s, op_mul(x, x));
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) sh[threadIdx.x] = op_add(sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// items, consts: (num_items); chunks: (num_chunks). Params and state updated in place (ClipOnly:
// the gradients).
__global__ void optim_update_kernel(const DevItem* items, const ItemConsts* consts, const Chunk* chunks, DevHyper h) {
  const Chunk c = chunks[blockIdx.x];
  const DevItem it = items[c.item];
  const ItemConsts k = consts[c.item];
  const int64_t n = chunk_elements(it, c);
  for (int64_t e = threadIdx.x; e < n; e += kThreads) {
    const int64_t j = element_offset(it, c, e);
    if (h.algo == static_cast<int>(Algo::SGD)) {
      sgd_element(it.p + j, it.g[j], h.momentum != 0.0 ? it.s1 + j : nullptr, k, h.momentum, h.one_minus_dampening,
                  h.nesterov != 0);
    } else if (h.algo == static_cast<int>(Algo::AdamW)) {
      adamw_element(it.p + j, it.g[j], it.s1 + j, it.s2 + j, k, h.beta1, h.beta2, h.eps);
    } else if (k.scale != 1.0) {
      it.g[j] = static_cast<float>(op_mul(static_cast<double>(it.g[j]), k.scale));
    }
  }
}

// A device buffer from the caching allocator (freed back to it, stream-ordered, at scope exit).
Tensor device_bytes(int dev, size_t bytes) {
  return Tensor::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, DType::U8, Device::cuda(dev));
}

}  // namespace

// ---- launcher

void cuda_step(std::vector<Item>& items, const Hyper& hyper, const StepOptions& options, StepResult& r) {
  const int dev = items[0].param.device().index;
  cuda::require_device(dev);
  cuda::detail::DeviceGuard guard(dev);
  cudaStream_t s = cuda::detail::stream(dev);

  const std::vector<Chunk> chunks = make_chunks(items);
  r.item_sumsq.assign(items.size(), 0.0);

  // Rows of the sparse items, concatenated, and the item table pointing into them.
  std::vector<int64_t> row_at(items.size(), -1);
  std::vector<int32_t> all_rows;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].sparse) continue;
    row_at[i] = static_cast<int64_t>(all_rows.size());
    all_rows.insert(all_rows.end(), items[i].rows.begin(), items[i].rows.end());
  }
  Tensor rows_buf = device_bytes(dev, all_rows.size() * sizeof(int32_t));
  if (!all_rows.empty()) cuda::copy_h2d(dev, rows_buf.data(), all_rows.data(), all_rows.size() * sizeof(int32_t));
  const int32_t* rows_dev = rows_buf.data_as<const int32_t>();

  std::vector<DevItem> table(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    DevItem d{};
    d.p = it.param.data_as<float>();
    d.g = it.grad.data_as<float>();
    d.s1 = it.state1.defined() ? it.state1.data_as<float>() : nullptr;
    d.s2 = it.state2.defined() ? it.state2.data_as<float>() : nullptr;
    d.rows = it.sparse ? rows_dev + row_at[i] : nullptr;
    d.row_size = it.sparse ? it.param.numel() / it.param.size(0) : 1;
    table[i] = d;
  }
  if (chunks.empty()) {  // only empty tensors: nothing to read or write
    finish_norms(items, options, r);
    return;
  }
  Tensor items_buf = device_bytes(dev, table.size() * sizeof(DevItem));
  Tensor chunks_buf = device_bytes(dev, chunks.size() * sizeof(Chunk));
  Tensor partial_buf = device_bytes(dev, chunks.size() * sizeof(double));
  cuda::copy_h2d(dev, items_buf.data(), table.data(), table.size() * sizeof(DevItem));
  cuda::copy_h2d(dev, chunks_buf.data(), chunks.data(), chunks.size() * sizeof(Chunk));

  const unsigned blocks = static_cast<unsigned>(chunks.size());
  optim_sumsq_kernel<<<blocks, kThreads, 0, s>>>(items_buf.data_as<const DevItem>(), chunks_buf.data_as<const Chunk>(),
                                                 partial_buf.data_as<double>());
  FC_LAUNCH_CHECK("optim_sumsq_kernel", blocks, " chunks");
  std::vector<double> partial(chunks.size());
  cuda::copy_d2h(dev, partial.data(), partial_buf.data(), partial.size() * sizeof(double));
  for (size_t t = 0; t < chunks.size(); ++t) r.item_sumsq[static_cast<size_t>(chunks[t].item)] += partial[t];
  finish_norms(items, options, r);
  if (r.skipped) return;

  std::vector<ItemConsts> consts(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const int g = items[i].clip_group;
    consts[i] = item_consts(items[i], hyper, (g >= 0 ? r.group_scales[static_cast<size_t>(g)] : 1.0) * options.grad_scale);
  }
  Tensor consts_buf = device_bytes(dev, consts.size() * sizeof(ItemConsts));
  cuda::copy_h2d(dev, consts_buf.data(), consts.data(), consts.size() * sizeof(ItemConsts));
  DevHyper dh{};
  dh.algo = static_cast<int>(hyper.algo);
  dh.nesterov = hyper.nesterov ? 1 : 0;
  dh.momentum = hyper.momentum;
  dh.one_minus_dampening = 1.0 - hyper.dampening;
  dh.beta1 = hyper.beta1;
  dh.beta2 = hyper.beta2;
  dh.eps = hyper.eps;
  optim_update_kernel<<<blocks, kThreads, 0, s>>>(items_buf.data_as<const DevItem>(),
                                                  consts_buf.data_as<const ItemConsts>(),
                                                  chunks_buf.data_as<const Chunk>(), dh);
  FC_LAUNCH_CHECK("optim_update_kernel", blocks, " chunks");
  cuda::synchronize(dev);
}

}  // namespace detail
}  // namespace optim
}  // namespace fc
