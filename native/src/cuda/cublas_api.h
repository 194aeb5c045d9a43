// @file cublas_api.h
// @brief Our own declarations of the part of cuBLAS we call (no cublas_v2.h on the build machines):
// opaque handle, status and enum values, function-pointer types of the exported symbols, and the
// accessors that open the library (libraries.cc).
//
// Values mirror cublas_api.h of CUDA 13 (cross-checked with cudarc's generated bindings, NATIVE-BUILD.md
// section 5). Enums are passed as int, which is how a C enum of these ranges is passed in the x86-64
// ABI. Symbols are looked up by their exported names: the handle API has a _v2 suffix
// (cublasCreate_v2, cublasSgemm_v2, ...); cublasGemmEx, cublasSetMathMode and the status/property
// functions have none. A bare "cublasSgemm" is the legacy handle-less API: never look it up.
// Declare here only what is called; new ops add their entries next to their first use.
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t
#include <library_types.h>     // cudaDataType_t (CUDA_R_32F = 0), libraryPropertyType

#include <cstddef>
#include <string>

namespace fc {
namespace cuda {
namespace blas {

struct Context;  // cublasContext
using Handle = Context*;

using Status = int;  // cublasStatus_t
constexpr Status kStatusSuccess = 0;
constexpr Status kStatusNotInitialized = 1;
constexpr Status kStatusAllocFailed = 3;
constexpr Status kStatusInvalidValue = 7;
constexpr Status kStatusArchMismatch = 8;
constexpr Status kStatusMappingError = 11;
constexpr Status kStatusExecutionFailed = 13;
constexpr Status kStatusInternalError = 14;
constexpr Status kStatusNotSupported = 15;
constexpr Status kStatusLicenseError = 16;

using Operation = int;  // cublasOperation_t
constexpr Operation kOpN = 0;
constexpr Operation kOpT = 1;

using ComputeType = int;  // cublasComputeType_t
constexpr ComputeType kCompute32F = 68;
constexpr ComputeType kCompute32FFast16F = 74;
constexpr ComputeType kCompute32FFast16BF = 75;
constexpr ComputeType kCompute32FFastTF32 = 77;

using Math = int;  // cublasMath_t
constexpr Math kDefaultMath = 0;
constexpr Math kTF32TensorOpMath = 3;

using GemmAlgo = int;  // cublasGemmAlgo_t
constexpr GemmAlgo kGemmDefault = -1;

extern "C" {
typedef Status (*CreateFn)(Handle*);                          // cublasCreate_v2
typedef Status (*DestroyFn)(Handle);                          // cublasDestroy_v2
typedef Status (*SetStreamFn)(Handle, cudaStream_t);          // cublasSetStream_v2
typedef Status (*SetMathModeFn)(Handle, Math);                // cublasSetMathMode
typedef Status (*SetWorkspaceFn)(Handle, void*, size_t);      // cublasSetWorkspace_v2
typedef Status (*GemmExFn)(Handle, Operation transa, Operation transb, int m, int n, int k, const void* alpha,
                           const void* A, cudaDataType_t Atype, int lda, const void* B, cudaDataType_t Btype,
                           int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                           ComputeType compute, GemmAlgo algo);  // cublasGemmEx
typedef Status (*GemmStridedBatchedExFn)(Handle, Operation transa, Operation transb, int m, int n, int k,
                                         const void* alpha, const void* A, cudaDataType_t Atype, int lda,
                                         long long strideA, const void* B, cudaDataType_t Btype, int ldb,
                                         long long strideB, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                                         long long strideC, int batch_count, ComputeType compute,
                                         GemmAlgo algo);  // cublasGemmStridedBatchedEx
typedef Status (*SgemmFn)(Handle, Operation transa, Operation transb, int m, int n, int k, const float* alpha,
                          const float* A, int lda, const float* B, int ldb, const float* beta, float* C,
                          int ldc);                             // cublasSgemm_v2
typedef const char* (*StatusTextFn)(Status);                  // cublasGetStatusName / cublasGetStatusString
typedef Status (*GetPropertyFn)(libraryPropertyType, int*);   // cublasGetProperty / cublasLtGetProperty
}

struct Api {
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn set_stream = nullptr;
  SetMathModeFn set_math_mode = nullptr;
  SetWorkspaceFn set_workspace = nullptr;
  GemmExFn gemm_ex = nullptr;
  SgemmFn sgemm = nullptr;
  GemmStridedBatchedExFn gemm_strided_batched_ex = nullptr;  // attention (cuda/layers_attn.cu)
  GetPropertyFn get_property = nullptr;
  StatusTextFn status_name = nullptr;    // optional
  StatusTextFn status_string = nullptr;  // optional
};

// Opens cuBLAS once (thread-safe). Throws CUDA_UNAVAILABLE naming every place searched when it is not
// usable.
const Api& api();
// The handle of `device`: created on first use (call it on the device's queue thread), bound to the
// device stream, default math, with a workspace from the caching allocator (cuBLAS's own when the
// allocator is out of memory). Never destroyed.
Handle handle(int device);
// "CUBLAS_STATUS_NOT_SUPPORTED (the functionality requested is not supported)".
std::string status_text(Status s);
// Throws CUBLAS_ERROR (OUT_OF_MEMORY for ALLOC_FAILED) "<call> failed: <status> [<context>]".
[[noreturn]] void throw_status(Status s, const char* call, const std::string& context);

}  // namespace blas
}  // namespace cuda
}  // namespace fc
