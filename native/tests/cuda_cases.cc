// @file cuda_cases.cc
// @brief Harness cases for the CUDA backend itself (not its ops): probing, the library search, the
// caching allocator, copies and the sgemm edge cases that need no cuBLAS.
//
// Always run (GPU or not, CUDA build or stub): status() never throws and explains itself;
// libraries() lists what it tried; without a usable device every entry point throws
// CUDA_UNAVAILABLE carrying the reason. CUDA build only: the dlopen search order and preloading on a
// fake library tree, the compiled-architecture check, the memory-size parser. With a device: the
// allocator (reuse, stats, cap, real out-of-memory, empty_cache), copies, sgemm K == 0 / alpha == 0 /
// beta == 0 and the cuDNN handle (sub-library preloading). Every case reports uses_cuda() so
// --cuda-only keeps them; the GPU ones skip with ctx.cuda_reason.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/gemm.h"
#include "harness.h"

#ifdef FACECUDA_WITH_CUDA
#include <dlfcn.h>
#include <stdlib.h>

#include "cuda/cudnn_api.h"
#include "cuda/dynlib.h"
#include "cuda/internal.h"
#endif

namespace fc {
namespace test {
namespace {

using Fn = std::function<CaseResult(Context&)>;

class CudaCase : public OpCase {
 public:
  CudaCase(std::string name, bool needs_device, Fn fn)
      : name_(std::move(name)), needs_device_(needs_device), fn_(std::move(fn)) {}
  std::string op() const override { return "cuda"; }
  std::string params() const override { return name_; }
  bool uses_cuda() const override { return true; }
  CaseResult test(Context& ctx) override {
    if (needs_device_ && !ctx.cuda_available) return CaseResult::skip(ctx.cuda_reason);
    try {
      return fn_(ctx);
    } catch (const Error& e) {
      CaseResult r;
      r.status = CaseResult::Fail;
      r.detail = str("unexpected ", code_name(e.code()), ": ", e.what());
      return r;
    }
  }

 private:
  std::string name_;
  bool needs_device_;
  Fn fn_;
};

CaseResult fail(const std::string& why) {
  CaseResult r;
  r.status = CaseResult::Fail;
  r.detail = why;
  return r;
}

CaseResult pass(const std::string& detail) {
  CaseResult r;
  r.detail = detail;
  return r;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// "" when f throws fc::Error with `code` and a message containing `needle`; else what happened.
std::string expect_error(const char* what, Code code, const std::function<void()>& f, const std::string& needle = "") {
  try {
    f();
  } catch (const Error& e) {
    if (e.code() != code) return str(what, ": expected ", code_name(code), " but got ", code_name(e.code()), ": ", e.what());
    if (!needle.empty() && !contains(e.what(), needle)) {
      return str(what, ": message \"", e.what(), "\" does not contain \"", needle, "\"");
    }
    return "";
  } catch (const std::exception& e) {
    return str(what, ": expected fc::Error ", code_name(code), " but got std::exception: ", e.what());
  }
  return str(what, ": expected ", code_name(code), " but nothing was thrown");
}

// ---- always

CaseResult status_probe(Context& ctx) {
  const cuda::Status* s = nullptr;
  try {
    s = &cuda::status();
  } catch (const std::exception& e) {
    return fail(str("status() threw: ", e.what()));
  }
#ifdef FACECUDA_WITH_CUDA
  if (!s->compiled) return fail("compiled is false in a CUDA build");
  if (s->runtime_version < 13000) return fail(str("runtime_version ", s->runtime_version, " < 13000"));
  if (s->compiled_archs.empty()) return fail("compiled_archs is empty in a CUDA build");
#else
  if (s->compiled) return fail("compiled is true in a build without CUDA");
  if (!contains(s->reason, "without the CUDA backend")) return fail(str("stub reason is \"", s->reason, "\""));
#endif
  if (s->available != ctx.cuda_available) {
    return fail(str("status().available=", s->available, " but the harness context says ", ctx.cuda_available));
  }
  if (s->available) {
    if (!s->reason.empty()) return fail(str("available but reason is \"", s->reason, "\""));
    if (s->devices.empty()) return fail("available but no devices listed");
    for (const cuda::DeviceInfo& d : s->devices) {
      if (d.name.empty() || d.total_memory == 0 || d.multiprocessors <= 0) {
        return fail(str("cuda:", d.index, " has incomplete properties (name \"", d.name, "\", ", d.total_memory,
                        " bytes, ", d.multiprocessors, " SMs)"));
      }
    }
    try {
      cuda::require_device(0);
    } catch (const Error& e) {
      // Device 0 may be the unusable one of several; then another must pass.
      bool any = false;
      for (size_t i = 1; i < s->devices.size() && !any; ++i) {
        try {
          cuda::require_device(static_cast<int>(i));
          any = true;
        } catch (const Error&) {
        }
      }
      if (!any) return fail(str("available, but require_device fails for every device: ", e.what()));
    }
    std::string e = expect_error("require_device(count)", Code::CudaUnavailable,
                                 [&] { cuda::require_device(static_cast<int>(s->devices.size())); }, "does not exist");
    if (!e.empty()) return fail(e);
    e = expect_error("require_device(-1)", Code::CudaUnavailable, [] { cuda::require_device(-1); });
    if (!e.empty()) return fail(e);
  } else {
    if (s->reason.empty()) return fail("not available but the reason is empty");
    std::string e = expect_error("require_device(0)", Code::CudaUnavailable, [] { cuda::require_device(0); }, s->reason);
    if (!e.empty()) return fail(e);
  }
  std::string devices;
  for (const cuda::DeviceInfo& d : s->devices) {
    devices += str(devices.empty() ? "" : ", ", "cuda:", d.index, " ", d.name, " sm_", d.cc_major, d.cc_minor, " ",
                   d.multiprocessors, " SMs ", d.total_memory >> 20, " MiB ", d.pci_bus_id);
  }
  CaseResult r = pass(str("available=", s->available ? "yes" : "no", " runtime=", s->runtime_version,
                          " driver=", s->driver_version, " archs=\"", s->compiled_archs, "\"",
                          s->available ? str(" devices: ", devices) : str(" reason: ", s->reason)));
  r.figures = {{"available", s->available ? 1.0 : 0.0},
               {"runtime_version", static_cast<double>(s->runtime_version)},
               {"driver_version", static_cast<double>(s->driver_version)},
               {"devices", static_cast<double>(s->devices.size())}};
  return r;
}

CaseResult libraries_probe(Context&) {
  std::vector<cuda::LibraryInfo> libs;
  try {
    libs = cuda::libraries();
  } catch (const std::exception& e) {
    return fail(str("libraries() threw: ", e.what()));
  }
  const char* names[] = {"cublas", "cublasLt", "cudnn"};
  if (libs.size() != 3) return fail(str("libraries() returned ", libs.size(), " entries, expected 3"));
  std::string detail;
  CaseResult r;
  for (size_t i = 0; i < 3; ++i) {
    const cuda::LibraryInfo& l = libs[i];
    if (l.name != names[i]) return fail(str("entry ", i, " is \"", l.name, "\", expected \"", names[i], "\""));
    if (l.found) {
      if (l.path.empty() || l.path[0] != '/') return fail(str(l.name, " found but path is \"", l.path, "\""));
      if (l.version.empty()) return fail(str(l.name, " found at ", l.path, " without a version"));
      detail += str(detail.empty() ? "" : "; ", l.name, " ", l.version, " at ", l.path);
    } else {
      if (l.error.empty()) return fail(str(l.name, " not found and no error given"));
      detail += str(detail.empty() ? "" : "; ", l.name, ": ", l.error);
    }
#ifdef FACECUDA_WITH_CUDA
    if (l.name != "cublasLt") {
      if (l.tried.empty()) return fail(str(l.name, ": no search was recorded"));
      bool loader = false, toolkit = false;
      for (const std::string& t : l.tried) {
        loader = loader || contains(t, "[default loader]");
        toolkit = toolkit || contains(t, "[CUDA toolkit]") || contains(t, "[system]");
      }
      // The default loader is always asked unless an explicit location already succeeded; the
      // toolkit and system directories are reached whenever nothing earlier was usable.
      if (!l.found && (!loader || !toolkit)) {
        return fail(str(l.name, ": not found, yet the search skipped ", !loader ? "the default loader" : "the toolkit dirs"));
      }
      if (l.found && !contains(l.tried.back(), "loaded")) {
        return fail(str(l.name, ": found, but the last attempt recorded is \"", l.tried.back(), "\""));
      }
    }
    r.figures.push_back({l.name + "_found", l.found ? 1.0 : 0.0});
    r.figures.push_back({l.name + "_places_tried", static_cast<double>(l.tried.size())});
#else
    if (l.error != "not searched: built without CUDA") return fail(str(l.name, ": stub error is \"", l.error, "\""));
#endif
  }
  r.detail = detail;
  return r;
}

CaseResult unavailable_errors(Context& ctx) {
  if (ctx.cuda_available) return CaseResult::skip("a CUDA device is available: the device cases cover the API");
  const std::string reason = cuda::status().reason;
  float h[4] = {0, 0, 0, 0};
  void* d = reinterpret_cast<void*>(0x1000);  // never dereferenced: every call must fail first
  std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"device_alloc", [] { cuda::device_alloc(0, 16); }},
      {"device_alloc(0 bytes)", [] { cuda::device_alloc(0, 0); }},
      {"memory_stats", [] { cuda::memory_stats(0); }},
      {"set_memory_limit", [] { cuda::set_memory_limit(0, 1 << 20); }},
      {"reset_peak", [] { cuda::reset_peak(0); }},
      {"empty_cache", [] { cuda::empty_cache(0); }},
      {"copy_h2d", [&] { cuda::copy_h2d(0, d, h, sizeof(h)); }},
      {"copy_d2h", [&] { cuda::copy_d2h(0, h, d, sizeof(h)); }},
      {"copy_d2d", [&] { cuda::copy_d2d(0, d, d, sizeof(h)); }},
      {"memset_zero", [&] { cuda::memset_zero(0, d, sizeof(h)); }},
      {"synchronize", [] { cuda::synchronize(0); }},
      {"sgemm", [&] {
         cuda::sgemm(0, false, false, 2, 2, 1, 1.f, static_cast<float*>(d), 1, static_cast<float*>(d), 2, 0.f,
                     static_cast<float*>(d), 2, cuda::MathMode::F32);
       }},
      {"device_free", [&] { cuda::device_free(0, d); }},
  };
  for (auto& c : calls) {
    std::string e = expect_error(c.first, Code::CudaUnavailable, c.second, reason);
    if (!e.empty()) return fail(e);
  }
  try {
    cuda::device_free(0, nullptr);  // freeing nothing never fails
  } catch (const std::exception& e) {
    return fail(str("device_free(nullptr) threw: ", e.what()));
  }
  return pass(str(calls.size(), " entry points throw CUDA_UNAVAILABLE with the reason"));
}

#ifdef FACECUDA_WITH_CUDA
// ---- CUDA build, no device needed

namespace fs = std::filesystem;

struct TempTree {
  fs::path root;
  TempTree() {
    char tmpl[] = "/tmp/facecuda_libsearch_XXXXXX";
    char* p = mkdtemp(tmpl);
    if (p) root = p;
  }
  ~TempTree() {
    std::error_code ec;
    if (!root.empty()) fs::remove_all(root, ec);
  }
  void write(const fs::path& rel, const std::string& text) {
    fs::create_directories((root / rel).parent_path());
    FILE* f = std::fopen((root / rel).c_str(), "wb");
    if (f) {
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    }
  }
  void link(const fs::path& rel, const std::string& target) {
    fs::create_directories((root / rel).parent_path());
    std::error_code ec;
    fs::create_symlink(target, root / rel, ec);
  }
};

size_t index_of(const std::vector<std::string>& v, const std::string& needle) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (contains(v[i], needle)) return i;
  }
  return SIZE_MAX;
}

std::string dump(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += str(s.empty() ? "" : " | ", x);
  return s;
}

CaseResult lib_search(Context&) {
  // A real shared object to stand in for an NVIDIA library: libm (found through a symbol of it).
  void* libm = dlopen("libm.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (!libm) libm = dlopen("libm.so.6", RTLD_NOW);
  std::string libm_path = libm ? cuda::dyn::loaded_path(libm) : "";
  if (libm_path.empty()) return CaseResult::skip("libm.so.6 could not be located to stand in for a library");

  TempTree t;
  if (t.root.empty()) return fail("mkdtemp failed");
  const std::string R = t.root.string();
  t.write("garbage/libfake.so.13", "not an ELF file");
  t.link("nosym/libfake.so.13", libm_path);
  t.link("venv/lib/python3.99/site-packages/nvidia/cu13/lib/libfake.so.13", libm_path);
  t.write("venv/lib/python3.99/site-packages/nvidia/cu13/lib/libfakeLt.so.13", "not an ELF file");
  t.link("cudnn/libfake.so.13", libm_path);
  t.write("cudnn/libcudnn_ops.so.9", "not an ELF file");
  t.write("cudnn/libcudnn_graph.so.9", "not an ELF file");
  t.write("cudnn/libcudnn_zzz.so.9", "not an ELF file");

  cuda::dyn::LibSpec spec;
  spec.name = "fake";
  spec.soname = "libfake.so.13";
  spec.path_env = "FC_TEST_FAKE_PATH";
  spec.pip_dirs = {"cu13"};
  spec.preload = {"libfakeLt.so.13"};
  spec.required_symbols = {"fc_no_such_symbol_anywhere"};
  std::map<std::string, std::string> env = {
      {"FC_TEST_FAKE_PATH", R + "/does/not/exist"},
      {"FACECUDA_CUDA_LIB_DIRS", R + "/garbage:" + R + "/nosym:" + R + "/missing_dir"},
      {"VIRTUAL_ENV", R + "/venv"},
  };
  auto envfn = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };

  // 1. Nothing usable: every stage recorded, in the documented order, each with its reason.
  cuda::dyn::Opened o = cuda::dyn::open_library(spec, envfn);
  if (o.handle) return fail(str("a library without the required symbol was accepted: ", o.path));
  if (o.error.empty()) return fail("no error for a library that was not found");
  const std::vector<std::string> tr = o.tried;
  struct Want {
    const char* needle;
    const char* why;
  };
  const Want order[] = {
      {"[FC_TEST_FAKE_PATH]", "the explicit path variable"},
      {"garbage/libfake.so.13", "the garbage file in FACECUDA_CUDA_LIB_DIRS"},
      {"lacks fc_no_such_symbol_anywhere", "the library without the symbol"},
      {"missing_dir: no such directory", "the missing directory"},
      {"[default loader]", "the default loader"},
      {"[preload]", "the preload of libfakeLt.so.13 from the venv directory"},
      {"[python: $VIRTUAL_ENV]", "the virtualenv site-packages"},
      {"[CUDA toolkit]", "the CUDA toolkit directories"},
      {"[system]", "/usr/lib/x86_64-linux-gnu"},
  };
  size_t last = 0;
  for (const Want& w : order) {
    size_t i = index_of(tr, w.needle);
    if (i == SIZE_MAX) return fail(str("no attempt recorded for ", w.why, " (\"", w.needle, "\"): ", dump(tr)));
    if (i < last) return fail(str(w.why, " was tried out of order: ", dump(tr)));
    last = i;
  }
  if (!contains(tr[index_of(tr, "[FC_TEST_FAKE_PATH]")], "no such file or directory")) {
    return fail(str("the explicit path's entry lacks its reason: ", dump(tr)));
  }

  // 2. Found in the virtualenv (symbol present): the path is absolute and the preload was attempted
  //    before the library, from its directory.
  env.erase("FACECUDA_CUDA_LIB_DIRS");
  env.erase("FC_TEST_FAKE_PATH");
  spec.required_symbols = {"cos"};
  o = cuda::dyn::open_library(spec, envfn);
  if (!o.handle) return fail(str("the venv candidate was not loaded: ", o.error, ": ", dump(o.tried)));
  if (o.path.empty() || o.path[0] != '/') return fail(str("loaded path is \"", o.path, "\""));
  size_t pre = index_of(o.tried, "libfakeLt.so.13"), got = index_of(o.tried, "loaded " + o.path);
  if (pre == SIZE_MAX || got == SIZE_MAX || pre > got || !contains(o.tried[got], "[python: $VIRTUAL_ENV]")) {
    return fail(str("venv load or its preload not recorded as expected: ", dump(o.tried)));
  }

  // 3. cuDNN mode: the libcudnn_*.so.9 of the chosen directory are preloaded, graph before ops,
  //    unknown ones after the known ones, failures recorded without stopping the load.
  env.clear();
  env["FACECUDA_CUDA_LIB_DIRS"] = R + "/cudnn";
  spec.preload.clear();
  spec.cudnn_sublibraries = true;
  o = cuda::dyn::open_library(spec, envfn);
  if (!o.handle) return fail(str("the cuDNN-mode candidate was not loaded: ", dump(o.tried)));
  size_t g = index_of(o.tried, "libcudnn_graph.so.9"), op = index_of(o.tried, "libcudnn_ops.so.9"),
         z = index_of(o.tried, "libcudnn_zzz.so.9"), lib = index_of(o.tried, "loaded " + o.path);
  if (g == SIZE_MAX || op == SIZE_MAX || z == SIZE_MAX || !(g < op && op < z && z < lib)) {
    return fail(str("cuDNN sub-library preload order is wrong: ", dump(o.tried)));
  }
  return pass(str(tr.size(), " places recorded when nothing is usable; venv and cuDNN-mode loads as documented"));
}

CaseResult arch_check(Context&) {
  using cuda::detail::arch_mismatch;
  using cuda::detail::format_archs;
  struct C {
    const char* archs;
    int major, minor;
    bool ok;
  };
  const C cases[] = {
      {"90-real 90-virtual", 9, 0, true},   {"90-real 90-virtual", 8, 0, false}, {"90-real 90-virtual", 10, 0, true},
      {"90-real 90-virtual", 12, 0, true},  {"90-real", 10, 0, false},           {"90-real", 9, 0, true},
      {"80-real", 8, 6, true},              {"86-real", 8, 0, false},            {"90a-real", 9, 0, true},
      {"90a-real", 10, 0, false},           {"all-major", 7, 5, true},           {"75;90-real", 8, 9, true},
      {"80-virtual", 7, 5, false},          {"", 7, 5, true},
  };
  for (const C& c : cases) {
    std::string why = arch_mismatch(c.archs, c.major, c.minor);
    if (why.empty() != c.ok) {
      return fail(str("arch_mismatch(\"", c.archs, "\", ", c.major, ".", c.minor, ") = \"", why, "\", expected ",
                      c.ok ? "compatible" : "a mismatch"));
    }
  }
  std::string why = arch_mismatch("90-real 90-virtual", 8, 0);
  if (!contains(why, "8.0") || !contains(why, "sm_90 compute_90") || !contains(why, "80-real;90-real;90-virtual")) {
    return fail(str("mismatch message lacks the facts: \"", why, "\""));
  }
  struct F {
    const char* in;
    const char* out;
  };
  const F fmts[] = {{"90-real 90-virtual", "sm_90 compute_90"}, {"80;90a-real", "sm_80 compute_80 sm_90a"},
                    {"all-major", "all-major"}};
  for (const F& f : fmts) {
    if (format_archs(f.in) != f.out) return fail(str("format_archs(\"", f.in, "\") = \"", format_archs(f.in), "\""));
  }
  return pass(str(sizeof(cases) / sizeof(cases[0]), " capability/arch pairs"));
}

CaseResult memory_size_parse(Context&) {
  using cuda::detail::parse_memory_size;
  const size_t Ki = 1024, Mi = Ki * Ki, Gi = Mi * Ki;
  struct C {
    const char* text;
    size_t want;
  };
  const C good[] = {{"0", 0},         {"1073741824", Gi}, {"512M", 512 * Mi}, {"512MiB", 512 * Mi},
                    {"512mb", 512 * Mi}, {" 2G ", 2 * Gi}, {"1.5GiB", Gi + Gi / 2}, {"64 KiB", 64 * Ki},
                    {"1K", Ki},       {"1t", Gi * Ki},   {"100b", 100}};
  for (const C& c : good) {
    size_t got = 1234567;
    std::string why;
    if (!parse_memory_size(c.text, &got, &why) || got != c.want) {
      return fail(str("parse_memory_size(\"", c.text, "\") = ", got, " (", why, "), expected ", c.want));
    }
  }
  const char* bad[] = {"", "abc", "-1", "1X", "12 parsecs", "1.5", "99999999999999999999G", "G"};
  for (const char* b : bad) {
    size_t got = 0;
    std::string why;
    if (parse_memory_size(b, &got, &why)) return fail(str("parse_memory_size(\"", b, "\") accepted as ", got));
    if (why.empty()) return fail(str("parse_memory_size(\"", b, "\") rejected without a reason"));
  }
  return pass(str(sizeof(good) / sizeof(good[0]), " valid and ", sizeof(bad) / sizeof(bad[0]), " invalid sizes"));
}

// The caching pool's logic over a fake driver: a device of `capacity` bytes handing out fake
// addresses (never dereferenced), recording every call so the order (synchronize before cudaFree) is
// checked too.
class FakeDriver final : public cuda::detail::PoolDriver {
 public:
  struct Log {
    std::vector<std::string> events;
    size_t used = 0;
  };
  FakeDriver(size_t capacity, std::shared_ptr<Log> log) : capacity_(capacity), log_(std::move(log)) {}
  cudaError_t malloc(void** p, size_t bytes) override {
    if (next_error != cudaSuccess) {
      cudaError_t e = next_error;
      next_error = cudaSuccess;
      return e;
    }
    if (log_->used + bytes > capacity_) {
      log_->events.push_back("malloc-oom");
      return cudaErrorMemoryAllocation;
    }
    next_addr_ += (bytes + 4095) / 4096 * 4096 + 4096;
    *p = reinterpret_cast<void*>(next_addr_);
    sizes_[*p] = bytes;
    log_->used += bytes;
    log_->events.push_back("malloc");
    return cudaSuccess;
  }
  cudaError_t free(void* p) override {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return cudaErrorInvalidValue;
    log_->used -= it->second;
    sizes_.erase(it);
    log_->events.push_back("free");
    return cudaSuccess;
  }
  cudaError_t synchronize() override {
    log_->events.push_back("sync");
    return sync_error;
  }
  bool mem_info(size_t* free_b, size_t* total_b) override {
    *free_b = capacity_ - log_->used;
    *total_b = capacity_;
    return true;
  }
  cudaError_t next_error = cudaSuccess;
  cudaError_t sync_error = cudaSuccess;

 private:
  size_t capacity_;
  std::shared_ptr<Log> log_;
  uintptr_t next_addr_ = 0x100000;
  std::map<void*, size_t> sizes_;
};

CaseResult allocator_logic(Context& ctx) {
  using cuda::detail::CachingPool;
  const size_t MiB = size_t(1) << 20;
  auto make = [](size_t capacity, size_t limit, std::shared_ptr<FakeDriver::Log> log, FakeDriver** drv,
                 std::string config_error = "") {
    auto d = std::make_unique<FakeDriver>(capacity, log);
    *drv = d.get();
    return std::make_unique<CachingPool>(0, std::move(d), limit, std::move(config_error));
  };
  auto count = [](const FakeDriver::Log& l, const char* ev) {
    size_t n = 0;
    for (const std::string& e : l.events) n += e == ev;
    return n;
  };
  FakeDriver* drv = nullptr;

  // Rounding, reuse, smallest fit, the waste bound, stats, peak, zero bytes, bad frees.
  auto log = std::make_shared<FakeDriver::Log>();
  auto pool = make(256 * MiB, 0, log, &drv);
  if (pool->alloc(0) != nullptr || pool->stats().num_allocs != 0) return fail("alloc(0) must return null and count nothing");
  void* p = pool->alloc(1000);
  cuda::MemoryStats s = pool->stats();
  if (s.allocated != 1024 || s.reserved != 1024 || s.num_driver_allocs != 1) return fail("1000 bytes must take one 1024-byte block");
  pool->free(p);
  if (pool->alloc(600) != p) return fail("600 bytes (1024 rounded) must reuse the cached 1024-byte block");
  pool->free(p);
  void* big = pool->alloc(10 * MiB);
  pool->free(big);
  void* four = pool->alloc(4 * MiB);  // the cached 10 MiB block wastes too much: a new block
  if (four == big || count(*log, "malloc") != 3) return fail("a 4 MiB request must not take a cached 10 MiB block");
  pool->free(four);
  if (pool->alloc(9 * MiB) != big) return fail("9 MiB (10 MiB rounded) must reuse the cached 10 MiB block");
  if (pool->alloc(3 * MiB + 1) != four) return fail("3 MiB + 1 (4 MiB rounded) must take the smallest fitting block");
  s = pool->stats();
  if (s.allocated != 14 * MiB || s.reserved != 14 * MiB + 1024 || s.num_driver_allocs != 3 || s.num_allocs != 6) {
    return fail(str("stats after reuse: allocated ", s.allocated, " reserved ", s.reserved, " driver allocs ",
                    s.num_driver_allocs, " allocs ", s.num_allocs));
  }
  pool->free(big);
  pool->free(four);
  if (pool->stats().peak_allocated != 14 * MiB) return fail("peak_allocated must stay at the high-water mark");
  pool->reset_peak();
  if (pool->stats().peak_allocated != 0) return fail("reset_peak must bring the peak down to `allocated`");
  std::string e = expect_error("double free", Code::InvalidArgument, [&] { pool->free(big); }, "not allocated");
  if (!e.empty()) return fail(e);
  log->events.clear();
  size_t released = pool->empty_cache();
  if (released != 14 * MiB + 1024 || pool->stats().reserved != 0) return fail(str("empty_cache released ", released));
  if (log->events.empty() || log->events[0] != "sync" || count(*log, "free") != 3) {
    return fail("empty_cache must synchronize the device before its three cudaFree calls");
  }
  if (pool->empty_cache() != 0) return fail("a second empty_cache must release nothing");

  // The cap: the cache is released first (synchronize, free), then OUT_OF_MEMORY with the figures.
  log = std::make_shared<FakeDriver::Log>();
  pool = make(256 * MiB, 16 * MiB, log, &drv);
  void* a = pool->alloc(8 * MiB);
  void* b = pool->alloc(4 * MiB);
  pool->free(b);
  log->events.clear();
  void* c = pool->alloc(6 * MiB);  // 12 + 6 > 16: release the cached 4 MiB, then 8 + 6 fits
  if (!c || log->events != std::vector<std::string>{"sync", "free", "malloc"}) {
    return fail(str("over the cap with a cache: expected sync, free, malloc but saw ", dump(log->events)));
  }
  e = expect_error("over the cap", Code::OutOfMemory, [&] { pool->alloc(4 * MiB); }, "exceed the memory limit");
  if (e.empty()) {
    try {
      pool->alloc(4 * MiB);
    } catch (const Error& err) {
      for (const char* want : {"tried to allocate 4.00 MiB", "allocated 14.00 MiB", "reserved 14.00 MiB", "limit 16.00 MiB",
                               "free of 256.00 MiB"}) {
        if (!contains(err.what(), want)) e = str("the cap message lacks \"", want, "\": ", err.what());
      }
    }
  }
  if (!e.empty()) return fail(e);
  if (pool->stats().allocated != 14 * MiB) return fail("a refused allocation changed `allocated`");
  pool->set_limit(0);
  void* d = pool->alloc(4 * MiB);  // no cap any more
  pool->free(a);
  pool->free(c);
  pool->free(d);

  // Driver out of memory: release the cache and retry once; then OUT_OF_MEMORY.
  log = std::make_shared<FakeDriver::Log>();
  pool = make(10 * MiB, 0, log, &drv);
  a = pool->alloc(6 * MiB);
  pool->free(a);
  log->events.clear();
  b = pool->alloc(8 * MiB);
  if (!b || log->events != std::vector<std::string>{"malloc-oom", "sync", "free", "malloc"}) {
    return fail(str("driver out of memory with a cache: expected malloc-oom, sync, free, malloc but saw ", dump(log->events)));
  }
  e = expect_error("driver out of memory", Code::OutOfMemory, [&] { pool->alloc(4 * MiB); }, "even after the cache was released");
  if (!e.empty()) return fail(e);
  drv->next_error = cudaErrorInvalidValue;
  e = expect_error("another driver error", Code::CudaError, [&] { pool->alloc(1 * MiB); }, "cudaMalloc failed: cudaErrorInvalidValue");
  if (!e.empty()) return fail(e);
  pool->free(b);
  drv->sync_error = cudaErrorIllegalAddress;
  e = expect_error("a failing synchronize", Code::CudaError, [&] { pool->empty_cache(); }, "sticky");
  if (!e.empty()) return fail(e);

  // An invalid FACECUDA_CUDA_MEMORY_LIMIT stops allocations until set_limit.
  log = std::make_shared<FakeDriver::Log>();
  pool = make(10 * MiB, 0, log, &drv, "FACECUDA_CUDA_MEMORY_LIMIT is invalid: \"12 parsecs\"");
  e = expect_error("invalid env cap", Code::InvalidArgument, [&] { pool->alloc(16); }, "FACECUDA_CUDA_MEMORY_LIMIT");
  if (!e.empty()) return fail(e);
  pool->set_limit(0);
  pool->free(pool->alloc(16));

  // Frees from other threads while one thread allocates: the books balance.
  log = std::make_shared<FakeDriver::Log>();
  pool = make(1024 * MiB, 0, log, &drv);
  auto rng = make_rng(ctx, "allocator_logic");
  std::vector<size_t> sizes(4000);
  for (size_t& z : sizes) z = 1 + rng() % (3 * MiB);
  std::vector<std::thread> threads;
  std::string thread_error;
  std::mutex emu;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (size_t i = static_cast<size_t>(t); i < sizes.size(); i += 4) pool->free(pool->alloc(sizes[i]));
      } catch (const std::exception& ex) {
        std::lock_guard<std::mutex> l(emu);
        thread_error = ex.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  if (!thread_error.empty()) return fail(str("concurrent alloc/free threw: ", thread_error));
  s = pool->stats();
  if (s.allocated != 0 || s.num_allocs != sizes.size() || s.reserved != log->used) {
    return fail(str("after concurrent use: allocated ", s.allocated, ", ", s.num_allocs, " allocations, reserved ",
                    s.reserved, " vs driver ", log->used));
  }
  CaseResult r = pass(str("rounding, reuse, cap, driver out-of-memory retry, errors and 4-thread use; ",
                          s.num_driver_allocs, " cudaMalloc for ", s.num_allocs, " allocations"));
  r.figures = {{"driver_allocs", static_cast<double>(s.num_driver_allocs)}};
  return r;
}
#endif  // FACECUDA_WITH_CUDA

// ---- with a device (cuda:0)

CaseResult allocator_reuse(Context&) {
  const int dev = 0;
  const size_t MiB = size_t(1) << 20;
  cuda::MemoryStats base = cuda::memory_stats(dev);
  void* p = cuda::device_alloc(dev, 1000);
  cuda::MemoryStats s1 = cuda::memory_stats(dev);
  if (!p) return fail("device_alloc(1000) returned null");
  if (s1.allocated != base.allocated + 1024) return fail(str("1000 bytes should count as 1024; allocated grew by ", s1.allocated - base.allocated));
  if (s1.num_allocs != base.num_allocs + 1) return fail("num_allocs did not grow by 1");
  cuda::device_free(dev, p);
  cuda::MemoryStats s2 = cuda::memory_stats(dev);
  if (s2.allocated != base.allocated) return fail("allocated did not return to its value after the free");
  if (s2.reserved != s1.reserved) return fail("a free changed reserved: freed blocks must stay cached");
  void* q = cuda::device_alloc(dev, 900);  // rounds to 1024: served from the cache
  cuda::MemoryStats s3 = cuda::memory_stats(dev);
  if (s3.num_driver_allocs != s2.num_driver_allocs) return fail("a 900-byte request after freeing 1024 bytes went to cudaMalloc");
  cuda::device_free(dev, q);

  void* a = cuda::device_alloc(dev, 3 * MiB + 1);  // large: rounds to 4 MiB
  cuda::MemoryStats s4 = cuda::memory_stats(dev);
  if (s4.allocated - s3.allocated + 1024 != 4 * MiB) {
    return fail(str("3 MiB + 1 should count as 4 MiB; allocated is ", s4.allocated, " after ", s3.allocated));
  }
  cuda::device_free(dev, a);
  void* b = cuda::device_alloc(dev, 4 * MiB);
  cuda::MemoryStats s5 = cuda::memory_stats(dev);
  if (s5.num_driver_allocs != s4.num_driver_allocs) return fail("a 4 MiB request after freeing a 4 MiB block went to cudaMalloc");
  cuda::device_free(dev, b);

  if (cuda::device_alloc(dev, 0) != nullptr) return fail("device_alloc(0) should return null");
  if (cuda::memory_stats(dev).num_allocs != s5.num_allocs) return fail("a 0-byte allocation was counted");

  cuda::reset_peak(dev);
  void* big = cuda::device_alloc(dev, 8 * MiB);
  cuda::device_free(dev, big);
  cuda::MemoryStats s6 = cuda::memory_stats(dev);
  if (s6.peak_allocated < s6.allocated + 8 * MiB) return fail("peak_allocated missed an 8 MiB allocation");

  size_t released = cuda::empty_cache(dev);
  cuda::MemoryStats s7 = cuda::memory_stats(dev);
  if (released < 12 * MiB) return fail(str("empty_cache released ", released, " bytes, expected >= 12 MiB"));
  if (s7.reserved != s7.allocated) return fail(str("after empty_cache reserved ", s7.reserved, " != allocated ", s7.allocated));

  void* c = cuda::device_alloc(dev, 256);
  cuda::device_free(dev, c);
  std::string e = expect_error("double free", Code::InvalidArgument, [&] { cuda::device_free(dev, c); }, "not allocated");
  if (e.empty()) e = expect_error("foreign pointer", Code::InvalidArgument, [&] { cuda::device_free(dev, reinterpret_cast<void*>(0x1234)); });
  if (!e.empty()) return fail(e);
  CaseResult r = pass(str("reuse, rounding, stats, peak and empty_cache (released ", released >> 20, " MiB)"));
  r.figures = {{"reserved_after_empty_cache", static_cast<double>(s7.reserved)}};
  return r;
}

CaseResult allocator_limit(Context&) {
  const int dev = 0;
  const size_t MiB = size_t(1) << 20;
  cuda::empty_cache(dev);
  cuda::MemoryStats st = cuda::memory_stats(dev);
  const size_t old_limit = st.limit;
  cuda::set_memory_limit(dev, st.reserved + 8 * MiB);
  std::string err;
  void* a = nullptr;
  try {
    a = cuda::device_alloc(dev, 4 * MiB);
    err = expect_error("allocation over the limit", Code::OutOfMemory, [&] { cuda::device_alloc(dev, 16 * MiB); }, "limit");
    if (err.empty() && cuda::memory_stats(dev).allocated != st.allocated + 4 * MiB) err = "a failed allocation changed `allocated`";
  } catch (...) {
    cuda::set_memory_limit(dev, old_limit);
    throw;
  }
  cuda::device_free(dev, a);
  cuda::set_memory_limit(dev, old_limit);
  if (!err.empty()) return fail(err);

  // A real driver out-of-memory: more than the device has. OUT_OF_MEMORY, and the device stays usable.
  size_t total = cuda::status().devices[dev].total_memory;
  err = expect_error("allocation beyond the device", Code::OutOfMemory, [&] { cuda::device_alloc(dev, total + (size_t(1) << 30)); },
                     "out of memory");
  if (!err.empty()) return fail(err);
  void* after = cuda::device_alloc(dev, MiB);
  cuda::device_free(dev, after);
  cuda::synchronize(dev);
  return pass("cap -> OUT_OF_MEMORY with stats; a too-large request -> OUT_OF_MEMORY; the device stays usable");
}

CaseResult copies(Context& ctx) {
  const int dev = 0;
  const size_t n = 1000;
  auto rng = make_rng(ctx, "cuda_copies");
  std::vector<float> host(n), back(n), back2(n);
  fill_uniform(rng, host.data(), n, -1.f, 1.f);
  float* d1 = static_cast<float*>(cuda::device_alloc(dev, n * sizeof(float)));
  float* d2 = static_cast<float*>(cuda::device_alloc(dev, n * sizeof(float)));
  cuda::copy_h2d(dev, d1, host.data(), n * sizeof(float));
  cuda::copy_d2d(dev, d2, d1, n * sizeof(float));
  cuda::memset_zero(dev, d1, 100 * sizeof(float));
  cuda::copy_d2h(dev, back.data(), d2, n * sizeof(float));
  cuda::copy_d2h(dev, back2.data(), d1, n * sizeof(float));
  // Zero-byte calls are no-ops even with null pointers.
  cuda::copy_h2d(dev, nullptr, nullptr, 0);
  cuda::copy_d2h(dev, nullptr, nullptr, 0);
  cuda::copy_d2d(dev, nullptr, nullptr, 0);
  cuda::memset_zero(dev, nullptr, 0);
  cuda::synchronize(dev);
  std::string e = expect_error("null destination", Code::InvalidArgument, [&] { cuda::copy_h2d(dev, nullptr, host.data(), 4); });
  cuda::device_free(dev, d1);
  cuda::device_free(dev, d2);
  if (!e.empty()) return fail(e);
  if (std::memcmp(back.data(), host.data(), n * sizeof(float)) != 0) return fail("h2d -> d2d -> d2h did not round-trip");
  for (size_t i = 0; i < n; ++i) {
    float want = i < 100 ? 0.f : host[i];
    if (std::memcmp(&back2[i], &want, sizeof(float)) != 0) return fail(str("memset_zero/h2d mismatch at ", i));
  }
  return pass("h2d, d2d, memset_zero, d2h round trip of 1000 floats; zero-byte calls are no-ops");
}

CaseResult sgemm_edges(Context&) {
  const int dev = 0;
  const int64_t M = 3, N = 5;
  std::vector<float> c0(M * 8), out(M * 8);
  for (size_t i = 0; i < c0.size(); ++i) c0[i] = static_cast<float>(i) - 7.f;
  float* C = static_cast<float*>(cuda::device_alloc(dev, c0.size() * sizeof(float)));
  float* A = static_cast<float*>(cuda::device_alloc(dev, 64 * sizeof(float)));
  std::vector<float> nan(64, NAN);
  cuda::copy_h2d(dev, A, nan.data(), 64 * sizeof(float));
  std::string err;
  auto check = [&](const char* what, float beta, bool c_nan) {
    if (!err.empty()) return;
    std::vector<float> in = c0;
    if (c_nan) in.assign(in.size(), NAN);
    cuda::copy_h2d(dev, C, in.data(), in.size() * sizeof(float));
    // ldc = 8 > N: the padding columns must stay untouched.
    if (std::string(what) == "K=0") {
      cuda::sgemm(dev, false, false, M, N, 0, 1.f, nullptr, 1, nullptr, N, beta, C, 8, cuda::MathMode::F32);
    } else {  // alpha == 0: A and B (NaN here) are not read
      cuda::sgemm(dev, false, true, M, N, 4, 0.f, A, 4, A, 4, beta, C, 8, cuda::MathMode::TF32);
    }
    cuda::copy_d2h(dev, out.data(), C, out.size() * sizeof(float));
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < 8; ++j) {
        float w = j < N ? (beta == 0.f ? 0.f : beta * in[i * 8 + j]) : in[i * 8 + j];
        float g = out[i * 8 + j];
        bool same = (std::isnan(w) && std::isnan(g)) || w == g;
        if (!same) {
          err = str(what, " beta=", beta, ": C[", i, ",", j, "] = ", g, ", expected ", w);
          return;
        }
      }
    }
  };
  check("K=0", 0.5f, false);
  check("K=0", 0.f, true);
  check("alpha=0", -2.f, false);
  check("alpha=0", 0.f, true);
  check("K=0", 1.f, false);
  // Argument errors: the CPU sgemm's messages.
  if (err.empty()) {
    std::string cpu_msg, gpu_msg;
    try {
      fc::sgemm(false, false, M, N, 4, 1.f, A, 3, A, N, 0.f, C, N);
    } catch (const Error& e) {
      cpu_msg = e.what();
    }
    try {
      cuda::sgemm(dev, false, false, M, N, 4, 1.f, A, 3, A, N, 0.f, C, N, cuda::MathMode::F32);
    } catch (const Error& e) {
      gpu_msg = e.what();
      if (e.code() != Code::InvalidArgument) err = str("bad lda: ", code_name(e.code()), " instead of INVALID_ARGUMENT");
    }
    if (err.empty() && (cpu_msg.empty() || cpu_msg != gpu_msg)) {
      err = str("bad lda: CPU says \"", cpu_msg, "\", CUDA says \"", gpu_msg, "\"");
    }
  }
  cuda::device_free(dev, A);
  cuda::device_free(dev, C);
  if (!err.empty()) return fail(err);
  return pass("K=0 and alpha=0 give beta*C (beta=0 writes zeros over NaN, A/B unread, ldc padding kept); CPU messages");
}

#ifdef FACECUDA_WITH_CUDA
CaseResult cudnn_handle(Context&) {
  std::vector<cuda::LibraryInfo> libs = cuda::libraries();
  if (!libs[2].found) return CaseResult::skip(str("cuDNN not found: ", libs[2].error));
  cuda::dnn::Handle h = cuda::dnn::handle(0);  // preloaded sub-libraries + cudnnCreate + cudnnSetStream
  if (!h) return fail("cudnnCreate returned a null handle");
  if (cuda::dnn::handle(0) != h) return fail("the cuDNN handle of cuda:0 is not cached");
  return pass(str("cudnnCreate/cudnnSetStream on cuda:0 with cuDNN ", libs[2].version, " from ", libs[2].path));
}
#endif

std::vector<std::unique_ptr<OpCase>> make_cases() {
  std::vector<std::unique_ptr<OpCase>> v;
  v.push_back(std::make_unique<CudaCase>("status", false, status_probe));
  v.push_back(std::make_unique<CudaCase>("libraries", false, libraries_probe));
  v.push_back(std::make_unique<CudaCase>("unavailable_errors", false, unavailable_errors));
#ifdef FACECUDA_WITH_CUDA
  v.push_back(std::make_unique<CudaCase>("lib_search", false, lib_search));
  v.push_back(std::make_unique<CudaCase>("arch_check", false, arch_check));
  v.push_back(std::make_unique<CudaCase>("memory_size_parse", false, memory_size_parse));
  v.push_back(std::make_unique<CudaCase>("allocator_logic", false, allocator_logic));
#endif
  v.push_back(std::make_unique<CudaCase>("allocator_reuse", true, allocator_reuse));
  v.push_back(std::make_unique<CudaCase>("allocator_limit", true, allocator_limit));
  v.push_back(std::make_unique<CudaCase>("copies", true, copies));
  v.push_back(std::make_unique<CudaCase>("sgemm_edges", true, sgemm_edges));
#ifdef FACECUDA_WITH_CUDA
  v.push_back(std::make_unique<CudaCase>("cudnn_handle", true, cudnn_handle));
#endif
  return v;
}

}  // namespace

FC_REGISTER_CASES(cuda, make_cases);

}  // namespace test
}  // namespace fc
