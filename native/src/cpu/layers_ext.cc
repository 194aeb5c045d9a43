// @file layers_ext.cc
// @brief The ops of facecuda/layers_ext.h: argument checks (one set for both devices, worded as
// layers.h's) and the CPU implementations; a call on CUDA tensors is handed, validated, to
// common/layers_ext_cuda.h.
//
// Work split (ThreadPool::global(), at most ExecOptions::max_threads; every output value is computed
// whole by one task in an order fixed by the shapes, so results do not depend on the thread count):
//   - elementwise ops: contiguous chunks of the flat index;
//   - LayerNorm rows: tokens: row ranges, each row summed in double over 4 lanes (c mod 4, combined in
//     a fixed order); NCHW: tasks over (o, tile of up to 64 positions i), each row summed over
//     c = 0..C−1 in double (the tile only interleaves independent rows so they are read contiguously);
//   - per-channel parameter gradients: tasks over channel ranges, each channel summed in double over
//     o = 0..O−1, then i = 0..I−1;
//   - GAP / channel-multiply sums: one (n, c) row per iteration, s = 0..S−1 in double over 8 lanes
//     (s mod 8, combined in a fixed order).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/activation_math.h"
#include "common/layers_ext_cuda.h"
#include "common/margin_math.h"
#include "cpu/act_smooth.h"
#include "cpu/layers_internal.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"

namespace fc {
namespace nn {
namespace {

using namespace detail;

constexpr int64_t kElementGrain = 32768;  // elementwise ops: elements per task at least
constexpr int64_t kTile = 64;             // LayerNorm: positions per NCHW tile

// ---- shared checks

void check_same_shape(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  check_tensor(t, name);
  FC_CHECK(t.shape() == ref.shape(), ShapeMismatch, "Expected ", name, " of shape ", shape_str(ref.shape()),
           " (the shape of ", ref_name, ") but received ", shape_str(t.shape()));
}

void check_activation(Activation a) {
  const int v = static_cast<int>(a);
  FC_CHECK(v >= static_cast<int>(Activation::kReLU6) && v <= static_cast<int>(Activation::kGELU), InvalidArgument,
           "Expected an Activation (relu6, hardsigmoid, hardsigmoid_keras, hardswish, silu, sigmoid, gelu) but "
           "received the value ",
           v);
}

// The (O, C, I) view of a LayerNorm / layer-scale input (layers_ext_cuda.h).
struct OCI {
  int64_t O, C, I;
  int64_t rows() const { return O * I; }
};

OCI oci_of(const std::vector<int64_t>& s, ChannelLayout layout, const char* name) {
  if (layout == ChannelLayout::kTokens) {
    FC_CHECK(!s.empty(), ShapeMismatch, "Expected ", name, " of rank >= 1 (..., C) but received ", shape_str(s));
    OCI v{1, s.back(), 1};
    for (size_t a = 0; a + 1 < s.size(); ++a) v.O *= s[a];
    return v;
  }
  FC_CHECK(layout == ChannelLayout::kNCHW, InvalidArgument,
           "Expected layout kTokens or kNCHW but received the value ", static_cast<int>(layout));
  FC_CHECK(s.size() >= 2, ShapeMismatch, "Expected ", name, " of rank >= 2 (N, C, ...) but received ", shape_str(s));
  OCI v{s[0], s[1], 1};
  for (size_t a = 2; a < s.size(); ++a) v.I *= s[a];
  return v;
}

const char* channel_what(ChannelLayout layout) {
  return layout == ChannelLayout::kTokens ? "C, the last dim of x" : "C, the channels of x";
}

// ---- per-channel sums over an (O, C, I) view: f(idx, c, row, acc) adds element idx (of channel c and
// row o·I + i) into acc[0..V); done(c, acc) receives the double totals. Channel ranges per task, o then
// i in order.
template <int V, class F, class Done>
void channel_sums(const OCI& s, const F& f, const Done& done, int max_threads) {
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.O * s.I, 1));
  parallel_for(s.C, grain, max_threads, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(static_cast<size_t>((c1 - c0) * V), 0.0);
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t c = c0; c < c1; ++c) {
        double* a = acc.data() + (c - c0) * V;
        const int64_t base = (o * s.C + c) * s.I;
        for (int64_t i = 0; i < s.I; ++i) f(base + i, c, o * s.I + i, a);
      }
    for (int64_t c = c0; c < c1; ++c) done(c, acc.data() + (c - c0) * V);
  });
}

// ---- LayerNorm row loop: fn(o, i0, i1) handles the rows (o, i) for i in [i0, i1).
template <class Fn>
void for_row_tiles(const OCI& s, int max_threads, const Fn& fn) {
  const int64_t tiles = ceil_div(s.I, kTile);
  const int64_t per_task = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.C * std::min(s.I, kTile), 1));
  parallel_for(s.O * tiles, per_task, max_threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / tiles, i0 = (t % tiles) * kTile;
      fn(o, i0, std::min(s.I, i0 + kTile));
    }
  });
}

// Σ f(c) over c in [0, n) in double: 4 lanes (c mod 4), combined as (l0 + l1) + (l2 + l3). The order is
// fixed by n alone (the contiguous rows of tokens; a sequential double sum would be latency-bound).
template <class F>
inline double row_sum4(int64_t n, const F& f) {
  double l0 = 0, l1 = 0, l2 = 0, l3 = 0;
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) l0 += f(c), l1 += f(c + 1), l2 += f(c + 2), l3 += f(c + 3);
  for (; c < n; ++c) l0 += f(c);
  return (l0 + l1) + (l2 + l3);
}

// The checks of the (N, C, S) ops: x (N, C, ...) rank >= 2.
NCS ncs_checked(const Tensor& x, const char* name) {
  check_tensor(x, name);
  return ncs_of(x, name, "N, C, ...");
}

void check_dropout_p(const DropoutParams& d) {
  FC_CHECK(d.p >= 0.0 && d.p <= 1.0, InvalidArgument, "Expected p in [0, 1] but received ", d.p);
}

}  // namespace

// ======================================================================== activations

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kReLU6: return "relu6";
    case Activation::kHardSigmoid: return "hardsigmoid";
    case Activation::kHardSigmoidKeras: return "hardsigmoid_keras";
    case Activation::kHardSwish: return "hardswish";
    case Activation::kSiLU: return "silu";
    case Activation::kSigmoid: return "sigmoid";
    case Activation::kGELU: return "gelu";
  }
  return "unknown";
}

namespace {

template <Activation A>
void act_forward_cpu(const float* x, float* y, int64_t n, int max_threads) {
  parallel_for(n, kElementGrain, max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = act::forward<A>(x[i]);
  });
}

template <Activation A>
void act_backward_cpu(const float* dy, const float* x, float* dx, int64_t n, int max_threads) {
  parallel_for(n, kElementGrain, max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = act::backward<A>(dy[i], x[i]);
  });
}

// SiLU, sigmoid, GELU: the vector kernels of cpu/act_smooth.h (fc::simd_level()'s), chunk by chunk.
void smooth_forward_cpu(act_smooth::ForwardFn f, const float* x, float* y, int64_t n, int max_threads) {
  parallel_for(n, kElementGrain, max_threads, [&](int64_t b, int64_t e) { f(x + b, y + b, e - b); });
}

void smooth_backward_cpu(act_smooth::BackwardFn f, const float* dy, const float* x, float* dx, int64_t n,
                         int max_threads) {
  parallel_for(n, kElementGrain, max_threads, [&](int64_t b, int64_t e) { f(dy + b, x + b, dx + b, e - b); });
}

}  // namespace

void activation_forward(Activation a, const Tensor& x, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_activation(a);
  check_tensor(x, "x");
  check_threads(ex);
  check_same_shape(y, "y", x, "x");
  check_alias(y, "y", x, "x", true);
  if (dev.cuda()) return cuda_nn::activation_forward(a, x, y);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
  const int64_t n = x.numel();
  const int t = ex.max_threads;
  switch (a) {
    case Activation::kReLU6: return act_forward_cpu<Activation::kReLU6>(xp, yp, n, t);
    case Activation::kHardSigmoid: return act_forward_cpu<Activation::kHardSigmoid>(xp, yp, n, t);
    case Activation::kHardSigmoidKeras: return act_forward_cpu<Activation::kHardSigmoidKeras>(xp, yp, n, t);
    case Activation::kHardSwish: return act_forward_cpu<Activation::kHardSwish>(xp, yp, n, t);
    case Activation::kSiLU: return smooth_forward_cpu(act_smooth::kernels().silu_forward, xp, yp, n, t);
    case Activation::kSigmoid: return smooth_forward_cpu(act_smooth::kernels().sigmoid_forward, xp, yp, n, t);
    case Activation::kGELU: return smooth_forward_cpu(act_smooth::kernels().gelu_forward, xp, yp, n, t);
  }
}

void activation_backward(Activation a, const Tensor& dy, const Tensor& x, const Tensor& dx, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_activation(a);
  check_tensor(x, "x");
  check_threads(ex);
  check_same_shape(dy, "dy", x, "x");
  check_same_shape(dx, "dx", x, "x");
  check_alias(dx, "dx", dy, "dy", true);
  check_alias(dx, "dx", x, "x", false);
  if (dev.cuda()) return cuda_nn::activation_backward(a, dy, x, dx);
  const float* gp = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  float* dp = dx.data_as<float>();
  const int64_t n = x.numel();
  const int t = ex.max_threads;
  switch (a) {
    case Activation::kReLU6: return act_backward_cpu<Activation::kReLU6>(gp, xp, dp, n, t);
    case Activation::kHardSigmoid: return act_backward_cpu<Activation::kHardSigmoid>(gp, xp, dp, n, t);
    case Activation::kHardSigmoidKeras: return act_backward_cpu<Activation::kHardSigmoidKeras>(gp, xp, dp, n, t);
    case Activation::kHardSwish: return act_backward_cpu<Activation::kHardSwish>(gp, xp, dp, n, t);
    case Activation::kSiLU: return smooth_backward_cpu(act_smooth::kernels().silu_backward, gp, xp, dp, n, t);
    case Activation::kSigmoid: return smooth_backward_cpu(act_smooth::kernels().sigmoid_backward, gp, xp, dp, n, t);
    case Activation::kGELU: return smooth_backward_cpu(act_smooth::kernels().gelu_backward, gp, xp, dp, n, t);
  }
}

// ======================================================================== LayerNorm

int64_t layer_norm_rows(const std::vector<int64_t>& x_shape, ChannelLayout layout) {
  return oci_of(x_shape, layout, "x").rows();
}

void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        const Tensor& save_mean, const Tensor& save_invstd, double eps, ChannelLayout layout,
                        const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  const OCI s = oci_of(x.shape(), layout, "x");
  FC_CHECK(s.C >= 1, ShapeMismatch, "Expected at least 1 channel (", channel_what(layout), ") but received x of shape ",
           shape_str(x.shape()));
  FC_CHECK(std::isfinite(eps) && eps > 0, InvalidArgument, "Expected eps > 0 but received ", eps);
  check_threads(ex);
  check_channel_opt(gamma, "gamma", s.C, channel_what(layout));
  check_channel_opt(beta, "beta", s.C, channel_what(layout));
  check_same_shape(y, "y", x, "x");
  FC_CHECK(save_mean.defined() == save_invstd.defined(), InvalidArgument,
           "Expected save_mean and save_invstd both defined or both undefined");
  const std::vector<int64_t> rs{s.rows()};
  if (save_mean.defined()) {
    check_tensor(save_mean, "save_mean");
    check_shape(save_mean, "save_mean", rs, "R, the rows of x");
    check_tensor(save_invstd, "save_invstd");
    check_shape(save_invstd, "save_invstd", rs, "R, the rows of x");
  }
  check_alias(y, "y", x, "x", true);
  check_alias(y, "y", gamma, "gamma", false);
  check_alias(y, "y", beta, "beta", false);
  for (const Tensor* t : {&save_mean, &save_invstd}) {
    check_alias(*t, "a statistics output", x, "x", false);
    check_alias(*t, "a statistics output", y, "y", false);
    check_alias(*t, "a statistics output", gamma, "gamma", false);
    check_alias(*t, "a statistics output", beta, "beta", false);
  }
  check_alias(save_mean, "save_mean", save_invstd, "save_invstd", false);
  if (dev.cuda()) return cuda_nn::layer_norm_forward(x, gamma, beta, y, save_mean, save_invstd, eps, s.O, s.C, s.I);
  const float* xp = x.data_as<float>();
  const float* gp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* bp = beta.defined() ? beta.data_as<float>() : nullptr;
  float* yp = y.data_as<float>();
  float* sm = save_mean.defined() ? save_mean.data_as<float>() : nullptr;
  float* si = save_invstd.defined() ? save_invstd.data_as<float>() : nullptr;
  if (s.I == 1) {  // tokens: contiguous rows, 4-lane sums
    parallel_for(s.O, std::max<int64_t>(1, kElementGrain / s.C), ex.max_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = xp + r * s.C;
        float* yr = yp + r * s.C;
        const double mean = row_sum4(s.C, [&](int64_t c) { return static_cast<double>(xr[c]); }) / s.C;
        const double ss = row_sum4(s.C, [&](int64_t c) {
          const double d = xr[c] - mean;
          return d * d;
        });
        const float mf = static_cast<float>(mean);
        const float isf = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(s.C) + eps));
        if (sm) sm[r] = mf, si[r] = isf;
        for (int64_t c = 0; c < s.C; ++c) yr[c] = ((xr[c] - mf) * isf) * (gp ? gp[c] : 1.0f) + (bp ? bp[c] : 0.0f);
      }
    });
    return;
  }
  for_row_tiles(s, ex.max_threads, [&](int64_t o, int64_t i0, int64_t i1) {
    double sum[kTile], ss[kTile];
    float mf[kTile], isf[kTile];
    const int64_t w = i1 - i0;
    const float* xo = xp + o * s.C * s.I + i0;
    float* yo = yp + o * s.C * s.I + i0;
    for (int64_t k = 0; k < w; ++k) sum[k] = 0.0, ss[k] = 0.0;
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t k = 0; k < w; ++k) sum[k] += xo[c * s.I + k];
    double mean[kTile];
    for (int64_t k = 0; k < w; ++k) mean[k] = sum[k] / static_cast<double>(s.C);
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t k = 0; k < w; ++k) {
        const double d = xo[c * s.I + k] - mean[k];
        ss[k] += d * d;
      }
    for (int64_t k = 0; k < w; ++k) {
      mf[k] = static_cast<float>(mean[k]);
      isf[k] = static_cast<float>(1.0 / std::sqrt(ss[k] / static_cast<double>(s.C) + eps));
      if (sm) {
        sm[o * s.I + i0 + k] = mf[k];
        si[o * s.I + i0 + k] = isf[k];
      }
    }
    // Written after the statistics of the whole tile: y may be x itself.
    for (int64_t c = 0; c < s.C; ++c) {
      const float g = gp ? gp[c] : 1.0f, b = bp ? bp[c] : 0.0f;
      for (int64_t k = 0; k < w; ++k) {
        const float xh = (xo[c * s.I + k] - mf[k]) * isf[k];
        yo[c * s.I + k] = xh * g + b;
      }
    }
  });
}

void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                         ChannelLayout layout, const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  const OCI s = oci_of(x.shape(), layout, "x");
  FC_CHECK(s.C >= 1, ShapeMismatch, "Expected at least 1 channel (", channel_what(layout), ") but received x of shape ",
           shape_str(x.shape()));
  check_threads(ex);
  check_same_shape(dy, "dy", x, "x");
  check_channel_opt(gamma, "gamma", s.C, channel_what(layout));
  const std::vector<int64_t> rs{s.rows()};
  check_tensor(save_mean, "save_mean");
  check_shape(save_mean, "save_mean", rs, "R, the rows of x");
  check_tensor(save_invstd, "save_invstd");
  check_shape(save_invstd, "save_invstd", rs, "R, the rows of x");
  if (dx.defined()) {
    check_same_shape(dx, "dx", x, "x");
    check_alias(dx, "dx", dy, "dy", true);
    check_alias(dx, "dx", x, "x", false);
    check_alias(dx, "dx", gamma, "gamma", false);
    check_alias(dx, "dx", save_mean, "save_mean", false);
    check_alias(dx, "dx", save_invstd, "save_invstd", false);
  }
  check_channel_opt(dgamma, "dgamma", s.C, channel_what(layout));
  check_channel_opt(dbeta, "dbeta", s.C, channel_what(layout));
  for (const Tensor* t : {&dgamma, &dbeta}) {
    check_alias(*t, "a parameter gradient", dy, "dy", false);
    check_alias(*t, "a parameter gradient", x, "x", false);
    check_alias(*t, "a parameter gradient", dx, "dx", false);
    check_alias(*t, "a parameter gradient", gamma, "gamma", false);
  }
  check_alias(dgamma, "dgamma", dbeta, "dbeta", false);
  if (dev.cuda()) {
    return cuda_nn::layer_norm_backward(dy, x, gamma, save_mean, save_invstd, dx, dgamma, dbeta, s.O, s.C, s.I);
  }
  const float* gp = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  const float* wp = gamma.defined() ? gamma.data_as<float>() : nullptr;
  const float* sm = save_mean.data_as<float>();
  const float* si = save_invstd.data_as<float>();
  // Parameter gradients first: dx may overwrite dy.
  if (dgamma.defined() || dbeta.defined()) {
    float* dg = dgamma.defined() ? dgamma.data_as<float>() : nullptr;
    float* db = dbeta.defined() ? dbeta.data_as<float>() : nullptr;
    channel_sums<2>(
        s,
        [&](int64_t idx, int64_t, int64_t r, double* a) {
          const float xh = (xp[idx] - sm[r]) * si[r];
          a[0] += static_cast<double>(gp[idx]) * xh;
          a[1] += gp[idx];
        },
        [&](int64_t c, const double* a) {
          if (dg) dg[c] += static_cast<float>(a[0]);
          if (db) db[c] += static_cast<float>(a[1]);
        },
        ex.max_threads);
  }
  if (!dx.defined()) return;
  float* dp = dx.data_as<float>();
  const double invC = 1.0 / static_cast<double>(s.C);
  if (s.I == 1) {  // tokens: contiguous rows, 4-lane sums
    parallel_for(s.O, std::max<int64_t>(1, kElementGrain / s.C), ex.max_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* gr = gp + r * s.C;
        const float* xr = xp + r * s.C;
        float* dr = dp + r * s.C;
        const float m = sm[r], is = si[r];
        const double sg = row_sum4(s.C, [&](int64_t c) { return static_cast<double>(gr[c] * (wp ? wp[c] : 1.0f)); });
        const double sgx = row_sum4(s.C, [&](int64_t c) {
          return static_cast<double>(gr[c] * (wp ? wp[c] : 1.0f)) * ((xr[c] - m) * is);
        });
        const double a = sg * invC, b = sgx * invC;
        for (int64_t c = 0; c < s.C; ++c) {
          const float g = gr[c] * (wp ? wp[c] : 1.0f);
          const float xh = (xr[c] - m) * is;
          dr[c] = static_cast<float>(static_cast<double>(is) * (g - a - xh * b));
        }
      }
    });
    return;
  }
  for_row_tiles(s, ex.max_threads, [&](int64_t o, int64_t i0, int64_t i1) {
    double sg[kTile], sgx[kTile];
    const int64_t w = i1 - i0;
    const int64_t off = o * s.C * s.I + i0, r0 = o * s.I + i0;
    for (int64_t k = 0; k < w; ++k) sg[k] = 0.0, sgx[k] = 0.0;
    for (int64_t c = 0; c < s.C; ++c) {
      const float wc = wp ? wp[c] : 1.0f;
      for (int64_t k = 0; k < w; ++k) {
        const int64_t idx = off + c * s.I + k;
        const float g = gp[idx] * wc;
        const float xh = (xp[idx] - sm[r0 + k]) * si[r0 + k];
        sg[k] += g;
        sgx[k] += static_cast<double>(g) * xh;
      }
    }
    for (int64_t k = 0; k < w; ++k) sg[k] *= invC, sgx[k] *= invC;
    for (int64_t c = 0; c < s.C; ++c) {
      const float wc = wp ? wp[c] : 1.0f;
      for (int64_t k = 0; k < w; ++k) {
        const int64_t idx = off + c * s.I + k;
        const float g = gp[idx] * wc;
        const float xh = (xp[idx] - sm[r0 + k]) * si[r0 + k];
        dp[idx] = static_cast<float>(static_cast<double>(si[r0 + k]) * (g - sg[k] - xh * sgx[k]));
      }
    }
  });
}

// ======================================================================== layer scale

namespace {
// y[(o·C + c)·I + i] = x[…]·g[c] (per-channel scale in either layout), by rows: an (o, c) row of I
// values for maps, an o row of C values for tokens (I = 1); no index division per element.
void scale_channels(const float* x, const float* g, float* y, const OCI& s, int max_threads) {
  if (s.I == 1) {
    parallel_for(s.O, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.C, 1)), max_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t o = r0; o < r1; ++o) {
        const float* xr = x + o * s.C;
        float* yr = y + o * s.C;
        for (int64_t c = 0; c < s.C; ++c) yr[c] = xr[c] * g[c];
      }
    });
    return;
  }
  parallel_for(s.O * s.C, std::max<int64_t>(1, kElementGrain / s.I), max_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float w = g[r % s.C];
      const float* xr = x + r * s.I;
      float* yr = y + r * s.I;
      for (int64_t i = 0; i < s.I; ++i) yr[i] = xr[i] * w;
    }
  });
}

}  // namespace

void layer_scale_forward(const Tensor& x, const Tensor& gamma, const Tensor& y, ChannelLayout layout,
                         const ExecOptions& ex) {
  const OpDevice dev(x);
  check_tensor(x, "x");
  const OCI s = oci_of(x.shape(), layout, "x");
  check_threads(ex);
  check_channel_vec(gamma, "gamma", s.C, channel_what(layout));
  check_same_shape(y, "y", x, "x");
  check_alias(y, "y", x, "x", true);
  check_alias(y, "y", gamma, "gamma", false);
  if (dev.cuda()) return cuda_nn::layer_scale_forward(x, gamma, y, s.O, s.C, s.I);
  const float* xp = x.data_as<float>();
  const float* gp = gamma.data_as<float>();
  float* yp = y.data_as<float>();
  scale_channels(xp, gp, yp, s, ex.max_threads);
}

void layer_scale_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& dx,
                          const Tensor& dgamma, ChannelLayout layout, const ExecOptions& ex) {
  const OpDevice dev(dy);
  check_tensor(dy, "dy");
  const OCI s = oci_of(dy.shape(), layout, "dy");
  check_threads(ex);
  check_channel_vec(gamma, "gamma", s.C, layout == ChannelLayout::kTokens ? "C, the last dim of dy"
                                                                          : "C, the channels of dy");
  if (dx.defined()) {
    check_same_shape(dx, "dx", dy, "dy");
    check_alias(dx, "dx", dy, "dy", true);
    check_alias(dx, "dx", gamma, "gamma", false);
  }
  if (dgamma.defined()) {
    check_same_shape(x, "x", dy, "dy");
    check_channel_vec(dgamma, "dgamma", s.C, "the shape of gamma");
    check_alias(dx, "dx", x, "x", false);
    for (const Tensor* t : {&dy, &x, &gamma, &dx}) check_alias(dgamma, "dgamma", *t, "another argument", false);
  }
  if (dev.cuda()) return cuda_nn::layer_scale_backward(dy, x, gamma, dx, dgamma, s.O, s.C, s.I);
  const float* gp = dy.data_as<float>();
  const float* wp = gamma.data_as<float>();
  if (dgamma.defined()) {  // first: dx may overwrite dy
    const float* xp = x.data_as<float>();
    float* dg = dgamma.data_as<float>();
    channel_sums<1>(
        s, [&](int64_t idx, int64_t, int64_t, double* a) { a[0] += static_cast<double>(gp[idx]) * xp[idx]; },
        [&](int64_t c, const double* a) { dg[c] += static_cast<float>(a[0]); }, ex.max_threads);
  }
  if (!dx.defined()) return;
  scale_channels(gp, wp, dx.data_as<float>(), s, ex.max_threads);
}

// ======================================================================== drop path

bool drop_path_keep(const DropoutParams& d, int64_t n) {
  check_dropout_p(d);
  if (d.p == 0.0) return true;
  if (d.p == 1.0) return false;
  return margin::rng_uniform(margin::rng_key(d.seed, kDropPathStream, d.step), static_cast<uint64_t>(n)) >= d.p;
}

namespace {

void drop_path_run(const Tensor& in, const char* in_name, const Tensor& out, const char* out_name,
                   const DropoutParams& d, bool training, const ExecOptions& ex) {
  check_tensor(in, in_name);
  FC_CHECK(in.rank() >= 1, ShapeMismatch, "Expected ", in_name, " of rank >= 1 (N, ...) but received ",
           shape_str(in.shape()));
  check_threads(ex);
  check_dropout_p(d);
  check_same_shape(out, out_name, in, in_name);
  check_alias(out, out_name, in, in_name, true);
  const int64_t n = in.numel(), N = in.size(0), per = N ? n / N : 0;
  const bool identity = !training || d.p == 0.0;
  if (identity && in.data() == out.data()) return;
  if (in.device().is_cuda()) {
    // Identity: p 0 and scale 1 keep every sample unchanged; p == 1 drops every one (uniform < 1).
    const double p = identity ? 0.0 : d.p;
    const float scale = identity ? 1.0f : d.p < 1.0 ? static_cast<float>(1.0 / (1.0 - d.p)) : 0.0f;
    return cuda_nn::drop_path_apply(in, out, p, margin::rng_key(d.seed, kDropPathStream, d.step), scale, N, per);
  }
  if (n == 0) return;
  if (identity) {
    std::memcpy(out.data(), in.data(), static_cast<size_t>(n) * sizeof(float));
    return;
  }
  if (d.p == 1.0) {
    std::memset(out.data(), 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const uint64_t key = margin::rng_key(d.seed, kDropPathStream, d.step);
  const float scale = static_cast<float>(1.0 / (1.0 - d.p));
  std::vector<char> keep(static_cast<size_t>(N));
  for (int64_t s = 0; s < N; ++s)
    keep[static_cast<size_t>(s)] = margin::rng_uniform(key, static_cast<uint64_t>(s)) >= d.p;
  const float* ip = in.data_as<float>();
  float* op = out.data_as<float>();
  parallel_for(n, kElementGrain, ex.max_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) op[i] = keep[static_cast<size_t>(i / per)] ? ip[i] * scale : 0.0f;
  });
}

}  // namespace

void drop_path_forward(const Tensor& x, const Tensor& y, const DropoutParams& d, bool training,
                       const ExecOptions& ex) {
  const OpDevice dev(x);
  drop_path_run(x, "x", y, "y", d, training, ex);
}

void drop_path_backward(const Tensor& dy, const Tensor& dx, const DropoutParams& d, bool training,
                        const ExecOptions& ex) {
  const OpDevice dev(dy);
  drop_path_run(dy, "dy", dx, "dx", d, training, ex);
}

// ======================================================================== GAP, channel multiply

// Σ x[i] (and Σ a[i]·b[i]) in double with 8 independent accumulators, combined in a fixed order: the
// same rounding for every thread count, and 8 additions in flight instead of one dependent chain
// (the single-accumulator loop was latency-bound: ~4 cycles per element).
namespace {
double row_sum(const float* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]);
  for (; i < n; ++i) acc[i & 7] += static_cast<double>(x[i]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

double row_dot(const float* a, const float* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]) * static_cast<double>(b[i + j]);
  for (; i < n; ++i) acc[i & 7] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}
}  // namespace

void global_avg_pool_forward(const Tensor& x, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = ncs_checked(x, "x");
  FC_CHECK(s.S >= 1, ShapeMismatch, "Expected x with at least one position (N, C, H, W with H·W >= 1) but received ",
           shape_str(x.shape()));
  check_threads(ex);
  check_tensor(y, "y");
  check_shape(y, "y", {s.N, s.C}, "N, C of x");
  check_alias(y, "y", x, "x", false);
  if (dev.cuda()) return cuda_nn::global_avg_pool_forward(x, y, s.N, s.C, s.S);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
  const double inv = 1.0 / static_cast<double>(s.S);
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / s.S), ex.max_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      yp[r] = static_cast<float>(row_sum(xp + r * s.S, s.S) * inv);
    }
  });
}

void global_avg_pool_backward(const Tensor& dy, const Tensor& dx, bool accumulate, const ExecOptions& ex) {
  const OpDevice dev(dy);
  check_tensor(dy, "dy");
  const NCS s = ncs_checked(dx, "dx");
  FC_CHECK(s.S >= 1, ShapeMismatch, "Expected dx with at least one position (N, C, H, W with H·W >= 1) but received ",
           shape_str(dx.shape()));
  check_threads(ex);
  check_shape(dy, "dy", {s.N, s.C}, "N, C of dx");
  check_alias(dx, "dx", dy, "dy", false);
  if (dev.cuda()) return cuda_nn::global_avg_pool_backward(dy, dx, accumulate, s.N, s.C, s.S);
  const float* gp = dy.data_as<float>();
  float* dp = dx.data_as<float>();
  const double inv = 1.0 / static_cast<double>(s.S);
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / s.S), ex.max_threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float v = static_cast<float>(gp[r] * inv);
      float* dr = dp + r * s.S;
      if (accumulate) {
        for (int64_t i = 0; i < s.S; ++i) dr[i] += v;
      } else {
        for (int64_t i = 0; i < s.S; ++i) dr[i] = v;
      }
    }
  });
}

void channel_mul_forward(const Tensor& x, const Tensor& g, const Tensor& y, const ExecOptions& ex) {
  const OpDevice dev(x);
  const NCS s = ncs_checked(x, "x");
  check_threads(ex);
  check_tensor(g, "g");
  check_shape(g, "g", {s.N, s.C}, "N, C of x");
  check_same_shape(y, "y", x, "x");
  check_alias(y, "y", x, "x", true);
  check_alias(y, "y", g, "g", false);
  if (dev.cuda()) return cuda_nn::channel_mul_forward(x, g, y, s.N, s.C, s.S);
  const float* xp = x.data_as<float>();
  const float* gp = g.data_as<float>();
  float* yp = y.data_as<float>();
  // One (n, c) plane per iteration: a vectorizable inner loop (an index division per element was 3x
  // slower than the SE block's convolutions).
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), ex.max_threads,
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float w = gp[r];
                   const float* __restrict xr = xp + r * s.S;
                   float* __restrict yr = yp + r * s.S;
                   if (xr == yr) {
                     for (int64_t i = 0; i < s.S; ++i) yp[r * s.S + i] *= w;
                   } else {
                     for (int64_t i = 0; i < s.S; ++i) yr[i] = xr[i] * w;
                   }
                 }
               });
}

void channel_mul_backward(const Tensor& dy, const Tensor& x, const Tensor& g, const Tensor& dx, const Tensor& dg,
                          const ExecOptions& ex) {
  const OpDevice dev(dy);
  const NCS s = ncs_checked(dy, "dy");
  check_threads(ex);
  check_tensor(g, "g");
  check_shape(g, "g", {s.N, s.C}, "N, C of dy");
  if (dx.defined()) {
    check_same_shape(dx, "dx", dy, "dy");
    check_alias(dx, "dx", dy, "dy", true);
    check_alias(dx, "dx", g, "g", false);
  }
  if (dg.defined()) {
    check_same_shape(x, "x", dy, "dy");
    check_tensor(dg, "dg");
    check_shape(dg, "dg", {s.N, s.C}, "N, C of dy");
    check_alias(dx, "dx", x, "x", false);
    for (const Tensor* t : {&dy, &x, &g, &dx}) check_alias(dg, "dg", *t, "another argument", false);
  }
  if (dev.cuda()) return cuda_nn::channel_mul_backward(dy, x, g, dx, dg, s.N, s.C, s.S);
  const float* gp = dy.data_as<float>();
  const float* wp = g.data_as<float>();
  const float* xp = dg.defined() ? x.data_as<float>() : nullptr;
  float* dxp = dx.defined() ? dx.data_as<float>() : nullptr;
  float* dgp = dg.defined() ? dg.data_as<float>() : nullptr;
  parallel_for(s.N * s.C, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(s.S, 1)), ex.max_threads,
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float* gr = gp + r * s.S;
                   if (dgp) {  // first: dx may overwrite dy
                     dgp[r] = static_cast<float>(row_dot(gr, xp + r * s.S, s.S));
                   }
                   if (dxp) {
                     const float w = wp[r];
                     float* dr = dxp + r * s.S;
                     for (int64_t i = 0; i < s.S; ++i) dr[i] = gr[i] * w;
                   }
                 }
               });
}

}  // namespace nn
}  // namespace fc
