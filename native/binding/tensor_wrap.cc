// @file tensor_wrap.cc
// @brief NativeTensor: the JS handle of an engine tensor (type-tagged ObjectWrap, explicit dispose).
//
// Metadata (shape, dtype, device) lives in the wrap and is read synchronously; the engine tensor
// lives in a Slot that only the device's queue thread touches. Creation on CUDA, views, copies and
// disposal are all queued, so they happen in program order with the operations around them.
#include <cstring>

#include "addon.h"

namespace fcb {

namespace {

const napi_type_tag kTensorTag = {0x8c5b2f0e1d4a4c31ULL, 0x9e7f6a5b4c3d2e1fULL};

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTensor",
                       {InstanceAccessor<&NativeTensor::Shape>("shape"),
                        InstanceAccessor<&NativeTensor::DType>("dtype"),
                        InstanceAccessor<&NativeTensor::Device>("device"),
                        InstanceAccessor<&NativeTensor::Disposed>("disposed"),
                        InstanceMethod<&NativeTensor::Dispose>("dispose"),
                        InstanceMethod<&NativeTensor::ToArray>("toArray"),
                        InstanceMethod<&NativeTensor::To>("to"),
                        InstanceMethod<&NativeTensor::Reshape>("reshape")});
  }

  explicit NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
    // Instances are made by wrap_tensor(); a bare `new NativeTensor()` from JS stays disposed.
    disposed_ = true;
  }

  ~NativeTensor() override { release(); }

  void init(std::shared_ptr<Slot> slot, const std::vector<int64_t>& shape, fc::DType dtype, const fc::Device& device) {
    slot_ = std::move(slot);
    shape_ = shape;
    dtype_ = dtype;
    device_ = device;
    disposed_ = false;
  }

  TensorRef ref() const {
    if (disposed_) fc::fail(fc::Code::Disposed, "tensor has been disposed");
    return TensorRef{slot_, shape_, dtype_, device_};
  }

 private:
  // Frees the engine tensor in queue order (after every job already submitted that uses it).
  void release() {
    if (slot_) {
      std::shared_ptr<Slot> s = std::move(slot_);
      post(device_, [s]() { s->tensor = fc::Tensor(); });
    }
    disposed_ = true;
  }

  Napi::Value Shape(const Napi::CallbackInfo& info) {
    Napi::Array a = Napi::Array::New(info.Env(), shape_.size());
    for (size_t i = 0; i < shape_.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), double(shape_[i])));
    return a;
  }
  Napi::Value DType(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), fc::dtype_name(dtype_)); }
  Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_.str()); }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }

  Napi::Value ToArray(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TensorRef r;
    try {
      r = ref();
    } catch (...) {
      rethrow_as_js(env);
    }
    auto job = std::make_unique<Job>(env);
    auto bytes = std::make_shared<std::vector<char>>();
    auto slot = r.slot;
    job->work = [slot, bytes]() {
      const fc::Tensor& t = slot->get();
      bytes->resize(t.nbytes());
      t.copy_to_host(bytes->data());
    };
    fc::DType dtype = r.dtype;
    job->build = [bytes, dtype](Napi::Env env) -> Napi::Value {
      size_t n = bytes->size();
      Napi::ArrayBuffer ab;
      if (n == 0) {
        // An external buffer over no memory is created detached by V8: use a plain empty one.
        ab = Napi::ArrayBuffer::New(env, 0);
      } else {
        auto* holder = new std::vector<char>(std::move(*bytes));
        ab = Napi::ArrayBuffer::New(
            env, holder->data(), n, [](Napi::Env, void*, std::vector<char>* h) { delete h; }, holder);
      }
      size_t es = fc::dtype_size(dtype);
      switch (dtype) {
        case fc::DType::F32: return Napi::Float32Array::New(env, n / es, ab, 0);
        case fc::DType::F16:
        case fc::DType::BF16: return Napi::Uint16Array::New(env, n / es, ab, 0);
        case fc::DType::I32: return Napi::Int32Array::New(env, n / es, ab, 0);
        case fc::DType::I64: return Napi::BigInt64Array::New(env, n / es, ab, 0);
        case fc::DType::U8: return Napi::Uint8Array::New(env, n, ab, 0);
      }
      return env.Undefined();
    };
    return schedule(env, r.device, std::move(job));
  }

  Napi::Value To(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TensorRef r;
    fc::Device dst;
    try {
      r = ref();
      dst = arg_device(info, 0, "device");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto job = std::make_unique<Job>(env);
    auto src = r.slot;
    std::vector<int64_t> shape = r.shape;
    fc::DType dtype = r.dtype;
    if (r.device.is_cpu() || dst.is_cpu() || r.device == dst) {
      // One queue can do it: the source device's (D2H, H2H, D2D on one GPU; or H2D after a snapshot
      // taken in order with the CPU queue's work — the upload itself is a second job, below).
      if (r.device.is_cpu() && dst.is_cuda()) {
        auto host = std::make_shared<fc::Tensor>();
        job->work = [src, host]() {
          const fc::Tensor& t = src->get();
          *host = t.is_contiguous() ? t : t.to(fc::Device::cpu());
        };
        job->build = [host, out, shape, dtype, dst](Napi::Env env) -> Napi::Value {
          return upload(env, host, out, shape, dtype, dst);
        };
      } else {
        job->work = [src, dst, out]() { out->tensor = src->get().to(dst); };
        job->build = [out, shape, dtype, dst](Napi::Env env) -> Napi::Value { return wrap_tensor(env, out, shape, dtype, dst); };
      }
    } else {
      // Two GPUs: download on the source queue, upload on the destination queue. Chaining through
      // the JS thread (never one queue waiting on another) keeps opposite copies from deadlocking.
      auto host = std::make_shared<fc::Tensor>();
      job->work = [src, host]() { *host = src->get().to(fc::Device::cpu()); };
      job->build = [host, out, shape, dtype, dst](Napi::Env env) -> Napi::Value {
        return upload(env, host, out, shape, dtype, dst);
      };
    }
    return schedule(env, r.device, std::move(job));
  }

  // Second half of a host→GPU copy: a job on the destination queue; resolves to the new tensor.
  static Napi::Value upload(Napi::Env env, std::shared_ptr<fc::Tensor> host, std::shared_ptr<Slot> out,
                            std::vector<int64_t> shape, fc::DType dtype, fc::Device dst) {
    auto job = std::make_unique<Job>(env);
    job->work = [host, out, dst]() {
      out->tensor = host->to(dst);
      *host = fc::Tensor();
    };
    job->build = [out, shape, dtype, dst](Napi::Env env) -> Napi::Value { return wrap_tensor(env, out, shape, dtype, dst); };
    return schedule(env, dst, std::move(job));
  }

  Napi::Value Reshape(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    TensorRef r;
    std::vector<int64_t> shape;
    try {
      r = ref();
      shape = arg_shape(info, 0, "shape");
      int64_t n = 1, m = 1;
      for (auto v : shape) n *= v;
      for (auto v : r.shape) m *= v;
      FC_CHECK(n == m, ShapeMismatch, "cannot reshape ", fc::shape_str(r.shape), " (", m, " elements) to ",
               fc::shape_str(shape), " (", n, " elements)");
    } catch (...) {
      rethrow_as_js(env);
    }
    auto out = std::make_shared<Slot>();
    auto src = r.slot;
    post(r.device, [src, out, shape]() {
      try {
        out->tensor = src->get().reshape(shape);
      } catch (...) {
        out->error = std::current_exception();
      }
    });
    return wrap_tensor(env, out, shape, r.dtype, r.device);
  }

  std::shared_ptr<Slot> slot_;
  std::vector<int64_t> shape_;
  fc::DType dtype_ = fc::DType::F32;
  fc::Device device_;
  bool disposed_ = true;
};

}  // namespace

Napi::Function init_tensor_class(Napi::Env env) {
  Napi::Function ctor = NativeTensor::Define(env);
  env_data(env)->tensor_ctor = Napi::Persistent(ctor);
  return ctor;
}

Napi::Object wrap_tensor(Napi::Env env, std::shared_ptr<Slot> slot, const std::vector<int64_t>& shape, fc::DType dtype,
                         const fc::Device& device) {
  Napi::Object obj = env_data(env)->tensor_ctor.New({});
  obj.TypeTag(&kTensorTag);
  NativeTensor::Unwrap(obj)->init(std::move(slot), shape, dtype, device);
  return obj;
}

TensorRef arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTensorTag)) {
    throw Napi::TypeError::New(info.Env(), std::string("Expected a Tensor for ") + name);
  }
  return NativeTensor::Unwrap(v.As<Napi::Object>())->ref();
}

}  // namespace fcb
