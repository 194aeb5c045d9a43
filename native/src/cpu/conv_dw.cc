// @file conv_dw.cc
// @brief The depthwise forward of conv_dw.h: the portable build of conv_dw_kernels.h, the per-thread
// scratch and the choice of the ISA build (fc::simd_level(); FACECUDA_SIMD may force a lower one).
#include "cpu/conv_dw.h"

#include <cstdint>
#include <vector>

#include "facecuda/cpu_info.h"

namespace fc {
namespace nn {
namespace dw {

namespace {
#include "cpu/conv_dw_kernels.h"
}  // namespace

bool supported(const Args& a) {
  const bool k = a.KH == a.KW && (a.KH == 3 || a.KH == 5 || a.KH == 7 || a.KH == 9);
  const bool s = a.sh == a.sw && (a.sw == 1 || a.sw == 2);
  return k && s && a.OH >= 1 && a.OW >= 1;
}

int64_t scratch_floats(const Args& a) { return dw_plane_floats(a); }

void forward_portable(const Args& a, int64_t p0, int64_t p1, float* scratch) { dw_run(a, p0, p1, scratch); }

void forward(const Args& a, int64_t p0, int64_t p1) {
  thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(scratch_floats(a)) + 16;
  if (buf.size() < need) buf.resize(need);
  switch (simd_level()) {
    case SimdLevel::Avx512: return forward_avx512(a, p0, p1, buf.data());
    case SimdLevel::Avx2: return forward_avx2(a, p0, p1, buf.data());
    case SimdLevel::Portable: break;
  }
  forward_portable(a, p0, p1, buf.data());
}

}  // namespace dw
}  // namespace nn
}  // namespace fc
