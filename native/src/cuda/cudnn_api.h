// @file cudnn_api.h
// @brief Our own declarations of the part of cuDNN 9 we call (no cudnn.h on the build machines):
// opaque handle, status values, function-pointer types and the accessors that open the library
// (libraries.cc). Only the handle and version API for now; the convolution API will be declared
// here when the backbone adds its single cuDNN translation unit.
//
// cuDNN 9 renumbered cudnnStatus_t (SUCCESS = 0, NOT_INITIALIZED = 1001, SUBLIBRARY_LOADING_FAILED
// = 1008, BAD_PARAM = 2000, NOT_SUPPORTED = 3000, INTERNAL_ERROR = 4000, EXECUTION_FAILED = 5000):
// messages always come from cudnnGetErrorString, never from a table of ours. cudnnGetVersion is
// MAJOR * 10000 + MINOR * 100 + PATCH in cuDNN 9 (91002 = 9.10.2); a cuDNN other than 9 is rejected.
// Opening cuDNN preloads its sub-libraries by absolute path first (dynlib.h: the sub-library trap).
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t

#include <cstddef>
#include <string>

namespace fc {
namespace cuda {
namespace dnn {

struct Context;  // cudnnContext
using Handle = Context*;

using Status = int;  // cudnnStatus_t (cuDNN 9 numbering)
constexpr Status kStatusSuccess = 0;
constexpr Status kStatusNotInitialized = 1001;
constexpr Status kStatusSublibraryLoadingFailed = 1008;
constexpr Status kStatusBadParam = 2000;
constexpr Status kStatusNotSupported = 3000;
constexpr Status kStatusInternalError = 4000;
constexpr Status kStatusExecutionFailed = 5000;

extern "C" {
typedef Status (*CreateFn)(Handle*);                  // cudnnCreate
typedef Status (*DestroyFn)(Handle);                  // cudnnDestroy
typedef Status (*SetStreamFn)(Handle, cudaStream_t);  // cudnnSetStream
typedef size_t (*GetVersionFn)();                     // cudnnGetVersion
typedef const char* (*ErrorStringFn)(Status);         // cudnnGetErrorString
typedef void (*LastErrorStringFn)(char*, size_t);     // cudnnGetLastErrorString (optional)
}

struct Api {
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  GetVersionFn get_version = nullptr;
  ErrorStringFn error_string = nullptr;
  LastErrorStringFn last_error_string = nullptr;  // optional
  size_t version = 0;                             // cudnnGetVersion() at load
};

// Opens cuDNN once (thread-safe). Throws CUDA_UNAVAILABLE naming every place searched when it is not
// usable.
const Api& api();
// The handle of `device`: created on first use (on the device's queue thread), bound to the device
// stream. Never destroyed. Throws CUDNN_ERROR with cudnnGetErrorString and cudnnGetLastErrorString.
Handle handle(int device);
// "CUDNN_STATUS_BAD_PARAM (2000)" from cudnnGetErrorString.
std::string status_text(Status s);
[[noreturn]] void throw_status(Status s, const char* call, const std::string& context);
// "9.10.2" from 91002.
std::string version_string(size_t v);

}  // namespace dnn
}  // namespace cuda
}  // namespace fc
