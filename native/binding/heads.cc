// @file heads.cc
// @brief NativeMarginHead and NativeCenterLoss: the JS handles of an fc::MarginHead and an
// fc::CenterLoss. Every call is a job on the device's queue; the gradients that backward() returns
// and the handles that parameters() returns share the head's own buffers (the gradients are
// overwritten by the next backward), so the training loop and the optimizer need no copies.
//
// Construction: a CPU head is built at once on the JS thread (argument errors throw synchronously);
// a CUDA head is built on its device's queue thread (the thread that owns the stream), after a
// synchronous CUDA_UNAVAILABLE check, and a failed construction is reported by the first call that
// uses the head.
//
// The TS layer (lib/heads.ts) validates every option and input first; the checks here are cheap
// re-checks of types and sizes so that a direct call can never crash the process.
#include <cmath>
#include <cstring>

#include "addon.h"
#include "holder.h"
#include "facecuda/cuda.h"
#include "facecuda/heads.h"

namespace fcb {

fc::GemmPrecision parse_precision(const std::string& s) {
  if (s == "fp32") return fc::GemmPrecision::F32;
  if (s == "bf16") return fc::GemmPrecision::BF16;
  if (s == "tf32") return fc::GemmPrecision::TF32;
  if (s == "fp16") return fc::GemmPrecision::F16;
  fc::fail(fc::Code::InvalidArgument, fc::str("Expected 'fp32', 'tf32', 'bf16' or 'fp16' for precision but received '", s, "'"));
}

namespace {

const napi_type_tag kHeadTag = {0x4a1d9c7e22b34f50ULL, 0x8d6e5f4c3b2a1908ULL};
const napi_type_tag kCenterTag = {0x5b2e8d7f33c45a61ULL, 0x9e7f6a5d4c3b2a19ULL};

// ---- option-object helpers (missing key → default; wrong type → TypeError naming the key)

Napi::Value opt_value(const Napi::Object& o, const char* key) { return o.Get(key); }

double opt_number(const Napi::Object& o, const char* key, double def) {
  Napi::Value v = opt_value(o, key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("Expected a number for options.") + key);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw Napi::TypeError::New(o.Env(), std::string("Expected a finite number for options.") + key);
  return d;
}

int64_t opt_integer(const Napi::Object& o, const char* key, int64_t def) {
  double d = opt_number(o, key, static_cast<double>(def));
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0) {
    throw Napi::TypeError::New(o.Env(), std::string("Expected an integer for options.") + key);
  }
  return static_cast<int64_t>(d);
}

bool opt_bool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = opt_value(o, key);
  if (v.IsUndefined()) return def;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("Expected a boolean for options.") + key);
  return v.As<Napi::Boolean>().Value();
}

std::string opt_string(const Napi::Object& o, const char* key, const std::string& def) {
  Napi::Value v = opt_value(o, key);
  if (v.IsUndefined()) return def;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("Expected a string for options.") + key);
  return v.As<Napi::String>().Utf8Value();
}

Napi::Object arg_object(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsObject() || info[i].IsArray()) {
    throw Napi::TypeError::New(info.Env(), std::string("Expected an options object for ") + name);
  }
  return info[i].As<Napi::Object>();
}

// A float32 typed array argument, copied now (the caller may reuse its array).
std::shared_ptr<std::vector<float>> arg_f32_copy(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(info.Env(), std::string("Expected a Float32Array for ") + name);
  }
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  auto v = std::make_shared<std::vector<float>>(a.ElementLength());
  if (!v->empty()) std::memcpy(v->data(), a.Data(), v->size() * sizeof(float));
  return v;
}

std::shared_ptr<std::vector<double>> arg_f64_copy(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw Napi::TypeError::New(info.Env(), std::string("Expected a Float64Array for ") + name);
  }
  Napi::Float64Array a = info[i].As<Napi::Float64Array>();
  auto v = std::make_shared<std::vector<double>>(a.ElementLength());
  if (!v->empty()) std::memcpy(v->data(), a.Data(), v->size() * sizeof(double));
  return v;
}

bool is_absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

// ---- copies into an engine tensor (on its device's queue thread)

// Writes `bytes` of host memory into the contiguous tensor `dst` (CPU: memcpy; CUDA: H2D).
void write_from_host(fc::Tensor& dst, const void* src, size_t bytes) {
  FC_CHECK(dst.defined() && dst.is_contiguous(), Internal, "the destination tensor is not a contiguous buffer");
  FC_CHECK(bytes == dst.nbytes(), ShapeMismatch, "Expected ", dst.nbytes(), " bytes for ", dst.describe(), " but received ",
           bytes);
  if (bytes == 0) return;
  if (dst.device().is_cpu()) std::memcpy(dst.data(), src, bytes);
  else fc::cuda::copy_h2d(dst.device().index, dst.data(), src, bytes);
}

// Copies tensor `src` (same device, same element count, f32) into the contiguous tensor `dst`.
void copy_into(const fc::Tensor& src, fc::Tensor& dst) {
  FC_CHECK(src.dtype() == fc::DType::F32, InvalidArgument, "Expected a float32 tensor but received ", src.describe());
  FC_CHECK(src.numel() == dst.numel(), ShapeMismatch, "Expected ", dst.numel(), " values but received ", src.describe());
  FC_CHECK(src.device() == dst.device(), InvalidArgument, "Expected a tensor on ", dst.device().str(), " but received ",
           src.describe());
  if (dst.numel() == 0) return;
  if (dst.device().is_cpu()) {
    src.copy_to_host(dst.data());  // handles strided sources
  } else {
    fc::Tensor c = src.is_contiguous() ? src : src.to(dst.device());
    fc::cuda::copy_d2d(dst.device().index, dst.data(), c.data(), dst.nbytes());
    fc::cuda::synchronize(dst.device().index);  // `c` may be a temporary
  }
}

void zero_fill(fc::Tensor& t) {
  if (!t.defined() || t.nbytes() == 0) return;
  if (t.device().is_cpu()) std::memset(t.data(), 0, t.nbytes());
  else fc::cuda::memset_zero(t.device().index, t.data(), t.nbytes());
}

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

Napi::Float64Array to_f64(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(double));
  return a;
}

// A host copy of a tensor's contents, as float32 values.
std::shared_ptr<std::vector<float>> host_copy(const fc::Tensor& t) {
  auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(t.numel()));
  if (!v->empty()) t.copy_to_host(v->data());
  return v;
}

// splitmix64: a counter-based generator, so the init is a pure function of (seed, index).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// N(0, std²) by Box-Muller from two 53-bit uniforms per pair of values.
void fill_normal(float* p, int64_t n, double stddev, uint64_t seed) {
  const double two_pi = 6.283185307179586;
  for (int64_t i = 0; i < n; i += 2) {
    uint64_t a = splitmix64(seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(i));
    uint64_t b = splitmix64(a ^ 0x632be59bd9b4e019ULL);
    double u1 = (static_cast<double>(a >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    double u2 = static_cast<double>(b >> 11) * (1.0 / 9007199254740992.0);
    double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    p[i] = static_cast<float>(r * std::cos(two_pi * u2));
    if (i + 1 < n) p[i + 1] = static_cast<float>(r * std::sin(two_pi * u2));
  }
}

// ------------------------------------------------------------------------------------------------
// NativeMarginHead

class NativeMarginHead : public Napi::ObjectWrap<NativeMarginHead>, private HeldObject<fc::MarginHead> {
 public:

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeMarginHead",
                       {InstanceMethod<&NativeMarginHead::InitNormal>("initNormal"),
                        InstanceMethod<&NativeMarginHead::SetWeight>("setWeight"),
                        InstanceMethod<&NativeMarginHead::GetWeight>("getWeight"),
                        InstanceMethod<&NativeMarginHead::SetBias>("setBias"),
                        InstanceMethod<&NativeMarginHead::GetBias>("getBias"),
                        InstanceMethod<&NativeMarginHead::Forward>("forward"),
                        InstanceMethod<&NativeMarginHead::Backward>("backward"),
                        InstanceMethod<&NativeMarginHead::Parameters>("parameters"),
                        InstanceMethod<&NativeMarginHead::Logits>("logits"),
                        InstanceMethod<&NativeMarginHead::SetTraining>("setTraining"),
                        InstanceMethod<&NativeMarginHead::SampledClasses>("sampledClasses"),
                        InstanceMethod<&NativeMarginHead::LastMargins>("lastMargins"),
                        InstanceMethod<&NativeMarginHead::State>("state"),
                        InstanceMethod<&NativeMarginHead::SetState>("setState"),
                        InstanceMethod<&NativeMarginHead::LastChunkBytes>("lastChunkBytes"),
                        InstanceMethod<&NativeMarginHead::Dispose>("dispose")});
  }

  // new NativeMarginHead({ embeddingSize, numClasses, kind, scale, m1, m2, m3, easyMargin, fallback,
  //   straightThrough, adaH, adaTAlpha, adaEps, elasticStd, elasticCos, elasticPlus, sphereBase,
  //   sphereGamma, spherePower, sphereMin, precision, maxChunkBytes, threads, subCenters, sampleRate,
  //   seed, classStart, numLocalClasses, device })
  // Missing keys take the engine's defaults; numLocalClasses 0 (or missing) = not sharded.
  explicit NativeMarginHead(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeMarginHead>(info), HeldObject("head") {
    Napi::Env env = info.Env();
    try {
      Napi::Object o = arg_object(info, 0, "options");
      int64_t D = opt_integer(o, "embeddingSize", 0);
      int64_t C = opt_integer(o, "numClasses", 0);
      FC_CHECK(D >= 1, InvalidArgument, "Expected a positive integer for embeddingSize but received ", D);
      FC_CHECK(C >= 2, InvalidArgument, "Expected an integer >= 2 for numClasses but received ", C);
      fc::MarginParams p;
      int64_t kind = opt_integer(o, "kind", 0);
      FC_CHECK(kind >= 0 && kind <= 7, InvalidArgument, "Expected a margin kind in [0, 7] but received ", kind);
      p.kind = static_cast<fc::MarginKind>(kind);
      p.scale = opt_number(o, "scale", p.scale);
      p.m1 = opt_number(o, "m1", p.m1);
      p.m2 = opt_number(o, "m2", p.m2);
      p.m3 = opt_number(o, "m3", p.m3);
      p.easy_margin = opt_bool(o, "easyMargin", p.easy_margin);
      p.fallback = opt_bool(o, "fallback", p.fallback);
      p.straight_through = opt_bool(o, "straightThrough", p.straight_through);
      p.ada_h = opt_number(o, "adaH", p.ada_h);
      p.ada_t_alpha = opt_number(o, "adaTAlpha", p.ada_t_alpha);
      p.ada_eps = opt_number(o, "adaEps", p.ada_eps);
      p.elastic_std = opt_number(o, "elasticStd", p.elastic_std);
      p.elastic_cos = opt_bool(o, "elasticCos", p.elastic_cos);
      p.elastic_plus = opt_bool(o, "elasticPlus", p.elastic_plus);
      p.sphere_base = opt_number(o, "sphereBase", p.sphere_base);
      p.sphere_gamma = opt_number(o, "sphereGamma", p.sphere_gamma);
      p.sphere_power = opt_number(o, "spherePower", p.sphere_power);
      p.sphere_min = opt_number(o, "sphereMin", p.sphere_min);

      fc::HeadOptions h;
      h.precision = parse_precision(opt_string(o, "precision", "fp32"));
      int64_t chunk = opt_integer(o, "maxChunkBytes", static_cast<int64_t>(h.max_chunk_bytes));
      FC_CHECK(chunk > 0, InvalidArgument, "Expected a positive integer for maxChunkBytes but received ", chunk);
      h.max_chunk_bytes = static_cast<size_t>(chunk);
      h.max_threads = static_cast<int>(opt_integer(o, "threads", 0));
      h.sub_centers = static_cast<int>(opt_integer(o, "subCenters", 1));
      FC_CHECK(h.sub_centers >= 1, InvalidArgument, "Expected a positive integer for subCenters but received ", h.sub_centers);
      h.sample_rate = opt_number(o, "sampleRate", 1.0);
      int64_t seed = opt_integer(o, "seed", 0);
      FC_CHECK(seed >= 0, InvalidArgument, "Expected a non-negative integer for seed but received ", seed);
      h.seed = static_cast<uint64_t>(seed);
      h.class_start = opt_integer(o, "classStart", 0);
      h.num_local = opt_integer(o, "numLocalClasses", 0);
      FC_CHECK(h.class_start >= 0 && h.num_local >= 0 && h.class_start + (h.num_local ? h.num_local : C) <= C, OutOfRange,
               "Expected classStart + numLocalClasses <= numClasses (", C, ") but received ", h.class_start, " + ",
               h.num_local);
      device_ = fc::parse_device(opt_string(o, "device", "cpu"));

      D_ = D;
      rows_ = (h.num_local ? h.num_local : C) * h.sub_centers;
      local_ = h.num_local ? h.num_local : C;
      softmax_ = p.kind == fc::MarginKind::Softmax;
      holder_ = build_on_device<fc::MarginHead>(
          device_, [D, C, p, h, dev = device_]() { return std::make_unique<fc::MarginHead>(D, C, p, h, dev); });
      info.This().As<Napi::Object>().TypeTag(&kHeadTag);
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  ~NativeMarginHead() override { release(); }

 private:


  // Wraps a tensor of the head (shares its storage) for JS.
  static Napi::Value share(Napi::Env env, const std::shared_ptr<Slot>& s, const fc::Device& dev) {
    return HeldObject::share(env, s, dev, env.Undefined());
  }

  // initNormal(std, seed): W ~ N(0, std²) from a counter-based generator; the Softmax bias = 0.
  Napi::Value InitNormal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    double stddev = 0;
    uint64_t seed = 0;
    try {
      stddev = arg_number(info, 0, "std");
      seed = static_cast<uint64_t>(arg_number(info, 1, "seed"));
    } catch (...) {
      rethrow_as_js(env);
    }
    bool softmax = softmax_;
    auto job = std::make_unique<Job>(env);
    job->work = [h, stddev, seed, softmax]() {
      fc::MarginHead& head = h->get();
      fc::Tensor& w = head.weight();
      if (w.device().is_cpu()) {
        fill_normal(w.data_as<float>(), w.numel(), stddev, seed);
      } else {
        std::vector<float> host(static_cast<size_t>(w.numel()));
        fill_normal(host.data(), w.numel(), stddev, seed);
        write_from_host(w, host.data(), host.size() * sizeof(float));
      }
      if (softmax) zero_fill(head.bias());
    };
    return schedule(env, device_, std::move(job));
  }

  // setWeight(w: Float32Array | NativeTensor) / setBias(b): copies into the head's own buffer.
  Napi::Value SetParam(const Napi::CallbackInfo& info, bool bias) {
    Napi::Env env = info.Env();
    auto h = live(env);
    const char* name = bias ? "bias" : "weight";
    int64_t want = bias ? local_ : rows_ * D_;
    std::shared_ptr<std::vector<float>> host;
    std::shared_ptr<Slot> src;
    try {
      FC_CHECK(!bias || softmax_, InvalidArgument, "only the Softmax head has a bias");
      if (info[0].IsTypedArray()) {
        host = arg_f32_copy(info, 0, name);
        FC_CHECK(static_cast<int64_t>(host->size()) == want, ShapeMismatch, "Expected ", want, " values for ", name,
                 " but received ", host->size());
      } else {
        TensorRef t = arg_tensor(info, 0, name);
        FC_CHECK(t.dtype == fc::DType::F32, InvalidArgument, "Expected a float32 ", name, " but received ",
                 fc::dtype_name(t.dtype));
        bool ok = bias ? (t.shape.size() == 1 && t.shape[0] == local_)
                       : (t.shape.size() == 2 && t.shape[0] == rows_ && t.shape[1] == D_);
        FC_CHECK(ok, ShapeMismatch, "Expected a ", name, " of shape ",
                 bias ? fc::shape_str({local_}) : fc::shape_str({rows_, D_}), " but received ", fc::shape_str(t.shape));
        FC_CHECK(t.device == device_, InvalidArgument, "Expected the ", name, " on ", device_.str(),
                 " but received a tensor on ", t.device.str());
        src = t.slot;
      }
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    job->work = [h, host, src, bias]() {
      fc::MarginHead& head = h->get();
      fc::Tensor& dst = bias ? head.bias() : head.weight();
      if (host) write_from_host(dst, host->data(), host->size() * sizeof(float));
      else copy_into(src->get(), dst);
    };
    return schedule(env, device_, std::move(job));
  }
  Napi::Value SetWeight(const Napi::CallbackInfo& info) { return SetParam(info, false); }
  Napi::Value SetBias(const Napi::CallbackInfo& info) { return SetParam(info, true); }

  // getWeight() / getBias(): a Float32Array copy.
  Napi::Value GetParam(const Napi::CallbackInfo& info, bool bias) {
    Napi::Env env = info.Env();
    auto h = live(env);
    if (bias && !softmax_) throw_error(env, "INVALID_ARGUMENT", "only the Softmax head has a bias");
    auto out = std::make_shared<std::shared_ptr<std::vector<float>>>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out, bias]() {
      fc::MarginHead& head = h->get();
      *out = host_copy(bias ? head.bias() : head.weight());
    };
    job->build = [out](Napi::Env env) -> Napi::Value { return to_f32(env, **out); };
    return schedule(env, device_, std::move(job));
  }
  Napi::Value GetWeight(const Napi::CallbackInfo& info) { return GetParam(info, false); }
  Napi::Value GetBias(const Napi::CallbackInfo& info) { return GetParam(info, true); }

  // forward(x, labels) → { loss, rowMax: Float32Array, rowSumExp: Float64Array, targetLogit: Float32Array }
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x, labels;
    try {
      x = arg_tensor(info, 0, "x");
      labels = arg_tensor(info, 1, "labels");
      FC_CHECK(x.device == device_ && labels.device == device_, InvalidArgument, "Expected x and labels on ", device_.str(),
               " but received ", x.device.str(), " and ", labels.device.str());
    } catch (...) {
      rethrow_as_js(env);
    }
    if (!x.shape.empty()) last_batch_ = x.shape[0];
    auto stats = std::make_shared<fc::ForwardStats>();
    auto sx = x.slot, sl = labels.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, sl, stats]() { *stats = h->get().forward_stats(sx->get(), sl->get()); };
    job->build = [stats](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("loss", Napi::Number::New(env, stats->loss));
      o.Set("rowMax", to_f32(env, stats->row_max));
      o.Set("rowSumExp", to_f64(env, stats->row_sum));
      o.Set("targetLogit", to_f32(env, stats->target_logit));
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  // backward(accumulate, rowMax?: Float32Array, rowSumExp?: Float64Array, lossScale?: number)
  //   → { gradEmbeddings, gradWeight, gradBias? } (tensors sharing the head's buffers)
  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    bool accumulate = false;
    double loss_scale = 1.0;
    std::shared_ptr<std::vector<float>> row_max;
    std::shared_ptr<std::vector<double>> row_sum;
    try {
      accumulate = arg_bool(info, 0, "accumulate");
      if (!is_absent(info[3])) {
        loss_scale = arg_number(info, 3, "lossScale");
        FC_CHECK(std::isfinite(loss_scale) && loss_scale > 0, OutOfRange,
                 "Expected a finite lossScale > 0 but received ", loss_scale);
      }
      bool has_max = !is_absent(info[1]), has_sum = !is_absent(info[2]);
      FC_CHECK(has_max == has_sum, InvalidArgument, "Expected both rowMax and rowSumExp, or neither");
      if (has_max) {
        row_max = arg_f32_copy(info, 1, "rowMax");
        row_sum = arg_f64_copy(info, 2, "rowSumExp");
        FC_CHECK(row_max->size() == row_sum->size(), ShapeMismatch, "rowMax has ", row_max->size(),
                 " entries but rowSumExp has ", row_sum->size());
        // The global statistics must cover the rows of the last forward (calls are in program order).
        FC_CHECK(last_batch_ < 0 || static_cast<int64_t>(row_max->size()) == last_batch_, ShapeMismatch,
                 "rowMax and rowSumExp have ", row_max->size(), " entries but the last forward had ", last_batch_,
                 " rows");
      }
    } catch (...) {
      rethrow_as_js(env);
    }
    auto gx = std::make_shared<Slot>();
    auto gw = std::make_shared<Slot>();
    auto gb = std::make_shared<Slot>();
    bool softmax = softmax_;
    auto job = std::make_unique<Job>(env);
    job->work = [h, gx, gw, gb, accumulate, row_max, row_sum, softmax, loss_scale]() {
      fc::MarginHead& head = h->get();
      head.backward(accumulate, row_max ? row_max->data() : nullptr, row_sum ? row_sum->data() : nullptr,
                    loss_scale);
      gx->tensor = head.grad_embeddings();  // shares the head's buffers
      gw->tensor = head.grad_weight();
      if (softmax) gb->tensor = head.grad_bias();
    };
    fc::Device dev = device_;
    job->build = [gx, gw, gb, dev, softmax](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("gradEmbeddings", share(env, gx, dev));
      o.Set("gradWeight", share(env, gw, dev));
      if (softmax) o.Set("gradBias", share(env, gb, dev));
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  // parameters() → { weight, gradWeight?, bias?, gradBias? }: handles on the head's own tensors
  // (the same storage; the optimizer updates weight/bias in place and reads the gradients). A
  // gradient the engine has not allocated yet is left out.
  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto w = std::make_shared<Slot>(), gw = std::make_shared<Slot>();
    auto b = std::make_shared<Slot>(), gb = std::make_shared<Slot>();
    bool softmax = softmax_;
    auto job = std::make_unique<Job>(env);
    job->work = [h, w, gw, b, gb, softmax]() {
      fc::MarginHead& head = h->get();
      w->tensor = head.weight();
      gw->tensor = head.grad_weight();
      if (softmax) {
        b->tensor = head.bias();
        gb->tensor = head.grad_bias();
      }
    };
    fc::Device dev = device_;
    job->build = [w, gw, b, gb, dev, softmax](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("weight", share(env, w, dev));
      if (gw->tensor.defined()) o.Set("gradWeight", share(env, gw, dev));
      if (softmax) {
        o.Set("bias", share(env, b, dev));
        if (gb->tensor.defined()) o.Set("gradBias", share(env, gb, dev));
      }
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x;
    try {
      x = arg_on_device(info, 0, "x");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto sx = x.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, out]() { out->tensor = h->get().logits(sx->get()); };
    fc::Device dev = device_;
    job->build = [out, dev](Napi::Env env) -> Napi::Value {
      return wrap_tensor(env, out, out->tensor.shape(), fc::DType::F32, dev);
    };
    return schedule(env, device_, std::move(job));
  }

  // setTraining(bool): queued, so it applies to the calls made after it.
  Napi::Value SetTraining(const Napi::CallbackInfo& info) { return set_training_call(info); }

  // sampledClasses() → Int32Array of the local class indices sampled by the last training forward.
  Napi::Value SampledClasses(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto out = std::make_shared<std::vector<int32_t>>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out]() {
      const std::vector<int64_t>& s = h->get().sampled_classes();
      out->assign(s.begin(), s.end());
    };
    job->build = [out](Napi::Env env) -> Napi::Value {
      Napi::Int32Array a = Napi::Int32Array::New(env, out->size());
      if (!out->empty()) std::memcpy(a.Data(), out->data(), out->size() * sizeof(int32_t));
      return a;
    };
    return schedule(env, device_, std::move(job));
  }

  // lastMargins() → Float64Array (ElasticFace: the per-row margins of the last forward).
  Napi::Value LastMargins(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto out = std::make_shared<std::vector<double>>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out]() { *out = h->get().last_margins(); };
    job->build = [out](Napi::Env env) -> Napi::Value { return to_f64(env, *out); };
    return schedule(env, device_, std::move(job));
  }

  // state() → { step, batchMean, batchStd, lambda }
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto out = std::make_shared<fc::HeadState>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out]() { *out = h->get().state(); };
    job->build = [out](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("step", Napi::Number::New(env, static_cast<double>(out->step)));
      o.Set("batchMean", Napi::Number::New(env, out->batch_mean));
      o.Set("batchStd", Napi::Number::New(env, out->batch_std));
      o.Set("lambda", Napi::Number::New(env, out->lambda));
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  // setState({ step?, batchMean?, batchStd? }): the given fields replace the current ones.
  Napi::Value SetState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    bool has_step = false, has_mean = false, has_std = false;
    int64_t step = 0;
    double mean = 0, stdv = 0;
    try {
      Napi::Object o = arg_object(info, 0, "state");
      has_step = !o.Get("step").IsUndefined();
      has_mean = !o.Get("batchMean").IsUndefined();
      has_std = !o.Get("batchStd").IsUndefined();
      step = opt_integer(o, "step", 0);
      mean = opt_number(o, "batchMean", 0);
      stdv = opt_number(o, "batchStd", 0);
      FC_CHECK(step >= 0, OutOfRange, "Expected a non-negative integer for step but received ", step);
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    job->work = [=]() {
      fc::MarginHead& head = h->get();
      fc::HeadState s = head.state();
      if (has_step) s.step = step;
      if (has_mean) s.batch_mean = mean;
      if (has_std) s.batch_std = stdv;
      head.set_state(s);
    };
    return schedule(env, device_, std::move(job));
  }

  // Reads a counter the queue thread writes: call it after awaiting a forward/backward.
  Napi::Value LastChunkBytes(const Napi::CallbackInfo& info) {
    auto h = live(info.Env());
    double v = (h->obj && !h->error) ? double(h->obj->last_chunk_bytes()) : 0.0;
    return Napi::Number::New(info.Env(), v);
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  int64_t D_ = 0, rows_ = 0, local_ = 0;
  int64_t last_batch_ = -1;  // rows of the last forward call (JS thread)
  bool softmax_ = false;
};

// ------------------------------------------------------------------------------------------------
// NativeCenterLoss

class NativeCenterLoss : public Napi::ObjectWrap<NativeCenterLoss>, private HeldObject<fc::CenterLoss> {
 public:

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeCenterLoss",
                       {InstanceMethod<&NativeCenterLoss::SetCenters>("setCenters"),
                        InstanceMethod<&NativeCenterLoss::GetCenters>("getCenters"),
                        InstanceMethod<&NativeCenterLoss::Forward>("forward"),
                        InstanceMethod<&NativeCenterLoss::Backward>("backward"),
                        InstanceMethod<&NativeCenterLoss::Dispose>("dispose")});
  }

  // new NativeCenterLoss({ embeddingSize, numClasses, lambda, alpha, device }); the engine zeroes the centers.
  explicit NativeCenterLoss(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeCenterLoss>(info), HeldObject("center loss") {
    Napi::Env env = info.Env();
    try {
      Napi::Object o = arg_object(info, 0, "options");
      int64_t D = opt_integer(o, "embeddingSize", 0);
      int64_t C = opt_integer(o, "numClasses", 0);
      FC_CHECK(D >= 1, InvalidArgument, "Expected a positive integer for embeddingSize but received ", D);
      FC_CHECK(C >= 1, InvalidArgument, "Expected a positive integer for numClasses but received ", C);
      double lambda = opt_number(o, "lambda", 0.003);
      double alpha = opt_number(o, "alpha", 0.5);
      device_ = fc::parse_device(opt_string(o, "device", "cpu"));
      D_ = D;
      C_ = C;
      holder_ = build_on_device<fc::CenterLoss>(
          device_, [D, C, lambda, alpha, dev = device_]() { return std::make_unique<fc::CenterLoss>(D, C, lambda, alpha, dev); });
      info.This().As<Napi::Object>().TypeTag(&kCenterTag);
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  ~NativeCenterLoss() override { release(); }

 private:


  // setCenters(c: Float32Array | NativeTensor [C, D])
  Napi::Value SetCenters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    std::shared_ptr<std::vector<float>> host;
    std::shared_ptr<Slot> src;
    try {
      if (info[0].IsTypedArray()) {
        host = arg_f32_copy(info, 0, "centers");
        FC_CHECK(static_cast<int64_t>(host->size()) == C_ * D_, ShapeMismatch, "Expected ", C_ * D_,
                 " values for centers but received ", host->size());
      } else {
        TensorRef t = arg_tensor(info, 0, "centers");
        FC_CHECK(t.dtype == fc::DType::F32, InvalidArgument, "Expected float32 centers but received ", fc::dtype_name(t.dtype));
        FC_CHECK(t.shape.size() == 2 && t.shape[0] == C_ && t.shape[1] == D_, ShapeMismatch, "Expected centers of shape [",
                 C_, ", ", D_, "] but received ", fc::shape_str(t.shape));
        FC_CHECK(t.device == device_, InvalidArgument, "Expected the centers on ", device_.str(),
                 " but received a tensor on ", t.device.str());
        src = t.slot;
      }
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    job->work = [h, host, src]() {
      fc::Tensor& dst = h->get().centers();
      if (host) write_from_host(dst, host->data(), host->size() * sizeof(float));
      else copy_into(src->get(), dst);
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value GetCenters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto out = std::make_shared<std::shared_ptr<std::vector<float>>>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, out]() { *out = host_copy(h->get().centers()); };
    job->build = [out](Napi::Env env) -> Napi::Value { return to_f32(env, **out); };
    return schedule(env, device_, std::move(job));
  }

  // forward(x, labels) → loss
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x, labels;
    try {
      x = arg_tensor(info, 0, "x");
      labels = arg_tensor(info, 1, "labels");
      FC_CHECK(x.device == device_ && labels.device == device_, InvalidArgument, "Expected x and labels on ", device_.str(),
               " but received ", x.device.str(), " and ", labels.device.str());
    } catch (...) {
      rethrow_as_js(env);
    }
    auto loss = std::make_shared<double>(0);
    auto sx = x.slot, sl = labels.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, sl, loss]() { *loss = h->get().forward(sx->get(), sl->get()); };
    job->build = [loss](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *loss); };
    return schedule(env, device_, std::move(job));
  }

  // backward(updateCenters) → gradEmbeddings (a tensor sharing the loss's buffer)
  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    bool update = true;
    try {
      update = arg_bool(info, 0, "updateCenters");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto gx = std::make_shared<Slot>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, gx, update]() {
      fc::CenterLoss& c = h->get();
      c.backward(update);
      gx->tensor = c.grad_embeddings();
    };
    fc::Device dev = device_;
    job->build = [gx, dev](Napi::Env env) -> Napi::Value {
      return wrap_tensor(env, gx, gx->tensor.shape(), fc::DType::F32, dev);
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  int64_t D_ = 0, C_ = 0;
};

}  // namespace

void register_heads(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeMarginHead", NativeMarginHead::Define(env));
  exports.Set("NativeCenterLoss", NativeCenterLoss::Define(env));
}

}  // namespace fcb
