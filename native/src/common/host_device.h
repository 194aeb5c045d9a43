// @file host_device.h
// @brief FC_HOST_DEVICE: marks small inline functions that both g++ (CPU backend) and nvcc (CUDA
// kernels) compile, so scalar math such as margin_math.h is written once.
#pragma once

#if defined(__CUDACC__)
#define FC_HOST_DEVICE __host__ __device__
#else
#define FC_HOST_DEVICE
#endif
