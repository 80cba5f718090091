// blas.h — the per-time-step GEMM of the CPU kernels, called straight into BLAS.
//
// Why not at::mm: inside the time loop a dispatcher call per step (and a TensorImpl per
// view) costs microseconds that, at small batch, are a large part of a step. ATen's own
// cpublas::gemm is not exported from libtorch, but the BLAS that torch links exports
// the Fortran sgemm_/dgemm_ (MKL in the x86 wheels). They are resolved once, at first
// use, with dlsym in the already-loaded process; where a torch build has no such symbol,
// the GEMM falls back to at::addmm_out on views: still correct, only slower.
//
// Conventions are BLAS's: column-major, C (m x n) = alpha * op(A) op(B) + beta * C.
#pragma once

#include <ATen/ATen.h>
#include <dlfcn.h>

namespace torchlstm {
namespace cpu {

template <typename T>
using fortran_gemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                                const T*, const T*, const int*, const T*, const int*,
                                const T*, T*, const int*);

template <typename T>
fortran_gemm_t<T> fortran_gemm() {
  static const fortran_gemm_t<T> fn = reinterpret_cast<fortran_gemm_t<T>>(
      dlsym(RTLD_DEFAULT, std::is_same<T, float>::value ? "sgemm_" : "dgemm_"));
  return fn;
}

// Whether the direct BLAS path is in use (reported by torchlstm._C for the benchmark).
inline bool has_direct_blas() { return fortran_gemm<float>() && fortran_gemm<double>(); }

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (auto fn = fortran_gemm<T>()) {
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    const int mi = m, ni = n, ki = k, la = lda, lb = ldb, lc = ldc;
    fn(&ta, &tb, &mi, &ni, &ki, &alpha, a, &la, b, &lb, &beta, c, &lc);
    return;
  }
  // Fallback. Column-major X (r x s, ld) is the row-major (s x r) tensor X^T.
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto A = at::from_blob(const_cast<T*>(a), {trans_a ? m : k, lda}, opts)
               .narrow(1, 0, trans_a ? k : m);  // row-major view of A^T
  auto B = at::from_blob(const_cast<T*>(b), {trans_b ? k : n, ldb}, opts)
               .narrow(1, 0, trans_b ? n : k);
  auto C = at::from_blob(c, {n, ldc}, opts).narrow(1, 0, m);  // C^T (n x m)
  // C^T = op(B)^T op(A)^T
  const auto Bt = trans_b ? B.t() : B;  // (n x k)
  const auto At = trans_a ? A.t() : A;  // (k x m)
  if (beta == T(0)) at::mm_out(C, Bt, At).mul_(alpha);
  else at::addmm_out(C, C, Bt, At, beta, alpha);
}

}  // namespace cpu
}  // namespace torchlstm
