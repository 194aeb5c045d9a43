// @file system.cc
// @brief Machine and backend facts for `facecuda info`, memory controls and the FMA peak probe.
#include <thread>

#include "addon.h"
#include "facecuda/cpu_info.h"
#include "facecuda/cuda.h"
#include "facecuda/gemm.h"
#include "facecuda/tensor.h"
#include "facecuda/threadpool.h"

#ifndef FACECUDA_BUILD_TOOL
#define FACECUDA_BUILD_TOOL "node-gyp"
#endif

namespace fcb {

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const fc::CpuInfo& c = fc::cpu_info();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("model", c.model);
  cpu.Set("logicalCores", c.logical_cores);
  cpu.Set("threads", fc::ThreadPool::global().num_threads());
  cpu.Set("simd", fc::simd_level_name(fc::simd_level()));
  Napi::Array feats = Napi::Array::New(env);
  uint32_t k = 0;
  auto add = [&](bool have, const char* name) {
    if (have) feats.Set(k++, Napi::String::New(env, name));
  };
  add(c.sse42, "sse4.2");
  add(c.avx, "avx");
  add(c.avx2, "avx2");
  add(c.fma, "fma");
  add(c.f16c, "f16c");
  add(c.avx512f, "avx512f");
  add(c.avx512bw, "avx512bw");
  add(c.avx512vl, "avx512vl");
  add(c.avx512dq, "avx512dq");
  add(c.avx512_bf16, "avx512_bf16");
  add(c.amx_tile, "amx_tile");
  add(c.amx_bf16, "amx_bf16");
  cpu.Set("features", feats);
  cpu.Set("gemmKernel", fc::sgemm_kernel_name(fc::GemmPrecision::F32));
  cpu.Set("gemmKernelBf16", fc::sgemm_kernel_name(fc::GemmPrecision::BF16));
  cpu.Set("cachedBytes", double(fc::host_cache_bytes()));
  o.Set("cpu", cpu);
  Napi::Object build = Napi::Object::New(env);
#ifdef FACECUDA_WITH_CUDA
  build.Set("cuda", true);
#else
  build.Set("cuda", false);
#endif
  build.Set("tool", FACECUDA_BUILD_TOOL);
  build.Set("napiVersion", NAPI_VERSION);
  build.Set("compiler", __VERSION__);
  o.Set("build", build);
  return o;
}

Napi::Object device_info(Napi::Env env, const fc::cuda::DeviceInfo& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", d.index);
  o.Set("name", d.name);
  o.Set("totalMemory", double(d.total_memory));
  o.Set("freeMemory", double(d.free_memory));
  o.Set("computeCapability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
  o.Set("multiprocessors", d.multiprocessors);
  o.Set("pciBusId", d.pci_bus_id);
  return o;
}

// cudaStatus(): probes once (cudart init; fast without a driver) and returns the cached facts.
Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const fc::cuda::Status& s = fc::cuda::status();
    Napi::Object o = Napi::Object::New(env);
    o.Set("compiled", s.compiled);
    o.Set("available", s.available);
    o.Set("reason", s.reason);
    o.Set("runtimeVersion", s.runtime_version);
    o.Set("driverVersion", s.driver_version);
    o.Set("compiledArchs", s.compiled_archs);
    Napi::Array devs = Napi::Array::New(env, s.devices.size());
    for (size_t i = 0; i < s.devices.size(); ++i) devs.Set(static_cast<uint32_t>(i), device_info(env, s.devices[i]));
    o.Set("devices", devs);
    return o;
  } catch (...) {
    rethrow_as_js(env);
  }
}

// cudaLibraries(): Promise<LibraryInfo[]>; opening cuDNN can take a while, so it runs off-thread.
class LibrariesWorker : public Napi::AsyncWorker {
 public:
  explicit LibrariesWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      libs_ = fc::cuda::libraries();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array a = Napi::Array::New(env, libs_.size());
    for (size_t i = 0; i < libs_.size(); ++i) {
      const auto& l = libs_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", l.name);
      o.Set("found", l.found);
      o.Set("path", l.path);
      o.Set("version", l.version);
      o.Set("error", l.error);
      Napi::Array tried = Napi::Array::New(env, l.tried.size());
      for (size_t k = 0; k < l.tried.size(); ++k) tried.Set(static_cast<uint32_t>(k), l.tried[k]);
      o.Set("tried", tried);
      a.Set(static_cast<uint32_t>(i), o);
    }
    deferred_.Resolve(a);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(make_error(Env(), "INTERNAL", e.Message())); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<fc::cuda::LibraryInfo> libs_;
};

Napi::Value CudaLibraries(const Napi::CallbackInfo& info) {
  auto* w = new LibrariesWorker(info.Env());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// fmaPeak(threads, seconds): Promise<number> FLOP/s, run on the CPU queue.
Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    int threads = static_cast<int>(arg_number(info, 0, "threads"));
    double seconds = arg_number(info, 1, "seconds");
    auto result = std::make_shared<double>(0);
    auto job = std::make_unique<Job>(env);
    job->work = [=]() { *result = fc::measure_fma_peak(threads, seconds); };
    job->build = [result](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *result); };
    return schedule(env, fc::Device::cpu(), std::move(job));
  } catch (...) {
    rethrow_as_js(env);
  }
}

fc::Device cuda_arg(const Napi::CallbackInfo& info, size_t i) {
  fc::Device d = arg_device(info, i, "device");
  FC_CHECK(d.is_cuda(), InvalidArgument, "Expected a CUDA device for device but received '", d.str(), "'");
  fc::cuda::require_device(d.index);
  return d;
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    fc::Device d = cuda_arg(info, 0);
    fc::cuda::MemoryStats s = fc::cuda::memory_stats(d.index);
    Napi::Object o = Napi::Object::New(env);
    o.Set("allocated", double(s.allocated));
    o.Set("reserved", double(s.reserved));
    o.Set("peakAllocated", double(s.peak_allocated));
    o.Set("limit", double(s.limit));
    o.Set("numAllocs", double(s.num_allocs));
    o.Set("numDriverAllocs", double(s.num_driver_allocs));
    return o;
  } catch (...) {
    rethrow_as_js(env);
  }
}

Napi::Value SetMemoryLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    fc::Device d = cuda_arg(info, 0);
    double bytes = arg_number(info, 1, "bytes");
    FC_CHECK(bytes >= 0, OutOfRange, "Expected a non-negative number of bytes but received ", bytes);
    fc::cuda::set_memory_limit(d.index, static_cast<size_t>(bytes));
    return env.Undefined();
  } catch (...) {
    rethrow_as_js(env);
  }
}

Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    fc::cuda::reset_peak(cuda_arg(info, 0).index);
    return env.Undefined();
  } catch (...) {
    rethrow_as_js(env);
  }
}

// emptyCache(device): Promise<number> bytes returned to the system (CUDA: to the driver), after the
// work queued before it has finished.
Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    fc::Device d = arg_device(info, 0, "device");
    if (d.is_cuda()) fc::cuda::require_device(d.index);
    auto released = std::make_shared<double>(0);
    auto job = std::make_unique<Job>(env);
    job->work = [d, released]() {
      *released = double(d.is_cuda() ? fc::cuda::empty_cache(d.index) : fc::host_cache_release());
    };
    job->build = [released](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *released); };
    return schedule(env, d, std::move(job));
  } catch (...) {
    rethrow_as_js(env);
  }
}

// synchronize(device): Promise<void> resolved when everything queued before it has finished.
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    fc::Device d = arg_device(info, 0, "device");
    auto job = std::make_unique<Job>(env);
    job->work = [d]() {
      if (d.is_cuda()) fc::cuda::synchronize(d.index);
    };
    return schedule(env, d, std::move(job));
  } catch (...) {
    rethrow_as_js(env);
  }
}

}  // namespace

void register_system(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatus, "cudaStatus"));
  exports.Set("cudaLibraries", Napi::Function::New(env, CudaLibraries, "cudaLibraries"));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak, "fmaPeak"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
  exports.Set("setMemoryLimit", Napi::Function::New(env, SetMemoryLimit, "setMemoryLimit"));
  exports.Set("resetPeakMemory", Napi::Function::New(env, ResetPeakMemory, "resetPeakMemory"));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache, "emptyCache"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
}

}  // namespace fcb
