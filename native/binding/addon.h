// @file addon.h
// @brief Shared pieces of the N-API binding (the only code that includes napi.h).
//
// Async model: a JS call validates its arguments, builds a Job (a work function for the device's
// queue thread and a result builder for the JS thread), submits it to fc::queue_for(device) and
// returns a Promise. When the work finishes, the queue thread hands the Job to one thread-safe
// function per env, whose callback resolves or rejects the Promise on the JS thread. No engine work
// runs on the JS thread, and the event loop is kept alive only while jobs are pending.
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "facecuda/device.h"
#include "facecuda/gemm.h"
#include "facecuda/error.h"
#include "facecuda/tensor.h"

namespace fcb {

// The engine tensor behind a JS NativeTensor. Filled and read only on the device's queue thread
// (creation on a CUDA device is itself a queued task); `error` records a failed asynchronous
// creation so that later operations report it instead of touching an empty tensor.
struct Slot {
  fc::Tensor tensor;
  std::exception_ptr error;
  const fc::Tensor& get() const {
    if (error) std::rethrow_exception(error);
    FC_CHECK(tensor.defined(), Disposed, "tensor has been disposed");
    return tensor;
  }
};

struct Job {
  Napi::Promise::Deferred deferred;
  std::function<void()> work;                            // queue thread
  std::function<Napi::Value(Napi::Env)> build;           // JS thread, after success
  std::exception_ptr error;
  std::vector<Napi::Reference<Napi::Value>> keep_alive;  // JS inputs held until completion
  explicit Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

void call_js(Napi::Env env, Napi::Function, void*, Job* job);
using Tsfn = Napi::TypedThreadSafeFunction<void, Job, call_js>;

// The completion channel of one env. Queue threads may finish jobs after the env is gone (a worker
// thread terminated with work in flight): `open` is cleared under the lock by the env's cleanup hook
// before the thread-safe function is aborted, so a late completion never touches a finalized one.
struct Channel {
  std::mutex mu;
  bool open = true;
  Tsfn tsfn;
};

// Per-env state of the addon (worker threads each get their own).
struct EnvData {
  std::shared_ptr<Channel> channel;
  size_t pending = 0;  // jobs in flight; touched on the JS thread only
  Napi::FunctionReference error_ctor;   // the JS FacecudaError class, from init()
  Napi::FunctionReference tensor_ctor;  // NativeTensor
};
EnvData* env_data(Napi::Env env);

// Submits job to the queue of `device` and returns its promise.
Napi::Promise schedule(Napi::Env env, const fc::Device& device, std::unique_ptr<Job> job);
// Runs a task on the queue of `device` with no JS result (fire and forget; errors are dropped).
void post(const fc::Device& device, std::function<void()> task);

// Errors: the JS FacecudaError class is handed over by init(); these build instances of it.
Napi::Value make_error(Napi::Env env, const std::string& code, const std::string& message);
Napi::Value make_error(Napi::Env env, std::exception_ptr e);
[[noreturn]] void throw_error(Napi::Env env, const std::string& code, const std::string& message);
// Rethrows a C++ exception from the engine as a FacecudaError (use in catch (...) blocks).
[[noreturn]] void rethrow_as_js(Napi::Env env);

// Argument helpers (the TS layer validates first; these are cheap re-checks, TypeError on failure).
std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name);
double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
// 'fp32' | 'tf32' | 'bf16' → fc::GemmPrecision (INVALID_ARGUMENT otherwise; heads.cc).
fc::GemmPrecision parse_precision(const std::string& s);
std::vector<int64_t> arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name);
fc::Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name);

// NativeTensor (tensor_wrap.cc)
Napi::Function init_tensor_class(Napi::Env env);
Napi::Object wrap_tensor(Napi::Env env, std::shared_ptr<Slot> slot, const std::vector<int64_t>& shape,
                         fc::DType dtype, const fc::Device& device);
// Unwraps a NativeTensor argument; throws TypeError for anything else and DISPOSED when disposed.
struct TensorRef {
  std::shared_ptr<Slot> slot;
  std::vector<int64_t> shape;
  fc::DType dtype;
  fc::Device device;
};
TensorRef arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);

// Per-module registration functions (ops.cc, system.cc)
void register_ops(Napi::Env env, Napi::Object exports);
void register_system(Napi::Env env, Napi::Object exports);
void register_heads(Napi::Env env, Napi::Object exports);
void register_model(Napi::Env env, Napi::Object exports);
void register_optim(Napi::Env env, Napi::Object exports);
void register_search(Napi::Env env, Napi::Object exports);

}  // namespace fcb
