// @file layers_common.cuh
// @brief Helpers shared by the layer kernels (layers_kernels.cu, layers_ext.cu): launch constants,
// the device/stream of an op, float64 scratch and optional-tensor pointers, and the two-level
// per-channel reduction kernels. Included inside each file's anonymous namespace of fc::nn::cuda_nn.
#pragma once

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kPartElems = 4096;  // values per partial range at least (about)
constexpr int64_t kMaxParts = 256;    // ranges per channel at most
constexpr int64_t kMaxBlocks = int64_t(65535) * 8;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The op's device (made current) and its stream.
struct On {
  int dev;
  fc::cuda::detail::DeviceGuard guard;
  cudaStream_t s;
  explicit On(const Tensor& t) : dev(t.device().index), guard(dev), s(fc::cuda::detail::stream(dev)) {}
};

inline Tensor scratch_f32(int dev, int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, Device::cuda(dev));
}
// n doubles (stored as int64 words).
inline Tensor scratch_f64(int dev, int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::I64, Device::cuda(dev));
}
inline double* f64(const Tensor& t) { return static_cast<double*>(t.data()); }
inline const float* opt(const Tensor& t) { return t.defined() ? t.data_as<float>() : nullptr; }
inline float* opt_mut(const Tensor& t) { return t.defined() ? t.data_as<float>() : nullptr; }

// ---- two-level per-channel reduction over an (N, C, S) view (element (n, c, s) at (n·C + c)·S + s)
// channel_partials: the M = N·S values of channel c are cut into P contiguous ranges of L; one block
// per (c, range) sums f(idx, c, acc) into V doubles, lanes by a warp butterfly, warps in order, and
// writes part[(c·P + p)·V + v]. channel_finalize: one thread per channel adds its P partials in
// order and hands the V sums to g(c, sums). No atomics: the order is fixed by the shapes.

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int V, class F>
__global__ void __launch_bounds__(kThreads)
    channel_partials(int64_t N, int64_t C, int64_t S, int64_t P, int64_t L, F f, double* __restrict__ part) {
  __shared__ double sh[kWarps][V];
  const int64_t M = N * S;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t b = blockIdx.x; b < C * P; b += gridDim.x) {
    const int64_t c = b / P, p = b % P;
    const int64_t j0 = p * L, j1 = min(M, j0 + L);
    double acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0.0;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += kThreads) {
      const int64_t n = j / S;
      f((n * C + c) * S + (j - n * S), c, acc);
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      acc[v] = warp_sum(acc[v]);
      if (lane == 0) sh[warp][v] = acc[v];
    }
    __syncthreads();
    if (threadIdx.x < V) {
      double t = 0.0;
      for (int w = 0; w < kWarps; ++w) t += sh[w][threadIdx.x];
      part[b * V + threadIdx.x] = t;
    }
    __syncthreads();
  }
}

template <int V, class G>
__global__ void __launch_bounds__(kThreads)
    channel_finalize(int64_t C, int64_t P, const double* __restrict__ part, G g) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    double sum[V];
#pragma unroll
    for (int v = 0; v < V; ++v) sum[v] = 0.0;
    for (int64_t p = 0; p < P; ++p) {
#pragma unroll
      for (int v = 0; v < V; ++v) sum[v] += part[(c * P + p) * V + v];
    }
    g(c, sum);
  }
}
