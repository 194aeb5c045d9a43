// @file optim_stub.cc
// @brief The CUDA optimizer step (facecuda/optim.h) of a build without nvcc. No CUDA tensor can exist
// in such a build (allocation throws first), so fc::optim never reaches this; it throws
// CUDA_UNAVAILABLE with the stub's reason should anything call it directly.
#include "facecuda/cuda.h"
#include "facecuda/optim.h"

namespace fc {
namespace optim {
namespace detail {

void cuda_step(std::vector<Item>& items, const Hyper&, const StepOptions&, StepResult&) {
  cuda::require_device(items.empty() ? 0 : items[0].param.device().index);
}

}  // namespace detail
}  // namespace optim
}  // namespace fc
