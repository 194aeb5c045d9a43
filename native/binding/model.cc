// @file model.cc
// @brief NativeModel: the JS handle of an fc::Model (facecuda/model.h). Every call is one job on the
// device's queue (a whole forward or backward is one job, not one per layer); the tensors that
// parameters() returns share the model's own storage, so an optimizer updates them in place.
//
// Construction: the description is parsed and validated on the JS thread (argument errors throw
// synchronously); allocation and the parameter init run as a task on the device's queue, and a failure
// there is reported by the first call that uses the model. A CUDA device throws NOT_IMPLEMENTED for
// now (the executor is CPU only).
//
// The TS layer (lib/backbones/model.ts) builds the description from an arch and validates inputs
// first; the checks here are cheap re-checks so that a direct call can never crash the process.
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "addon.h"
#include "holder.h"
#include "facecuda/model.h"

namespace fcb {

namespace {

const napi_type_tag kModelTag = {0x6c3f9e8a44d56b72ULL, 0xaf8b7c6e5d4c3b2aULL};

// ---- description parsing (missing key → default; wrong type → TypeError naming the key)

double get_number(const Napi::Object& o, const char* key, double def, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) {
    throw Napi::TypeError::New(o.Env(), "Expected a finite number for " + where + "." + key);
  }
  return v.As<Napi::Number>().DoubleValue();
}

int64_t get_integer(const Napi::Object& o, const char* key, int64_t def, const std::string& where) {
  double d = get_number(o, key, static_cast<double>(def), where);
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0) {
    throw Napi::TypeError::New(o.Env(), "Expected an integer for " + where + "." + key);
  }
  return static_cast<int64_t>(d);
}

bool get_bool(const Napi::Object& o, const char* key, bool def, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), "Expected a boolean for " + where + "." + key);
  return v.As<Napi::Boolean>().Value();
}

std::string get_string(const Napi::Object& o, const char* key, const std::string& def, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), "Expected a string for " + where + "." + key);
  return v.As<Napi::String>().Utf8Value();
}

Napi::Array get_array(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) throw Napi::TypeError::New(o.Env(), "Expected an array for " + where + "." + key);
  return v.As<Napi::Array>();
}

Napi::Object as_object(const Napi::Value& v, const std::string& where) {
  if (!v.IsObject() || v.IsArray()) throw Napi::TypeError::New(v.Env(), "Expected an object for " + where);
  return v.As<Napi::Object>();
}

std::vector<int64_t> get_ints(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Array a = get_array(o, key, where);
  std::vector<int64_t> r;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != std::floor(d) || d > 9007199254740991.0) {
      throw Napi::TypeError::New(o.Env(), "Expected non-negative integers for " + where + "." + key);
    }
    r.push_back(static_cast<int64_t>(d));
  }
  return r;
}

// { tensors: [{ name, shape, dtype, buffer, trainable, init: { kind, a, b } }],
//   nodes: [{ kind, id, inputs, channels, height, width, inC, outC, kernel, stride, padding, groups,
//             features, eps, momentum, frozenWeight, p, weight, bias, runningMean, runningVar,
//             numBatchesTracked }],
//   output }
fc::ModelDesc parse_desc(const Napi::Object& o) {
  fc::ModelDesc d;
  Napi::Array ts = get_array(o, "tensors", "description");
  for (uint32_t k = 0; k < ts.Length(); ++k) {
    const std::string where = "tensors[" + std::to_string(k) + "]";
    Napi::Object t = as_object(ts.Get(k), where);
    fc::TensorDesc td;
    td.name = get_string(t, "name", "", where);
    td.shape = get_ints(t, "shape", where);
    std::string dt = get_string(t, "dtype", "float32", where);
    FC_CHECK(dt == "float32" || dt == "int64", InvalidArgument, "Expected 'float32' or 'int64' for ", where,
             ".dtype but received '", dt, "'");
    td.dtype = dt == "float32" ? fc::DType::F32 : fc::DType::I64;
    td.buffer = get_bool(t, "buffer", false, where);
    td.trainable = get_bool(t, "trainable", !td.buffer, where);
    Napi::Value iv = t.Get("init");
    if (!iv.IsUndefined()) {
      Napi::Object init = as_object(iv, where + ".init");
      std::string kind = get_string(init, "kind", "constant", where + ".init");
      if (kind == "constant") td.init.kind = fc::InitDesc::Constant;
      else if (kind == "normal") td.init.kind = fc::InitDesc::Normal;
      else if (kind == "uniform") td.init.kind = fc::InitDesc::Uniform;
      else fc::fail(fc::Code::InvalidArgument, fc::str("Expected 'constant', 'normal' or 'uniform' for ", where,
                                                       ".init.kind but received '", kind, "'"));
      td.init.a = get_number(init, "a", 0, where + ".init");
      td.init.b = get_number(init, "b", 0, where + ".init");
    }
    d.tensors.push_back(std::move(td));
  }
  Napi::Array ns = get_array(o, "nodes", "description");
  for (uint32_t k = 0; k < ns.Length(); ++k) {
    const std::string where = "nodes[" + std::to_string(k) + "]";
    Napi::Object n = as_object(ns.Get(k), where);
    fc::NodeDesc nd;
    std::string kind = get_string(n, "kind", "", where);
    FC_CHECK(fc::node_kind_from_name(kind, &nd.kind, &nd.act), InvalidArgument, "Expected a node kind for ", where,
             ".kind but received '", kind, "'");
    if (kind == "hardsigmoid") {
      const std::string form = get_string(n, "form", "torch", where);
      FC_CHECK(form == "torch" || form == "keras", InvalidArgument, "Expected 'torch' or 'keras' for ", where,
               ".form but received '", form, "'");
      nd.act = form == "torch" ? fc::nn::Activation::kHardSigmoid : fc::nn::Activation::kHardSigmoidKeras;
    }
    nd.id = get_string(n, "id", where, where);
    for (int64_t v : get_ints(n, "inputs", where)) nd.inputs.push_back(static_cast<int>(std::min<int64_t>(v, 1 << 30)));
    nd.channels = get_integer(n, "channels", 0, where);
    nd.height = get_integer(n, "height", 0, where);
    nd.width = get_integer(n, "width", 0, where);
    nd.in_c = get_integer(n, "inC", 0, where);
    nd.out_c = get_integer(n, "outC", 0, where);
    nd.kernel = get_integer(n, "kernel", 1, where);
    nd.stride = get_integer(n, "stride", 1, where);
    nd.padding = get_integer(n, "padding", 0, where);
    nd.groups = get_integer(n, "groups", 1, where);
    nd.features = get_integer(n, "features", 0, where);
    nd.eps = get_number(n, "eps", 1e-5, where);
    nd.momentum = get_number(n, "momentum", 0.1, where);
    nd.frozen_weight = get_bool(n, "frozenWeight", false, where);
    nd.p = get_number(n, "p", 0, where);
    Napi::Value pads = n.Get("asymmetricPadding");
    if (!pads.IsUndefined()) {
      const std::vector<int64_t> pv = get_ints(n, "asymmetricPadding", where);
      FC_CHECK(pv.size() == 4, InvalidArgument, "Expected 4 values [top, bottom, left, right] for ", where,
               ".asymmetricPadding but received ", pv.size());
      nd.asymmetric = true;
      nd.pad_t = pv[0];
      nd.pad_b = pv[1];
      nd.pad_l = pv[2];
      nd.pad_r = pv[3];
    }
    nd.channels_layout = get_string(n, "layout", "last", where) == "channels";
    nd.dim = get_integer(n, "dim", 0, where);
    nd.heads = get_integer(n, "heads", 0, where);
    nd.count = get_integer(n, "count", 0, where);
    nd.tokens = get_integer(n, "tokens", 0, where);
    nd.hidden = get_integer(n, "hiddenDim", 0, where);
    nd.scale = get_number(n, "scale", 0, where);
    nd.temperature = get_number(n, "temperature", 10000, where);
    const std::string mode = get_string(n, "mode", "token", where);
    FC_CHECK(mode == "token" || mode == "mean" || mode == "flatten", InvalidArgument,
             "Expected 'token', 'mean' or 'flatten' for ", where, ".mode but received '", mode, "'");
    nd.pool_mode = mode == "token" ? 0 : mode == "mean" ? 1 : 2;
    nd.index = get_integer(n, "index", 0, where);
    nd.start = get_integer(n, "start", 0, where);
    nd.length = get_integer(n, "length", 0, where);
    nd.ratio = get_number(n, "ratio", 0, where);
    auto idx = [&](const char* key) { return static_cast<int>(std::max<int64_t>(-1, std::min<int64_t>(get_integer(n, key, -1, where), 1 << 30))); };
    nd.weight = idx("weight");
    nd.bias = idx("bias");
    nd.running_mean = idx("runningMean");
    nd.running_var = idx("runningVar");
    nd.num_batches_tracked = idx("numBatchesTracked");
    d.nodes.push_back(std::move(nd));
  }
  d.output = static_cast<int>(std::max<int64_t>(-1, std::min<int64_t>(get_integer(o, "output", -1, "description"), 1 << 30)));
  return d;
}


class NativeModel : public Napi::ObjectWrap<NativeModel>, private HeldObject<fc::Model> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::SetParameter>("setParameter"),
                        InstanceMethod<&NativeModel::GetParameter>("getParameter"),
                        InstanceMethod<&NativeModel::Parameters>("parameters"),
                        InstanceMethod<&NativeModel::Forward>("forward"),
                        InstanceMethod<&NativeModel::Backward>("backward"),
                        InstanceMethod<&NativeModel::ZeroGrad>("zeroGrad"),
                        InstanceMethod<&NativeModel::SetTraining>("setTraining"),
                        InstanceMethod<&NativeModel::State>("state"),
                        InstanceMethod<&NativeModel::SetStep>("setStep"),
                        InstanceMethod<&NativeModel::Dispose>("dispose")});
  }

  // new NativeModel(description, { device, seed, threads, precision, foldBatchNorm })
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info), HeldObject("model") {
    Napi::Env env = info.Env();
    try {
      fc::ModelDesc desc = parse_desc(as_object(info[0], "description"));
      Napi::Object o = info[1].IsUndefined() ? Napi::Object::New(env) : as_object(info[1], "options");
      fc::ModelOptions mo;
      int64_t seed = get_integer(o, "seed", 0, "options");
      FC_CHECK(seed >= 0, InvalidArgument, "Expected a non-negative integer for seed but received ", seed);
      mo.seed = static_cast<uint64_t>(seed);
      mo.max_threads = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(get_integer(o, "threads", 0, "options"), 1 << 20)));
      mo.precision = parse_precision(get_string(o, "precision", "fp32", "options"));
      mo.fold_batch_norm = get_bool(o, "foldBatchNorm", true, "options");
      device_ = fc::parse_device(get_string(o, "device", "cpu", "options"));
      fc::Model::validate(desc);
      for (size_t t = 0; t < desc.tensors.size(); ++t) {
        names_.emplace(desc.tensors[t].name, static_cast<int>(t));
        specs_.push_back({desc.tensors[t].shape, desc.tensors[t].dtype});
      }
      holder_ = std::make_shared<H>();
      auto h = holder_;
      auto dptr = std::make_shared<fc::ModelDesc>(std::move(desc));
      fc::Device dev = device_;
      post(device_, [h, dptr, dev, mo]() {
        try {
          h->obj = std::make_unique<fc::Model>(std::move(*dptr), dev, mo);
        } catch (...) {
          h->error = std::current_exception();
        }
      });
      info.This().As<Napi::Object>().TypeTag(&kModelTag);
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  ~NativeModel() override { release(); }

 private:
  struct Spec {
    std::vector<int64_t> shape;
    fc::DType dtype;
  };


  // A tensor index from a name or an index argument.
  int arg_index(const Napi::CallbackInfo& info, size_t i) {
    if (info[i].IsString()) {
      std::string name = info[i].As<Napi::String>().Utf8Value();
      auto it = names_.find(name);
      FC_CHECK(it != names_.end(), InvalidArgument, "the model has no tensor named '", name, "'");
      return it->second;
    }
    double d = arg_number(info, i, "index");
    FC_CHECK(d >= 0 && d == std::floor(d) && d < static_cast<double>(specs_.size()), OutOfRange, "Expected a tensor index in [0, ",
             specs_.size(), ") but received ", d);
    return static_cast<int>(d);
  }

  static Napi::Value share(Napi::Env env, const std::shared_ptr<Slot>& s, const fc::Device& dev) {
    return HeldObject::share(env, s, dev, env.Null());
  }

  // setParameter(nameOrIndex, Float32Array | BigInt64Array | NativeTensor on any device): copies into the model's tensor.
  Napi::Value SetParameter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    int index = 0;
    auto host = std::make_shared<std::vector<uint8_t>>();
    std::shared_ptr<Slot> src;
    try {
      index = arg_index(info, 0);
      const Spec& sp = specs_[index];
      int64_t n = 1;
      for (int64_t s : sp.shape) n *= s;
      if (info[1].IsTypedArray()) {
        Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
        bool ok = sp.dtype == fc::DType::F32 ? ta.TypedArrayType() == napi_float32_array
                                             : ta.TypedArrayType() == napi_bigint64_array;
        if (!ok) {
          throw Napi::TypeError::New(env, std::string("Expected a ") + (sp.dtype == fc::DType::F32 ? "Float32Array" : "BigInt64Array") +
                                              " for the value");
        }
        FC_CHECK(static_cast<int64_t>(ta.ElementLength()) == n, ShapeMismatch, "Expected ", n, " values for shape ",
                 fc::shape_str(sp.shape), " but received ", ta.ElementLength());
        host->resize(ta.ByteLength());
        if (!host->empty()) std::memcpy(host->data(), static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), host->size());
      } else {
        TensorRef t = arg_tensor(info, 1, "value");
        FC_CHECK(t.dtype == sp.dtype, InvalidArgument, "Expected a ", fc::dtype_name(sp.dtype), " tensor but received ",
                 fc::dtype_name(t.dtype));
        FC_CHECK(t.shape == sp.shape, ShapeMismatch, "Expected a tensor of shape ", fc::shape_str(sp.shape), " but received ",
                 fc::shape_str(t.shape));
        // Any device: load_tensor copies across devices (a checkpoint read on the host, a CUDA model).
        src = t.slot;
        host.reset();
      }
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    job->work = [h, index, host, src]() {
      fc::Model& m = h->get();
      if (host) m.load_tensor(static_cast<size_t>(index), host->data(), host->size());
      else m.load_tensor(static_cast<size_t>(index), src->get());
    };
    return schedule(env, device_, std::move(job));
  }

  // getParameter(nameOrIndex) → Float32Array | BigInt64Array (a copy)
  Napi::Value GetParameter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    int index = 0;
    try {
      index = arg_index(info, 0);
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<std::vector<uint8_t>>();
    bool i64 = specs_[index].dtype == fc::DType::I64;
    auto job = std::make_unique<Job>(env);
    job->work = [h, index, out]() {
      const fc::Tensor& t = h->get().tensor_view(static_cast<size_t>(index));
      out->resize(t.nbytes());
      if (!out->empty()) t.copy_to_host(out->data());
    };
    job->build = [out, i64](Napi::Env env) -> Napi::Value {
      size_t n = out->size() / (i64 ? 8 : 4);
      if (i64) {
        Napi::BigInt64Array a = Napi::BigInt64Array::New(env, n);
        if (n) std::memcpy(a.Data(), out->data(), out->size());
        return a;
      }
      Napi::Float32Array a = Napi::Float32Array::New(env, n);
      if (n) std::memcpy(a.Data(), out->data(), out->size());
      return a;
    };
    return schedule(env, device_, std::move(job));
  }

  // parameters() → [{ value: NativeTensor, grad: NativeTensor | null }] in tensor order, sharing the
  // model's storage (buffers and frozen parameters have grad null).
  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    size_t count = specs_.size();
    auto vals = std::make_shared<std::vector<std::shared_ptr<Slot>>>();
    auto grads = std::make_shared<std::vector<std::shared_ptr<Slot>>>();
    for (size_t i = 0; i < count; ++i) {
      vals->push_back(std::make_shared<Slot>());
      grads->push_back(std::make_shared<Slot>());
    }
    auto job = std::make_unique<Job>(env);
    job->work = [h, vals, grads, count]() {
      fc::Model& m = h->get();
      for (size_t i = 0; i < count; ++i) {
        (*vals)[i]->tensor = m.tensor(i);
        (*grads)[i]->tensor = m.grad(i);
      }
    };
    fc::Device dev = device_;
    job->build = [vals, grads, count, dev](Napi::Env env) -> Napi::Value {
      Napi::Array a = Napi::Array::New(env, count);
      for (size_t i = 0; i < count; ++i) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("value", share(env, (*vals)[i], dev));
        o.Set("grad", share(env, (*grads)[i], dev));
        a.Set(static_cast<uint32_t>(i), o);
      }
      return a;
    };
    return schedule(env, device_, std::move(job));
  }

  // forward(x: NativeTensor) → NativeTensor (a new tensor)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x;
    try {
      x = arg_on_device(info, 0, "x");
      FC_CHECK(x.dtype == fc::DType::F32, InvalidArgument, "Expected a float32 x but received ", fc::dtype_name(x.dtype));
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto sx = x.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, out]() { out->tensor = h->get().forward(sx->get()); };
    fc::Device dev = device_;
    job->build = [out, dev](Napi::Env env) -> Napi::Value { return share(env, out, dev); };
    return schedule(env, device_, std::move(job));
  }

  // backward(dy: NativeTensor, wantInputGrad: boolean) → NativeTensor | null
  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef dy;
    bool want = false;
    try {
      dy = arg_on_device(info, 0, "gradOutput");
      want = arg_bool(info, 1, "wantInputGrad");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto sdy = dy.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sdy, out, want]() { out->tensor = h->get().backward(sdy->get(), want); };
    fc::Device dev = device_;
    job->build = [out, dev](Napi::Env env) -> Napi::Value { return share(env, out, dev); };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto job = std::make_unique<Job>(env);
    job->work = [h]() { h->get().zero_grad(); };
    return schedule(env, device_, std::move(job));
  }

  // setTraining(bool): queued, so it applies to the calls made after it.
  Napi::Value SetTraining(const Napi::CallbackInfo& info) { return set_training_call(info); }

  // state() → { step, training, capacity }
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    struct S {
      double step = 0, capacity = 0;
      bool training = true;
    };
    auto out = std::make_shared<S>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out]() {
      fc::Model& m = h->get();
      out->step = static_cast<double>(m.step());
      out->capacity = static_cast<double>(m.capacity());
      out->training = m.training();
    };
    job->build = [out](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("step", Napi::Number::New(env, out->step));
      o.Set("training", Napi::Boolean::New(env, out->training));
      o.Set("capacity", Napi::Number::New(env, out->capacity));
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  // setStep(n): Dropout's step counter (the next training forward uses n).
  Napi::Value SetStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    double step = 0;
    try {
      step = arg_number(info, 0, "step");
      FC_CHECK(step >= 0 && step == std::floor(step) && step <= 9007199254740991.0, OutOfRange,
               "Expected a non-negative integer for step but received ", step);
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    job->work = [h, step]() { h->get().set_step(static_cast<uint64_t>(step)); };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  std::unordered_map<std::string, int> names_;
  std::vector<Spec> specs_;
};

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) { exports.Set("NativeModel", NativeModel::Define(env)); }

}  // namespace fcb
