// @file dtype.h
// @brief Element types of facecuda tensors and their sizes. f16/bf16 are stored as raw 16-bit words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fc {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4, U8 = 5 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

// Names used across the JS boundary: 'float32', 'float16', 'bfloat16', 'int32', 'int64', 'uint8'.
const char* dtype_name(DType t);
bool dtype_from_name(const char* name, DType* out);

// Scalar conversions (round to nearest even), used by host-side casts and references.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace fc
