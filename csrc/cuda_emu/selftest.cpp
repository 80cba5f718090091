// selftest.cpp (EMULATION) — small kernels that check the emulated device itself (the
// rules a real GPU enforces), run from tests/test_cuda_emu.py through
// torchlstm._cuda_emu.selftest(name): each returns what it observed.
#include <pybind11/pybind11.h>

#include <cooperative_groups.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "launch.h"
#include "runtime.h"

namespace torchlstm {
namespace cuda {
// (in torchlstm::cuda, so that `extern __shared__ smem_raw` is the kernels' array)

__global__ void touch_smem_kernel(int* out) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  smem_raw[threadIdx.x] = static_cast<unsigned char>(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = smem_raw[blockDim.x - 1 - threadIdx.x];
}

// Static __shared__ (block-local in an ordinary launch) and a block-wide sum.
__global__ void block_sum_kernel(const float* in, float* out, int n) {
  __shared__ float part[256];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  part[threadIdx.x] = i < n ? in[i] : 0.f;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < static_cast<unsigned>(s)) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

__global__ void warp_xor_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  out[threadIdx.x] = v;
}

__global__ void divergent_sync_kernel(int* out) {
  if (threadIdx.x % 2) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void partial_mask_kernel(int* out) {
  // the mask names lanes 0..31 but only 20 threads exist
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

struct GridArgs {
  int* data;
  int n;
};
// Every block writes its slot, grid.sync, then reads every other block's slot.
__global__ void grid_exchange_kernel(GridArgs a) {
  namespace cg = cooperative_groups;
  if (threadIdx.x == 0) a.data[blockIdx.x] = static_cast<int>(blockIdx.x) + 1;
  cg::this_grid().sync();
  if (threadIdx.x == 0) {
    int s = 0;
    for (int b = 0; b < a.n; ++b) s += a.data[b];
    a.data[a.n + blockIdx.x] = s;
  }
}

}  // namespace cuda
}  // namespace torchlstm

namespace {

using namespace torchlstm::cuda;

// The launches unchecked (launch.h's throw): the self-tests look at the errors.
template <typename... KArgs, typename... Args>
cudaError_t launch_unchecked(void (*kernel)(KArgs...), unsigned blocks, unsigned threads, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  return emu_detail::run(false, kernel, dim3(blocks), dim3(threads), smem, stream, std::forward<Args>(args)...);
}
template <typename P>
cudaError_t launch_cooperative_unchecked(void (*kernel)(P), unsigned blocks, unsigned threads, size_t smem,
                               cudaStream_t stream, const P& p) {
  return emu_detail::run(true, kernel, dim3(blocks), dim3(threads), smem, stream, p);
}
namespace py = pybind11;

py::dict result(cudaError_t e) {
  py::dict d;
  d["error"] = std::string(cudaGetErrorName(e));
  d["message"] = e == cudaSuccess ? std::string() : torchlstm_emu::last_error_message();
  return d;
}

py::dict selftest(const std::string& name) {
  (void)cudaGetLastError();
  std::vector<int> buf(4096, -1);
  if (name == "smem_no_optin" || name == "smem_optin") {
    // 64 KiB of dynamic shared memory: refused unless the kernel opted in
    if (name == "smem_optin")
      cudaFuncSetAttribute(touch_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
    else
      cudaFuncSetAttribute(touch_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 * 1024);
    launch_unchecked(touch_smem_kernel, 2, 64, 64 * 1024, nullptr, buf.data());
    py::dict d = result(cudaGetLastError());
    d["ok"] = buf[0] == 63 && buf[64 + 63] == 0;
    return d;
  }
  if (name == "smem_optin_too_large") {
    const cudaError_t e = cudaFuncSetAttribute(touch_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(torchlstm_emu::properties().sharedMemPerBlockOptin) + 1);
    return result(e);
  }
  if (name == "block_sum") {
    std::vector<float> in(1000), out(4, 0.f);
    for (int i = 0; i < 1000; ++i) in[i] = static_cast<float>(i);
    launch_unchecked(block_sum_kernel, 4, 256, 0, nullptr, in.data(), out.data(), 1000);
    py::dict d = result(cudaGetLastError());
    bool ok = true;
    for (int b = 0; b < 4; ++b) {
      float e = 0;
      for (int i = 256 * b; i < 256 * b + 256 && i < 1000; ++i) e += static_cast<float>(i);
      ok = ok && out[b] == e;
    }
    d["ok"] = ok;
    return d;
  }
  if (name == "warp_xor") {
    launch_unchecked(warp_xor_kernel, 1, 64, 0, nullptr, buf.data());
    py::dict d = result(cudaGetLastError());
    bool ok = true;
    for (int t = 0; t < 64; ++t) ok = ok && buf[t] == (t < 32 ? 496 : 32 * 32 + 496);
    d["ok"] = ok;
    return d;
  }
  if (name == "divergent_sync") {
    launch_unchecked(divergent_sync_kernel, 1, 64, 0, nullptr, buf.data());
    return result(cudaGetLastError());
  }
  if (name == "partial_mask") {
    launch_unchecked(partial_mask_kernel, 1, 20, 0, nullptr, buf.data());
    return result(cudaGetLastError());
  }
  if (name == "grid_sync_ordinary") {
    launch_unchecked(grid_exchange_kernel, 4, 32, 0, nullptr, GridArgs{buf.data(), 4});
    return result(cudaGetLastError());
  }
  if (name == "grid_sync" || name == "grid_too_large") {
    const int n = name == "grid_sync" ? 8 : 200000;  // 200000 > 132 SMs x 16 blocks of 128
    std::vector<int> data(2 * n, 0);
    const cudaError_t e = launch_cooperative_unchecked(grid_exchange_kernel, n, 128, 0, nullptr, GridArgs{data.data(), n});
    py::dict d = result(e);
    bool ok = true;
    for (int b = 0; b < n && e == cudaSuccess; ++b) ok = ok && data[n + b] == n * (n + 1) / 2;
    d["ok"] = ok && e == cudaSuccess;
    return d;
  }
  if (name == "too_many_threads") {
    launch_unchecked(warp_xor_kernel, 1, 2048, 0, nullptr, buf.data());
    return result(cudaGetLastError());
  }
  if (name == "cublas_lda") {
    // C (2x3) = A (2x4) B (4x3), column-major; lda 1 < 2 rows of A
    std::vector<float> A(8, 1.f), B(12, 1.f), C(6, 0.f);
    const float one = 1, zero = 0;
    py::dict d;
    d["bad_lda"] = static_cast<int>(cublasGemmEx(torchlstm_emu::blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, 2, 3, 4, &one, A.data(),
                                                 CUDA_R_32F, 1, B.data(), CUDA_R_32F, 4, &zero, C.data(), CUDA_R_32F, 2,
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    d["bad_ldb_transposed"] = static_cast<int>(cublasGemmEx(torchlstm_emu::blas_handle(), CUBLAS_OP_N, CUBLAS_OP_T, 2, 3, 4, &one,
                                                            A.data(), CUDA_R_32F, 2, B.data(), CUDA_R_32F, 2, &zero, C.data(),
                                                            CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    d["bad_types"] = static_cast<int>(cublasGemmEx(torchlstm_emu::blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, 2, 3, 4, &one, A.data(),
                                                   CUDA_R_32F, 2, B.data(), CUDA_R_64F, 4, &zero, C.data(), CUDA_R_32F, 2,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    std::vector<float> Cn(6, std::nanf(""));
    d["good"] = static_cast<int>(cublasGemmEx(torchlstm_emu::blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, 2, 3, 4, &one, A.data(),
                                              CUDA_R_32F, 2, B.data(), CUDA_R_32F, 4, &zero, Cn.data(), CUDA_R_32F, 2,
                                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    d["ok"] = Cn[0] == 4.f && Cn[5] == 4.f;  // beta = 0: the NaNs in C are not read
    return d;
  }
  throw py::value_error("unknown self-test '" + name + "'");
}

}  // namespace

void torchlstm_emu_register_selftest(py::module_& m) {
  m.def("selftest", &selftest, "runs one of the emulated device's self-tests");
}
