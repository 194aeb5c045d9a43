// @file libraries.cc
// @brief cuBLAS, cuBLASLt and cuDNN opened at run time (dynlib.h), their symbol tables, versions,
// libraries(), and the per-device library handles.
//
// - Each library is searched once per process, on first need (std::call_once); the result, found or
//   not, is kept with every place tried. A library that loads but lacks a symbol, or has the wrong
//   major version, is reported as not found with the reason.
// - Versions are read without a GPU: cublasGetProperty / cublasLtGetProperty (MAJOR, MINOR, PATCH)
//   and cudnnGetVersion.
// - cuBLASLt is not searched on its own: it is the library libcublas.so.13 depends on, preloaded from
//   the directory cuBLAS is taken from (or found by the loader). Its entry reports the copy that is
//   loaded in the process after cuBLAS loaded.
// - Handles (one per device and library) are created on first use, bound to the device's stream and
//   never destroyed (destroying them from static destructors races the runtime's teardown).
#include <dlfcn.h>

#include <memory>
#include <mutex>
#include <vector>

#include "cuda/cublas_api.h"
#include "cuda/cudnn_api.h"
#include "cuda/dynlib.h"
#include "cuda/internal.h"
#include "facecuda/cuda.h"

namespace fc {
namespace cuda {

namespace {

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const std::string& x : v) {
    if (!s.empty()) s += sep;
    s += x;
  }
  return s;
}

template <typename Fn>
void load_symbol(void* h, const char* name, Fn* out, std::string* missing) {
  std::string err;
  void* p = dyn::find_symbol(h, name, &err);
  if (!p && missing && missing->empty()) *missing = str(name, " (", err, ")");
  *out = reinterpret_cast<Fn>(p);
}

// ---- cuBLAS / cuBLASLt

struct CublasState {
  bool ok = false;
  blas::Api api;
  LibraryInfo info;
  LibraryInfo lt;
};

std::string property_version(blas::GetPropertyFn get, std::string* error) {
  int v[3] = {0, 0, 0};
  const libraryPropertyType props[3] = {MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL};
  for (int i = 0; i < 3; ++i) {
    if (get(props[i], &v[i]) != blas::kStatusSuccess) {
      *error = "the version query (GetProperty) failed";
      return "";
    }
  }
  return str(v[0], ".", v[1], ".", v[2]);
}

CublasState load_cublas() {
  CublasState s;
  s.info.name = "cublas";
  s.lt.name = "cublasLt";
  dyn::LibSpec spec;
  spec.name = "cublas";
  spec.soname = "libcublas.so.13";
  spec.path_env = "FACECUDA_CUBLAS_PATH";
  spec.pip_dirs = {"cu13", "cublas"};
  spec.preload = {"libcublasLt.so.13"};
  spec.required_symbols = {"cublasCreate_v2",       "cublasDestroy_v2", "cublasSetStream_v2", "cublasSetMathMode",
                           "cublasSetWorkspace_v2", "cublasGemmEx",     "cublasSgemm_v2",     "cublasGetProperty",
                           "cublasGemmStridedBatchedEx"};
  dyn::Opened o = dyn::open_library(spec);
  s.info.tried = o.tried;
  for (const std::string& t : o.tried) {
    if (t.find("libcublasLt") != std::string::npos) s.lt.tried.push_back(t);
  }
  if (!o.handle) {
    s.info.error = o.error + "; cuBLAS 13 comes with the CUDA 13 toolkit or `pip install nvidia-cublas`";
    s.lt.error = "cuBLASLt is loaded as the dependency of cuBLAS, and cuBLAS was not found";
    return s;
  }
  std::string missing;
  blas::Api& a = s.api;
  load_symbol(o.handle, "cublasCreate_v2", &a.create, &missing);
  load_symbol(o.handle, "cublasDestroy_v2", &a.destroy, &missing);
  load_symbol(o.handle, "cublasSetStream_v2", &a.set_stream, &missing);
  load_symbol(o.handle, "cublasSetMathMode", &a.set_math_mode, &missing);
  load_symbol(o.handle, "cublasSetWorkspace_v2", &a.set_workspace, &missing);
  load_symbol(o.handle, "cublasGemmEx", &a.gemm_ex, &missing);
  load_symbol(o.handle, "cublasSgemm_v2", &a.sgemm, &missing);
  load_symbol(o.handle, "cublasGemmStridedBatchedEx", &a.gemm_strided_batched_ex, &missing);
  load_symbol(o.handle, "cublasGetProperty", &a.get_property, &missing);
  load_symbol(o.handle, "cublasGetStatusName", &a.status_name, nullptr);  // optional
  load_symbol(o.handle, "cublasGetStatusString", &a.status_string, nullptr);
  s.info.path = o.path;
  if (!missing.empty()) {  // cannot happen after open_library checked them; kept as a guard
    s.info.error = str(o.path, " lacks ", missing);
    return s;
  }
  std::string verr;
  s.info.version = property_version(a.get_property, &verr);
  if (s.info.version.empty()) {
    s.info.error = str(o.path, ": ", verr);
    return s;
  }
  if (s.info.version.compare(0, 3, "13.") != 0) {
    s.info.error = str(o.path, " is cuBLAS ", s.info.version, "; facecuda is built with CUDA 13 and needs cuBLAS 13");
    return s;
  }
  s.info.found = true;
  s.ok = true;

  // The cuBLASLt that libcublas.so.13 resolved to.
  void* lt = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_NOLOAD);
  if (!lt) {
    s.lt.error = "libcublasLt.so.13 is not loaded although cuBLAS is (unexpected)";
  } else {
    s.lt.found = true;
    s.lt.path = dyn::loaded_path(lt);
    blas::GetPropertyFn get = nullptr;
    std::string err;
    load_symbol(lt, "cublasLtGetProperty", &get, &err);
    if (get) s.lt.version = property_version(get, &err);
    if (s.lt.version.empty()) s.lt.error = str("version unknown: ", err);
  }
  return s;
}

const CublasState& cublas_state() {
  static std::once_flag once;
  static CublasState* s = nullptr;  // never destroyed
  std::call_once(once, [] { s = new CublasState(load_cublas()); });
  return *s;
}

// ---- cuDNN

struct CudnnState {
  bool ok = false;
  dnn::Api api;
  LibraryInfo info;
};

CudnnState load_cudnn() {
  CudnnState s;
  s.info.name = "cudnn";
  dyn::LibSpec spec;
  spec.name = "cudnn";
  spec.soname = "libcudnn.so.9";
  spec.path_env = "FACECUDA_CUDNN_PATH";
  spec.pip_dirs = {"cudnn", "cu13"};
  spec.cudnn_sublibraries = true;
  spec.required_symbols = {"cudnnCreate", "cudnnDestroy", "cudnnSetStream", "cudnnGetVersion", "cudnnGetErrorString"};
  dyn::Opened o = dyn::open_library(spec);
  s.info.tried = o.tried;
  if (!o.handle) {
    s.info.error = o.error + "; cuDNN 9 for CUDA 13 comes with `pip install nvidia-cudnn-cu13` or NVIDIA's cudnn9-cuda-13 packages";
    return s;
  }
  s.info.path = o.path;
  std::string missing;
  dnn::Api& a = s.api;
  a.lib = o.handle;
  load_symbol(o.handle, "cudnnCreate", &a.create, &missing);
  load_symbol(o.handle, "cudnnDestroy", &a.destroy, &missing);
  load_symbol(o.handle, "cudnnSetStream", &a.set_stream, &missing);
  load_symbol(o.handle, "cudnnGetVersion", &a.get_version, &missing);
  load_symbol(o.handle, "cudnnGetErrorString", &a.error_string, &missing);
  load_symbol(o.handle, "cudnnGetLastErrorString", &a.last_error_string, nullptr);  // optional (9.0+)
  if (!missing.empty()) {
    s.info.error = str(o.path, " lacks ", missing);
    return s;
  }
  a.version = a.get_version();
  s.info.version = dnn::version_string(a.version);
  if (a.version < 90000 || a.version >= 100000) {
    s.info.error = str(o.path, " reports cuDNN version ", a.version, "; facecuda needs cuDNN 9");
    return s;
  }
  s.info.found = true;
  s.ok = true;
  return s;
}

const CudnnState& cudnn_state() {
  static std::once_flag once;
  static CudnnState* s = nullptr;  // never destroyed
  std::call_once(once, [] { s = new CudnnState(load_cudnn()); });
  return *s;
}

[[noreturn]] void throw_unavailable(const char* what, const LibraryInfo& info) {
  fail(Code::CudaUnavailable, str(what, " is not available: ", info.error, ". Searched: ", join(info.tried, "; ")));
}

struct HandleTable {
  std::mutex mu;
  std::vector<void*> h;
};

}  // namespace

std::vector<LibraryInfo> libraries() {
  const CublasState& b = cublas_state();
  const CudnnState& d = cudnn_state();
  return {b.info, b.lt, d.info};
}

// ---- cuBLAS accessors

namespace blas {

const Api& api() {
  const CublasState& s = cublas_state();
  if (!s.ok) throw_unavailable("cuBLAS", s.info);
  return s.api;
}

std::string status_text(Status st) {
  const CublasState& s = cublas_state();
  const char* name = s.api.status_name ? s.api.status_name(st) : nullptr;
  const char* text = s.api.status_string ? s.api.status_string(st) : nullptr;
  if (!name) {
    switch (st) {
      case kStatusSuccess: name = "CUBLAS_STATUS_SUCCESS"; break;
      case kStatusNotInitialized: name = "CUBLAS_STATUS_NOT_INITIALIZED"; break;
      case kStatusAllocFailed: name = "CUBLAS_STATUS_ALLOC_FAILED"; break;
      case kStatusInvalidValue: name = "CUBLAS_STATUS_INVALID_VALUE"; break;
      case kStatusArchMismatch: name = "CUBLAS_STATUS_ARCH_MISMATCH"; break;
      case kStatusMappingError: name = "CUBLAS_STATUS_MAPPING_ERROR"; break;
      case kStatusExecutionFailed: name = "CUBLAS_STATUS_EXECUTION_FAILED"; break;
      case kStatusInternalError: name = "CUBLAS_STATUS_INTERNAL_ERROR"; break;
      case kStatusNotSupported: name = "CUBLAS_STATUS_NOT_SUPPORTED"; break;
      case kStatusLicenseError: name = "CUBLAS_STATUS_LICENSE_ERROR"; break;
      default: break;
    }
  }
  std::string out = name ? name : str("cublasStatus ", st);
  if (text) out += str(" (", text, ")");
  return out;
}

void throw_status(Status st, const char* call, const std::string& context) {
  std::string msg = str(call, " failed: ", status_text(st));
  if (!context.empty()) msg += str(" [", context, "]");
  throw Error(st == kStatusAllocFailed ? Code::OutOfMemory : Code::CublasError, msg);
}

Handle handle(int device) {
  const Api& a = api();
  cudaStream_t s = detail::stream(device);  // require_device, and the context exists from here on
  static HandleTable* table = new HandleTable();
  std::lock_guard<std::mutex> lock(table->mu);
  if (table->h.empty()) table->h.assign(status().devices.size(), nullptr);
  void*& slot = table->h[static_cast<size_t>(device)];
  if (slot) return static_cast<Handle>(slot);

  detail::DeviceGuard g(device);
  Handle h = nullptr;
  Status st = a.create(&h);
  if (st != kStatusSuccess) throw_status(st, "cublasCreate_v2", str("creating the cuBLAS handle of cuda:", device));
  // SetStream first: it resets the workspace to cuBLAS's default pool.
  st = a.set_stream(h, s);
  if (st != kStatusSuccess) throw_status(st, "cublasSetStream_v2", str("cuda:", device));
  st = a.set_math_mode(h, kDefaultMath);
  if (st != kStatusSuccess) throw_status(st, "cublasSetMathMode", str("cuda:", device));
  // Workspace from our allocator (counted and capped like everything else): 32 MiB on Hopper and
  // newer, 4 MiB before, as cuBLAS recommends. Out of memory here is not fatal: cuBLAS then uses its
  // own default workspace.
  const DeviceInfo& info = status().devices[static_cast<size_t>(device)];
  size_t ws_bytes = info.cc_major >= 9 ? (size_t(32) << 20) : (size_t(4) << 20);
  void* ws = nullptr;
  try {
    ws = device_alloc(device, ws_bytes);
  } catch (const Error& e) {
    if (e.code() != Code::OutOfMemory) throw;
    ws = nullptr;
  }
  if (ws) {
    st = a.set_workspace(h, ws, ws_bytes);
    if (st != kStatusSuccess) {
      device_free(device, ws);
      throw_status(st, "cublasSetWorkspace_v2", str("cuda:", device, " ", ws_bytes, " bytes"));
    }
  }
  slot = h;
  return h;
}

}  // namespace blas

// ---- cuDNN accessors

namespace dnn {

std::string version_string(size_t v) { return str(v / 10000, ".", (v % 10000) / 100, ".", v % 100); }

const Api& api() {
  const CudnnState& s = cudnn_state();
  if (!s.ok) throw_unavailable("cuDNN", s.info);
  return s.api;
}

std::string status_text(Status st) {
  const CudnnState& s = cudnn_state();
  const char* text = s.api.error_string ? s.api.error_string(st) : nullptr;
  return str(text ? text : "cudnnStatus", " (", st, ")");
}

void throw_status(Status st, const char* call, const std::string& context) {
  const CudnnState& s = cudnn_state();
  std::string msg = str(call, " failed: ", status_text(st));
  if (s.api.last_error_string) {
    char buf[512] = {0};
    s.api.last_error_string(buf, sizeof(buf));
    if (buf[0]) msg += str(": ", buf);
  }
  if (!context.empty()) msg += str(" [", context, "]");
  if (st == kStatusSublibraryLoadingFailed) {
    msg += str("; a cuDNN sub-library could not be loaded: the preload results are in libraries() (cudnn, tried): ",
               join(s.info.tried, "; "));
  }
  throw Error(Code::CudnnError, msg);
}

Handle handle(int device) {
  const Api& a = api();
  cudaStream_t s = detail::stream(device);
  static HandleTable* table = new HandleTable();
  std::lock_guard<std::mutex> lock(table->mu);
  if (table->h.empty()) table->h.assign(status().devices.size(), nullptr);
  void*& slot = table->h[static_cast<size_t>(device)];
  if (slot) return static_cast<Handle>(slot);
  detail::DeviceGuard g(device);
  Handle h = nullptr;
  Status st = a.create(&h);
  if (st != kStatusSuccess) throw_status(st, "cudnnCreate", str("creating the cuDNN handle of cuda:", device));
  st = a.set_stream(h, s);
  if (st != kStatusSuccess) throw_status(st, "cudnnSetStream", str("cuda:", device));
  slot = h;
  return h;
}

}  // namespace dnn

}  // namespace cuda
}  // namespace fc
