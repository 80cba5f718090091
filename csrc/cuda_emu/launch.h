// launch.h (EMULATION) — torchlstm::cuda::launch / launch_cooperative for the CUDA
// emulation: the same two function templates as the real ones in csrc/cuda/launch.h,
// running the kernel on the emulated device (runtime.cpp) instead of `<<<>>>` and
// cudaLaunchCooperativeKernel. The launch is synchronous and checked like the real ones:
// a configuration or execution error is a c10::Error naming the emulated cause.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

namespace torchlstm {
namespace cuda {

namespace emu_detail {
template <typename... KArgs>
struct KernelCall {
  void (*kernel)(KArgs...);
  std::tuple<std::decay_t<KArgs>...> args;
  static void run(void* self) {
    auto* c = static_cast<KernelCall*>(self);
    std::apply(c->kernel, c->args);  // every CUDA thread gets its own copy of the parameters
  }
};

template <typename... KArgs, typename... Args>
cudaError_t run(bool cooperative, void (*kernel)(KArgs...), dim3 blocks, dim3 threads,
                size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "wrong number of kernel arguments");
  KernelCall<KArgs...> call{kernel, std::tuple<std::decay_t<KArgs>...>(std::forward<Args>(args)...)};
  const torchlstm_emu::LaunchConfig cfg{reinterpret_cast<const void*>(kernel), blocks, threads,
                                        smem_bytes, stream, cooperative};
  return torchlstm_emu::run_grid(cfg, &KernelCall<KArgs...>::run, &call);
}
}  // namespace emu_detail

// kernel<<<blocks, threads, smem_bytes, stream>>>(args...), checked (a failure is a
// c10::Error, as C10_CUDA_KERNEL_LAUNCH_CHECK makes it).
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), unsigned blocks, unsigned threads, size_t smem_bytes,
            cudaStream_t stream, Args&&... args) {
  (void)emu_detail::run(false, kernel, dim3(blocks), dim3(threads), smem_bytes, stream,
                        std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// cudaLaunchCooperativeKernel of a kernel taking one parameter struct, checked.
template <typename Params>
void launch_cooperative(void (*kernel)(Params), unsigned blocks, unsigned threads,
                        size_t smem_bytes, cudaStream_t stream, const Params& params) {
  C10_CUDA_CHECK(emu_detail::run(true, kernel, dim3(blocks), dim3(threads), smem_bytes, stream, params));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace torchlstm
