// @file addon.cc
// @brief Module init, argument helpers and tensor creation. lib/binding.ts types every export.
#include <cmath>
#include <cstring>

#include "addon.h"
#include "facecuda/cuda.h"

namespace fcb {

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string("Expected a string for ") + name);
  return info[i].As<Napi::String>().Utf8Value();
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("Expected a number for ") + name);
  return info[i].As<Napi::Number>().DoubleValue();
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBoolean()) throw Napi::TypeError::New(info.Env(), std::string("Expected a boolean for ") + name);
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string("Expected an array of integers for ") + name);
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() > static_cast<uint32_t>(fc::kMaxRank)) {
    fc::fail(fc::Code::InvalidArgument, fc::str("Expected at most ", fc::kMaxRank, " dimensions for ", name,
                                                " but received ", a.Length()));
  }
  std::vector<int64_t> shape;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != std::floor(d) || d > 9007199254740991.0) {
      throw Napi::TypeError::New(info.Env(), std::string("Expected non-negative integers for ") + name);
    }
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

fc::Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return fc::parse_device(arg_string(info, i, name));
}

namespace {

// init(FacecudaError): hands the JS error class to native code (better-sqlite3's pattern).
Napi::Value Init(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "Expected the FacecudaError class for init");
  env_data(info.Env())->error_ctor = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

bool typed_array_matches(const Napi::TypedArray& ta, fc::DType dtype) {
  switch (dtype) {
    case fc::DType::F32: return ta.TypedArrayType() == napi_float32_array;
    case fc::DType::F16:
    case fc::DType::BF16: return ta.TypedArrayType() == napi_uint16_array;
    case fc::DType::I32: return ta.TypedArrayType() == napi_int32_array;
    case fc::DType::I64: return ta.TypedArrayType() == napi_bigint64_array;
    case fc::DType::U8: return ta.TypedArrayType() == napi_uint8_array;
  }
  return false;
}

// tensorFromData(data: TypedArray, shape: number[], dtype: string, device: string): NativeTensor
// The data is copied at once (the caller may reuse its array); a CUDA upload is queued.
Napi::Value TensorFromData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "Expected a typed array for data");
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    std::vector<int64_t> shape = arg_shape(info, 1, "shape");
    std::string dname = arg_string(info, 2, "dtype");
    fc::DType dtype;
    if (!fc::dtype_from_name(dname.c_str(), &dtype)) {
      throw Napi::TypeError::New(env, "Expected one of float32, float16, bfloat16, int32, int64, uint8 for dtype");
    }
    if (!typed_array_matches(ta, dtype)) throw Napi::TypeError::New(env, "data's typed array type does not match dtype " + dname);
    fc::Device device = arg_device(info, 3, "device");
    const void* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    size_t bytes = ta.ByteLength();
    auto slot = std::make_shared<Slot>();
    if (device.is_cpu()) {
      slot->tensor = fc::Tensor::from_host(src, bytes, shape, dtype, device);
    } else {
      fc::cuda::require_device(device.index);
      auto host = std::make_shared<fc::Tensor>(fc::Tensor::from_host(src, bytes, shape, dtype, fc::Device::cpu()));
      post(device, [slot, host, device]() {
        try {
          slot->tensor = host->to(device);
        } catch (...) {
          slot->error = std::current_exception();
        }
        *host = fc::Tensor();
      });
    }
    return wrap_tensor(env, slot, shape, dtype, device);
  } catch (...) {
    rethrow_as_js(env);
  }
}

// tensorEmpty(shape, dtype, device): uninitialized tensor (contents unspecified; for outputs).
Napi::Value TensorZeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    std::vector<int64_t> shape = arg_shape(info, 0, "shape");
    std::string dname = arg_string(info, 1, "dtype");
    fc::DType dtype;
    if (!fc::dtype_from_name(dname.c_str(), &dtype)) throw Napi::TypeError::New(env, "Expected a dtype name for dtype");
    fc::Device device = arg_device(info, 2, "device");
    if (device.is_cuda()) fc::cuda::require_device(device.index);
    auto slot = std::make_shared<Slot>();
    post(device, [slot, shape, dtype, device]() {
      try {
        fc::Tensor t = fc::Tensor::empty(shape, dtype, device);
        if (device.is_cpu()) std::memset(t.data(), 0, t.nbytes());
        else fc::cuda::memset_zero(device.index, t.data(), t.nbytes());
        slot->tensor = t;
      } catch (...) {
        slot->error = std::current_exception();
      }
    });
    return wrap_tensor(env, slot, shape, dtype, device);
  } catch (...) {
    rethrow_as_js(env);
  }
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  env_data(env);
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("NativeTensor", init_tensor_class(env));
  exports.Set("tensorFromData", Napi::Function::New(env, TensorFromData, "tensorFromData"));
  exports.Set("tensorZeros", Napi::Function::New(env, TensorZeros, "tensorZeros"));
  register_ops(env, exports);
  register_system(env, exports);
  register_heads(env, exports);
  register_model(env, exports);
  register_optim(env, exports);
  register_search(env, exports);
  return exports;
}

}  // namespace fcb

static Napi::Object FacecudaInit(Napi::Env env, Napi::Object exports) { return fcb::InitModule(env, exports); }
NODE_API_MODULE(facecuda, FacecudaInit)
