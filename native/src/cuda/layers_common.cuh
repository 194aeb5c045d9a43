// @file layers_common.cuh
// @brief Host helpers shared by the layer kernels (layers_kernels.cu, layers_ext.cu): launch
// constants, the device/stream of an op, float64 scratch and optional-tensor pointers. Included
// inside each file's anonymous namespace of fc::nn::cuda_nn.
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
