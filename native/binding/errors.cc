// @file errors.cc
// @brief fc::Error → the JS FacecudaError class (handed over by init), with its string code.
#include <new>

#include "addon.h"

namespace fcb {

Napi::Value make_error(Napi::Env env, const std::string& code, const std::string& message) {
  EnvData* d = env_data(env);
  if (!d->error_ctor.IsEmpty()) {
    return d->error_ctor.New({Napi::String::New(env, code), Napi::String::New(env, message)});
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e.Value();
}
Napi::Value make_error(Napi::Env env, std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const fc::Error& e) {
    return make_error(env, fc::code_name(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return make_error(env, "OUT_OF_MEMORY", "host memory allocation failed");
  } catch (const Napi::Error& e) {
    return e.Value();
  } catch (const std::exception& e) {
    return make_error(env, "INTERNAL", e.what());
  } catch (...) {
    return make_error(env, "INTERNAL", "unknown native exception");
  }
}

void throw_error(Napi::Env env, const std::string& code, const std::string& message) {
  throw Napi::Error(env, make_error(env, code, message));
}

void rethrow_as_js(Napi::Env env) {
  std::exception_ptr ep = std::current_exception();
  try {
    std::rethrow_exception(ep);
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
  }
  throw Napi::Error(env, make_error(env, ep));
}

}  // namespace fcb
