// c10/cuda/CUDAStream.h (EMULATION) — one stream per emulated device (launches are
// synchronous, so every stream is the same).
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime.h>

namespace torchlstm_emu {
cudaDeviceProp& mutable_properties_for_aten();
cudaStream_t emulated_stream();
}  // namespace torchlstm_emu

namespace c10 {
namespace cuda {

class CUDAStream {
 public:
  cudaStream_t stream() const { return ::torchlstm_emu::emulated_stream(); }
  operator cudaStream_t() const { return stream(); }
  c10::DeviceIndex device_index() const { return 0; }
  void synchronize() const {}
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return CUDAStream(); }
inline CUDAStream getDefaultCUDAStream(c10::DeviceIndex = -1) { return CUDAStream(); }

}  // namespace cuda
}  // namespace c10
