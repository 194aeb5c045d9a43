// @file error.h
// @brief fc::Error: the one exception type of the engine. Every failure (bad argument, CUDA status,
// cuBLAS/cuDNN status, I/O, out of memory) becomes an fc::Error with a stable code; nothing in the
// engine calls abort() or exit(). The binding maps Code to the string codes of the JS FacecudaError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace fc {

enum class Code {
  InvalidArgument,
  ShapeMismatch,
  OutOfRange,
  Disposed,
  OutOfMemory,
  CudaUnavailable,
  CudaError,
  CublasError,
  CudnnError,
  IoError,
  CorruptFile,
  NotImplemented,
  Internal,
};

// Stable string form, identical to the JS codes ('INVALID_ARGUMENT', ...).
const char* code_name(Code c) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Code code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  Code code() const noexcept { return code_; }

 private:
  Code code_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... R>
void append(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: fc::str("expected ", n, " got ", m).
template <typename... T>
std::string str(const T&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  return os.str();
}

[[noreturn]] inline void fail(Code code, const std::string& msg) { throw Error(code, msg); }

}  // namespace fc

// FC_CHECK(cond, code, pieces...): throws fc::Error(code, message) when cond is false.
#define FC_CHECK(cond, code, ...)                                   \
  do {                                                              \
    if (!(cond)) ::fc::fail(::fc::Code::code, ::fc::str(__VA_ARGS__)); \
  } while (0)
