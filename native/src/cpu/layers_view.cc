// @file layers_view.cc
// @brief strided_copy and sum_batch of facecuda/layers_ext.h: the layout moves of the model executor
// (tokens ↔ maps, the q/k/v head split, channel concat and slice, class tokens, positional
// embeddings). Argument checks for both devices, the CPU loops, and the hand-over of CUDA tensors to
// common/layers_ext_cuda.h.
//
// CPU work split: strided_copy runs over the rows of the innermost axis (ranges of rows per task);
// sum_batch over ranges of output elements, each summed over n = 0..N−1 in double. Every output
// value is computed by one task in a fixed order: results do not depend on the thread count.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/layers_ext_cuda.h"
#include "cpu/layers_internal.h"
#include "facecuda/error.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;

constexpr int64_t kRowGrain = 2048;  // strided_copy: innermost rows per task at least (× their length)

// A defined float32 view on the op's device (strides allowed).
void check_view(const Tensor& t, const char* name) {
  FC_CHECK(t.defined(), InvalidArgument, "Expected ", name, " to be a defined tensor but received an undefined one");
  FC_CHECK(t.device() == op_device_slot(), InvalidArgument, "Expected ", name, " on ", op_device_slot().str(),
           " but received ", t.describe());
  FC_CHECK(t.dtype() == DType::F32, InvalidArgument, "Expected ", name, " of dtype float32 but received ",
           t.describe());
}

// The element span [lo, hi) of a view within its storage (strides are non-negative).
void span_of(const Tensor& t, int64_t* lo, int64_t* hi) {
  int64_t last = t.offset();
  for (int a = 0; a < t.rank(); ++a) last += (t.size(a) - 1) * t.stride(a);
  *lo = t.offset();
  *hi = last + 1;
}

void check_disjoint(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0 || src.numel() == 0 || dst.storage() != src.storage()) return;
  int64_t a0, a1, b0, b1;
  span_of(dst, &a0, &a1);
  span_of(src, &b0, &b1);
  FC_CHECK(a1 <= b0 || b1 <= a0, InvalidArgument, "Expected dst not to share memory with src");
}

cuda_nn::StridedView view_of(const Tensor& src, const Tensor& dst) {
  cuda_nn::StridedView v;
  v.rank = src.rank();
  for (int a = 0; a < v.rank; ++a) {
    v.size[a] = src.size(a);
    v.src[a] = src.stride(a);
    v.dst[a] = dst.defined() && a < dst.rank() ? dst.stride(a) : 0;
  }
  return v;
}

// The offsets of row r (all axes but the last, row-major) in src and dst.
void row_offsets(const cuda_nn::StridedView& v, int64_t r, int64_t* so, int64_t* dof) {
  int64_t s = 0, d = 0;
  for (int a = v.rank - 2; a >= 0; --a) {
    const int64_t i = r % v.size[a];
    r /= v.size[a];
    s += i * v.src[a];
    d += i * v.dst[a];
  }
  *so = s;
  *dof = d;
}

}  // namespace

void strided_copy(const Tensor& src, const Tensor& dst, float alpha, bool accumulate, const ExecOptions& ex) {
  const OpDevice dev(src);
  check_view(src, "src");
  check_view(dst, "dst");
  check_threads(ex);
  FC_CHECK(src.shape() == dst.shape(), ShapeMismatch, "Expected dst of shape ", shape_str(src.shape()),
           " (the shape of src) but received ", shape_str(dst.shape()));
  for (int a = 0; a < dst.rank(); ++a) {
    FC_CHECK(dst.stride(a) != 0 || dst.size(a) <= 1, InvalidArgument,
             "Expected dst without broadcast (stride-0) axes but axis ", a, " of ", dst.describe(), " has one");
  }
  check_disjoint(dst, src);
  if (src.numel() == 0) return;
  // Rank 0 runs as one row of one element.
  const Tensor s1 = src.rank() == 0 ? src.reshape({1}) : src;
  const Tensor d1 = dst.rank() == 0 ? dst.reshape({1}) : dst;
  const cuda_nn::StridedView v = view_of(s1, d1);
  if (dev.cuda()) return cuda_nn::strided_copy(s1, d1, v, alpha, accumulate);
  const float* sp = s1.data_as<float>();
  float* dp = d1.data_as<float>();
  const int64_t inner = v.size[v.rank - 1], ss = v.src[v.rank - 1], ds = v.dst[v.rank - 1];
  const int64_t rows = s1.numel() / inner;
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(1, inner / 64)), ex.max_threads,
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   int64_t so, doff;
                   row_offsets(v, r, &so, &doff);
                   const float* s = sp + so;
                   float* d = dp + doff;
                   if (accumulate) {
                     for (int64_t i = 0; i < inner; ++i) d[i * ds] = alpha * s[i * ss] + d[i * ds];
                   } else {
                     for (int64_t i = 0; i < inner; ++i) d[i * ds] = alpha * s[i * ss];
                   }
                 }
               });
}

void sum_batch(const Tensor& src, const Tensor& dst, bool accumulate, const ExecOptions& ex) {
  const OpDevice dev(src);
  check_view(src, "src");
  check_tensor(dst, "dst");
  check_threads(ex);
  FC_CHECK(src.rank() >= 2, ShapeMismatch, "Expected src of rank 2 to 5 (N, ...) but received ",
           shape_str(src.shape()));
  const int64_t N = src.size(0);
  const int64_t M = N == 0 ? 0 : src.numel() / N;
  FC_CHECK(dst.numel() == M, ShapeMismatch, "Expected dst with ", M, " elements (src ", shape_str(src.shape()),
           " without its first axis) but received ", shape_str(dst.shape()));
  check_disjoint(dst, src);
  if (M == 0) return;
  const cuda_nn::StridedView v = view_of(src, Tensor());
  if (dev.cuda()) return cuda_nn::sum_batch(src, dst, v, accumulate);
  const float* sp = src.data_as<float>();
  float* dp = dst.data_as<float>();
  parallel_for(M, 4096, ex.max_threads, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      // Offset of element m of one sample (axes 1.. in row-major order).
      int64_t off = 0, r = m;
      for (int a = v.rank - 1; a >= 1; --a) {
        off += (r % v.size[a]) * v.src[a];
        r /= v.size[a];
      }
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(sp[off + n * v.src[0]]);
      dp[m] = accumulate ? static_cast<float>(static_cast<double>(dp[m]) + acc) : static_cast<float>(acc);
    }
  });
}

}  // namespace nn
}  // namespace fc
