// launch.h — every kernel launch of the host code goes through these two templates:
//   launch(kernel, blocks, threads, smem_bytes, stream, args...)
//       kernel<<<blocks, threads, smem_bytes, stream>>>(args...); check after it with
//       C10_CUDA_KERNEL_LAUNCH_CHECK()
//   launch_cooperative(kernel, blocks, threads, smem_bytes, stream, params)
//       cudaLaunchCooperativeKernel of a kernel taking one parameter struct; returns the
//       launch's error
// so that the CUDA emulation (csrc/cuda_emu, torchlstm._cuda_emu) can run the same host
// code on the CPU: under TORCHLSTM_CUDA_EMULATION they are the emulation's.
#pragma once

#ifdef TORCHLSTM_CUDA_EMULATION
#include "../cuda_emu/launch.h"
#else

#include <cuda_runtime.h>

#include <utility>

namespace torchlstm {
namespace cuda {

template <typename... KArgs, typename... Args>
inline void launch(void (*kernel)(KArgs...), dim3 blocks, dim3 threads, size_t smem_bytes,
                   cudaStream_t stream, Args&&... args) {
  kernel<<<blocks, threads, smem_bytes, stream>>>(std::forward<Args>(args)...);
}

template <typename Params>
inline cudaError_t launch_cooperative(void (*kernel)(Params), dim3 blocks, dim3 threads,
                                      size_t smem_bytes, cudaStream_t stream, const Params& params) {
  Params p = params;
  void* args[] = {&p};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), blocks, threads, args,
                                     smem_bytes, stream);
}

}  // namespace cuda
}  // namespace torchlstm

#endif  // TORCHLSTM_CUDA_EMULATION
