// ATen/cuda/CUDAContext.h (EMULATION) — the current stream, cuBLAS handle and device
// properties of the emulated device. CPU tensors stand for device tensors: any device
// index (a CPU tensor's is -1) means the one emulated device.
#pragma once

#include <c10/cuda/CUDAStream.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace at {
namespace cuda {

using c10::cuda::CUDAStream;
using c10::cuda::getCurrentCUDAStream;
using c10::cuda::getDefaultCUDAStream;

inline cudaDeviceProp* getDeviceProperties(int64_t /*device*/) {
  return &::torchlstm_emu::mutable_properties_for_aten();
}
inline cudaDeviceProp* getCurrentDeviceProperties() { return getDeviceProperties(-1); }
inline cublasHandle_t getCurrentCUDABlasHandle() { return ::torchlstm_emu::blas_handle(); }
inline int warp_size() { return 32; }

}  // namespace cuda
}  // namespace at
