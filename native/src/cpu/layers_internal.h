// @file layers_internal.h
// @brief What the layer ops (layers.cc, layers_conv.cc, layers_fused.cc) share: the argument checks
// (one wording for every op and every device) and the static parallel loop.
//
// Devices: an op validates its arguments once, here, for whichever device it runs on, then computes
// on the CPU or hands the validated call to its CUDA implementation (common/layers_cuda.h). The
// public entry point opens an OpDevice scope from its first tensor; every check_tensor of the op then
// requires that device ("Expected w on cuda:0 but received float32[...] on cpu"), so mixing devices is
// INVALID_ARGUMENT naming the argument, and a CPU op can never be handed device memory.
#pragma once

#include <algorithm>
#include <cmath>
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

// ---- the device of the running op

// The device the tensors of the op running on this thread must be on (CPU outside any OpDevice).
inline Device& op_device_slot() {
  static thread_local Device d = Device::cpu();
  return d;
}

// Scope of one op call: the op's device is its anchor tensor's (an undefined anchor keeps the
// enclosing one, and check_tensor then reports it undefined). Restores the enclosing device on exit,
// so ops may call ops.
class OpDevice {
 public:
  explicit OpDevice(const Tensor& anchor) : prev_(op_device_slot()) {
    if (anchor.defined()) op_device_slot() = anchor.device();
  }
  ~OpDevice() { op_device_slot() = prev_; }
  OpDevice(const OpDevice&) = delete;
  OpDevice& operator=(const OpDevice&) = delete;
  const Device& device() const { return op_device_slot(); }
  bool cuda() const { return op_device_slot().is_cuda(); }

 private:
  Device prev_;
};

// ---- argument checks

inline void check_tensor(const Tensor& t, const char* name, const Device& device) {
  FC_CHECK(t.defined(), InvalidArgument, "Expected ", name, " to be a defined tensor but received an undefined one");
  FC_CHECK(t.device() == device, InvalidArgument, "Expected ", name, " on ", device.str(), " but received ",
           t.describe());
  FC_CHECK(t.dtype() == DType::F32, InvalidArgument, "Expected ", name, " of dtype float32 but received ",
           t.describe());
  FC_CHECK(t.is_contiguous(), InvalidArgument, "Expected ", name, " to be contiguous but received a strided ",
           t.describe());
}

// On the running op's device (see OpDevice).
inline void check_tensor(const Tensor& t, const char* name) { check_tensor(t, name, op_device_slot()); }

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

// (N, C, S) view of a rank >= 2 tensor: channel axis 1, S = product of the trailing axes.
struct NCS {
  int64_t N, C, S;
};

inline NCS ncs_of(const Tensor& x, const char* name, const char* what) {
  FC_CHECK(x.rank() >= 2, ShapeMismatch, "Expected ", name, " of rank >= 2 (", what, ") but received ",
           shape_str(x.shape()));
  NCS v{x.size(0), x.size(1), 1};
  for (int a = 2; a < x.rank(); ++a) v.S *= x.size(a);
  return v;
}

inline void check_bn_options(const BatchNormOptions& o) {
  FC_CHECK(std::isfinite(o.eps) && o.eps > 0, InvalidArgument, "Expected eps > 0 but received ", o.eps);
  FC_CHECK(std::isfinite(o.momentum) && o.momentum >= 0 && o.momentum <= 1, InvalidArgument,
           "Expected momentum in [0, 1] but received ", o.momentum);
}

// A per-channel vector of C values; `what` says where C comes from (for the message).
inline void check_channel_vec(const Tensor& t, const char* name, int64_t C,
                              const char* what = "C, the channels of x") {
  check_tensor(t, name);
  check_shape(t, name, {C}, what);
}

inline void check_channel_opt(const Tensor& t, const char* name, int64_t C,
                              const char* what = "C, the channels of x") {
  if (t.defined()) check_channel_vec(t, name, C, what);
}

// The checks every BatchNorm entry point starts with: x is (N, C, ...), the options, and gamma/beta
// (optional) of C entries. Returns x's (N, C, spatial) view.
inline NCS bn_checks(const Tensor& x, const Tensor& gamma, const Tensor& beta, const BatchNormOptions& o,
                     const ExecOptions& ex) {
  check_tensor(x, "x");
  const NCS s = ncs_of(x, "x", "N, C, ...");
  check_bn_options(o);
  check_threads(ex);
  check_channel_opt(gamma, "gamma", s.C);
  check_channel_opt(beta, "beta", s.C);
  return s;
}

// More than one value per channel (the batch statistics of training).
inline void check_bn_training_count(const NCS& s, const Tensor& x) {
  FC_CHECK(s.N * s.S > 1, InvalidArgument,
           "Expected more than 1 value per channel when training but received x of shape ", shape_str(x.shape()));
}

// batch_norm_forward_train's checks (layers.h): running statistics both or neither, y like x (may be
// x), the saved statistics, more than one value per channel, no other overlap.
inline NCS bn_train_forward_checks(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                   const Tensor& save_mean, const Tensor& save_invstd, const BatchNormOptions& o,
                                   const ExecOptions& ex) {
  const NCS s = bn_checks(x, gamma, beta, o, ex);
  FC_CHECK(running_mean.defined() == running_var.defined(), InvalidArgument,
           "Expected running_mean and running_var both defined or both undefined");
  check_channel_opt(running_mean, "running_mean", s.C);
  check_channel_opt(running_var, "running_var", s.C);
  check_tensor(y, "y");
  check_shape(y, "y", x.shape(), "the shape of x");
  check_channel_vec(save_mean, "save_mean", s.C);
  check_channel_vec(save_invstd, "save_invstd", s.C);
  check_bn_training_count(s, x);
  check_alias(y, "y", x, "x", true);
  for (const Tensor* t : {&save_mean, &save_invstd, &running_mean, &running_var}) {
    check_alias(*t, "a statistics output", x, "x", false);
    check_alias(*t, "a statistics output", y, "y", false);
  }
  return s;
}

// batch_norm_forward_eval's checks: the running statistics, y like x (may be x).
inline NCS bn_eval_forward_checks(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                  const BatchNormOptions& o, const ExecOptions& ex) {
  const NCS s = bn_checks(x, gamma, beta, o, ex);
  check_channel_vec(running_mean, "running_mean", s.C);
  check_channel_vec(running_var, "running_var", s.C);
  check_tensor(y, "y");
  check_shape(y, "y", x.shape(), "the shape of x");
  check_alias(y, "y", x, "x", true);
  return s;
}

// The BatchNorm backward checks: dy like x; statistics (save_mean/save_invstd or running_mean/
// running_var) of C entries; dx (optional) like x, may be dy itself; dgamma/dbeta (optional) of C
// entries overlapping nothing.
inline NCS check_bn_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& stat_a,
                             const char* stat_a_name, const Tensor& stat_b, const char* stat_b_name, const Tensor& dx,
                             const Tensor& dgamma, const Tensor& dbeta, const BatchNormOptions& o,
                             const ExecOptions& ex) {
  check_tensor(x, "x");
  const NCS s = ncs_of(x, "x", "N, C, ...");
  check_bn_options(o);
  check_threads(ex);
  check_tensor(dy, "dy");
  check_shape(dy, "dy", x.shape(), "the shape of x");
  check_channel_opt(gamma, "gamma", s.C);
  check_channel_vec(stat_a, stat_a_name, s.C);
  check_channel_vec(stat_b, stat_b_name, s.C);
  if (dx.defined()) {
    check_tensor(dx, "dx");
    check_shape(dx, "dx", x.shape(), "the shape of x");
    check_alias(dx, "dx", dy, "dy", true);
    check_alias(dx, "dx", x, "x", false);
  }
  check_channel_opt(dgamma, "dgamma", s.C);
  check_channel_opt(dbeta, "dbeta", s.C);
  for (const Tensor* t : {&dgamma, &dbeta}) {
    check_alias(*t, "a parameter gradient", dy, "dy", false);
    check_alias(*t, "a parameter gradient", x, "x", false);
    check_alias(*t, "a parameter gradient", dx, "dx", false);
  }
  return s;
}

// PReLU's alpha: (C) or (1); returns the stride between channels' slopes (1 or 0).
inline int64_t check_alpha(const Tensor& alpha, int64_t C) {
  check_tensor(alpha, "alpha");
  FC_CHECK(alpha.rank() == 1 && (alpha.size(0) == C || alpha.size(0) == 1), ShapeMismatch,
           "Expected alpha of shape [", C, "] (C, the channels of x) or [1] but received ", shape_str(alpha.shape()));
  return alpha.size(0) == 1 ? 0 : 1;
}

// PReLU's dalpha (optional): like alpha, overlapping none of the other arguments.
inline void check_dalpha(const Tensor& dalpha, const Tensor& alpha, const Tensor& dy, const Tensor& x,
                         const Tensor& dx) {
  if (!dalpha.defined()) return;
  check_tensor(dalpha, "dalpha");
  check_shape(dalpha, "dalpha", alpha.shape(), "the shape of alpha");
  check_alias(dalpha, "dalpha", dy, "dy", false);
  check_alias(dalpha, "dalpha", x, "x", false);
  check_alias(dalpha, "dalpha", alpha, "alpha", false);
  check_alias(dalpha, "dalpha", dx, "dx", false);
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
