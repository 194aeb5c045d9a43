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
#include <cstring>
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

// Merges adjacent axes that are contiguous in both src and dst (size-1 axes dropped), so that e.g. a
// channel concat copies one [C·H·W] row per image instead of H rows of W.
cuda_nn::StridedView coalesce(const cuda_nn::StridedView& v) {
  cuda_nn::StridedView c;
  for (int a = 0; a < v.rank; ++a) {
    if (v.size[a] == 1 && v.rank > 1) continue;
    if (c.rank > 0 && c.src[c.rank - 1] == v.size[a] * v.src[a] && c.dst[c.rank - 1] == v.size[a] * v.dst[a]) {
      c.size[c.rank - 1] *= v.size[a];
      c.src[c.rank - 1] = v.src[a];
      c.dst[c.rank - 1] = v.dst[a];
      continue;
    }
    c.size[c.rank] = v.size[a];
    c.src[c.rank] = v.src[a];
    c.dst[c.rank] = v.dst[a];
    ++c.rank;
  }
  if (c.rank == 0) {
    c.rank = 1;
    c.size[0] = 1;
    c.src[0] = c.dst[0] = 1;
  }
  return c;
}

// d = alpha·s (+ d) over n elements with strides ds, ss; contiguous rows take a vectorizable loop.
inline void copy_row(float* d, const float* s, int64_t n, int64_t ds, int64_t ss, float alpha, bool accumulate) {
  if (ds == 1 && ss == 1) {
    if (accumulate) {
      for (int64_t i = 0; i < n; ++i) d[i] = alpha * s[i] + d[i];
    } else if (alpha == 1.0f) {
      std::memcpy(d, s, static_cast<size_t>(n) * sizeof(float));
    } else {
      for (int64_t i = 0; i < n; ++i) d[i] = alpha * s[i];
    }
    return;
  }
  if (accumulate) {
    for (int64_t i = 0; i < n; ++i) d[i * ds] = alpha * s[i * ss] + d[i * ds];
  } else {
    for (int64_t i = 0; i < n; ++i) d[i * ds] = alpha * s[i * ss];
  }
}

constexpr int64_t kTile = 32;  // transposes: 32×32 tiles (4 KiB each side)

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
  const cuda_nn::StridedView c = coalesce(v);
  const int r = c.rank;
  const int64_t inner = c.size[r - 1], ss = c.src[r - 1], ds = c.dst[r - 1];
  // A transpose of the last two axes (tokens ↔ maps, the head split): 32×32 tiles, so that neither
  // side is walked with a large stride element by element.
  if (r >= 2 && c.size[r - 2] >= kTile && inner >= kTile &&
      ((ss != 1 && ds == 1 && c.src[r - 2] == 1) || (ss == 1 && ds != 1 && c.dst[r - 2] == 1))) {
    const int64_t outer = c.size[r - 2], so2 = c.src[r - 2], do2 = c.dst[r - 2];
    const int64_t otiles = (outer + kTile - 1) / kTile, itiles = (inner + kTile - 1) / kTile;
    const int64_t blocks = s1.numel() / (outer * inner);
    cuda_nn::StridedView head = c;  // the axes before the transposed pair, for row_offsets
    head.rank = r - 1;
    head.size[r - 2] = 1;
    parallel_for(blocks * otiles, 1, ex.max_threads, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        int64_t so = 0, doff = 0;
        if (r > 2) row_offsets(head, (t / otiles), &so, &doff);
        const int64_t o0 = (t % otiles) * kTile, o1 = std::min(outer, o0 + kTile);
        for (int64_t it = 0; it < itiles; ++it) {
          const int64_t i0 = it * kTile, i1 = std::min(inner, i0 + kTile);
          if (ds == 1) {  // dst rows contiguous: read columns of the tile, write rows
            for (int64_t o = o0; o < o1; ++o) {
              float* d = dp + doff + o * do2;
              const float* s = sp + so + o * so2;
              for (int64_t i = i0; i < i1; ++i) d[i] = accumulate ? alpha * s[i * ss] + d[i] : alpha * s[i * ss];
            }
          } else {  // src rows contiguous: walk the tile so that dst is written along its unit stride
            for (int64_t i = i0; i < i1; ++i) {
              float* d = dp + doff + i * ds;
              const float* s = sp + so + i;
              for (int64_t o = o0; o < o1; ++o) {
                d[o * do2] = accumulate ? alpha * s[o * so2] + d[o * do2] : alpha * s[o * so2];
              }
            }
          }
        }
      }
    });
    return;
  }
  const int64_t rows = s1.numel() / inner;
  parallel_for(rows, std::max<int64_t>(1, kRowGrain / std::max<int64_t>(1, inner / 64)), ex.max_threads,
               [&](int64_t b, int64_t e) {
                 for (int64_t row = b; row < e; ++row) {
                   int64_t so, doff;
                   row_offsets(c, row, &so, &doff);
                   copy_row(dp + doff, sp + so, inner, ds, ss, alpha, accumulate);
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
