// @file layers_internal.h
// @brief What the CPU layer ops (layers.cc, layers_conv.cc) share: the argument checks (one wording
// for every op) and the static parallel loop.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"

namespace fc {
namespace nn {
namespace detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- argument checks

inline void check_tensor(const Tensor& t, const char* name) {
  FC_CHECK(t.defined(), InvalidArgument, "Expected ", name, " to be a defined tensor but received an undefined one");
  FC_CHECK(t.device().is_cpu(), InvalidArgument, "Expected ", name, " on cpu but received ", t.describe());
  FC_CHECK(t.dtype() == DType::F32, InvalidArgument, "Expected ", name, " of dtype float32 but received ",
           t.describe());
  FC_CHECK(t.is_contiguous(), InvalidArgument, "Expected ", name, " to be contiguous but received a strided ",
           t.describe());
}

inline void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& want, const char* what) {
  FC_CHECK(t.shape() == want, ShapeMismatch, "Expected ", name, " of shape ", shape_str(want), " (", what,
           ") but received ", shape_str(t.shape()));
}

inline void check_threads(const ExecOptions& ex) {
  FC_CHECK(ex.max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 (0 = all) but received ", ex.max_threads);
}

// An output may be exactly an input (in place) when `same_ok`; any other overlap is rejected.
inline void check_alias(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name, bool same_ok) {
  if (!out.defined() || !in.defined() || out.numel() == 0 || in.numel() == 0) return;
  const char* a = static_cast<const char*>(out.data());
  const char* b = static_cast<const char*>(in.data());
  if (!(a < b + in.nbytes() && b < a + out.nbytes())) return;
  const bool same = a == b && out.nbytes() == in.nbytes();
  if (same_ok) {
    FC_CHECK(same, InvalidArgument, "Expected ", out_name, " to be exactly ", in_name, " (in place) or not to overlap it",
             " but the two partially overlap");
  } else {
    FC_CHECK(false, InvalidArgument, "Expected ", out_name, " not to share memory with ", in_name);
  }
}

// fn(begin, end) over [0, n) in contiguous chunks (>= grain), one per thread. Only used where each
// index is computed whole by one call, so results never depend on the cut.
inline void parallel_for(int64_t n, int64_t grain, int max_threads, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  ThreadPool& pool = ThreadPool::global();
  const int64_t T = pool.threads_for(max_threads);
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(T, ceil_div(n, std::max<int64_t>(grain, 1))));
  if (tasks == 1) {
    fn(0, n);
    return;
  }
  const int64_t chunk = ceil_div(n, tasks);
  pool.run(
      tasks,
      [&](int64_t t, int) {
        const int64_t b = t * chunk, e = std::min(n, b + chunk);
        if (b < e) fn(b, e);
      },
      static_cast<int>(tasks));
}

// The GEMM options of a layer op's execution options.
inline GemmOptions gemm_options(const ExecOptions& ex) {
  GemmOptions o;
  o.precision = ex.precision;
  o.max_threads = ex.max_threads;
  return o;
}

}  // namespace detail
}  // namespace nn
}  // namespace fc
