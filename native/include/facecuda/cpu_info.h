// @file cpu_info.h
// @brief CPU model and SIMD features, detected once with cpuid/xgetbv (OS support checked).
#pragma once

#include <string>

namespace fc {

struct CpuInfo {
  std::string model;
  int logical_cores = 1;
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false;
};

const CpuInfo& cpu_info();

// The SIMD level the kernels dispatch to: "avx512", "avx2", or "portable". FACECUDA_SIMD may force a
// lower level ("avx2" or "portable") for testing; asking for more than the CPU has is ignored.
enum class SimdLevel { Portable = 0, Avx2 = 1, Avx512 = 2 };
SimdLevel simd_level();
const char* simd_level_name(SimdLevel l);

}  // namespace fc
