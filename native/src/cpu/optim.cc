// @file optim.cc
// @brief fc::optim::step and clip_grad_norm: argument checks, the shared chunk partition and norm
// bookkeeping, and the CPU backend (fc::ThreadPool over the fixed chunks). The contract and the exact
// formulas are in facecuda/optim.h; the per-element math lives there too (shared with CUDA).
//
// CPU passes: pass 1 computes one double Σ g² per chunk (four interleaved accumulators combined as
// (a0 + a1) + (a2 + a3), a fixed order), pass 2 updates each chunk's elements. Chunks are tasks of the
// pool, dealt statically; every element is written by exactly one task, so results are bitwise
// independent of the thread count.
#include "facecuda/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "facecuda/error.h"
#include "facecuda/threadpool.h"

namespace fc {
namespace optim {

namespace detail {

std::vector<Chunk> make_chunks(const std::vector<Item>& items) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const int32_t idx = static_cast<int32_t>(i);
    if (it.sparse) {
      const int64_t row_size = it.param.rank() == 0 ? 1 : it.param.numel() / std::max<int64_t>(1, it.param.size(0));
      const int64_t per = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, row_size));
      const int64_t n = static_cast<int64_t>(it.rows.size());
      for (int64_t b = 0; b < n; b += per) chunks.push_back({idx, b, std::min(n, b + per)});
    } else {
      const int64_t n = it.param.numel();
      for (int64_t b = 0; b < n; b += kChunkElements) chunks.push_back({idx, b, std::min(n, b + kChunkElements)});
    }
  }
  return chunks;
}

ItemConsts item_consts(const Item& item, const Hyper& h, double scale) {
  ItemConsts c{};
  c.scale = scale;
  c.lr = item.lr;
  c.wd = h.algo == Algo::SGD ? item.weight_decay : 0.0;
  c.decay = 1.0 - item.lr * item.weight_decay;
  const double t = static_cast<double>(item.step);
  c.step_size = item.lr / (1.0 - std::pow(h.beta1, t));
  c.bc2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, t));
  c.first = item.step == 1 ? 1 : 0;
  return c;
}

void finish_norms(const std::vector<Item>& items, const StepOptions& options, StepResult& r) {
  const size_t G = options.clip_norms.size();
  r.group_norms.assign(G, 0.0);
  r.group_scales.assign(G, 1.0);
  std::vector<double> gsum(G, 0.0);
  double total = 0.0;
  r.skipped = false;
  r.nonfinite_item = -1;
  const double gs2 = options.grad_scale * options.grad_scale;
  for (size_t i = 0; i < items.size(); ++i) {
    if (gs2 != 1.0 && std::isfinite(r.item_sumsq[i])) r.item_sumsq[i] *= gs2;
    const double s = r.item_sumsq[i];
    if (!std::isfinite(s) && r.nonfinite_item < 0) r.nonfinite_item = static_cast<int64_t>(i);
    total += s;
    if (items[i].clip_group >= 0) gsum[static_cast<size_t>(items[i].clip_group)] += s;
  }
  r.grad_norm = std::sqrt(total);
  for (size_t g = 0; g < G; ++g) {
    r.group_norms[g] = std::sqrt(gsum[g]);
    const double coef = options.clip_norms[g] / (r.group_norms[g] + 1e-6);
    if (coef < 1.0) r.group_scales[g] = coef;  // torch: clamp(coef, max = 1)
  }
  if (r.nonfinite_item >= 0) {
    r.skipped = true;
    std::fill(r.group_scales.begin(), r.group_scales.end(), 1.0);
  }
}

}  // namespace detail

namespace {

using detail::Chunk;
using detail::ItemConsts;

void check_items(const std::vector<Item>& items, const Hyper& h, const StepOptions& o) {
  FC_CHECK(h.algo == Algo::SGD || h.algo == Algo::AdamW || h.algo == Algo::ClipOnly, InvalidArgument,
           "Expected an optimizer algorithm of 0 (SGD), 1 (AdamW) or 2 (clip) but received ", static_cast<int>(h.algo));
  FC_CHECK(std::isfinite(h.momentum) && h.momentum >= 0, InvalidArgument, "Expected a momentum >= 0 but received ",
           h.momentum);
  FC_CHECK(std::isfinite(h.dampening), InvalidArgument, "Expected a finite dampening but received ", h.dampening);
  FC_CHECK(!h.nesterov || (h.momentum > 0 && h.dampening == 0), InvalidArgument,
           "Nesterov momentum requires a momentum > 0 and zero dampening");
  if (h.algo == Algo::AdamW) {
    FC_CHECK(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1, InvalidArgument,
             "Expected betas in [0, 1) but received ", h.beta1, ", ", h.beta2);
    FC_CHECK(std::isfinite(h.eps) && h.eps >= 0, InvalidArgument, "Expected eps >= 0 but received ", h.eps);
  }
  FC_CHECK(std::isfinite(o.grad_scale) && o.grad_scale > 0, InvalidArgument,
           "Expected a finite grad_scale > 0 but received ", o.grad_scale);
  for (double n : o.clip_norms) {
    FC_CHECK(std::isfinite(n) && n > 0, InvalidArgument, "Expected a clip norm > 0 but received ", n);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    const std::string who = str("item ", i);
    FC_CHECK(it.param.defined() && it.grad.defined(), InvalidArgument, who, ": param and grad are required");
    const Device dev = items[0].param.device();
    auto check_t = [&](const Tensor& t, const char* what) {
      FC_CHECK(t.dtype() == DType::F32, InvalidArgument, who, ": Expected a float32 ", what, " but received ", t.describe());
      FC_CHECK(t.is_contiguous(), InvalidArgument, who, ": Expected a contiguous ", what);
      FC_CHECK(t.device() == dev, InvalidArgument, who, ": Expected ", what, " on ", dev.str(), " but received ",
               t.describe());
      FC_CHECK(t.numel() == it.param.numel(), ShapeMismatch, who, ": Expected ", what, " with ", it.param.numel(),
               " elements (param ", shape_str(it.param.shape()), ") but received ", shape_str(t.shape()));
    };
    check_t(it.param, "param");
    check_t(it.grad, "grad");
    const bool need1 = (h.algo == Algo::SGD && h.momentum > 0) || h.algo == Algo::AdamW;
    const bool need2 = h.algo == Algo::AdamW;
    if (need1) {
      FC_CHECK(it.state1.defined(), InvalidArgument, who, ": the first state buffer (momentum / exp_avg) is required");
      check_t(it.state1, "state buffer");
    }
    if (need2) {
      FC_CHECK(it.state2.defined(), InvalidArgument, who, ": the second state buffer (exp_avg_sq) is required");
      check_t(it.state2, "state buffer");
    }
    if (h.algo != Algo::ClipOnly) {
      FC_CHECK(std::isfinite(it.lr), InvalidArgument, who, ": Expected a finite learning rate but received ", it.lr);
      FC_CHECK(std::isfinite(it.weight_decay) && it.weight_decay >= 0, InvalidArgument, who,
               ": Expected a weight decay >= 0 but received ", it.weight_decay);
      FC_CHECK(it.step >= 1, InvalidArgument, who, ": Expected a step >= 1 but received ", it.step);
    }
    FC_CHECK(it.clip_group >= -1 && it.clip_group < static_cast<int>(o.clip_norms.size()), OutOfRange, who,
             ": clip group ", it.clip_group, " is not in [-1, ", o.clip_norms.size(), ")");
    if (it.sparse) {
      FC_CHECK(it.param.rank() >= 1, InvalidArgument, who, ": a sparse update needs a parameter of rank >= 1");
      const int64_t R = it.param.size(0);
      int64_t prev = -1;
      for (int32_t r : it.rows) {
        FC_CHECK(r >= 0 && r < R, OutOfRange, who, ": row ", r, " is not in [0, ", R, ")");
        FC_CHECK(r > prev, InvalidArgument, who, ": Expected strictly ascending rows but row ", r, " follows ", prev);
        prev = r;
      }
    }
  }
}

// Σ g² over [i0, i1) of p (four accumulators, fixed combination).
double sumsq(const float* p, int64_t n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const double x0 = p[i], x1 = p[i + 1], x2 = p[i + 2], x3 = p[i + 3];
    a0 += x0 * x0;
    a1 += x1 * x1;
    a2 += x2 * x2;
    a3 += x3 * x3;
  }
  for (; i < n; ++i) {
    const double x = p[i];
    a0 += x * x;
  }
  return (a0 + a1) + (a2 + a3);
}

// Calls fn(offset, length) for each contiguous element run of chunk c.
template <typename F>
void for_runs(const Item& it, const Chunk& c, F&& fn) {
  if (!it.sparse) {
    fn(c.begin, c.end - c.begin);
    return;
  }
  const int64_t row_size = it.param.numel() / it.param.size(0);
  for (int64_t k = c.begin; k < c.end; ++k) fn(static_cast<int64_t>(it.rows[static_cast<size_t>(k)]) * row_size, row_size);
}

void cpu_step(std::vector<Item>& items, const Hyper& h, const StepOptions& o, StepResult& r) {
  ThreadPool& pool = ThreadPool::global();
  const std::vector<Chunk> chunks = detail::make_chunks(items);
  const int64_t nc = static_cast<int64_t>(chunks.size());

  // Pass 1: Σ g² per chunk, then per item in chunk order.
  std::vector<double> partial(chunks.size(), 0.0);
  pool.run(
      nc,
      [&](int64_t t, int) {
        const Chunk& c = chunks[static_cast<size_t>(t)];
        const Item& it = items[static_cast<size_t>(c.item)];
        const float* g = it.grad.data_as<const float>();
        double s = 0.0;
        for_runs(it, c, [&](int64_t off, int64_t len) { s += sumsq(g + off, len); });
        partial[static_cast<size_t>(t)] = s;
      },
      o.max_threads);
  r.item_sumsq.assign(items.size(), 0.0);
  for (size_t t = 0; t < chunks.size(); ++t) r.item_sumsq[static_cast<size_t>(chunks[t].item)] += partial[t];
  detail::finish_norms(items, o, r);
  if (r.skipped) return;

  // Pass 2: the update.
  std::vector<ItemConsts> consts(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const int g = items[i].clip_group;
    consts[i] = detail::item_consts(items[i], h, (g >= 0 ? r.group_scales[static_cast<size_t>(g)] : 1.0) * o.grad_scale);
  }
  const double omd = 1.0 - h.dampening;
  pool.run(
      nc,
      [&](int64_t t, int) {
        const Chunk& c = chunks[static_cast<size_t>(t)];
        Item& it = items[static_cast<size_t>(c.item)];
        const ItemConsts& k = consts[static_cast<size_t>(c.item)];
        float* p = it.param.data_as<float>();
        float* g = it.grad.data_as<float>();
        float* s1 = it.state1.defined() ? it.state1.data_as<float>() : nullptr;
        float* s2 = it.state2.defined() ? it.state2.data_as<float>() : nullptr;
        for_runs(it, c, [&](int64_t off, int64_t len) {
          switch (h.algo) {
            case Algo::SGD:
              if (h.momentum != 0.0) {
                for (int64_t j = off; j < off + len; ++j)
                  detail::sgd_element(p + j, g[j], s1 + j, k, h.momentum, omd, h.nesterov);
              } else {
                for (int64_t j = off; j < off + len; ++j) detail::sgd_element(p + j, g[j], nullptr, k, 0.0, omd, false);
              }
              break;
            case Algo::AdamW:
              for (int64_t j = off; j < off + len; ++j)
                detail::adamw_element(p + j, g[j], s1 + j, s2 + j, k, h.beta1, h.beta2, h.eps);
              break;
            case Algo::ClipOnly:
              if (k.scale != 1.0) {
                for (int64_t j = off; j < off + len; ++j)
                  g[j] = static_cast<float>(detail::op_mul(static_cast<double>(g[j]), k.scale));
              }
              break;
          }
        });
      },
      o.max_threads);
}

StepResult run(std::vector<Item>& items, const Hyper& h, const StepOptions& o) {
  check_items(items, h, o);
  StepResult r;
  if (items.empty()) {
    r.group_norms.assign(o.clip_norms.size(), 0.0);
    r.group_scales.assign(o.clip_norms.size(), 1.0);
    return r;
  }
  if (items[0].param.device().is_cuda()) detail::cuda_step(items, h, o, r);
  else cpu_step(items, h, o, r);
  return r;
}

}  // namespace

StepResult step(std::vector<Item>& items, const Hyper& hyper, const StepOptions& options) {
  FC_CHECK(hyper.algo != Algo::ClipOnly, InvalidArgument, "use clip_grad_norm for a clip-only pass");
  return run(items, hyper, options);
}

StepResult scale_grads(std::vector<Item>& items, double factor, int max_threads) {
  Hyper h;
  h.algo = Algo::ClipOnly;
  StepOptions o;
  o.grad_scale = factor;
  o.max_threads = max_threads;
  for (Item& it : items) {
    it.clip_group = -1;
    if (!it.param.defined()) it.param = it.grad;  // only the gradient matters
  }
  return run(items, h, o);
}

StepResult clip_grad_norm(std::vector<Item>& items, double max_norm, int max_threads) {
  Hyper h;
  h.algo = Algo::ClipOnly;
  StepOptions o;
  o.clip_norms = {max_norm};
  o.max_threads = max_threads;
  for (Item& it : items) {
    it.clip_group = 0;
    if (!it.param.defined()) it.param = it.grad;  // only the gradient matters
  }
  return run(items, h, o);
}

}  // namespace optim
}  // namespace fc
