// c10/cuda/CUDAException.h (EMULATION) — C10_CUDA_CHECK and C10_CUDA_KERNEL_LAUNCH_CHECK:
// a failing call is a c10::Error naming the emulated error and its cause.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#define C10_CUDA_CHECK(EXPR)                                                                   \
  do {                                                                                         \
    const cudaError_t torchlstm_emu_err = (EXPR);                                              \
    TORCH_CHECK(torchlstm_emu_err == cudaSuccess, "CUDA error (emulated): ",                   \
                cudaGetErrorString(torchlstm_emu_err), " [", #EXPR, "]");                      \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
#define C10_CUDA_CHECK_WARN(EXPR) ((void)(EXPR))
