// @file optim.cc
// @brief optimStep: one fused optimizer step (or a clip-only pass) over many tensors as ONE job on
// their device's queue (facecuda/optim.h has the semantics). lib/optim.ts validates and calls it.
//
//   optimStep(config, ...tensors) → Promise<{ skipped, nonFiniteItem, gradNorm, groupNorms,
//                                             groupScales, itemSumSq }>
//   config = {
//     algo: 0 SGD | 1 AdamW | 2 clip only (clip_grad_norm with clipNorms[0], gradients scaled in place),
//     momentum, dampening, nesterov, beta1, beta2, eps, threads,
//     clipNorms: Float64Array (max norm per clip group),
//     items: Float64Array of 8 numbers per item: [param, grad, state1, state2, lr, weightDecay, step,
//            clipGroup], where param..state2 index the tensor arguments (−1: none),
//     sparse: [{ item, rows: Int32Array }] (strictly ascending rows; the listed rows only),
//   }
// The tensors are passed as arguments (not in an array) so that they unwrap like every other tensor
// argument of the binding. The engine tensors are resolved on the queue thread (a CUDA tensor's
// storage exists only once its queued creation ran).
#include <cmath>
#include <cstring>

#include "addon.h"
#include "facecuda/optim.h"

namespace fcb {

namespace {

constexpr size_t kMetaPerItem = 8;

double cfg_number(const Napi::Object& o, const char* key, double def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("Expected a number for config.") + key);
  return v.As<Napi::Number>().DoubleValue();
}

bool cfg_bool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("Expected a boolean for config.") + key);
  return v.As<Napi::Boolean>().Value();
}

std::vector<double> cfg_f64(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw Napi::TypeError::New(o.Env(), std::string("Expected a Float64Array for config.") + key);
  }
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  std::vector<double> out(a.ElementLength());
  if (!out.empty()) std::memcpy(out.data(), a.Data(), out.size() * sizeof(double));
  return out;
}

Napi::Float64Array to_f64(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(double));
  return a;
}

int64_t meta_index(double d, size_t num_tensors, const char* what) {
  FC_CHECK(d == std::floor(d) && d >= -1 && d < static_cast<double>(num_tensors), OutOfRange, "Expected a tensor index in [-1, ",
           num_tensors, ") for ", what, " but received ", d);
  return static_cast<int64_t>(d);
}

Napi::Value OptimStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "Expected a config object for optimStep");
    Napi::Object cfg = info[0].As<Napi::Object>();
    const int algo = static_cast<int>(cfg_number(cfg, "algo", 0));
    FC_CHECK(algo >= 0 && algo <= 2, InvalidArgument, "Expected 0, 1 or 2 for config.algo but received ", algo);
    fc::optim::Hyper hyper;
    hyper.algo = static_cast<fc::optim::Algo>(algo);
    hyper.momentum = cfg_number(cfg, "momentum", 0);
    hyper.dampening = cfg_number(cfg, "dampening", 0);
    hyper.nesterov = cfg_bool(cfg, "nesterov", false);
    hyper.beta1 = cfg_number(cfg, "beta1", 0.9);
    hyper.beta2 = cfg_number(cfg, "beta2", 0.999);
    hyper.eps = cfg_number(cfg, "eps", 1e-8);
    fc::optim::StepOptions options;
    options.max_threads = static_cast<int>(cfg_number(cfg, "threads", 0));
    options.clip_norms = cfg_f64(cfg, "clipNorms");
    options.grad_scale = cfg_number(cfg, "gradScale", 1.0);
    FC_CHECK(std::isfinite(options.grad_scale) && options.grad_scale > 0, OutOfRange,
             "Expected a finite gradScale > 0 but received ", options.grad_scale);
    const std::vector<double> meta = cfg_f64(cfg, "items");
    FC_CHECK(meta.size() % kMetaPerItem == 0, InvalidArgument, "Expected ", kMetaPerItem,
             " numbers per item in config.items but received ", meta.size());
    const size_t n = meta.size() / kMetaPerItem;
    // algo 2: clip_grad_norm with one max norm, or with none the unscale pass (g ← g·gradScale).
    if (algo == 2) FC_CHECK(options.clip_norms.size() <= 1, InvalidArgument, "a clip-only pass takes at most one max norm");

    // The tensor arguments.
    const size_t num_tensors = info.Length() > 0 ? info.Length() - 1 : 0;
    std::vector<TensorRef> refs;
    refs.reserve(num_tensors);
    for (size_t t = 0; t < num_tensors; ++t) refs.push_back(arg_tensor(info, t + 1, "tensor"));
    fc::Device device = refs.empty() ? fc::Device::cpu() : refs[0].device;
    for (const TensorRef& r : refs) {
      FC_CHECK(r.device == device, InvalidArgument, "Expected every tensor of one optimizer step on ", device.str(),
               " but received one on ", r.device.str());
    }

    // Items: tensor indices now, engine tensors on the queue thread.
    struct Spec {
      int64_t idx[4];
      fc::optim::Item item;
    };
    auto specs = std::make_shared<std::vector<Spec>>(n);
    for (size_t i = 0; i < n; ++i) {
      const double* m = &meta[i * kMetaPerItem];
      Spec& s = (*specs)[i];
      s.idx[0] = meta_index(m[0], num_tensors, "param");
      s.idx[1] = meta_index(m[1], num_tensors, "grad");
      s.idx[2] = meta_index(m[2], num_tensors, "state1");
      s.idx[3] = meta_index(m[3], num_tensors, "state2");
      FC_CHECK(s.idx[1] >= 0, InvalidArgument, "item ", i, " has no gradient tensor");
      FC_CHECK(algo == 2 || s.idx[0] >= 0, InvalidArgument, "item ", i, " has no parameter tensor");
      s.item.lr = m[4];
      s.item.weight_decay = m[5];
      FC_CHECK(m[6] == std::floor(m[6]) && std::fabs(m[6]) < 9007199254740992.0, InvalidArgument,
               "Expected an integer step for item ", i, " but received ", m[6]);
      s.item.step = static_cast<int64_t>(m[6]);
      FC_CHECK(m[7] == std::floor(m[7]) && m[7] >= -1 && m[7] < 2147483647.0, InvalidArgument,
               "Expected a clip group index for item ", i, " but received ", m[7]);
      s.item.clip_group = static_cast<int>(m[7]);
    }
    Napi::Value sp = cfg.Get("sparse");
    if (!sp.IsUndefined() && !sp.IsNull()) {
      if (!sp.IsArray()) throw Napi::TypeError::New(env, "Expected an array for config.sparse");
      Napi::Array a = sp.As<Napi::Array>();
      for (uint32_t k = 0; k < a.Length(); ++k) {
        Napi::Value e = a.Get(k);
        if (!e.IsObject()) throw Napi::TypeError::New(env, "Expected { item, rows } entries in config.sparse");
        Napi::Object o = e.As<Napi::Object>();
        const double item = cfg_number(o, "item", -1);
        FC_CHECK(item == std::floor(item) && item >= 0 && item < static_cast<double>(n), OutOfRange,
                 "Expected an item index in [0, ", n, ") in config.sparse but received ", item);
        Napi::Value rv = o.Get("rows");
        if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
          throw Napi::TypeError::New(env, "Expected an Int32Array for config.sparse[].rows");
        }
        Napi::Int32Array ra = rv.As<Napi::Int32Array>();
        Spec& s = (*specs)[static_cast<size_t>(item)];
        FC_CHECK(!s.item.sparse, InvalidArgument, "item ", item, " is listed twice in config.sparse");
        s.item.sparse = true;
        s.item.rows.assign(ra.Data(), ra.Data() + ra.ElementLength());
      }
    }

    auto slots = std::make_shared<std::vector<std::shared_ptr<Slot>>>();
    for (const TensorRef& r : refs) slots->push_back(r.slot);
    auto result = std::make_shared<fc::optim::StepResult>();
    auto job = std::make_unique<Job>(env);
    job->work = [specs, slots, hyper, options, result, algo]() {
      std::vector<fc::optim::Item> items;
      items.reserve(specs->size());
      for (Spec& s : *specs) {
        fc::optim::Item it = s.item;  // copies the rows: the spec stays reusable
        fc::Tensor* dst[4] = {&it.param, &it.grad, &it.state1, &it.state2};
        for (int k = 0; k < 4; ++k) {
          if (s.idx[k] >= 0) *dst[k] = (*slots)[static_cast<size_t>(s.idx[k])]->get();
        }
        items.push_back(std::move(it));
      }
      if (algo == 2 && options.clip_norms.empty()) *result = fc::optim::scale_grads(items, options.grad_scale, options.max_threads);
      else if (algo == 2) *result = fc::optim::clip_grad_norm(items, options.clip_norms[0], options.max_threads);
      else *result = fc::optim::step(items, hyper, options);
    };
    job->build = [result](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("skipped", Napi::Boolean::New(env, result->skipped));
      o.Set("nonFiniteItem", Napi::Number::New(env, static_cast<double>(result->nonfinite_item)));
      o.Set("gradNorm", Napi::Number::New(env, result->grad_norm));
      o.Set("groupNorms", to_f64(env, result->group_norms));
      o.Set("groupScales", to_f64(env, result->group_scales));
      o.Set("itemSumSq", to_f64(env, result->item_sumsq));
      return o;
    };
    return schedule(env, device, std::move(job));
  } catch (...) {
    rethrow_as_js(env);
  }
}

}  // namespace

void register_optim(Napi::Env env, Napi::Object exports) {
  exports.Set("optimStep", Napi::Function::New(env, OptimStep, "optimStep"));
}

}  // namespace fcb
