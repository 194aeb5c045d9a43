// @file runtime.cc
// @brief The CUDA runtime side of the backend: status() probing with a precise reason, require_device,
// the per-device stream, host/device copies and synchronize.
//
// Probing (once, thread-safe, cached):
//   1. cudaGetDeviceCount. On failure the status is mapped to a reason a user can act on: error 35
//      (insufficient driver) is split into "no NVIDIA driver" (libcuda.so.1 cannot be dlopen'ed; its
//      dlerror is quoted) and "driver too old" (driver vs runtime version, CUDA 13 needs R580+);
//      100 (no device) names CUDA_VISIBLE_DEVICES when it is set; 802/803/804 get their known causes.
//   2. Per device: properties through attribute queries only. Probing creates no CUDA context, so
//      asking status() on an 8-GPU host does not put this process on every GPU (free_memory is 0 in
//      status(): measuring it needs a context). A device is usable when its compute capability is
//      >= 7.5 (the oldest CUDA 13 targets) and a kernel image in FACECUDA_CUDA_ARCHS can run on it
//      (same SASS major with minor <= device minor, or PTX <= device). A context that fails to come up
//      later (exclusive-process GPU in use, ...) is reported by the first call that needs it.
//
// Copies (contract shared with tensor.cc): copy_h2d and copy_d2h return once the host buffer is no
// longer needed (the copy is enqueued on the device stream, then the stream is synchronized), because
// host buffers are pageable JS/staging memory the caller may free right away. copy_d2d and memset_zero
// are asynchronous, ordered on the device stream. Every call with bytes == 0 returns at once.
#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/internal.h"
#include "facecuda/cuda.h"

#ifndef FACECUDA_CUDA_ARCHS
#define FACECUDA_CUDA_ARCHS ""
#endif

namespace fc {
namespace cuda {
namespace detail {

std::string cuda_error_text(cudaError_t err) {
  const char* name = cudaGetErrorName(err);
  const char* text = cudaGetErrorString(err);
  return str(name ? name : "cudaError?", " (", text ? text : "unknown", ")");
}

namespace {
// Errors after which the context is corrupt: every later call on it fails too.
bool is_sticky(cudaError_t err) {
  switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}
}  // namespace

void throw_cuda(cudaError_t err, const char* call, const std::string& context) {
  // Name only the function ("cudaMemcpyAsync"), not the argument text the macro stringified.
  std::string fn(call ? call : "CUDA call");
  size_t paren = fn.find('(');
  if (paren != std::string::npos) fn.resize(paren);
  std::string msg = str(fn, " failed: ", cuda_error_text(err));
  if (!context.empty()) msg += str(" [", context, "]");
  if (is_sticky(err)) {
    msg += "; this error is sticky: the CUDA context of this process is unusable and the process must be restarted";
  }
  // The runtime remembers the last error; clear it so it does not resurface in an unrelated check.
  (void)cudaGetLastError();
  throw Error(err == cudaErrorMemoryAllocation ? Code::OutOfMemory : Code::CudaError, msg);
}

DeviceGuard::DeviceGuard(int device) {
  int cur = -1;
  if (cudaGetDevice(&cur) != cudaSuccess) {
    (void)cudaGetLastError();
    cur = -1;
  }
  if (cur != device) FC_CUDA_CHECK(cudaSetDevice(device), "making cuda:", device, " current");
}

// ---- architectures

namespace {
struct ArchToken {
  int cc = 0;            // 90 for "90", 100 for "100"
  bool real = false;     // SASS
  bool virt = false;     // PTX
  bool specific = false; // "90a": runs only on exactly that capability
  bool any = false;      // "all", "all-major", "native": cannot be judged here
  std::string raw;
};

std::vector<ArchToken> parse_archs(const std::string& archs) {
  std::vector<ArchToken> out;
  size_t i = 0;
  while (i < archs.size()) {
    while (i < archs.size() && (archs[i] == ' ' || archs[i] == ';' || archs[i] == ',')) ++i;
    size_t j = i;
    while (j < archs.size() && archs[j] != ' ' && archs[j] != ';' && archs[j] != ',') ++j;
    if (j == i) break;
    ArchToken t;
    t.raw = archs.substr(i, j - i);
    i = j;
    std::string s = t.raw;
    if (s == "all" || s == "all-major" || s == "native") {
      t.any = true;
      out.push_back(t);
      continue;
    }
    std::string kind = "both";
    size_t dash = s.find('-');
    if (dash != std::string::npos) {
      kind = s.substr(dash + 1);
      s.resize(dash);
    }
    size_t k = 0;
    while (k < s.size() && s[k] >= '0' && s[k] <= '9') ++k;
    if (k == 0) {
      t.any = true;  // an unknown form: do not claim a mismatch we cannot judge
      out.push_back(t);
      continue;
    }
    t.cc = std::atoi(s.substr(0, k).c_str());
    t.specific = k < s.size() && s[k] == 'a';
    t.real = kind == "real" || kind == "both";
    t.virt = kind == "virtual" || kind == "both";
    out.push_back(t);
  }
  return out;
}
}  // namespace

std::string format_archs(const std::string& archs) {
  std::string out;
  for (const ArchToken& t : parse_archs(archs)) {
    auto add = [&](const std::string& s) {
      if (!out.empty()) out += ' ';
      out += s;
    };
    if (t.any) {
      add(t.raw);
      continue;
    }
    std::string suffix = t.specific ? "a" : "";
    if (t.real) add(str("sm_", t.cc, suffix));
    if (t.virt) add(str("compute_", t.cc, suffix));
  }
  return out;
}

std::string arch_mismatch(const std::string& archs, int major, int minor) {
  std::vector<ArchToken> tokens = parse_archs(archs);
  if (tokens.empty()) return "";  // nothing recorded at build time: let the first launch tell
  int dev = major * 10 + minor;
  for (const ArchToken& t : tokens) {
    if (t.any) return "";
    int tmaj = t.cc / 10, tmin = t.cc % 10;
    if (t.specific) {
      if (t.cc == dev) return "";
      continue;
    }
    if (t.real && tmaj == major && tmin <= minor) return "";  // SASS runs within a major version
    if (t.virt && t.cc <= dev) return "";                       // PTX is JIT-compiled forward
  }
  std::string list = archs;
  for (char& c : list) {
    if (c == ' ' || c == ',') c = ';';
  }
  return str("no kernel image for compute capability ", major, ".", minor, ": facecuda was built for ",
             format_archs(archs), " (rebuild with FACECUDA_CUDA_ARCHS=\"", dev, "-real;", list, "\")");
}

}  // namespace detail

namespace {

using detail::cuda_error_text;

std::string version_str(int v) {  // 13000 -> "13.0", 12040 -> "12.4"
  return str(v / 1000, ".", (v % 1000) / 10);
}

// Tries to open the driver library the runtime would open; fills *error with dlerror on failure, and
// *version from the driver's own cuDriverGetVersion (which needs no cuInit) when it exports it.
bool libcuda_loadable(std::string* where, std::string* error, int* version) {
  dlerror();
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    *error = e ? e : "dlopen failed";
    return false;
  }
  struct link_map* lm = nullptr;
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name) *where = lm->l_name;
  using DriverGetVersion = int (*)(int*);  // CUresult cuDriverGetVersion(int*)
  if (auto get = reinterpret_cast<DriverGetVersion>(dlsym(h, "cuDriverGetVersion"))) {
    int v = 0;
    if (get(&v) == 0) *version = v;
  }
  // Kept open: the runtime holds it anyway once it initializes.
  return true;
}

// *driver may be updated: cudart reports 0 when it rejects the driver, the driver itself knows.
std::string explain_device_count_error(cudaError_t err, int* driver_version, int runtime) {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  int& driver = *driver_version;
  switch (err) {
    case cudaErrorInsufficientDriver: {
      std::string where, dlerr;
      int v = 0;
      if (!libcuda_loadable(&where, &dlerr, &v)) {
        return str("no NVIDIA driver: libcuda.so.1 could not be loaded (", dlerr, ")");
      }
      if (driver == 0) driver = v;
      if (driver == 0) {
        return str("the NVIDIA driver library (", where.empty() ? "libcuda.so.1" : where,
                   ") loads but reports no version: ", cuda_error_text(err));
      }
      return str("CUDA driver version is insufficient for CUDA runtime version (driver ", version_str(driver), " = ",
                 driver, " < runtime ", version_str(runtime), " = ", runtime,
                 "; facecuda is built with CUDA 13, which needs an R580 or newer driver)");
    }
    case cudaErrorNoDevice:
      return str("no CUDA-capable device is detected (driver ", version_str(driver), ")",
                 visible ? str("; CUDA_VISIBLE_DEVICES=\"", visible, "\" may hide them") : std::string());
    case cudaErrorInvalidDevice:
      return str("no usable CUDA device: ", cuda_error_text(err),
                 visible ? str(" (check CUDA_VISIBLE_DEVICES=\"", visible, "\")") : std::string());
    case cudaErrorSystemNotReady:
      return str("the CUDA system is not ready: ", cuda_error_text(err),
                 " (on NVSwitch systems the nvidia-fabricmanager service must be running)");
    case cudaErrorSystemDriverMismatch:
      return str("the NVIDIA kernel module and libcuda.so.1 versions differ: ", cuda_error_text(err),
                 " (a driver update without a reboot, or a container with a mismatched user-mode driver)");
    case cudaErrorCompatNotSupportedOnDevice:
      return str("a CUDA forward-compatibility libcuda was loaded on a GPU that does not support it: ",
                 cuda_error_text(err), " (remove the cuda-compat directory from LD_LIBRARY_PATH, or install an R580+ driver)");
    case cudaErrorDevicesUnavailable:
      return str("every CUDA device is busy or unavailable: ", cuda_error_text(err),
                 " (exclusive-process compute mode with another process on the GPU?)");
    case cudaErrorStubLibrary:
      return str("the libcuda.so.1 that loaded is the toolkit's stub, not a driver: ", cuda_error_text(err));
    default:
      return str("cudaGetDeviceCount failed: ", cuda_error_text(err), " (driver ", version_str(driver), ")");
  }
}

struct Probe {
  Status status;
  std::vector<std::string> device_reason;  // per device; empty = usable
};

Probe run_probe() {
  Probe p;
  Status& s = p.status;
  s.compiled = true;
  s.compiled_archs = detail::format_archs(FACECUDA_CUDA_ARCHS);
  if (cudaRuntimeGetVersion(&s.runtime_version) != cudaSuccess) {
    (void)cudaGetLastError();
    s.runtime_version = CUDART_VERSION;
  }
  if (cudaDriverGetVersion(&s.driver_version) != cudaSuccess) {  // 0 and success when no driver
    (void)cudaGetLastError();
    s.driver_version = 0;
  }
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    s.reason = explain_device_count_error(err, &s.driver_version, s.runtime_version);
    return p;
  }
  if (count == 0) {
    s.reason = explain_device_count_error(cudaErrorNoDevice, &s.driver_version, s.runtime_version);
    return p;
  }
  std::string reasons;
  for (int i = 0; i < count; ++i) {
    DeviceInfo d;
    d.index = i;
    std::string why;
    cudaDeviceProp prop;
    std::memset(&prop, 0, sizeof(prop));
    cudaError_t e = cudaGetDeviceProperties(&prop, i);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      why = str("cudaGetDeviceProperties failed: ", cuda_error_text(e));
    } else {
      d.name = prop.name;
      d.total_memory = prop.totalGlobalMem;
      d.cc_major = prop.major;
      d.cc_minor = prop.minor;
      d.multiprocessors = prop.multiProcessorCount;
      char bus[32] = {0};
      if (cudaDeviceGetPCIBusId(bus, sizeof(bus), i) == cudaSuccess) d.pci_bus_id = bus;
      else (void)cudaGetLastError();
      if (d.cc_major * 10 + d.cc_minor < 75) {
        why = str("compute capability ", d.cc_major, ".", d.cc_minor,
                  " is below 7.5, the oldest that CUDA 13 (and facecuda) supports");
      } else {
        why = detail::arch_mismatch(FACECUDA_CUDA_ARCHS, d.cc_major, d.cc_minor);
      }
    }
    if (!why.empty()) {
      if (!reasons.empty()) reasons += "; ";
      reasons += str("cuda:", i, d.name.empty() ? "" : " (" + d.name + ")", ": ", why);
    }
    p.device_reason.push_back(why);
    s.devices.push_back(d);
    if (why.empty()) s.available = true;
  }
  if (!s.available) s.reason = reasons;
  return p;
}

const Probe& probe() {
  static std::once_flag once;
  static Probe* p = nullptr;  // never destroyed: read from any thread until exit
  std::call_once(once, [] { p = new Probe(run_probe()); });
  return *p;
}

struct Streams {
  std::mutex mu;
  std::vector<cudaStream_t> s;
};
Streams& streams() {
  static Streams* st = new Streams();  // leaked on purpose (see internal.h)
  return *st;
}

void check_copy_args(const char* what, int device, const void* dst, const void* src, size_t bytes) {
  FC_CHECK(dst != nullptr && src != nullptr, InvalidArgument, what, " on cuda:", device, ": Expected non-null pointers for ",
           bytes, " bytes but received dst=", dst, " src=", src);
}

}  // namespace

const Status& status() { return probe().status; }

void require_device(int index) {
  const Probe& p = probe();
  const Status& s = p.status;
  if (!s.available) fail(Code::CudaUnavailable, str("CUDA is not available: ", s.reason));
  if (index < 0 || index >= static_cast<int>(s.devices.size())) {
    std::string list;
    for (const DeviceInfo& d : s.devices) list += str(list.empty() ? "" : ", ", "cuda:", d.index, " ", d.name);
    fail(Code::CudaUnavailable, str("cuda:", index, " does not exist: ", s.devices.size(), " CUDA device",
                                    s.devices.size() == 1 ? " is" : "s are", " visible (", list, ")"));
  }
  const std::string& why = p.device_reason[static_cast<size_t>(index)];
  if (!why.empty()) fail(Code::CudaUnavailable, str("cuda:", index, " (", s.devices[index].name, ") is not usable: ", why));
}

namespace detail {
cudaStream_t stream(int device) {
  require_device(device);
  Streams& st = streams();
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.s.empty()) st.s.assign(status().devices.size(), nullptr);
  cudaStream_t& s = st.s[static_cast<size_t>(device)];
  if (!s) {
    DeviceGuard g(device);
    // Non-blocking: no implicit ordering with the legacy default stream other libraries may use.
    FC_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "creating the stream of cuda:", device,
                  " (this creates the CUDA context)");
  }
  return s;
}
}  // namespace detail

namespace {
// A host<->device copy on the device's stream that returns once the host buffer is free again.
void copy_sync(const char* what, cudaMemcpyKind kind, int device, void* dst, const void* src, size_t bytes) {
  require_device(device);
  if (bytes == 0) return;
  check_copy_args(what, device, dst, src, bytes);
  cudaStream_t s = detail::stream(device);
  detail::DeviceGuard g(device);
  FC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s), what, " cuda:", device, " ", bytes, " bytes");
  FC_CUDA_CHECK(cudaStreamSynchronize(s), what, " cuda:", device, " ", bytes,
                " bytes (or an earlier asynchronous operation on this stream)");
}
}  // namespace

void copy_h2d(int device, void* dst, const void* src, size_t bytes) {
  copy_sync("copy_h2d", cudaMemcpyHostToDevice, device, dst, src, bytes);
}

void copy_d2h(int device, void* dst, const void* src, size_t bytes) {
  copy_sync("copy_d2h", cudaMemcpyDeviceToHost, device, dst, src, bytes);
}

void copy_d2d(int device, void* dst, const void* src, size_t bytes) {
  require_device(device);
  if (bytes == 0) return;
  check_copy_args("copy_d2d", device, dst, src, bytes);
  cudaStream_t s = detail::stream(device);
  detail::DeviceGuard g(device);
  FC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy_d2d cuda:", device, " ", bytes, " bytes");
}

void memset_zero(int device, void* dst, size_t bytes) {
  require_device(device);
  if (bytes == 0) return;
  FC_CHECK(dst != nullptr, InvalidArgument, "memset_zero on cuda:", device, ": Expected a non-null pointer for ", bytes,
           " bytes but received null");
  cudaStream_t s = detail::stream(device);
  detail::DeviceGuard g(device);
  FC_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, s), "memset_zero cuda:", device, " ", bytes, " bytes");
}

void synchronize(int device) {
  cudaStream_t s = detail::stream(device);
  detail::DeviceGuard g(device);
  FC_CUDA_CHECK(cudaStreamSynchronize(s), "synchronize cuda:", device,
                " (the error may come from any earlier asynchronous operation on this device)");
}

}  // namespace cuda
}  // namespace fc
