// @file layers.cc
// @brief The non-convolution layer ops on the CPU (facecuda/layers.h): BatchNorm1d/2d (training,
// eval, backward, folding), PReLU, ReLU, Dropout, Linear, Flatten, residual add, and the conv bias
// gradient. Conv2d itself is in layers_conv.cc.
//
// Numerics:
//   - Per-channel reductions (BatchNorm statistics and gradients, dalpha, bias gradients) use
//     sum_blocks: 8 float lanes over blocks of 256 elements (32 per lane), each block added in
//     double. One task per channel, elements in memory order: the result is independent of threads.
//   - BatchNorm's variance is two-pass (Σ(x − mean)²), never E[x²] − mean².
//   - The normalize is (x − mean)·(γ·invstd) + β in float with the statistics rounded once.
//   - BatchNorm backward: dx = A·dy + B·(x − mean) + C per channel, with
//     A = γ·invstd, B = −γ·invstd³·Σdy(x − mean)/M, C = −γ·invstd·Σdy/M (coefficients in double).
//   - Parameter gradients are accumulated (+=), activation gradients written (=).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "common/margin_math.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "common/layers_cuda.h"
#include "cpu/layers_internal.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;  // the shared checks and loop of layers_internal.h



constexpr int64_t kElementGrain = 32768;  // elementwise ops: elements per task at least

// cond ? a : b as a bit select (GCC does not if-convert float selects of this kind, and a branch on
// the sign of random data mispredicts half the time); exact for every value, NaN and ±0 included.
inline float select(bool cond, float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  const uint32_t m = 0u - static_cast<uint32_t>(cond);
  const uint32_t r = (ua & m) | (ub & ~m);
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

// ---- reductions: f(i) summed over [0, n) as 8 float lanes per 256-element block, blocks in double.

template <typename F>
double sum_blocks(int64_t n, F f) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += 256) {
    const int64_t e = std::min(n, b + 256);
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int l = 0; l < 8; ++l) lane[l] += f(i + l);
    for (; i < e; ++i) lane[0] += f(i);
    total += static_cast<double>(((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
  }
  return total;
}

// ---- BatchNorm helpers (the checks are in layers_internal.h)

// y[n, c, :] = (x − m)·scale + shift for every (n, c) row, with per-channel float m, scale, shift.
void normalize_rows(const NCS& s, const float* x, const float* m, const float* scale, const float* shift, float* y,
                    int max_threads) {
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), max_threads,
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const int64_t c = r % s.C;
                   const float mc = m[c], sc = scale[c], sh = shift[c];
                   const float* xr = x + r * s.S;
                   float* yr = y + r * s.S;
                   for (int64_t i = 0; i < s.S; ++i) yr[i] = (xr[i] - mc) * sc + sh;
                 }
               });
}

}  // namespace

// ---- BatchNorm

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& y, const Tensor& save_mean,
                              const Tensor& save_invstd, const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = bn_train_forward_checks(x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, o, ex);
  const int64_t M = s.N * s.S;
  if (dev.cuda()) {
    return cuda_nn::batch_norm_forward_train(x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, o);
  }
  const float* xp = x.data_as<float>();
  const float* gp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* bp = beta.defined() ? beta.data_as<float>() : nullptr;
  float* rm = running_mean.defined() ? running_mean.data_as<float>() : nullptr;
  float* rv = running_var.defined() ? running_var.data_as<float>() : nullptr;
  float* sm = save_mean.data_as<float>();
  float* si = save_invstd.data_as<float>();
  std::vector<float> scale(static_cast<size_t>(s.C)), shift(static_cast<size_t>(s.C));
  // Statistics: one task per channel, rows n = 0..N−1 in order.
  parallel_for(s.C, 1, ex.max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* xr = xp + (n * s.C + c) * s.S;
        sum += sum_blocks(s.S, [&](int64_t i) { return xr[i]; });
      }
      const double mean = sum / static_cast<double>(M);
      const float mf = static_cast<float>(mean);
      double ss = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* xr = xp + (n * s.C + c) * s.S;
        ss += sum_blocks(s.S, [&](int64_t i) {
          const float d = xr[i] - mf;
          return d * d;
        });
      }
      // Σ(x − mf)² = Σ(x − mean)² + M·(mean − mf)²: remove the rounding of the mean exactly.
      const double dm = mean - static_cast<double>(mf);
      const double var = std::max(0.0, ss / static_cast<double>(M) - dm * dm);
      const double invstd = 1.0 / std::sqrt(var + o.eps);
      sm[c] = mf;
      si[c] = static_cast<float>(invstd);
      const double g = gp ? gp[c] : 1.0;
      scale[static_cast<size_t>(c)] = static_cast<float>(g * invstd);
      shift[static_cast<size_t>(c)] = bp ? bp[c] : 0.0f;
      if (rm) {
        const double unbiased = var * static_cast<double>(M) / static_cast<double>(M - 1);
        rm[c] = static_cast<float>((1.0 - o.momentum) * rm[c] + o.momentum * mean);
        rv[c] = static_cast<float>((1.0 - o.momentum) * rv[c] + o.momentum * unbiased);
      }
    }
  });
  normalize_rows(s, xp, sm, scale.data(), shift.data(), y.data_as<float>(), ex.max_threads);
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const Tensor& y, const BatchNormOptions& o,
                             const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = bn_eval_forward_checks(x, gamma, beta, running_mean, running_var, y, o, ex);
  if (dev.cuda()) return cuda_nn::batch_norm_forward_eval(x, gamma, beta, running_mean, running_var, y, o);
  const float* gp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* bp = beta.defined() ? beta.data_as<float>() : nullptr;
  const float* rm = running_mean.data_as<float>();
  const float* rv = running_var.data_as<float>();
  std::vector<float> scale(static_cast<size_t>(s.C)), shift(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c) {
    const double g = gp ? gp[c] : 1.0;
    scale[static_cast<size_t>(c)] = static_cast<float>(g / std::sqrt(static_cast<double>(rv[c]) + o.eps));
    shift[static_cast<size_t>(c)] = bp ? bp[c] : 0.0f;
  }
  normalize_rows(s, x.data_as<float>(), rm, scale.data(), shift.data(), y.data_as<float>(), ex.max_threads);
}

namespace {

// Shared by the training and eval backward: per channel c, with mean m[c], invstd is[c]:
//   sdy = Σ dy, sdyx = Σ dy·(x − m);  dbeta += sdy, dgamma += sdyx·is
//   dx = A·dy + B·(x − m) + Cc with (A, B, Cc) from coef(c, sdy, sdyx).
struct BnBackward {
  NCS s;
  const float *dy, *x, *m, *is;
  float *dx, *dgamma, *dbeta;
};

template <typename Coef>
void bn_backward(const BnBackward& b, const Coef& coef, int max_threads) {
  const NCS s = b.s;
  std::vector<float> A(static_cast<size_t>(s.C)), B(static_cast<size_t>(s.C)), Cc(static_cast<size_t>(s.C));
  parallel_for(s.C, 1, max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float mc = b.m[c];
      double sdy = 0, sdyx = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* gr = b.dy + (n * s.C + c) * s.S;
        const float* xr = b.x + (n * s.C + c) * s.S;
        sdy += sum_blocks(s.S, [&](int64_t i) { return gr[i]; });
        sdyx += sum_blocks(s.S, [&](int64_t i) { return gr[i] * (xr[i] - mc); });
      }
      if (b.dbeta) b.dbeta[c] += static_cast<float>(sdy);
      if (b.dgamma) b.dgamma[c] += static_cast<float>(sdyx * b.is[c]);
      double a, bb, cc;
      coef(c, sdy, sdyx, a, bb, cc);
      A[static_cast<size_t>(c)] = static_cast<float>(a);
      B[static_cast<size_t>(c)] = static_cast<float>(bb);
      Cc[static_cast<size_t>(c)] = static_cast<float>(cc);
    }
  });
  if (!b.dx) return;
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), max_threads,
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const int64_t c = r % s.C;
                   const float a = A[static_cast<size_t>(c)], bb = B[static_cast<size_t>(c)],
                               cc = Cc[static_cast<size_t>(c)], mc = b.m[c];
                   const float* gr = b.dy + r * s.S;
                   const float* xr = b.x + r * s.S;
                   float* dr = b.dx + r * s.S;
                   for (int64_t i = 0; i < s.S; ++i) dr[i] = a * gr[i] + (bb * (xr[i] - mc) + cc);
                 }
               });
}

}  // namespace

void batch_norm_backward_train(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                               const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                               const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = check_bn_backward(dy, x, gamma, save_mean, "save_mean", save_invstd, "save_invstd", dx, dgamma, dbeta,
                                  o, ex);
  check_bn_training_count(s, x);
  if (dev.cuda()) {
    return cuda_nn::batch_norm_backward_train(dy, x, gamma, save_mean, save_invstd, dx, dgamma, dbeta, o);
  }
  const float* gp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* is = save_invstd.data_as<float>();
  const double M = static_cast<double>(s.N * s.S);
  BnBackward b{s,
               dy.data_as<float>(),
               x.data_as<float>(),
               save_mean.data_as<float>(),
               is,
               dx.defined() ? dx.data_as<float>() : nullptr,
               (dgamma.defined() && !o.freeze_gamma) ? dgamma.data_as<float>() : nullptr,
               dbeta.defined() ? dbeta.data_as<float>() : nullptr};
  bn_backward(
      b,
      [&](int64_t c, double sdy, double sdyx, double& a, double& bb, double& cc) {
        const double g = gp ? gp[c] : 1.0, iv = is[c];
        a = g * iv;
        bb = -g * iv * iv * iv * sdyx / M;
        cc = -g * iv * sdy / M;
      },
      ex.max_threads);
}

void batch_norm_backward_eval(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                              const BatchNormOptions& o, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = check_bn_backward(dy, x, gamma, running_mean, "running_mean", running_var, "running_var", dx, dgamma,
                                  dbeta, o, ex);
  if (dev.cuda()) {
    return cuda_nn::batch_norm_backward_eval(dy, x, gamma, running_mean, running_var, dx, dgamma, dbeta, o);
  }
  const float* gp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* rv = running_var.data_as<float>();
  std::vector<float> is(static_cast<size_t>(s.C));
  for (int64_t c = 0; c < s.C; ++c)
    is[static_cast<size_t>(c)] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(rv[c]) + o.eps));
  BnBackward b{s,
               dy.data_as<float>(),
               x.data_as<float>(),
               running_mean.data_as<float>(),
               is.data(),
               dx.defined() ? dx.data_as<float>() : nullptr,
               (dgamma.defined() && !o.freeze_gamma) ? dgamma.data_as<float>() : nullptr,
               dbeta.defined() ? dbeta.data_as<float>() : nullptr};
  bn_backward(
      b,
      [&](int64_t c, double, double, double& a, double& bb, double& cc) {
        a = (gp ? gp[c] : 1.0) * is[static_cast<size_t>(c)];
        bb = 0;
        cc = 0;
      },
      ex.max_threads);
}

void fold_batch_norm(const Tensor& w, const Tensor& bias, const Tensor& gamma, const Tensor& beta,
                     const Tensor& running_mean, const Tensor& running_var, double eps, const Tensor& w_out,
                     const Tensor& b_out) {
  const OpDevice dev(w);
  check_tensor(w, "w");
  FC_CHECK(w.rank() == 2 || w.rank() == 4, ShapeMismatch,
           "Expected w of rank 2 (out, in) or 4 (Cout, Cin/groups, KH, KW) but received ", shape_str(w.shape()));
  FC_CHECK(std::isfinite(eps) && eps > 0, InvalidArgument, "Expected eps > 0 but received ", eps);
  const int64_t C = w.size(0), per = C ? w.numel() / C : 0;
  check_channel_opt(bias, "bias", C, "Cout, the rows of w");
  check_channel_opt(gamma, "gamma", C, "Cout, the rows of w");
  check_channel_opt(beta, "beta", C, "Cout, the rows of w");
  check_channel_vec(running_mean, "running_mean", C, "Cout, the rows of w");
  check_channel_vec(running_var, "running_var", C, "Cout, the rows of w");
  check_tensor(w_out, "w_out");
  check_shape(w_out, "w_out", w.shape(), "the shape of w");
  check_channel_vec(b_out, "b_out", C, "Cout, the rows of w");
  check_alias(w_out, "w_out", w, "w", true);
  check_alias(b_out, "b_out", bias, "bias", true);
  for (const Tensor* t : {&gamma, &beta, &running_mean, &running_var}) {
    check_alias(w_out, "w_out", *t, "a BatchNorm parameter", false);
    check_alias(b_out, "b_out", *t, "a BatchNorm parameter", false);
  }
  check_alias(b_out, "b_out", w, "w", false);
  check_alias(w_out, "w_out", bias, "bias", false);
  if (dev.cuda()) {
    return cuda_nn::fold_batch_norm(w, bias, gamma, beta, running_mean, running_var, eps, w_out, b_out);
  }
  const float* wp = w.data_as<float>();
  float* wo = w_out.data_as<float>();
  float* bo = b_out.data_as<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double g = gamma.defined() ? gamma.data_as<float>()[c] : 1.0;
    const double bt = beta.defined() ? beta.data_as<float>()[c] : 0.0;
    const double b0 = bias.defined() ? bias.data_as<float>()[c] : 0.0;
    const double sc = g / std::sqrt(static_cast<double>(running_var.data_as<float>()[c]) + eps);
    for (int64_t i = 0; i < per; ++i) wo[c * per + i] = static_cast<float>(wp[c * per + i] * sc);
    bo[c] = static_cast<float>(bt + (b0 - running_mean.data_as<float>()[c]) * sc);
  }
}

// ---- conv bias gradient

void conv2d_backward_bias(const Tensor& dy, const Tensor& db, const ExecOptions& ex) {
  const OpDevice dev(dy);
  check_tensor(dy, "dy");
  const NCS s = ncs_of(dy, "dy", "N, C, ...");
  check_threads(ex);
  check_channel_vec(db, "db", s.C, "C, the channels of dy");
  check_alias(db, "db", dy, "dy", false);
  if (dev.cuda()) return cuda_nn::conv2d_backward_bias(dy, db);
  const float* g = dy.data_as<float>();
  float* d = db.data_as<float>();
  parallel_for(s.C, 1, ex.max_threads, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* r = g + (n * s.C + c) * s.S;
        sum += sum_blocks(s.S, [&](int64_t i) { return r[i]; });
      }
      d[c] += static_cast<float>(sum);
    }
  });
}

// ---- PReLU

void prelu_forward(const Tensor& x, const Tensor& alpha, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  const NCS s = ncs_of(x, "x", "N, C, ...");
  check_threads(ex);
  const int64_t as = check_alpha(alpha, s.C);
  check_tensor(y, "y");
  check_shape(y, "y", x.shape(), "the shape of x");
  check_alias(y, "y", x, "x", true);
  check_alias(y, "y", alpha, "alpha", false);
  if (dev.cuda()) return cuda_nn::prelu_forward(x, alpha, y);
  const float* xp = x.data_as<float>();
  const float* ap = alpha.data_as<float>();
  float* yp = y.data_as<float>();
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), ex.max_threads,
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float a = ap[(r % s.C) * as];
                   const float* xr = xp + r * s.S;
                   float* yr = yp + r * s.S;
                   // max(x, 0) + a·min(x, 0): branch-free (vectorizes); x > 0 gives x + a·0 = x exactly.
                   for (int64_t i = 0; i < s.S; ++i) yr[i] = std::max(xr[i], 0.0f) + a * std::min(xr[i], 0.0f);
                 }
               });
}

void prelu_backward(const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& dx, const Tensor& dalpha,
                    const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  const NCS s = ncs_of(x, "x", "N, C, ...");
  check_threads(ex);
  const int64_t as = check_alpha(alpha, s.C);
  check_tensor(dy, "dy");
  check_shape(dy, "dy", x.shape(), "the shape of x");
  if (dx.defined()) {
    check_tensor(dx, "dx");
    check_shape(dx, "dx", x.shape(), "the shape of x");
    check_alias(dx, "dx", dy, "dy", true);
    check_alias(dx, "dx", x, "x", false);
    check_alias(dx, "dx", alpha, "alpha", false);
  }
  check_dalpha(dalpha, alpha, dy, x, dx);
  if (dev.cuda()) return cuda_nn::prelu_backward(dy, x, alpha, dx, dalpha);
  const float* xp = x.data_as<float>();
  const float* gp = dy.data_as<float>();
  const float* ap = alpha.data_as<float>();
  // dalpha first: dx may overwrite dy in place.
  if (dalpha.defined()) {
    float* da = dalpha.data_as<float>();
    std::vector<double> per_channel(static_cast<size_t>(s.C));
    parallel_for(s.C, 1, ex.max_threads, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double sum = 0;
        for (int64_t n = 0; n < s.N; ++n) {
          const float* xr = xp + (n * s.C + c) * s.S;
          const float* gr = gp + (n * s.C + c) * s.S;
          sum += sum_blocks(s.S, [&](int64_t i) { return std::min(xr[i], 0.0f) * gr[i]; });
        }
        per_channel[static_cast<size_t>(c)] = sum;
      }
    });
    if (as) {
      for (int64_t c = 0; c < s.C; ++c) da[c] += static_cast<float>(per_channel[static_cast<size_t>(c)]);
    } else {
      double sum = 0;
      for (double v : per_channel) sum += v;
      da[0] += static_cast<float>(sum);
    }
  }
  if (dx.defined()) {
    float* dp = dx.data_as<float>();
    parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), ex.max_threads,
                 [&](int64_t r0, int64_t r1) {
                   for (int64_t r = r0; r < r1; ++r) {
                     const float a = ap[(r % s.C) * as];
                     const float* xr = xp + r * s.S;
                     const float* gr = gp + r * s.S;
                     float* dr = dp + r * s.S;
                     for (int64_t i = 0; i < s.S; ++i) dr[i] = select(xr[i] > 0.0f, gr[i], a * gr[i]);
                   }
                 });
  }
}

// ---- ReLU

namespace {

void check_same_shape_out(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name) {
  check_tensor(out, out_name);
  FC_CHECK(out.shape() == in.shape(), ShapeMismatch, "Expected ", out_name, " of shape ", shape_str(in.shape()),
           " (the shape of ", in_name, ") but received ", shape_str(out.shape()));
}

// Two same-shape inputs `a` (the reference shape) and `b`, and an output that may be exactly either.
void check_elementwise2(const Tensor& a, const char* an, const Tensor& b, const char* bn, const Tensor& out,
                        const char* on, const ExecOptions& ex) {
  check_tensor(a, an);
  check_tensor(b, bn);
  check_threads(ex);
  FC_CHECK(b.shape() == a.shape(), ShapeMismatch, "Expected ", bn, " of shape ", shape_str(a.shape()), " (the shape of ",
           an, ") but received ", shape_str(b.shape()));
  check_same_shape_out(out, on, a, an);
  check_alias(out, on, a, an, true);
  check_alias(out, on, b, bn, true);
}

}  // namespace

void relu_forward(const Tensor& x, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  check_threads(ex);
  check_same_shape_out(y, "y", x, "x");
  check_alias(y, "y", x, "x", true);
  if (dev.cuda()) return cuda_nn::relu_forward(x, y);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
  parallel_for(x.numel(), kElementGrain, ex.max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) yp[i] = std::max(xp[i], 0.0f);  // NaN stays NaN
  });
}

void relu_backward(const Tensor& dy, const Tensor& y, const Tensor& dx, const ExecOptions& ex) {
  const OpDevice dev(y);
  check_elementwise2(y, "y", dy, "dy", dx, "dx", ex);
  if (dev.cuda()) return cuda_nn::relu_backward(dy, y, dx);
  const float* yp = y.data_as<float>();
  const float* gp = dy.data_as<float>();
  float* dp = dx.data_as<float>();
  parallel_for(y.numel(), kElementGrain, ex.max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dp[i] = select(yp[i] > 0.0f, gp[i], 0.0f);
  });
}

// ---- Dropout

namespace {

void check_dropout(const DropoutParams& d) {
  FC_CHECK(d.p >= 0.0 && d.p <= 1.0, InvalidArgument, "Expected p in [0, 1] but received ", d.p);
}

// out[i] = keep(i) ? in[i]·scale : 0, or a copy when the op is the identity.
void dropout_apply(const Tensor& in, const Tensor& out, const DropoutParams& d, bool training, int max_threads) {
  const float* ip = in.data_as<float>();
  float* op = out.data_as<float>();
  const int64_t n = in.numel();
  if (!training || d.p == 0.0) {
    if (op != ip && n) std::memcpy(op, ip, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  if (d.p == 1.0) {
    if (n) std::memset(op, 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const uint64_t key = margin::rng_key(d.seed, kDropoutStream, d.step);
  const float scale = static_cast<float>(1.0 / (1.0 - d.p));
  const double p = d.p;
  parallel_for(n, kElementGrain, max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      op[i] = select(margin::rng_uniform(key, static_cast<uint64_t>(i)) >= p, ip[i] * scale, 0.0f);
  });
}

}  // namespace

void dropout_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  check_threads(ex);
  check_dropout(d);
  check_same_shape_out(y, "y", x, "x");
  check_alias(y, "y", x, "x", true);
  if (dev.cuda()) return cuda_nn::dropout_forward(x, y, d, training);
  dropout_apply(x, y, d, training, ex.max_threads);
}

void dropout_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training,
                      const ExecOptions& ex) {
  const OpDevice dev(dy);
  check_tensor(dy, "dy");
  check_threads(ex);
  check_dropout(d);
  check_same_shape_out(dx, "dx", dy, "dy");
  check_alias(dx, "dx", dy, "dy", true);
  if (dev.cuda()) return cuda_nn::dropout_backward(dy, dx, d, training);
  dropout_apply(dy, dx, d, training, ex.max_threads);
}

// ---- Linear

namespace {

// x [N, in] and w [out, in] of a Linear (both already checked as tensors); the thread option.
struct LinearDims {
  int64_t N, in, out;
};
LinearDims linear_dims(const Tensor& x, const Tensor& w, const ExecOptions& ex) {
  check_threads(ex);
  FC_CHECK(x.rank() == 2, ShapeMismatch, "Expected x of rank 2 (N, in) but received ", shape_str(x.shape()));
  FC_CHECK(w.rank() == 2 && w.size(1) == x.size(1), ShapeMismatch, "Expected w of shape [out, ", x.size(1),
           "] (out, in = the features of x) but received ", shape_str(w.shape()));
  return LinearDims{x.size(0), x.size(1), w.size(0)};
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  check_tensor(w, "w");
  const LinearDims d = linear_dims(x, w, ex);
  const int64_t N = d.N, in = d.in, out = d.out;
  check_channel_opt(bias, "bias", out, "out, the rows of w");
  check_tensor(y, "y");
  check_shape(y, "y", {N, out}, "N, out");
  check_alias(y, "y", x, "x", false);
  check_alias(y, "y", w, "w", false);
  check_alias(y, "y", bias, "bias", false);
  if (dev.cuda()) return cuda_nn::linear_forward(x, w, bias, y, ex);
  if (N == 0 || out == 0) return;
  float* yp = y.data_as<float>();
  sgemm(false, true, N, out, in, 1.0f, x.data_as<float>(), std::max<int64_t>(in, 1), w.data_as<float>(),
        std::max<int64_t>(in, 1), 0.0f, yp, out, gemm_options(ex));
  if (bias.defined()) {
    const float* b = bias.data_as<float>();
    parallel_for(N, std::max<int64_t>(1, kElementGrain / out), ex.max_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < out; ++j) yp[r * out + j] += b[j];
    });
  }
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor& dw,
                     const Tensor& db, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  check_tensor(w, "w");
  check_tensor(dy, "dy");
  const LinearDims d = linear_dims(x, w, ex);
  const int64_t N = d.N, in = d.in, out = d.out;
  check_shape(dy, "dy", {N, out}, "N, out");
  if (dx.defined()) {
    check_tensor(dx, "dx");
    check_shape(dx, "dx", x.shape(), "the shape of x");
  }
  if (dw.defined()) {
    check_tensor(dw, "dw");
    check_shape(dw, "dw", w.shape(), "the shape of w");
  }
  check_channel_opt(db, "db", out, "out, the rows of w");
  const Tensor* outs[] = {&dx, &dw, &db};
  const char* out_names[] = {"dx", "dw", "db"};
  for (int i = 0; i < 3; ++i) {
    check_alias(*outs[i], out_names[i], dy, "dy", false);
    check_alias(*outs[i], out_names[i], x, "x", false);
    check_alias(*outs[i], out_names[i], w, "w", false);
    for (int j = i + 1; j < 3; ++j) check_alias(*outs[i], out_names[i], *outs[j], out_names[j], false);
  }
  if (dev.cuda()) return cuda_nn::linear_backward(dy, x, w, dx, dw, db, ex);
  const GemmOptions go = gemm_options(ex);
  const float* g = dy.data_as<float>();
  if (dx.defined() && N > 0 && in > 0) {
    // dx (N x in) = dy (N x out) · w (out x in)
    sgemm(false, false, N, in, out, 1.0f, g, std::max<int64_t>(out, 1), w.data_as<float>(), in, 0.0f,
          dx.data_as<float>(), in, go);
  }
  if (dw.defined() && out > 0 && in > 0 && N > 0) {
    // dw (out x in) += dyᵀ (out x N) · x (N x in)
    sgemm(true, false, out, in, N, 1.0f, g, out, x.data_as<float>(), in, 1.0f, dw.data_as<float>(), in, go);
  }
  if (db.defined() && out > 0 && N > 0) {
    // db[j] += Σ_n dy[n, j]: per column, rows in order, double accumulators.
    float* d = db.data_as<float>();
    parallel_for(out, 64, ex.max_threads, [&](int64_t j0, int64_t j1) {
      std::vector<double> acc(static_cast<size_t>(j1 - j0), 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = j0; j < j1; ++j) acc[static_cast<size_t>(j - j0)] += g[n * out + j];
      for (int64_t j = j0; j < j1; ++j) d[j] += static_cast<float>(acc[static_cast<size_t>(j - j0)]);
    });
  }
}

// ---- Flatten, add

Tensor flatten(const Tensor& x) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  FC_CHECK(x.rank() >= 1, ShapeMismatch, "Expected x of rank >= 1 (N, ...) but received ", shape_str(x.shape()));
  int64_t rest = 1;
  for (int a = 1; a < x.rank(); ++a) rest *= x.size(a);
  return x.reshape({x.size(0), rest});
}

void add(const Tensor& a, const Tensor& b, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(a);
  check_elementwise2(a, "a", b, "b", y, "y", ex);
  if (dev.cuda()) return cuda_nn::add(a, b, y);
  const float* ap = a.data_as<float>();
  const float* bp = b.data_as<float>();
  float* yp = y.data_as<float>();
  parallel_for(a.numel(), kElementGrain, ex.max_threads, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) yp[i] = ap[i] + bp[i];
  });
}

}  // namespace nn
}  // namespace fc
