// runtime.h (EMULATION) — the emulated device's launch machinery, used by
// cuda_emu/launch.h (torchlstm::cuda::launch / launch_cooperative) and by the
// torchlstm._cuda_emu module's controls. See README.md in this folder.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace torchlstm_emu {

constexpr size_t kMaxDynamicSmem = 256 * 1024;  // above every emulated device's opt-in limit

struct LaunchConfig {
  const void* func;  // the kernel (its attributes: cudaFuncSetAttribute)
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  bool cooperative;
};

// Runs body(ctx) as every CUDA thread of the grid (validating the configuration as the
// CUDA runtime would); the error is also the calling thread's last error.
cudaError_t run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx);

// The dynamic shared array(s) `extern __shared__ T name[]` of the kernels: defined (as
// thread_local storage) and registered by TORCHLSTM_EMU_DYNAMIC_SHARED.
struct DynamicSharedRegistrar {
  explicit DynamicSharedRegistrar(unsigned char* (*addr)());
};
// (A dynamic initialiser, so that GCC emits the variable's TLS-init function: a
// block-scope `extern thread_local` declaration calls it unconditionally, and without
// one the call would be to address 0.)
unsigned char tls_init_byte();
#define TORCHLSTM_EMU_DYNAMIC_SHARED(NS, NAME)                                        \
  namespace NS {                                                                      \
  alignas(128) thread_local unsigned char NAME[::torchlstm_emu::kMaxDynamicSmem] = {  \
      ::torchlstm_emu::tls_init_byte()};                                              \
  }                                                                                   \
  static const ::torchlstm_emu::DynamicSharedRegistrar torchlstm_emu_smem_##NAME(     \
      [] { return static_cast<unsigned char*>(NS::NAME); });

// ---- the emulated device, for the module's Python controls ----------------------------
// Presets: "h100" (132 SMs, 227 KiB opt-in, cooperative), "h200" (same limits),
// "small" (16 SMs, 48 KiB opt-in, 64 KiB per SM, 1024 threads per SM).
bool set_device_preset(const std::string& name);
cudaDeviceProp& mutable_properties();
void set_capture_status(cudaStreamCaptureStatus s);
// Blocks as OS threads (each block's threads as fibers of its own OS thread) instead of
// every block on the calling thread: the ThreadSanitizer build's mode.
void set_block_threads(bool on);
bool block_threads();

struct Stats {
  std::atomic<int64_t> launches{0}, cooperative_launches{0}, failed_launches{0};
  std::atomic<int64_t> fibers{0}, switches{0}, gemms{0};
  // the last cublasGemmEx call's compute type and the handle's math mode then
  std::atomic<int> last_compute_type{-1}, last_math_mode{-1};
};
Stats& stats();
std::string last_error_message();

}  // namespace torchlstm_emu
