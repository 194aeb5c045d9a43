// @file error.cc
#include "facecuda/error.h"

namespace fc {

const char* code_name(Code c) noexcept {
  switch (c) {
    case Code::InvalidArgument: return "INVALID_ARGUMENT";
    case Code::ShapeMismatch: return "SHAPE_MISMATCH";
    case Code::OutOfRange: return "OUT_OF_RANGE";
    case Code::Disposed: return "DISPOSED";
    case Code::OutOfMemory: return "OUT_OF_MEMORY";
    case Code::CudaUnavailable: return "CUDA_UNAVAILABLE";
    case Code::CudaError: return "CUDA_ERROR";
    case Code::CublasError: return "CUBLAS_ERROR";
    case Code::CudnnError: return "CUDNN_ERROR";
    case Code::IoError: return "IO_ERROR";
    case Code::CorruptFile: return "CORRUPT_FILE";
    case Code::NotImplemented: return "NOT_IMPLEMENTED";
    case Code::Internal: return "INTERNAL";
  }
  return "INTERNAL";
}

}  // namespace fc
