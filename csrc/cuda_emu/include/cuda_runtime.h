// cuda_runtime.h (EMULATION) — the part of the CUDA device and runtime API the torchlstm
// kernels use, for compiling the real csrc/cuda sources with the host compiler
// (torchlstm._cuda_emu; see csrc/cuda_emu/README.md). Placed first on the include path
// by csrc/cuda_emu/build.py; never seen by the nvcc build.
//
// Device code runs as cooperative fibers on the calling OS thread (runtime.cpp): every
// CUDA thread of a block is a fiber; they switch at __syncthreads, warp shuffles and
// grid.sync. __shared__ is thread_local storage (one block runs at a time per OS thread;
// a cooperative kernel's dynamic shared array is swapped per block when the scheduler
// moves between blocks).
#pragma once

#ifndef TORCHLSTM_CUDA_EMULATION
#error "csrc/cuda_emu/include is the CUDA emulation: build with -DTORCHLSTM_CUDA_EMULATION"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- qualifiers ---------------------------------------------------------------------
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Block-scope `__shared__ T x[N];` becomes a static thread_local (one block at a time per
// OS thread); `extern __shared__ T name[];` refers to a namespace-scope thread_local that
// the emulation defines (TORCHLSTM_EMU_DYNAMIC_SHARED in runtime.h).
#define __shared__ thread_local
#define __constant__
#define __managed__

// ---- error codes and types -------------------------------------------------------------
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorLaunchFailure = 719,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorCooperativeLaunchTooLarge = 720,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorIllegalInstruction = 715,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

enum cudaStreamCaptureStatus : int {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};

enum cudaFuncAttribute : int {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

// The fields torchlstm (and ATen's callers) read; values from torchlstm_emu::device.
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;          // 48 KiB: the default dynamic + static limit
  size_t sharedMemPerBlockOptin;     // what cudaFuncAttributeMaxDynamicSharedMemorySize may reach
  size_t sharedMemPerMultiprocessor;
  size_t reservedSharedMemPerBlock;
  int regsPerBlock;
  int regsPerMultiprocessor;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int maxThreadsPerMultiProcessor;
  int maxBlocksPerMultiProcessor;
  int multiProcessorCount;
  int cooperativeLaunch;
  int major;
  int minor;
};

// ---- the runtime (runtime.cpp) ---------------------------------------------------------
namespace torchlstm_emu {

// The calling fiber's CUDA thread and block (valid inside device code only).
struct ThreadCtx {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern __thread ThreadCtx* tl_ctx;  // (__thread: no TLS-init call per access)
[[noreturn]] void device_error(const char* what);
void syncthreads();
void syncwarp(unsigned mask);
void grid_sync();
bool in_cooperative_launch();
// Exchanges 8 bytes with the other lanes of `mask`; returns the value of lane src(lane).
uint64_t shfl_exchange(unsigned mask, uint64_t value, int mode, int arg, int width);
int lane_id();

cudaError_t set_func_max_dynamic_smem(const void* func, int value);
cudaError_t occupancy(int* blocks, const void* func, int block_size, size_t dyn_smem);
void set_last_error(cudaError_t e, const char* message);
const cudaDeviceProp& properties();
cudaStreamCaptureStatus capture_status();

}  // namespace torchlstm_emu

#define threadIdx (::torchlstm_emu::tl_ctx->thread_idx)
#define blockIdx (::torchlstm_emu::tl_ctx->block_idx)
#define blockDim (::torchlstm_emu::tl_ctx->block_dim)
#define gridDim (::torchlstm_emu::tl_ctx->grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::torchlstm_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::torchlstm_emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

namespace torchlstm_emu {
template <typename T>
T shfl(unsigned mask, T var, int mode, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "emulated shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shfl_exchange(mask, bits, mode, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace torchlstm_emu

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src, int width = warpSize) {
  return ::torchlstm_emu::shfl(mask, var, 0, src, width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return ::torchlstm_emu::shfl(mask, var, 1, lane_mask, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::torchlstm_emu::shfl(mask, var, 2, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::torchlstm_emu::shfl(mask, var, 3, static_cast<int>(delta), width);
}

// Cache-hint loads: plain loads here (every fiber shares the one memory).
template <typename T>
inline T __ldcg(const T* p) { return *p; }
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldca(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }

// ---- runtime API -----------------------------------------------------------------------
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);

inline cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    return ::torchlstm_emu::set_func_max_dynamic_smem(func, value);
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  ::torchlstm_emu::set_last_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: unknown attribute");
  return cudaErrorInvalidValue;
}
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* num_blocks, const void* func,
                                                                 int block_size, size_t dyn_smem) {
  return ::torchlstm_emu::occupancy(num_blocks, func, block_size, dyn_smem);
}
template <typename T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* num_blocks, T func,
                                                                 int block_size, size_t dyn_smem) {
  return ::torchlstm_emu::occupancy(num_blocks, reinterpret_cast<const void*>(func), block_size,
                                    dyn_smem);
}
// cudaLaunchCooperativeKernel / cudaLaunchKernel with type-erased arguments cannot be
// emulated (the argument types are unknown): launches go through
// torchlstm::cuda::launch / launch_cooperative (csrc/cuda/launch.h -> cuda_emu/launch.h).
