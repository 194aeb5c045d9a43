// @file optim_cases.cc
// @brief Harness cases for fc::optim (facecuda/optim.h): fused multi-tensor SGD / AdamW steps,
// global-norm clipping, the finite check and sparse (row-list) updates.
//
//   test  CPU against float64 references written here independently (plain loops, the state carried
//         in double, no rounding between steps): SGD (momentum 0 / 0.9, nesterov, dampening, per-item
//         weight decay incl. 0), AdamW over 5 steps (bias correction), clipping (scaled and not), fresh
//         random shapes per run (empty, 1 element, ragged, more than one chunk), sparse rows (the
//         others must keep their bits), NaN / Inf gradients (skipped, nothing written), thread-count
//         independence (1 thread vs the pool: bitwise), clip_grad_norm in place, argument errors with
//         codes; and CUDA against the CPU on the same inputs (bitwise for the updated tensors, since
//         both evaluate the same separately rounded double formulas; norms within 1e-12 relative).
// Without a usable CUDA device the CUDA cases skip with the reason.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/optim.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

using optim::Algo;
using optim::Hyper;
using optim::Item;
using optim::StepOptions;
using optim::StepResult;

CaseResult failure(const std::string& why) {
  CaseResult r;
  r.status = CaseResult::Fail;
  r.detail = why;
  return r;
}

// ---- host problem: per item the parameter, gradient (one per step) and state, plus item options

struct HostItem {
  std::vector<int64_t> shape;
  std::vector<float> p, s1, s2;
  std::vector<std::vector<float>> g;  // one gradient per step
  double lr_scale = 1.0, wd = 0.0;
  int clip_group = -1;
  bool sparse = false;
  std::vector<int32_t> rows;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct Problem {
  Hyper h;
  std::vector<double> clip_norms;
  std::vector<HostItem> items;
  int steps = 1;
  double lr = 0.1;
};

std::vector<int64_t> random_shape(std::mt19937_64& rng, int kind) {
  std::uniform_int_distribution<int64_t> small(1, 9), mid(10, 300);
  switch (kind % 6) {
    case 0: return {0};                                        // empty
    case 1: return {1};                                        // one element
    case 2: return {mid(rng), small(rng)};                     // ragged 2-D
    case 3: return {small(rng), small(rng), 3, 3};             // conv-like
    case 4: return {optim::kChunkElements + mid(rng)};         // more than one chunk
    default: return {mid(rng)};                                // 1-D (bias / BN)
  }
}

Problem make_problem(std::mt19937_64& rng, const Hyper& h, int num_items, int steps, bool clip, bool sparse_first) {
  Problem pr;
  pr.h = h;
  pr.steps = steps;
  pr.lr = 0.05;
  if (clip) pr.clip_norms = {0.5, 1e6};  // group 0 is clipped, group 1 is not
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < num_items; ++i) {
    HostItem it;
    it.shape = random_shape(rng, i);
    if (sparse_first && i == 0) it.shape = {40, 7};
    const int64_t n = it.numel();
    it.p.resize(static_cast<size_t>(n));
    fill_uniform(rng, it.p.data(), it.p.size(), -1, 1);
    it.s1.assign(static_cast<size_t>(n), 0.0f);
    it.s2.assign(static_cast<size_t>(n), 0.0f);
    for (int s = 0; s < steps; ++s) {
      std::vector<float> g(static_cast<size_t>(n));
      fill_uniform(rng, g.data(), g.size(), -0.5f, 0.5f);
      it.g.push_back(std::move(g));
    }
    it.wd = (i % 3 == 1) ? 0.0 : 5e-4 * (1 + i % 2);  // some items excluded from decay
    it.lr_scale = (i % 4 == 3) ? 0.5 : 1.0;
    if (clip) it.clip_group = (i % 3 == 2) ? -1 : (i % 2);
    if (sparse_first && i == 0) {
      it.sparse = true;
      it.rows = {0, 3, 4, 17, 39};
    }
    pr.items.push_back(std::move(it));
  }
  return pr;
}

// ---- float64 reference (state carried in double across steps)

struct RefState {
  std::vector<std::vector<double>> p, s1, s2;
  std::vector<int64_t> steps;
};

RefState ref_init(const Problem& pr) {
  RefState r;
  for (const HostItem& it : pr.items) {
    r.p.emplace_back(it.p.begin(), it.p.end());
    r.s1.emplace_back(it.s1.begin(), it.s1.end());
    r.s2.emplace_back(it.s2.begin(), it.s2.end());
    r.steps.push_back(0);
  }
  return r;
}

// One reference step; returns the per-group norms (and whether to skip, computed from the gradients).
void ref_step(const Problem& pr, int s, RefState& st, std::vector<double>* group_norms, double* total_norm) {
  const size_t G = pr.clip_norms.size();
  std::vector<double> gs(G, 0.0);
  double tot = 0;
  for (size_t i = 0; i < pr.items.size(); ++i) {
    const HostItem& it = pr.items[i];
    const int64_t n = it.numel();
    const int64_t row = it.sparse ? n / it.shape[0] : 0;
    auto used = [&](int64_t j) {
      return !it.sparse || std::binary_search(it.rows.begin(), it.rows.end(), static_cast<int32_t>(j / row));
    };
    double acc = 0;
    for (int64_t j = 0; j < n; ++j)
      if (used(j)) acc += double(it.g[s][j]) * double(it.g[s][j]);
    tot += acc;
    if (it.clip_group >= 0) gs[static_cast<size_t>(it.clip_group)] += acc;
  }
  std::vector<double> scale(G, 1.0);
  for (size_t g = 0; g < G; ++g) {
    gs[g] = std::sqrt(gs[g]);
    double c = pr.clip_norms[g] / (gs[g] + 1e-6);
    if (c < 1) scale[g] = c;
  }
  if (group_norms) *group_norms = gs;
  if (total_norm) *total_norm = std::sqrt(tot);
  for (size_t i = 0; i < pr.items.size(); ++i) {
    const HostItem& it = pr.items[i];
    const int64_t n = it.numel();
    const int64_t row = it.sparse ? n / it.shape[0] : 0;
    const double lr = pr.lr * it.lr_scale;
    const double sc = it.clip_group >= 0 ? scale[static_cast<size_t>(it.clip_group)] : 1.0;
    const int64_t t = ++st.steps[i];
    for (int64_t j = 0; j < n; ++j) {
      if (it.sparse && !std::binary_search(it.rows.begin(), it.rows.end(), static_cast<int32_t>(j / row))) continue;
      double& p = st.p[i][j];
      double& m = st.s1[i][j];
      double& v = st.s2[i][j];
      const double g = double(it.g[s][j]) * sc;
      if (pr.h.algo == Algo::SGD) {
        double d = g + it.wd * p;
        if (pr.h.momentum != 0) {
          m = (t == 1) ? d : pr.h.momentum * m + (1 - pr.h.dampening) * d;
          d = pr.h.nesterov ? d + pr.h.momentum * m : m;
        }
        p -= lr * d;
      } else {
        p *= 1 - lr * it.wd;
        m = pr.h.beta1 * m + (1 - pr.h.beta1) * g;
        v = pr.h.beta2 * v + (1 - pr.h.beta2) * g * g;
        const double mh = m / (1 - std::pow(pr.h.beta1, double(t)));
        const double vh = v / (1 - std::pow(pr.h.beta2, double(t)));
        p -= lr * mh / (std::sqrt(vh) + pr.h.eps);
      }
    }
  }
}

// ---- running the engine on a device

struct DevItems {
  std::vector<Item> items;
};

Tensor upload(const std::vector<float>& v, const std::vector<int64_t>& shape, const Device& d) {
  Tensor h = Tensor::from_host(v.data(), v.size() * sizeof(float), shape, DType::F32, Device::cpu());
  return d.is_cpu() ? h : h.to(d);
}

std::vector<float> download(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) t.copy_to_host(v.data());
  return v;
}

DevItems make_items(const Problem& pr, const Device& d) {
  DevItems out;
  for (const HostItem& it : pr.items) {
    Item x;
    x.param = upload(it.p, it.shape, d);
    x.grad = upload(it.g[0], it.shape, d);
    const bool s1 = (pr.h.algo == Algo::SGD && pr.h.momentum > 0) || pr.h.algo == Algo::AdamW;
    if (s1) x.state1 = upload(it.s1, it.shape, d);
    if (pr.h.algo == Algo::AdamW) x.state2 = upload(it.s2, it.shape, d);
    x.lr = pr.lr * it.lr_scale;
    x.weight_decay = it.wd;
    x.step = 0;
    x.clip_group = it.clip_group;
    x.sparse = it.sparse;
    x.rows = it.rows;
    out.items.push_back(std::move(x));
  }
  return out;
}

// Runs step s (uploads gradient s first).
StepResult run_step(const Problem& pr, DevItems& di, int s, int max_threads = 0) {
  for (size_t i = 0; i < di.items.size(); ++i) {
    Item& x = di.items[i];
    if (s > 0) {
      const std::vector<float>& g = pr.items[i].g[static_cast<size_t>(s)];
      if (x.grad.device().is_cpu()) {
        if (!g.empty()) std::memcpy(x.grad.data(), g.data(), g.size() * sizeof(float));
      } else if (!g.empty()) {
        cuda::copy_h2d(x.grad.device().index, x.grad.data(), g.data(), g.size() * sizeof(float));
      }
    }
    x.step = s + 1;
  }
  StepOptions o;
  o.clip_norms = pr.clip_norms;
  o.max_threads = max_threads;
  return optim::step(di.items, pr.h, o);
}

std::string hyper_str(const Hyper& h) {
  if (h.algo == Algo::AdamW) return str("adamw b1=", h.beta1, " b2=", h.beta2, " eps=", h.eps);
  return str("sgd mom=", h.momentum, " damp=", h.dampening, " nesterov=", h.nesterov);
}

using Fn = std::function<CaseResult(Context&)>;

class OptimCase : public OpCase {
 public:
  OptimCase(std::string name, Fn fn, bool cuda = false) : name_(std::move(name)), fn_(std::move(fn)), cuda_(cuda) {}
  std::string op() const override { return "optim"; }
  std::string params() const override { return name_; }
  bool uses_cuda() const override { return cuda_; }
  CaseResult test(Context& ctx) override {
    if (cuda_ && !ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    return fn_(ctx);
  }

 private:
  std::string name_;
  Fn fn_;
  bool cuda_;
};

// CPU against the float64 reference over several steps.
CaseResult vs_reference(Context& ctx, const Hyper& h, int steps, bool clip, bool sparse, const std::string& salt) {
  auto rng = make_rng(ctx, salt);
  Problem pr = make_problem(rng, h, 8, steps, clip, sparse);
  RefState ref = ref_init(pr);
  DevItems di = make_items(pr, Device::cpu());
  double worst = 0;
  for (int s = 0; s < steps; ++s) {
    std::vector<double> gn;
    double tn = 0;
    ref_step(pr, s, ref, &gn, &tn);
    StepResult r = run_step(pr, di, s);
    if (r.skipped) return failure(str("step ", s, " skipped"));
    // Norms: both are double sums of the same squares (different order): 1e-12 relative.
    if (std::fabs(r.grad_norm - tn) > 1e-12 * tn) return failure(str("grad norm ", r.grad_norm, " vs ", tn));
    for (size_t g = 0; g < gn.size(); ++g)
      if (std::fabs(r.group_norms[g] - gn[g]) > 1e-12 * gn[g]) return failure(str("group ", g, " norm ", r.group_norms[g], " vs ", gn[g]));
    if (clip && !(r.group_scales[0] < 1.0 && r.group_scales[1] == 1.0))
      return failure(str("expected group 0 clipped and group 1 not, scales ", r.group_scales[0], " ", r.group_scales[1]));
  }
  for (size_t i = 0; i < pr.items.size(); ++i) {
    std::vector<float> p = download(di.items[i].param);
    // Tolerance: the engine rounds p and the state to float32 after every step (relative 2^-24 each)
    // and the reference does not, so errors of a few fp32 ulps of |p| accumulate over the steps; the
    // AdamW step m/sqrt(v) amplifies the rounding of m and v by at most ~lr, far below this.
    Compare c = compare(p.data(), ref.p[i].data(), p.size(), 1e-6, 4e-6 * steps);
    worst = std::max(worst, c.max_abs);
    if (!c.ok) return failure(str("item ", i, " ", shape_str(pr.items[i].shape), " param: ", c.detail));
    if (pr.items[i].sparse) {  // rows not listed keep their exact bits
      const HostItem& it = pr.items[i];
      const int64_t row = it.numel() / it.shape[0];
      for (int64_t j = 0; j < it.numel(); ++j) {
        if (std::binary_search(it.rows.begin(), it.rows.end(), static_cast<int32_t>(j / row))) continue;
        if (std::memcmp(&p[j], &it.p[j], 4) != 0) return failure(str("sparse: unlisted element ", j, " changed"));
        if (di.items[i].state1.defined() && download(di.items[i].state1)[j] != 0.0f)
          return failure(str("sparse: unlisted state element ", j, " changed"));
      }
    }
  }
  CaseResult res;
  res.detail = str(hyper_str(h), " steps=", steps, " max_abs=", worst);
  res.figures.push_back({"max_abs_err", worst});
  return res;
}

std::vector<std::unique_ptr<OpCase>> make_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  auto add = [&](std::string name, Fn fn, bool cuda = false) {
    v.push_back(std::make_unique<OptimCase>(std::move(name), std::move(fn), cuda));
  };
  Hyper plain;
  Hyper mom;
  mom.momentum = 0.9;
  Hyper nest = mom;
  nest.nesterov = true;
  Hyper damp = mom;
  damp.dampening = 0.1;
  Hyper adam;
  adam.algo = Algo::AdamW;
  std::vector<std::pair<std::string, Hyper>> hypers = {
      {"sgd", plain}, {"sgd-momentum", mom}, {"sgd-nesterov", nest}, {"sgd-dampening", damp}, {"adamw", adam}};
  for (auto& [name, h] : hypers) {
    Hyper hh = h;
    const int steps = hh.algo == Algo::AdamW ? 5 : 3;
    add(name + " vs f64", [hh, steps, name](Context& c) { return vs_reference(c, hh, steps, false, false, name); });
    add(name + " clip vs f64", [hh, steps, name](Context& c) { return vs_reference(c, hh, steps, true, false, name + "c"); });
    add(name + " sparse vs f64", [hh, steps, name](Context& c) { return vs_reference(c, hh, steps, false, true, name + "s"); });
  }

  // NaN / Inf gradients: skipped, nothing written.
  add("nonfinite skip", [mom](Context& ctx) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      auto rng = make_rng(ctx, "nonfinite");
      Problem pr = make_problem(rng, mom, 6, 2, true, true);
      DevItems di = make_items(pr, Device::cpu());
      StepResult r0 = run_step(pr, di, 0);
      if (r0.skipped) return failure("first step skipped");
      std::vector<std::vector<float>> before_p, before_s;
      for (Item& x : di.items) {
        before_p.push_back(download(x.param));
        before_s.push_back(download(x.state1));
      }
      pr.items[4].g[1][7] = bad;  // item 4 is 1-D with >= 10 elements
      StepResult r = run_step(pr, di, 1);
      if (!r.skipped || r.nonfinite_item != 4) return failure(str("bad=", bad, " skipped=", r.skipped, " item=", r.nonfinite_item));
      for (size_t i = 0; i < di.items.size(); ++i) {
        std::vector<float> p = download(di.items[i].param), s = download(di.items[i].state1);
        if (p.size() && std::memcmp(p.data(), before_p[i].data(), p.size() * 4) != 0) return failure(str("param ", i, " changed"));
        if (s.size() && std::memcmp(s.data(), before_s[i].data(), s.size() * 4) != 0) return failure(str("state ", i, " changed"));
      }
      // A NaN in an unlisted row of a sparse item is ignored.
      pr.items[4].g[1][7] = 0.25f;
      pr.items[0].g[1][1 * 7 + 2] = bad;  // row 1 is not listed
      StepResult r2 = run_step(pr, di, 1);
      if (r2.skipped) return failure("a NaN in an unlisted sparse row skipped the step");
    }
    return CaseResult{};
  });

  // 1 thread vs the whole pool: bitwise.
  add("threads bitwise", [adam, mom](Context& ctx) {
    for (const Hyper& h : {adam, mom}) {
      auto rng = make_rng(ctx, "threads");
      Problem pr = make_problem(rng, h, 12, 2, true, true);
      DevItems a = make_items(pr, Device::cpu()), b = make_items(pr, Device::cpu());
      for (int s = 0; s < 2; ++s) {
        StepResult ra = run_step(pr, a, s, 1), rb = run_step(pr, b, s, 0);
        if (ra.grad_norm != rb.grad_norm) return failure("norms differ with the thread count");
      }
      for (size_t i = 0; i < a.items.size(); ++i) {
        std::vector<float> pa = download(a.items[i].param), pb = download(b.items[i].param);
        if (pa.size() && std::memcmp(pa.data(), pb.data(), pa.size() * 4) != 0) return failure(str("item ", i, " differs"));
      }
    }
    CaseResult r;
    r.detail = str("pool threads=", ThreadPool::global().num_threads());
    return r;
  });

  // clip_grad_norm scales the gradients in place (torch), and leaves them when under the norm.
  add("clip_grad_norm in place", [](Context& ctx) {
    auto rng = make_rng(ctx, "clip");
    for (double max_norm : {0.3, 1e9}) {
      std::vector<std::vector<float>> gs;
      std::vector<Item> items;
      double ss = 0;
      for (int i = 0; i < 5; ++i) {
        std::vector<float> g(static_cast<size_t>(3 + 50 * i));
        fill_uniform(rng, g.data(), g.size(), -1, 1);
        for (float x : g) ss += double(x) * x;
        Item it;
        it.grad = upload(g, {static_cast<int64_t>(g.size())}, Device::cpu());
        items.push_back(it);
        gs.push_back(g);
      }
      StepResult r = optim::clip_grad_norm(items, max_norm);
      const double norm = std::sqrt(ss);
      if (std::fabs(r.grad_norm - norm) > 1e-12 * norm) return failure(str("norm ", r.grad_norm, " vs ", norm));
      const double scale = std::min(1.0, max_norm / (norm + 1e-6));
      for (size_t i = 0; i < items.size(); ++i) {
        std::vector<float> g = download(items[i].grad);
        std::vector<double> ref(gs[i].begin(), gs[i].end());
        for (double& x : ref) x *= scale;
        // One rounding of g·scale to float32.
        Compare c = compare(g.data(), ref.data(), g.size(), 0, 1.0 / 16777216.0);
        if (!c.ok) return failure(str("max_norm=", max_norm, " item ", i, ": ", c.detail));
        if (scale == 1.0 && std::memcmp(g.data(), gs[i].data(), g.size() * 4) != 0) return failure("scaled below the norm");
      }
    }
    return CaseResult{};
  });

  // Argument errors with codes.
  add("errors", [mom](Context&) {
    auto expect = [](Code code, const std::function<void()>& f, const char* what) -> std::string {
      try {
        f();
      } catch (const Error& e) {
        if (e.code() == code) return "";
        return str(what, ": code ", code_name(e.code()), " (", e.what(), ")");
      }
      return str(what, ": no error");
    };
    auto base = [&]() {
      std::vector<Item> v(1);
      v[0].param = Tensor::empty({4, 3}, DType::F32, Device::cpu());
      v[0].grad = Tensor::empty({4, 3}, DType::F32, Device::cpu());
      v[0].state1 = Tensor::empty({4, 3}, DType::F32, Device::cpu());
      std::memset(v[0].grad.data(), 0, 48);
      v[0].lr = 0.1;
      return v;
    };
    StepOptions o;
    std::string e;
    e = expect(Code::ShapeMismatch, [&] { auto v = base(); v[0].grad = Tensor::empty({5}, DType::F32, Device::cpu()); optim::step(v, mom, o); }, "grad size");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); v[0].state1 = Tensor(); optim::step(v, mom, o); }, "missing state");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); v[0].grad = Tensor::empty({4, 3}, DType::I32, Device::cpu()); optim::step(v, mom, o); }, "dtype");
    if (e.empty()) e = expect(Code::OutOfRange, [&] { auto v = base(); v[0].sparse = true; v[0].rows = {0, 4}; optim::step(v, mom, o); }, "row range");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); v[0].sparse = true; v[0].rows = {2, 1}; optim::step(v, mom, o); }, "row order");
    if (e.empty()) e = expect(Code::OutOfRange, [&] { auto v = base(); v[0].clip_group = 0; optim::step(v, mom, o); }, "clip group");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); v[0].step = 0; optim::step(v, mom, o); }, "step 0");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); Hyper h = mom; h.dampening = 0.1; h.nesterov = true; optim::step(v, h, o); }, "nesterov");
    if (e.empty()) e = expect(Code::InvalidArgument, [&] { auto v = base(); StepOptions oo; oo.clip_norms = {0}; optim::step(v, mom, oo); }, "clip norm 0");
    if (!e.empty()) return failure(e);
    return CaseResult{};
  });

  // CUDA against the CPU: bitwise updates, norms within 1e-12.
  for (auto& [name, h] : hypers) {
    Hyper hh = h;
    add(name + " cuda vs cpu", [hh, name](Context& ctx) {
      auto rng = make_rng(ctx, name + "cuda");
      Problem pr = make_problem(rng, hh, 10, 3, true, true);
      DevItems a = make_items(pr, Device::cpu()), b = make_items(pr, Device::cuda(0));
      for (int s = 0; s < 3; ++s) {
        StepResult ra = run_step(pr, a, s), rb = run_step(pr, b, s);
        if (ra.skipped != rb.skipped) return failure("skip decisions differ");
        if (std::fabs(ra.grad_norm - rb.grad_norm) > 1e-12 * ra.grad_norm) return failure(str("norm ", rb.grad_norm, " vs ", ra.grad_norm));
        // Clip scales come from the norms; they may differ in the last bits, which then may move p by
        // an fp32 ulp: compare bitwise only when the scales agree exactly.
        if (ra.group_scales != rb.group_scales) return failure("clip scales differ (norm rounding)");
      }
      for (size_t i = 0; i < a.items.size(); ++i) {
        for (int k = 0; k < 3; ++k) {
          const Tensor& ta = k == 0 ? a.items[i].param : k == 1 ? a.items[i].state1 : a.items[i].state2;
          const Tensor& tb = k == 0 ? b.items[i].param : k == 1 ? b.items[i].state1 : b.items[i].state2;
          if (!ta.defined()) continue;
          std::vector<float> x = download(ta), y = download(tb);
          if (x.size() && std::memcmp(x.data(), y.data(), x.size() * 4) != 0) {
            Compare c = compare(y.data(), x.data(), x.size(), 0, 0);
            return failure(str("item ", i, " tensor ", k, " differs: ", c.detail));
          }
        }
      }
      // The finite check on the GPU.
      pr.items[2].g[0][0] = std::numeric_limits<float>::quiet_NaN();
      DevItems c = make_items(pr, Device::cuda(0));
      StepResult rc = run_step(pr, c, 0);
      if (!rc.skipped || rc.nonfinite_item != 2) return failure("NaN not detected on CUDA");
      if (download(c.items[2].param) != pr.items[2].p) return failure("CUDA wrote a skipped step");
      return CaseResult{};
    }, true);
  }
  return v;
}

}  // namespace

FC_REGISTER_CASES(optim, make_cases);

}  // namespace test
}  // namespace fc
