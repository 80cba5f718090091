// cublas_gemm.h — the per-step GEMMs of the CUDA time loops, straight to cuBLAS.
//
// ATen's at::cuda::blas::gemm is not exported from libtorch_cuda, and at::mm per step
// would add a dispatcher round-trip and an allocation to every step; so the loops call
// cuBLAS themselves, on torch's handle for the current stream (which carries torch's
// workspace), with torch's matmul settings (tf32_allowed, reduced_precision_reduction_allowed
// below). float16/bfloat16 accumulate in float32.
#pragma once

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cublas_v2.h>

#include <cstdint>
#include <type_traits>

namespace torchlstm {
namespace cuda {

inline void check_cublas(cublasStatus_t s, const char* what) {
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "torchlstm: ", what, " failed with cuBLAS status ",
              static_cast<int>(s));
}

template <typename T>
struct CublasType;
template <>
struct CublasType<float> {
  static constexpr cudaDataType_t value = CUDA_R_32F;
};
template <>
struct CublasType<double> {
  static constexpr cudaDataType_t value = CUDA_R_64F;
};
template <>
struct CublasType<c10::Half> {
  static constexpr cudaDataType_t value = CUDA_R_16F;
};
template <>
struct CublasType<c10::BFloat16> {
  static constexpr cudaDataType_t value = CUDA_R_16BF;
};

// torch's settings for its own GEMMs, read per call as ATen's cuBLAS calls do:
// TF32 for float32 where torch.backends.cuda.matmul allows it (the current API,
// fp32_precision / allow_tf32 alike), and for float16/bfloat16 whether cuBLAS may sum in
// reduced precision (split-K partial sums in 16 bits: allow_fp16_reduced_precision_reduction,
// allow_bf16_reduced_precision_reduction; when not allowed, the handle's math mode says so).
inline bool tf32_allowed() {
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
}

template <typename scalar_t>
bool reduced_precision_reduction_allowed() {
  if constexpr (std::is_same_v<scalar_t, c10::Half>)
    return at::globalContext().allowFP16ReductionCuBLAS() ==
           at::CuBLASReductionOption::AllowReducedPrecisionWithSplitK;
  else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>)
    return at::globalContext().allowBF16ReductionCuBLAS() ==
           at::CuBLASReductionOption::AllowReducedPrecisionWithSplitK;
  else
    return true;  // float32/float64: no 16-bit reduction to forbid
}

// Row-major C (M x N) = op(A) op(B) + beta C, op(A) M x K, op(B) K x N, leading dimensions
// (row strides) lda, ldb, ldc. cuBLAS is column-major: it computes C^T = op(B)^T op(A)^T,
// so the operands swap.
template <typename scalar_t>
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const scalar_t* A,
             int64_t lda, const scalar_t* B, int64_t ldb, float beta, scalar_t* C, int64_t ldc) {
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const cublasOperation_t ta = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  if constexpr (std::is_same_v<scalar_t, double>) {
    const double one = 1, b = beta;
    check_cublas(cublasDgemm(handle, ta, tb, m, n, k, &one, B, static_cast<int>(ldb), A,
                             static_cast<int>(lda), &b, C, static_cast<int>(ldc)),
                 "cublasDgemm");
  } else {
    const float one = 1, b = beta;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (std::is_same_v<scalar_t, float> && tf32_allowed()) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    const bool strict = !reduced_precision_reduction_allowed<scalar_t>();
    if (strict)
      check_cublas(cublasSetMathMode(handle, static_cast<cublasMath_t>(
                                                 CUBLAS_DEFAULT_MATH |
                                                 CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                   "cublasSetMathMode");
    constexpr cudaDataType_t dt = CublasType<scalar_t>::value;
    const cublasStatus_t status =
        cublasGemmEx(handle, ta, tb, m, n, k, &one, B, dt, static_cast<int>(ldb), A, dt,
                     static_cast<int>(lda), &b, C, dt, static_cast<int>(ldc), compute,
                     CUBLAS_GEMM_DEFAULT);
    if (strict) cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);  // torch's handle, as found
    check_cublas(status, "cublasGemmEx");
  }
}

}  // namespace cuda
}  // namespace torchlstm
