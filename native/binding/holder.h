// @file holder.h
// @brief The engine object behind a JS wrap (a head, a center loss, a model): built at once on the
// CPU or on its device's queue thread for CUDA, used by queued jobs through a shared Holder, and
// released on the queue after the work already queued (dispose or GC).
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "addon.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"

namespace fcb {

template <typename T>
struct Holder {
  std::unique_ptr<T> obj;
  std::exception_ptr error;
  T& get() {
    if (error) std::rethrow_exception(error);
    FC_CHECK(obj != nullptr, Disposed, "this object has been disposed");
    return *obj;
  }
};

// Builds `make()` into a holder: at once on the CPU, on the device's queue for CUDA.
template <typename T, typename F>
std::shared_ptr<Holder<T>> build_on_device(const fc::Device& device, F make) {
  auto holder = std::make_shared<Holder<T>>();
  if (device.is_cpu()) {
    holder->obj = make();
  } else {
    fc::cuda::require_device(device.index);
    post(device, [holder, make]() {
      try {
        holder->obj = make();
      } catch (...) {
        holder->error = std::current_exception();
      }
    });
  }
  return holder;
}

// The wrap's side of a Holder (a base of the ObjectWrap classes): `holder_` and `device_` set by the
// constructor, live() for every call, release() once.
template <typename T>
class HeldObject {
 protected:
  using H = Holder<T>;
  explicit HeldObject(const char* what) : what_(what) {}
  ~HeldObject() { release(); }

  std::shared_ptr<H> live(Napi::Env env) {
    if (!holder_) throw_error(env, "DISPOSED", std::string("this ") + what_ + " has been disposed");
    return holder_;
  }

  void release() {
    if (holder_) {
      std::shared_ptr<H> h = std::move(holder_);
      post(device_, [h]() mutable { h->obj.reset(); });  // after queued work that uses it
    }
  }

  // Queues fn(object) and resolves to undefined.
  Napi::Value queue_void(Napi::Env env, std::function<void(T&)> fn) {
    auto h = live(env);
    auto job = std::make_unique<Job>(env);
    job->work = [h, fn]() { fn(h->get()); };
    return schedule(env, device_, std::move(job));
  }

  // setTraining(bool) of objects with set_training(bool): queued, so it applies to later calls.
  Napi::Value set_training_call(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    bool training = true;
    try {
      training = arg_bool(info, 0, "training");
    } catch (...) {
      rethrow_as_js(env);
    }
    return queue_void(env, [training](T& obj) { obj.set_training(training); });
  }

  // A tensor argument that must live on this object's device.
  TensorRef arg_on_device(const Napi::CallbackInfo& info, size_t i, const char* name) const {
    TensorRef t = arg_tensor(info, i, name);
    FC_CHECK(t.device == device_, InvalidArgument, "Expected ", name, " on ", device_.str(), " but received a tensor on ",
             t.device.str());
    return t;
  }

  // Wraps a tensor the object owns (sharing its storage) for JS; `missing` when it is undefined.
  static Napi::Value share(Napi::Env env, const std::shared_ptr<Slot>& s, const fc::Device& dev,
                           Napi::Value missing) {
    if (!s->tensor.defined()) return missing;
    return wrap_tensor(env, s, s->tensor.shape(), s->tensor.dtype(), dev);
  }

  std::shared_ptr<H> holder_;
  fc::Device device_;

 private:
  const char* what_;
};

}  // namespace fcb
