// cublas.cpp (EMULATION) — the cuBLAS stand-in declared in include/cublas_v2.h.
#include <cublas_v2.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "runtime.h"

struct cublasContext {
  std::atomic<int> math_mode{CUBLAS_DEFAULT_MATH};
  cudaStream_t stream = nullptr;
};

namespace torchlstm_emu {
cublasHandle_t blas_handle() {
  static cublasContext h;
  return &h;
}
}  // namespace torchlstm_emu

namespace {

int elem_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16F: case CUDA_R_16BF: return 2;
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
  }
  return 0;
}

// TF32: float32 with a 10-bit mantissa (round to nearest even), what tensor cores read.
float to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {
    u += 0xfffu + ((u >> 13) & 1u);
    u &= 0xffffe000u;
  }
  std::memcpy(&x, &u, 4);
  return x;
}

template <typename Acc>
Acc load(const void* p, cudaDataType_t t, int64_t i, bool tf32) {
  switch (t) {
    case CUDA_R_16F: return static_cast<Acc>(static_cast<float>(static_cast<const c10::Half*>(p)[i]));
    case CUDA_R_16BF: return static_cast<Acc>(static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]));
    case CUDA_R_32F: {
      const float v = static_cast<const float*>(p)[i];
      return static_cast<Acc>(tf32 ? to_tf32(v) : v);
    }
    case CUDA_R_64F: return static_cast<Acc>(static_cast<const double*>(p)[i]);
  }
  return Acc(0);
}

template <typename Acc>
void store(void* p, cudaDataType_t t, int64_t i, Acc v) {
  switch (t) {
    case CUDA_R_16F: static_cast<c10::Half*>(p)[i] = c10::Half(static_cast<float>(v)); break;
    case CUDA_R_16BF: static_cast<c10::BFloat16*>(p)[i] = c10::BFloat16(static_cast<float>(v)); break;
    case CUDA_R_32F: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case CUDA_R_64F: static_cast<double*>(p)[i] = static_cast<double>(v); break;
  }
}

bool valid_op(cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; }

// cuBLAS' checks of the shape arguments (column-major; rows of each operand as stored).
cublasStatus_t check_args(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                          int k, int lda, int ldb, int ldc) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const int rows_a = ta == CUBLAS_OP_N ? m : k;
  const int rows_b = tb == CUBLAS_OP_N ? k : n;
  if (lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

template <typename Acc>
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, Acc alpha, const void* A,
          cudaDataType_t at, int lda, const void* B, cudaDataType_t bt, int ldb, Acc beta, void* C,
          cudaDataType_t ct, int ldc, bool tf32) {
  // op(A)(i, l) = A[i*sa_i + l*sa_l], op(B)(l, j) = B[l*sb_l + j*sb_j]
  const int64_t sa_i = ta == CUBLAS_OP_N ? 1 : lda, sa_l = ta == CUBLAS_OP_N ? lda : 1;
  const int64_t sb_l = tb == CUBLAS_OP_N ? 1 : ldb, sb_j = tb == CUBLAS_OP_N ? ldb : 1;
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      Acc s = 0;
      for (int l = 0; l < k; ++l)
        s += load<Acc>(A, at, i * sa_i + l * sa_l, tf32) * load<Acc>(B, bt, l * sb_l + j * sb_j, tf32);
      const int64_t ci = i + int64_t(j) * ldc;
      // beta == 0: C is not read (it may hold anything, NaN included), as in cuBLAS
      const Acc v = beta == Acc(0) ? alpha * s : alpha * s + beta * load<Acc>(C, ct, ci, false);
      store<Acc>(C, ct, ci, v);
    }
  }
  torchlstm_emu::stats().gemms++;
}

}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                            int m, int n, int k, const void* alpha, const void* A, cudaDataType_t Atype,
                            int lda, const void* B, cudaDataType_t Btype, int ldb, const void* beta,
                            void* C, cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
  (void)algo;
  if (cublasStatus_t s = check_args(handle, transa, transb, m, n, k, lda, ldb, ldc)) return s;
  torchlstm_emu::stats().last_compute_type.store(computeType);
  torchlstm_emu::stats().last_math_mode.store(handle->math_mode.load());
  if (!elem_size(Atype) || !elem_size(Btype) || !elem_size(Ctype) || Atype != Btype)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool half_in = Atype == CUDA_R_16F || Atype == CUDA_R_16BF;
  bool ok = false, tf32 = false;
  switch (computeType) {
    case CUBLAS_COMPUTE_32F:
      ok = Ctype == Atype || (half_in && Ctype == CUDA_R_32F);
      ok = ok && Atype != CUDA_R_64F;
      break;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      ok = Atype == CUDA_R_32F && Ctype == CUDA_R_32F;
      tf32 = true;
      break;
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
      ok = Atype == CUDA_R_32F && Ctype == CUDA_R_32F;
      break;
    case CUBLAS_COMPUTE_64F:
      ok = Atype == CUDA_R_64F && Ctype == CUDA_R_64F;
      break;
    case CUBLAS_COMPUTE_16F:
      ok = Atype == CUDA_R_16F && Ctype == CUDA_R_16F;
      break;
  }
  if (!ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (computeType == CUBLAS_COMPUTE_64F) {
    gemm<double>(transa, transb, m, n, k, *static_cast<const double*>(alpha), A, Atype, lda, B, Btype,
                 ldb, *static_cast<const double*>(beta), C, Ctype, ldc, false);
  } else if (computeType == CUBLAS_COMPUTE_16F) {
    gemm<float>(transa, transb, m, n, k, static_cast<float>(*static_cast<const c10::Half*>(alpha)), A,
                Atype, lda, B, Btype, ldb, static_cast<float>(*static_cast<const c10::Half*>(beta)), C,
                Ctype, ldc, false);
  } else {
    gemm<float>(transa, transb, m, n, k, *static_cast<const float*>(alpha), A, Atype, lda, B, Btype, ldb,
                *static_cast<const float*>(beta), C, Ctype, ldc, tf32);
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                           int m, int n, int k, const double* alpha, const double* A, int lda,
                           const double* B, int ldb, const double* beta, double* C, int ldc) {
  if (cublasStatus_t s = check_args(handle, transa, transb, m, n, k, lda, ldb, ldc)) return s;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  gemm<double>(transa, transb, m, n, k, *alpha, A, CUDA_R_64F, lda, B, CUDA_R_64F, ldb, *beta, C,
               CUDA_R_64F, ldc, false);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                           int m, int n, int k, const float* alpha, const float* A, int lda,
                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  if (cublasStatus_t s = check_args(handle, transa, transb, m, n, k, lda, ldb, ldc)) return s;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  gemm<float>(transa, transb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C,
              CUDA_R_32F, ldc, false);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math_mode.store(mode);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  *mode = static_cast<cublasMath_t>(handle->math_mode.load());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
