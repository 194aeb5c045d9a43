// @file model_cases.cc
// @brief fc::Model (facecuda/model.h) at the engine level: eval-mode BatchNorm folding and its cache
// invalidation (weights written through the mutable accessor, through a view held outside the
// model, through load_tensor, and running statistics moved by a training forward), gradients after
// a folded forward against the unfolded graph, and — when a CUDA device is usable — the CUDA
// executor against the CPU one on the same weights (training forward, input and parameter
// gradients, running statistics, folded eval forward).
//
// The graph: input [3, 9, 9] → conv 3×3 → BN → PReLU → conv 3×3 s2 → BN (+ conv 1×1 s2 → BN) → add →
// flatten → linear (bias) → BN1d: both foldable pair kinds (conv→BN2d, linear→BN1d with a bias).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/model.h"
#include "harness.h"

namespace fc {
namespace test {
namespace {

TensorDesc tdesc(const std::string& name, std::vector<int64_t> shape, InitDesc::Kind k, double a, double b,
                 bool buffer = false) {
  TensorDesc t;
  t.name = name;
  t.shape = std::move(shape);
  t.buffer = buffer;
  t.init.kind = k;
  t.init.a = a;
  t.init.b = b;
  return t;
}

struct Builder {
  ModelDesc d;
  int tensor(TensorDesc t) {
    d.tensors.push_back(std::move(t));
    return static_cast<int>(d.tensors.size()) - 1;
  }
  int node(NodeDesc n) {
    d.nodes.push_back(std::move(n));
    return static_cast<int>(d.nodes.size()) - 1;
  }
  int conv(const std::string& id, int from, int64_t in_c, int64_t out_c, int64_t k, int64_t s, int64_t p) {
    NodeDesc n;
    n.kind = NodeKind::Conv2d;
    n.id = id;
    n.inputs = {from};
    n.in_c = in_c;
    n.out_c = out_c;
    n.kernel = k;
    n.stride = s;
    n.padding = p;
    n.weight = tensor(tdesc(id + ".weight", {out_c, in_c, k, k}, InitDesc::Normal, 0, 0.3));
    return node(n);
  }
  int bn(const std::string& id, int from, int64_t c, bool one_d = false) {
    NodeDesc n;
    n.kind = one_d ? NodeKind::BatchNorm1d : NodeKind::BatchNorm2d;
    n.id = id;
    n.inputs = {from};
    n.features = c;
    n.weight = tensor(tdesc(id + ".weight", {c}, InitDesc::Uniform, 0.5, 1.5));
    n.bias = tensor(tdesc(id + ".bias", {c}, InitDesc::Uniform, -0.3, 0.3));
    // Non-trivial running statistics from the start (eval mode must not see 0/1).
    n.running_mean = tensor(tdesc(id + ".running_mean", {c}, InitDesc::Uniform, -0.2, 0.2, true));
    n.running_var = tensor(tdesc(id + ".running_var", {c}, InitDesc::Uniform, 0.5, 1.5, true));
    TensorDesc nbt = tdesc(id + ".num_batches_tracked", {}, InitDesc::Constant, 0, 0, true);
    nbt.dtype = DType::I64;
    n.num_batches_tracked = tensor(nbt);
    return node(n);
  }
};

ModelDesc graph() {
  Builder b;
  NodeDesc in;
  in.kind = NodeKind::Input;
  in.id = "input";
  in.channels = 3;
  in.height = 9;
  in.width = 9;
  int x = b.node(in);
  int c1 = b.conv("conv1", x, 3, 6, 3, 1, 1);
  int b1 = b.bn("bn1", c1, 6);
  NodeDesc pr;
  pr.kind = NodeKind::PReLU;
  pr.id = "prelu";
  pr.inputs = {b1};
  pr.channels = 6;
  pr.weight = b.tensor(tdesc("prelu.weight", {6}, InitDesc::Uniform, 0.1, 0.4));
  int p = b.node(pr);
  int c2 = b.conv("conv2", p, 6, 8, 3, 2, 1);
  int b2 = b.bn("bn2", c2, 8);
  int d0 = b.conv("downsample.0", x, 3, 8, 1, 2, 0);
  int d1 = b.bn("downsample.1", d0, 8);
  NodeDesc add;
  add.kind = NodeKind::Add;
  add.id = "add";
  add.inputs = {b2, d1};
  int a = b.node(add);
  NodeDesc fl;
  fl.kind = NodeKind::Flatten;
  fl.id = "flatten";
  fl.inputs = {a};
  int f = b.node(fl);
  NodeDesc fc;
  fc.kind = NodeKind::Linear;
  fc.id = "fc";
  fc.inputs = {f};
  fc.in_c = 8 * 5 * 5;
  fc.out_c = 7;
  fc.weight = b.tensor(tdesc("fc.weight", {7, 200}, InitDesc::Normal, 0, 0.1));
  fc.bias = b.tensor(tdesc("fc.bias", {7}, InitDesc::Uniform, -0.1, 0.1));
  int l = b.node(fc);
  b.d.output = b.bn("features", l, 7, true);
  return b.d;
}

Tensor random_tensor(std::mt19937_64& rng, const std::vector<int64_t>& shape, const Device& dev) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  fill_uniform(rng, t.data_as<float>(), static_cast<size_t>(t.numel()), -1.f, 1.f);
  return dev.is_cpu() ? t : t.to(dev);
}

std::vector<float> host(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) t.copy_to_host(v.data());
  return v;
}

// max |a − b| / max |b|
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 1e-30, e = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(b[i])));
    e = std::max(e, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return a.size() == b.size() ? e / m : INFINITY;
}

struct Check {
  std::string failures;
  double worst = 0;
  void near(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double tol) {
    double e = max_rel(got, want);
    worst = std::max(worst, e);
    if (!(e <= tol)) failures += str(what, ": max rel error ", e, " > ", tol, "; ");
  }
  void expect(bool ok, const std::string& what) {
    if (!ok) failures += what + "; ";
  }
  CaseResult result() const {
    CaseResult r;
    r.status = failures.empty() ? CaseResult::Pass : CaseResult::Fail;
    r.detail = failures.empty() ? str("max rel err ", worst) : failures;
    r.figures.push_back({"max_rel_err", worst});
    return r;
  }
};

// Eval folding vs the unfolded executor on the CPU, and every way the cache must be rebuilt.
// Tolerance 1e-5 relative: folding changes only the rounding of w·s and of the bias (one float
// rounding each, on a handful of layers).
class FoldCase : public OpCase {
 public:
  std::string op() const override { return "model_fold"; }
  std::string params() const override { return "conv→BN, linear→BN1d; view, accessor, load, train"; }
  CaseResult test(Context& ctx) override {
    auto rng = make_rng(ctx, op());
    ModelOptions on, off;
    on.seed = off.seed = 5;
    off.fold_batch_norm = false;
    Model a(graph(), Device::cpu(), on), b(graph(), Device::cpu(), off);
    a.set_training(false);
    b.set_training(false);
    Tensor x = random_tensor(rng, {3, 3, 9, 9}, Device::cpu());
    Tensor dy = random_tensor(rng, {3, 7}, Device::cpu());
    Check c;
    auto compare = [&](const std::string& what) {
      c.near(what + " forward", host(a.forward(x)), host(b.forward(x)), 1e-5);
    };
    compare("initial");
    // Gradients after a folded forward are those of the unfolded graph.
    a.zero_grad();
    b.zero_grad();
    c.near("dx after a folded forward", host(a.backward(dy, true)), host(b.backward(dy, true)), 1e-5);
    for (size_t t = 0; t < a.num_tensors(); ++t) {
      if (!a.grad(t).defined()) continue;
      c.near("grad " + a.tensor_desc(t).name, host(a.grad(t)), host(b.grad(t)), 1e-4);
    }
    // A view held outside the model, written after the cache was built.
    const int w1 = a.index_of("conv1.weight");
    Tensor view = a.tensor_view(static_cast<size_t>(w1));  // shares storage (use_count 2)
    compare("cached");
    std::vector<float> nw(static_cast<size_t>(view.numel()));
    fill_uniform(rng, nw.data(), nw.size(), -0.5f, 0.5f);
    std::memcpy(view.data(), nw.data(), nw.size() * sizeof(float));
    b.load_tensor(static_cast<size_t>(w1), nw.data(), nw.size() * sizeof(float));
    compare("after writing through an outside view");
    view = Tensor();
    // The mutable accessor.
    const int rv = a.index_of("bn2.running_var");
    std::vector<float> nv(8);
    fill_uniform(rng, nv.data(), nv.size(), 0.2f, 2.f);
    compare("re-cached");
    std::memcpy(a.tensor(static_cast<size_t>(rv)).data(), nv.data(), nv.size() * sizeof(float));
    b.load_tensor(static_cast<size_t>(rv), nv.data(), nv.size() * sizeof(float));
    compare("after writing through tensor(i)");
    // load_tensor.
    const int fw = a.index_of("features.weight");
    std::vector<float> nf(7);
    fill_uniform(rng, nf.data(), nf.size(), 0.5f, 1.5f);
    a.load_tensor(static_cast<size_t>(fw), nf.data(), nf.size() * sizeof(float));
    b.load_tensor(static_cast<size_t>(fw), nf.data(), nf.size() * sizeof(float));
    compare("after load_tensor");
    // A training forward moves the running statistics.
    a.set_training(true);
    b.set_training(true);
    a.forward(x);
    b.forward(x);
    a.set_training(false);
    b.set_training(false);
    compare("after a training step");
    c.expect(*a.tensor_view(static_cast<size_t>(a.index_of("bn1.num_batches_tracked"))).data_as<int64_t>() == 1,
             "num_batches_tracked counts the training forward");
    return c.result();
  }
};

// CUDA executor vs CPU executor, same weights. fp32 tolerances: different summation orders through
// five layers (1e-4 outputs, 1e-3 gradients, which sum over the batch and the maps).
class CudaModelCase : public OpCase {
 public:
  std::string op() const override { return "model_cuda"; }
  std::string params() const override { return "CUDA vs CPU: train forward/backward, stats, folded eval"; }
  bool uses_cuda() const override { return true; }
  CaseResult test(Context& ctx) override {
    if (!ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    auto rng = make_rng(ctx, op());
    const Device gpu = Device::cuda(0);
    ModelOptions o;
    o.seed = 9;
    Model cpu(graph(), Device::cpu(), o), dev(graph(), gpu, o);
    Check c;
    for (size_t t = 0; t < cpu.num_tensors(); ++t) {
      c.expect(host(cpu.tensor_view(t)) == host(dev.tensor_view(t)) || cpu.tensor_desc(t).dtype == DType::I64,
               "same init on both devices: " + cpu.tensor_desc(t).name);
    }
    Tensor x = random_tensor(rng, {4, 3, 9, 9}, Device::cpu());
    Tensor dy = random_tensor(rng, {4, 7}, Device::cpu());
    c.near("train forward", host(dev.forward(x.to(gpu))), host(cpu.forward(x)), 1e-4);
    c.near("dx", host(dev.backward(dy.to(gpu), true)), host(cpu.backward(dy, true)), 1e-3);
    for (size_t t = 0; t < cpu.num_tensors(); ++t) {
      if (cpu.grad(t).defined()) c.near("grad " + cpu.tensor_desc(t).name, host(dev.grad(t)), host(cpu.grad(t)), 1e-3);
      if (cpu.tensor_desc(t).buffer && cpu.tensor_desc(t).dtype == DType::F32) {
        c.near("stat " + cpu.tensor_desc(t).name, host(dev.tensor_view(t)), host(cpu.tensor_view(t)), 1e-5);
      }
    }
    cpu.set_training(false);
    dev.set_training(false);
    c.near("folded eval forward", host(dev.forward(x.to(gpu))), host(cpu.forward(x)), 1e-4);
    return c.result();
  }
};

std::vector<std::unique_ptr<OpCase>> cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  v.emplace_back(new FoldCase());
  v.emplace_back(new CudaModelCase());
  return v;
}

}  // namespace
FC_REGISTER_CASES(model, cases);
}  // namespace test
}  // namespace fc
