// @file dynlib.h
// @brief A small dlopen loader for the NVIDIA libraries we have no headers or link stubs for
// (cuBLAS/cuBLASLt, cuDNN 9): the search order of docs NATIVE-BUILD.md section 5, with a record of
// every place looked at.
//
// Search order for a library (first that loads and exports every required symbol wins):
//   1. explicit: $<path_env> (a file, or a directory holding the soname), then every directory of
//      $FACECUDA_CUDA_LIB_DIRS (':'-separated);
//   2. the default loader by soname (LD_LIBRARY_PATH as it was at process start, ldconfig, RUNPATH);
//   3. Python site-packages, <site>/nvidia/<pip_dirs...>/lib, for the prefixes $VIRTUAL_ENV,
//      $CONDA_PREFIX, the python3/python first on PATH (its bin/.. and the bin/.. of the file its
//      symlinks resolve to; for a pyenv shim, every <pyenv root>/versions/*), ~/.local, /usr/local
//      and /usr; <site> = <prefix>/lib/python3*/{site,dist}-packages;
//   4. /usr/local/cuda/lib64, then /usr/local/cuda-*/lib64 newest version first, then
//      /usr/lib/x86_64-linux-gnu.
// Directories are visited once (by realpath). Nothing is executed: Python locations are found by
// scanning the file system, never by running an interpreter.
//
// Preloading, in the directory the library is taken from, by absolute path with RTLD_GLOBAL: the
// `preload` sonames (libcublasLt.so.13 next to libcublas.so.13) before the library, and for cuDNN every
// libcudnn_*.so.9 plus libnvrtc (same or sibling nvidia/cu13/lib directory) before cudnnCreate:
// libcudnn.so.9 dlopens its sub-libraries by soname, which fails when its directory is not on the
// loader's path; glibc reuses an object already loaded under the same soname.
//
// Every attempt is recorded in `tried` as "[origin] what: result", where result is "loaded <path>",
// the dlerror text, "not present" or "no match"; a failure never throws. Handles are never closed.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace fc {
namespace cuda {
namespace dyn {

struct LibSpec {
  std::string name;                           // "cublas"
  std::string soname;                         // "libcublas.so.13"
  std::string path_env;                       // "FACECUDA_CUBLAS_PATH" (empty: none)
  std::vector<std::string> pip_dirs;          // under site-packages/nvidia: {"cu13", "cublas"}
  std::vector<std::string> preload;           // sonames opened from the chosen directory first
  bool cudnn_sublibraries = false;            // also preload libcudnn_*.so.9 and libnvrtc (see above)
  std::vector<std::string> required_symbols;  // a candidate lacking one is rejected
};

// Reads an environment variable (std::getenv by default; tests inject their own).
using EnvFn = std::function<const char*(const char*)>;
const char* process_env(const char* name);

struct Opened {
  void* handle = nullptr;          // null when not found
  std::string path;                // absolute path of the file that loaded
  std::string dir;                 // its directory
  std::vector<std::string> tried;  // every attempt, in order
  std::string error;               // why nothing usable was found (empty on success)
};

Opened open_library(const LibSpec& spec, const EnvFn& env = process_env);

// dlsym that reports the dlerror text instead of returning silently.
void* find_symbol(void* handle, const char* name, std::string* error);
// The absolute path a handle was loaded from ("" when unknown).
std::string loaded_path(void* handle);

}  // namespace dyn
}  // namespace cuda
}  // namespace fc
