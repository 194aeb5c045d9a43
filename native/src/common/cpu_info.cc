// @file cpu_info.cc
// @brief CPU model and SIMD features from cpuid, with the OS's register-state support from xgetbv.
#include "facecuda/cpu_info.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FC_X86 1
#endif

namespace fc {

namespace {

#ifdef FC_X86
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) { __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]); }

unsigned long long xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuInfo detect() {
  CpuInfo info;
  unsigned hc = std::thread::hardware_concurrency();
  info.logical_cores = hc == 0 ? 1 : static_cast<int>(hc);
#ifdef FC_X86
  unsigned r[4];
  cpuid(0, 0, r);
  unsigned max_leaf = r[0];
  cpuid(0x80000000u, 0, r);
  if (r[0] >= 0x80000004u) {
    char brand[49] = {0};
    for (unsigned i = 0; i < 3; ++i) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    std::string s(brand);
    size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
    info.model = b == std::string::npos ? "" : s.substr(b, e - b + 1);
  }
  if (max_leaf >= 1) {
    cpuid(1, 0, r);
    bool osxsave = (r[2] >> 27) & 1;
    info.sse42 = (r[2] >> 20) & 1;
    info.fma = (r[2] >> 12) & 1;
    info.f16c = (r[2] >> 29) & 1;
    bool avx_hw = (r[2] >> 28) & 1;
    unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm_os = (xcr0 & 0x6) == 0x6;             // SSE + AVX state
    bool zmm_os = (xcr0 & 0xe6) == 0xe6;           // + opmask, ZMM_Hi256, Hi16_ZMM
    bool amx_os = (xcr0 & 0x60000) == 0x60000;     // XTILECFG + XTILEDATA
    info.avx = avx_hw && ymm_os;
    info.fma = info.fma && info.avx;
    info.f16c = info.f16c && info.avx;
    if (max_leaf >= 7) {
      cpuid(7, 0, r);
      info.avx2 = info.avx && ((r[1] >> 5) & 1);
      info.avx512f = zmm_os && ((r[1] >> 16) & 1);
      info.avx512dq = info.avx512f && ((r[1] >> 17) & 1);
      info.avx512bw = info.avx512f && ((r[1] >> 30) & 1);
      info.avx512vl = info.avx512f && ((r[1] >> 31) & 1);
      info.amx_bf16 = amx_os && ((r[3] >> 22) & 1);
      info.amx_tile = amx_os && ((r[3] >> 24) & 1);
      unsigned r1[4];
      cpuid(7, 1, r1);
      info.avx512_bf16 = info.avx512f && ((r1[0] >> 5) & 1);
    }
  }
#endif
  if (info.model.empty()) {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("model name", 0) == 0) {
        size_t c = line.find(':');
        if (c != std::string::npos) info.model = line.substr(c + 2);
        break;
      }
    }
    if (info.model.empty()) info.model = "unknown";
  }
  return info;
}

SimdLevel detect_level() {
  const CpuInfo& c = cpu_info();
  SimdLevel best = SimdLevel::Portable;
  if (c.avx2 && c.fma) best = SimdLevel::Avx2;
  if (best == SimdLevel::Avx2 && c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq) best = SimdLevel::Avx512;
  const char* env = std::getenv("FACECUDA_SIMD");
  if (env && *env) {
    SimdLevel want = best;
    if (std::strcmp(env, "portable") == 0) want = SimdLevel::Portable;
    else if (std::strcmp(env, "avx2") == 0) want = SimdLevel::Avx2;
    else if (std::strcmp(env, "avx512") == 0) want = SimdLevel::Avx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;  // never above what the CPU has
  }
  return best;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

SimdLevel simd_level() {
  static const SimdLevel level = detect_level();
  return level;
}

const char* simd_level_name(SimdLevel l) {
  switch (l) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace fc
