// launch.h — every kernel launch of the CUDA backend goes through these two functions, so
// the host code never spells <<<>>> itself: an ordinary launch and a cooperative one,
// each on the given stream and checked. The CPU emulation of the device API provides the
// same two (csrc/cuda_emu), under which the same host code runs on the CPU.
#pragma once

#ifdef TORCHLSTM_CUDA_EMULATION
#include "../cuda_emu/launch.h"
#else
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace torchlstm {
namespace cuda {

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem_bytes,
            cudaStream_t stream, Args&&... args) {
  kernel<<<blocks, threads, smem_bytes, stream>>>(static_cast<Args&&>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// A cooperative launch (grid.sync() inside) of a kernel taking one struct by value.
template <typename Params>
void launch_cooperative(void (*kernel)(Params), unsigned blocks, unsigned threads,
                        size_t smem_bytes, cudaStream_t stream, const Params& params) {
  Params p = params;
  void* args[] = {&p};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(blocks),
                                             dim3(threads), args, smem_bytes, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace torchlstm
#endif
