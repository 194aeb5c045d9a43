// @file cudnn_api.h
// @brief Our own declarations of the part of cuDNN 9 we call (no cudnn.h on the build machines):
// opaque handle, status values, function-pointer types and the accessors that open the library
// (libraries.cc), plus the legacy convolution API (tensor/filter/convolution descriptors, algorithm
// search, workspace sizes, the three convolutions) that cuda/layers_conv.cc uses, loaded on first use
// by conv_api().
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
  void* lib = nullptr;  // the dlopen handle of libcudnn.so.9 (conv_api() looks its symbols up there)
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

// ---- the legacy convolution API (cudnn_cnn.h / cudnn_ops.h / cudnn_graph.h of cuDNN 9; deprecated
// there but exported; NATIVE-BUILD.md §5). Enum values are those of the cuDNN 9 headers.

struct TensorStruct;  // cudnnTensorStruct
struct FilterStruct;  // cudnnFilterStruct
struct ConvolutionStruct;  // cudnnConvolutionStruct
using TensorDesc = TensorStruct*;
using FilterDesc = FilterStruct*;
using ConvDesc = ConvolutionStruct*;

using DataType = int;  // cudnnDataType_t
constexpr DataType kDataFloat = 0;
constexpr DataType kDataHalf = 2;
constexpr DataType kDataBFloat16 = 9;
using TensorFormat = int;  // cudnnTensorFormat_t
constexpr TensorFormat kTensorNCHW = 0;
using ConvMode = int;  // cudnnConvolutionMode_t
constexpr ConvMode kCrossCorrelation = 1;
using MathType = int;  // cudnnMathType_t
constexpr MathType kDefaultMath = 0;
constexpr MathType kTensorOpMath = 1;
constexpr MathType kTensorOpMathAllowConversion = 2;
constexpr MathType kFmaMath = 3;
using Determinism = int;  // cudnnDeterminism_t
constexpr Determinism kNonDeterministic = 0;
constexpr Determinism kDeterministic = 1;

// cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: the three structs share this layout (the algo
// is the direction's enum: cudnnConvolutionFwdAlgo_t, ...BwdDataAlgo_t, ...BwdFilterAlgo_t).
struct AlgoPerf {
  int algo;
  Status status;
  float time;  // milliseconds
  size_t memory;  // workspace bytes
  Determinism determinism;
  MathType math_type;
  int reserved[3];
};
constexpr int kMaxAlgos = 16;  // more than any direction has (8 forward, 6 data, 7 filter)

extern "C" {
typedef Status (*CreateTensorDescFn)(TensorDesc*);
typedef Status (*SetTensor4dDescFn)(TensorDesc, TensorFormat, DataType, int n, int c, int h, int w);
typedef Status (*DestroyTensorDescFn)(TensorDesc);
typedef Status (*CreateFilterDescFn)(FilterDesc*);
typedef Status (*SetFilter4dDescFn)(FilterDesc, DataType, TensorFormat, int k, int c, int h, int w);
typedef Status (*DestroyFilterDescFn)(FilterDesc);
typedef Status (*CreateConvDescFn)(ConvDesc*);
// (desc, pad_h, pad_w, u = stride_h, v = stride_w, dilation_h, dilation_w, mode, compute type)
typedef Status (*SetConv2dDescFn)(ConvDesc, int, int, int, int, int, int, ConvMode, DataType);
typedef Status (*SetConvGroupCountFn)(ConvDesc, int);
typedef Status (*SetConvMathTypeFn)(ConvDesc, MathType);
typedef Status (*DestroyConvDescFn)(ConvDesc);
// cudnnFindConvolutionForwardAlgorithmEx(handle, xDesc, x, wDesc, w, convDesc, yDesc, y, requested,
//   returned, perf, workspace, workspace bytes)
typedef Status (*FindFwdFn)(Handle, TensorDesc, const void*, FilterDesc, const void*, ConvDesc, TensorDesc, void*, int,
                            int*, AlgoPerf*, void*, size_t);
// cudnnFindConvolutionBackwardDataAlgorithmEx(handle, wDesc, w, dyDesc, dy, convDesc, dxDesc, dx, ...)
typedef Status (*FindBwdDataFn)(Handle, FilterDesc, const void*, TensorDesc, const void*, ConvDesc, TensorDesc, void*,
                                int, int*, AlgoPerf*, void*, size_t);
// cudnnFindConvolutionBackwardFilterAlgorithmEx(handle, xDesc, x, dyDesc, dy, convDesc, dwDesc, dw, ...)
typedef Status (*FindBwdFilterFn)(Handle, TensorDesc, const void*, TensorDesc, const void*, ConvDesc, FilterDesc,
                                  void*, int, int*, AlgoPerf*, void*, size_t);
// cudnnGetConvolutionForwardWorkspaceSize(handle, xDesc, wDesc, convDesc, yDesc, algo, bytes)
typedef Status (*FwdWorkspaceFn)(Handle, TensorDesc, FilterDesc, ConvDesc, TensorDesc, int, size_t*);
// cudnnGetConvolutionBackwardDataWorkspaceSize(handle, wDesc, dyDesc, convDesc, dxDesc, algo, bytes)
typedef Status (*BwdDataWorkspaceFn)(Handle, FilterDesc, TensorDesc, ConvDesc, TensorDesc, int, size_t*);
// cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, xDesc, dyDesc, convDesc, dwDesc, algo, bytes)
typedef Status (*BwdFilterWorkspaceFn)(Handle, TensorDesc, TensorDesc, ConvDesc, FilterDesc, int, size_t*);
// cudnnConvolutionForward(handle, alpha, xDesc, x, wDesc, w, convDesc, algo, workspace, bytes, beta, yDesc, y)
typedef Status (*ConvFwdFn)(Handle, const void*, TensorDesc, const void*, FilterDesc, const void*, ConvDesc, int,
                            void*, size_t, const void*, TensorDesc, void*);
// cudnnConvolutionBackwardData(handle, alpha, wDesc, w, dyDesc, dy, convDesc, algo, workspace, bytes, beta,
//   dxDesc, dx)
typedef Status (*ConvBwdDataFn)(Handle, const void*, FilterDesc, const void*, TensorDesc, const void*, ConvDesc, int,
                                void*, size_t, const void*, TensorDesc, void*);
// cudnnConvolutionBackwardFilter(handle, alpha, xDesc, x, dyDesc, dy, convDesc, algo, workspace, bytes, beta,
//   dwDesc, dw)
typedef Status (*ConvBwdFilterFn)(Handle, const void*, TensorDesc, const void*, TensorDesc, const void*, ConvDesc,
                                  int, void*, size_t, const void*, FilterDesc, void*);
}

struct ConvApi {
  CreateTensorDescFn create_tensor = nullptr;
  SetTensor4dDescFn set_tensor_4d = nullptr;
  DestroyTensorDescFn destroy_tensor = nullptr;
  CreateFilterDescFn create_filter = nullptr;
  SetFilter4dDescFn set_filter_4d = nullptr;
  DestroyFilterDescFn destroy_filter = nullptr;
  CreateConvDescFn create_conv = nullptr;
  SetConv2dDescFn set_conv_2d = nullptr;
  SetConvGroupCountFn set_group_count = nullptr;
  SetConvMathTypeFn set_math_type = nullptr;
  DestroyConvDescFn destroy_conv = nullptr;
  FindFwdFn find_fwd = nullptr;
  FindBwdDataFn find_bwd_data = nullptr;
  FindBwdFilterFn find_bwd_filter = nullptr;
  FwdWorkspaceFn fwd_workspace = nullptr;
  BwdDataWorkspaceFn bwd_data_workspace = nullptr;
  BwdFilterWorkspaceFn bwd_filter_workspace = nullptr;
  ConvFwdFn conv_fwd = nullptr;
  ConvBwdDataFn conv_bwd_data = nullptr;
  ConvBwdFilterFn conv_bwd_filter = nullptr;
};

// Opens cuDNN (api()) and looks the convolution symbols up once (thread-safe). Throws
// CUDA_UNAVAILABLE as api() does, or naming the first missing symbol.
const ConvApi& conv_api();

}  // namespace dnn
}  // namespace cuda
}  // namespace fc
