// @file heads.cc
// @brief NativeMarginHead: the JS handle of an fc::MarginHead. Every call is a job on the head's
// device queue; the gradients returned by backward() share the head's buffers (overwritten by the
// next backward), so the training loop needs no copies.
#include <cmath>
#include <cstring>

#include "addon.h"
#include "facecuda/heads.h"

namespace fcb {

namespace {

const napi_type_tag kHeadTag = {0x4a1d9c7e22b34f50ULL, 0x8d6e5f4c3b2a1908ULL};

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

class NativeMarginHead : public Napi::ObjectWrap<NativeMarginHead> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeMarginHead",
                       {InstanceMethod<&NativeMarginHead::InitNormal>("initNormal"),
                        InstanceMethod<&NativeMarginHead::SetWeight>("setWeight"),
                        InstanceMethod<&NativeMarginHead::GetWeight>("getWeight"),
                        InstanceMethod<&NativeMarginHead::Forward>("forward"),
                        InstanceMethod<&NativeMarginHead::Backward>("backward"),
                        InstanceMethod<&NativeMarginHead::Logits>("logits"),
                        InstanceMethod<&NativeMarginHead::LastChunkBytes>("lastChunkBytes"),
                        InstanceMethod<&NativeMarginHead::Dispose>("dispose")});
  }

  // new NativeMarginHead(D, C, kind, scale, m1, m2, m3, easyMargin, fallback, straightThrough,
  //                      precision, maxChunkBytes, threads, device)
  explicit NativeMarginHead(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeMarginHead>(info) {
    Napi::Env env = info.Env();
    try {
      int64_t D = static_cast<int64_t>(arg_number(info, 0, "embeddingSize"));
      int64_t C = static_cast<int64_t>(arg_number(info, 1, "numClasses"));
      fc::MarginParams p;
      int kind = static_cast<int>(arg_number(info, 2, "kind"));
      FC_CHECK(kind >= 0 && kind <= 3, InvalidArgument, "Expected a margin kind in [0, 3] but received ", kind);
      p.kind = static_cast<fc::MarginKind>(kind);
      p.scale = arg_number(info, 3, "scale");
      p.m1 = arg_number(info, 4, "m1");
      p.m2 = arg_number(info, 5, "m2");
      p.m3 = arg_number(info, 6, "m3");
      p.easy_margin = arg_bool(info, 7, "easyMargin");
      p.fallback = arg_bool(info, 8, "fallback");
      p.straight_through = arg_bool(info, 9, "straightThrough");
      std::string prec = arg_string(info, 10, "precision");
      fc::HeadOptions o;
      o.precision = prec == "bf16" ? fc::GemmPrecision::BF16 : fc::GemmPrecision::F32;
      o.max_chunk_bytes = static_cast<size_t>(arg_number(info, 11, "maxChunkBytes"));
      o.max_threads = static_cast<int>(arg_number(info, 12, "threads"));
      device_ = arg_device(info, 13, "device");
      head_ = std::make_shared<fc::MarginHead>(D, C, p, o, device_);
      C_ = C;
      D_ = D;
      info.This().As<Napi::Object>().TypeTag(&kHeadTag);
    } catch (...) {
      rethrow_as_js(env);
    }
  }

  ~NativeMarginHead() override { release(); }

 private:
  std::shared_ptr<fc::MarginHead> live(Napi::Env env) {
    if (!head_) throw_error(env, "DISPOSED", "this head has been disposed");
    return head_;
  }

  void release() {
    if (head_) {
      std::shared_ptr<fc::MarginHead> h = std::move(head_);
      post(device_, [h]() mutable { h.reset(); });  // after queued work that uses it
    }
  }

  Napi::Value InitNormal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    double stddev = arg_number(info, 0, "std");
    uint64_t seed = static_cast<uint64_t>(arg_number(info, 1, "seed"));
    auto job = std::make_unique<Job>(env);
    job->work = [h, stddev, seed]() {
      fc::Tensor& w = h->weight();
      fill_normal(w.data_as<float>(), w.numel(), stddev, seed);
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value SetWeight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef w;
    try {
      w = arg_tensor(info, 0, "weight");
      FC_CHECK(w.dtype == fc::DType::F32, InvalidArgument, "Expected a float32 weight but received ", fc::dtype_name(w.dtype));
      FC_CHECK(w.shape.size() == 2 && w.shape[0] == C_ && w.shape[1] == D_, ShapeMismatch, "Expected a weight of shape [",
               C_, ", ", D_, "] but received ", fc::shape_str(w.shape));
      FC_CHECK(w.device == device_, InvalidArgument, "Expected the weight on ", device_.str(), " but received a tensor on ",
               w.device.str());
    } catch (...) {
      rethrow_as_js(env);
    }
    auto src = w.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, src]() {
      const fc::Tensor& t = src->get();
      fc::Tensor& dst = h->weight();
      FC_CHECK(dst.device().is_cpu(), NotImplemented, "setWeight on a CUDA head");
      t.copy_to_host(dst.data());
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value GetWeight(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto bytes = std::make_shared<std::vector<float>>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, bytes]() {
      const fc::Tensor& w = h->weight();
      bytes->resize(static_cast<size_t>(w.numel()));
      w.copy_to_host(bytes->data());
    };
    job->build = [bytes](Napi::Env env) -> Napi::Value {
      Napi::Float32Array a = Napi::Float32Array::New(env, bytes->size());
      if (!bytes->empty()) std::memcpy(a.Data(), bytes->data(), bytes->size() * sizeof(float));
      return a;
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x, labels;
    try {
      x = arg_tensor(info, 0, "x");
      labels = arg_tensor(info, 1, "labels");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto loss = std::make_shared<double>(0);
    auto sx = x.slot, sl = labels.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, sl, loss]() { *loss = h->forward(sx->get(), sl->get()); };
    job->build = [loss](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *loss); };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Backward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    auto gx = std::make_shared<Slot>();
    auto gw = std::make_shared<Slot>();
    auto job = std::make_unique<Job>(env);
    job->work = [h, gx, gw]() {
      h->backward();
      gx->tensor = h->grad_embeddings();  // shares the head's buffer
      gw->tensor = h->grad_weight();
    };
    fc::Device dev = device_;
    job->build = [gx, gw, dev](Napi::Env env) -> Napi::Value {
      Napi::Object o = Napi::Object::New(env);
      o.Set("gradEmbeddings", wrap_tensor(env, gx, gx->tensor.shape(), fc::DType::F32, dev));
      o.Set("gradWeight", wrap_tensor(env, gw, gw->tensor.shape(), fc::DType::F32, dev));
      return o;
    };
    return schedule(env, device_, std::move(job));
  }

  Napi::Value Logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = live(env);
    TensorRef x;
    try {
      x = arg_tensor(info, 0, "x");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto sx = x.slot;
    auto job = std::make_unique<Job>(env);
    job->work = [h, sx, out]() { out->tensor = h->logits(sx->get()); };
    fc::Device dev = device_;
    job->build = [out, dev](Napi::Env env) -> Napi::Value {
      return wrap_tensor(env, out, out->tensor.shape(), fc::DType::F32, dev);
    };
    return schedule(env, device_, std::move(job));
  }

  // Reads a counter the queue thread writes: call it after awaiting a forward/backward.
  Napi::Value LastChunkBytes(const Napi::CallbackInfo& info) {
    auto h = live(info.Env());
    return Napi::Number::New(info.Env(), double(h->last_chunk_bytes()));
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  std::shared_ptr<fc::MarginHead> head_;
  fc::Device device_;
  int64_t C_ = 0, D_ = 0;
};

}  // namespace

void register_heads(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeMarginHead", NativeMarginHead::Define(env));
}

}  // namespace fcb
