// c10/cuda/CUDAGuard.h (EMULATION) — device guards over the one emulated device: they
// accept the CPU tensors' devices that stand for it, and do nothing else.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Optional.h>

namespace c10 {
namespace cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device d) : original_(d) {}
  explicit CUDAGuard(c10::DeviceIndex) : original_(c10::Device(c10::DeviceType::CPU)) {}
  CUDAGuard(const CUDAGuard&) = delete;
  CUDAGuard& operator=(const CUDAGuard&) = delete;
  void set_device(c10::Device) {}
  c10::Device original_device() const { return original_; }

 private:
  c10::Device original_;
};

struct OptionalCUDAGuard {
  OptionalCUDAGuard() = default;
  explicit OptionalCUDAGuard(c10::optional<c10::Device>) {}
  void set_device(c10::Device) {}
  void reset() {}
};

}  // namespace cuda
}  // namespace c10
