// blas.h — the per-time-step GEMM of the CPU kernels, called straight into BLAS.
//
// Why not at::mm: inside the time loop a dispatcher call per step (and a TensorImpl per
// view) costs microseconds that, at small batch, are a large part of a step. ATen's own
// cpublas::gemm is not exported from libtorch, but the BLAS that torch links exports
// the Fortran sgemm_/dgemm_ (MKL in the x86 wheels). They are resolved once, at first
// use, from libtorch_cpu itself (never from whatever else the process loaded: another
// library's sgemm_, e.g. an ILP64 one, must not be picked up); where a torch build has
// no such symbol, the GEMM falls back to at::addmm_out on views: correct, only slower.
//
// Conventions are BLAS's: column-major, C (m x n) = alpha * op(A) op(B) + beta * C.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <dlfcn.h>

#include <atomic>
#include <limits>

#include "host_cache.h"
#include "panel_gemm.h"

#if defined(CPU_CAPABILITY_AVX2) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TORCHLSTM_AVX2_MATVEC 1
#endif

namespace torchlstm {
namespace cpu {

// A symbol of the library that defines ATen (libtorch_cpu), or nullptr.
inline void* torch_symbol(const char* name) {
  static void* const handle = [] {
    Dl_info info;
    void* h = nullptr;
    if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) && info.dli_fname)
      h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    return h;
  }();
  return handle ? dlsym(handle, name) : nullptr;
}

template <typename T>
using fortran_gemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                                const T*, const T*, const int*, const T*, const int*,
                                const T*, T*, const int*);

template <typename T>
fortran_gemm_t<T> fortran_gemm() {
  static const fortran_gemm_t<T> fn = reinterpret_cast<fortran_gemm_t<T>>(
      torch_symbol(std::is_same<T, float>::value ? "sgemm_" : "dgemm_"));
  return fn;
}

// Whether the AVX-512 versions run (the batch 1-4 matrix-vector loop below and the gate
// passes of gates_avx512.h): where the CPU has AVX-512 (F and DQ), unless turned off
// (torchlstm._C.set_cpu_avx512(False): the tests run both versions on a machine that has
// it).
inline std::atomic<bool>& avx512_allowed() {
  static std::atomic<bool> allowed{true};
  return allowed;
}
inline bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return yes;
#else
  return false;
#endif
}
// The CPU's vendor: MKL's fast paths are Intel's (on AMD it takes slower ones).
inline bool cpu_is_amd() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_is("amd");
  return yes;
#else
  return false;
#endif
}
inline bool cpu_is_intel() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_is("intel");
  return yes;
#else
  return false;
#endif
}
inline bool use_avx512() {
  return cpu_has_avx512() && avx512_allowed().load(std::memory_order_relaxed);
}

// Which GEMM the time loops' float32 products run on (the per-step recurrent product, the
// chunked input projection, the projection): torchlstm's own micro-kernel over weights
// packed once (panel_gemm.h), or BLAS (MKL's packed GEMM where torch has it). Chosen at
// run time, by what was measured per CPU vendor (bench/RESULTS.md, one thread): on an AMD
// EPYC (Zen 4) the own AVX-512 kernel ran at 93-97% of the FMA peak where MKL's packed
// GEMM ran at 65-90% (38% at 5 rows); on an Intel Xeon (Sapphire Rapids class, two
// 512-bit FMA ports) MKL's packed GEMM is ahead (64x1024x512: 193 against 158 GFLOP/s;
// the module 2-4% faster end to end). So `auto` is MKL's packed GEMM on Intel where torch
// has it (but for a handful of batch rows: step_panel_isa), else the widest own kernel the
// CPU has (AVX2 where AVX-512 is turned off: set_cpu_avx512).
// torchlstm._C.set_cpu_gemm picks one, so the tests run every path on any machine;
// TORCHLSTM_CPU_GEMM (auto, blas, avx2, avx512) sets the start value.
enum class StepGemm : int { AUTO = 0, BLAS = 1, AVX2 = 2, AVX512 = 3 };
StepGemm step_gemm_from_env();  // bindings_cpu.cpp (a bad value is reported there)
inline std::atomic<int>& step_gemm_choice() {
  static std::atomic<int> choice{static_cast<int>(step_gemm_from_env())};
  return choice;
}

// Whether the direct BLAS path is in use (reported by torchlstm._C for the benchmark).
inline bool has_direct_blas() { return fortran_gemm<float>() && fortran_gemm<double>(); }

// Whether float32 recurrent weights are packed once per sequence (MKL's packed GEMM).
inline bool has_packed_gemm() {
  return torch_symbol("cblas_sgemm_pack_get_size") && torch_symbol("cblas_sgemm_pack") &&
         torch_symbol("cblas_sgemm_compute");
}

// The micro-kernel the float32 loops use now (NONE: BLAS) for products of `rows` batch
// rows (the GEMM's n; the default: a large batch). On Intel `auto` takes MKL, except for
// a handful of rows (up to 4: there the own kernel measured faster, B=1 forward+backward
// 1.50 -> 1.37 ms at T=100, I=H=128, 2 threads).
inline PanelIsa step_panel_isa(int64_t rows = std::numeric_limits<int64_t>::max()) {
  switch (static_cast<StepGemm>(step_gemm_choice().load(std::memory_order_relaxed))) {
    case StepGemm::BLAS:
      return PanelIsa::NONE;
    case StepGemm::AVX2:
      return PanelIsa::AVX2;
    case StepGemm::AVX512:
      return PanelIsa::AVX512;
    default:
      if (cpu_is_intel() && has_packed_gemm() && rows > 4) return PanelIsa::NONE;
      if (use_avx512() && panel_isa_supported(PanelIsa::AVX512)) return PanelIsa::AVX512;
      return panel_isa_supported(PanelIsa::AVX2) ? PanelIsa::AVX2 : PanelIsa::NONE;
  }
}

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

// op(A) packed once for many GEMMs with the same A: the weights of a whole sequence.
// float32: into the micro-kernel's panels (panel_gemm.h) when a kernel is chosen
// (step_panel_isa), else with MKL's cblas_sgemm_pack/compute where torch exports them
// (MKL's sgemm otherwise re-packs A on every call, i.e. every time step). Otherwise, and
// for double, a plain gemm.
template <typename T>
class PackedA {
 public:
  // pack = false: plain gemm (packing costs about one step's worth of reading A; not
  // worth it for a few steps).
  PackedA(bool trans_a, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, bool pack)
      : trans_a_(trans_a), m_(m), k_(k), a_(a), lda_(lda) {
    if constexpr (std::is_same<T, float>::value) {
      const PanelIsa isa = step_panel_isa(n);
      // (batch 1-4 with a transposed A runs the small_n loop below: measured at B=1,
      // H=128 it beats the kernel, whose tile is then one row high)
      if (pack && isa != PanelIsa::NONE && m > 0 && k > 0 && !(trans_a && n <= kSmallN)) {
        // the kernel's B operand is op(A)^T (k x m): element (kk, i) of it is op(A)(i, kk)
        isa_ = isa;
        panels_ = empty_cached({packed_floats(isa, k, m)}, at::kFloat);
        if (trans_a) pack_panels(isa, a, k, m, 1, lda, panels_.data_ptr<float>());
        else pack_panels(isa, a, k, m, lda, 1, panels_.data_ptr<float>());
        return;
      }
      const auto& mkl = Mkl::get();
      // (a handful of columns runs the small_n loop below instead: nothing to pack)
      if (pack && mkl.ok && m > 0 && n > 0 && k > 0 && !(trans_a && n <= kSmallN)) {
        const size_t bytes = mkl.pack_get_size(kAMatrix, m, n, k);
        packed_ = empty_cached({static_cast<int64_t>(bytes / sizeof(float) + 16)}, at::kFloat);
        mkl.pack(kColMajor, kAMatrix, trans_a ? kTrans : kNoTrans, m, n, k, 1.0f, a, lda,
                 packed_.data_ptr<float>());
      }
    }
  }

  // C (m x n) = op(A) B + beta C
  void gemm(int64_t n, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) const {
    if (m_ == 0 || n == 0) return;
    if constexpr (std::is_same<T, float>::value) {
      if (panels_.defined() && (beta == 0.f || beta == 1.f)) {
        // column-major C (m x n) is row-major C^T (n x m) = B^T (n x k) . op(A)^T (k x m)
        panel_gemm(isa_, n, m_, k_, b, ldb, panels_.data_ptr<float>(), c, ldc, beta == 1.f);
        return;
      }
      if (packed_.defined()) {
        Mkl::get().compute(kColMajor, kPacked, kNoTrans, m_, n, k_, packed_.data_ptr<float>(),
                           lda_, b, ldb, beta, c, ldc);
        return;
      }
    }
    if (trans_a_ && n <= kSmallN) {
      small_n(n, b, ldb, beta, c, ldc);
      return;
    }
    cpu::gemm<T>(trans_a_, false, m_, n, k_, T(1), a_, lda_, b, ldb, beta, c, ldc);
  }

 private:
  // A handful of columns (batch 1-4, a matrix-vector product per column): dot products
  // of A's contiguous rows with each column, four rows at a time. At this size BLAS's
  // own per-call work (argument checks, threading and kernel choice) is a large part of
  // a time step; this loop has none.
  static constexpr int64_t kSmallN = 4;
  void small_n(int64_t n, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) const {
    using Vec = at::vec::Vectorized<T>;
    constexpr int64_t V = Vec::size();
    for (int64_t col = 0; col < n; ++col) {
      const T* x = b + col * ldb;
      T* y = c + col * ldc;
      int64_t r = 0;
#ifdef TORCHLSTM_AVX2_MATVEC
      if constexpr (std::is_same<T, float>::value)
        r = use_avx512() ? rows_by_8_avx512(x, beta, y) : rows_by_8(x, beta, y);
#endif
      for (; r + 4 <= m_; r += 4) {
        const T* w0 = a_ + r * lda_;
        Vec acc0(T(0)), acc1(T(0)), acc2(T(0)), acc3(T(0));
        int64_t k = 0;
        for (; k + V <= k_; k += V) {
          const Vec xv = Vec::loadu(x + k);
          acc0 = at::vec::fmadd(Vec::loadu(w0 + k), xv, acc0);
          acc1 = at::vec::fmadd(Vec::loadu(w0 + lda_ + k), xv, acc1);
          acc2 = at::vec::fmadd(Vec::loadu(w0 + 2 * lda_ + k), xv, acc2);
          acc3 = at::vec::fmadd(Vec::loadu(w0 + 3 * lda_ + k), xv, acc3);
        }
        T sum[4] = {hsum(acc0), hsum(acc1), hsum(acc2), hsum(acc3)};
        for (; k < k_; ++k)
          for (int i = 0; i < 4; ++i) sum[i] += w0[i * lda_ + k] * x[k];
        for (int i = 0; i < 4; ++i) y[r + i] = (beta == T(0) ? T(0) : beta * y[r + i]) + sum[i];
      }
      for (; r < m_; ++r) {
        T sum = 0;
        for (int64_t k = 0; k < k_; ++k) sum += a_[r * lda_ + k] * x[k];
        y[r] = (beta == T(0) ? T(0) : beta * y[r]) + sum;
      }
    }
  }
#ifdef TORCHLSTM_AVX2_MATVEC
  // float32, AVX2: eight rows at a time. Eight independent accumulators keep both FMA
  // ports busy (four chains wait on the FMA latency), and the eight sums come out as ONE
  // vector through a transposing reduction (hadd/permute), instead of eight horizontal
  // sums through memory: measured at B=1, H=128 the step's products took 3.7 us with the
  // four-row loop. Returns the first row it did not do.
  static inline __m256 sum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5,
                            __m256 a6, __m256 a7) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    // u0 = [a0..a3 lanes 0-3 sums | a0..a3 lanes 4-7 sums], u1 likewise for a4..a7
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  }
  // Eight rows' dot products done: the columns from k on (fewer than a vector) added one
  // by one, then beta * y, stored to y[0..8).
  void finish_rows_by_8(__m256 sum, const float* w, const float* x, int64_t k, float beta,
                        float* y) const {
    if (k < k_) {
      alignas(32) float t[8];
      _mm256_store_ps(t, sum);
      for (int i = 0; i < 8; ++i)
        for (int64_t kk = k; kk < k_; ++kk) t[i] += w[i * lda_ + kk] * x[kk];
      sum = _mm256_load_ps(t);
    }
    if (beta != 0.f) sum = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(y), sum);
    _mm256_storeu_ps(y, sum);
  }
  int64_t rows_by_8(const float* x, float beta, float* y) const {
    const float* a = reinterpret_cast<const float*>(a_);
    int64_t r = 0;
    for (; r + 8 <= m_; r += 8) {
      const float* w = a + r * lda_;
      __m256 acc[8];
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
      int64_t k = 0;
      for (; k + 8 <= k_; k += 8) {
        const __m256 xv = _mm256_loadu_ps(x + k);
        for (int i = 0; i < 8; ++i)
          acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i * lda_ + k), xv, acc[i]);
      }
      finish_rows_by_8(sum8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]), w,
                       x, k, beta, y + r);
    }
    return r;
  }
  // The same with 16-float vectors where the CPU has AVX-512 (chosen at run time: the
  // build stays AVX2): half the load instructions for the same cache lines. Measured at
  // B=1, H=128 (T=100): the op 325-359 -> 282-307 us.
  __attribute__((target("avx512f,avx512dq"))) int64_t rows_by_8_avx512(const float* x,
                                                                        float beta,
                                                                        float* y) const {
    const float* a = reinterpret_cast<const float*>(a_);
    int64_t r = 0;
    for (; r + 8 <= m_; r += 8) {
      const float* w = a + r * lda_;
      __m512 acc[8];
      for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
      int64_t k = 0;
      for (; k + 16 <= k_; k += 16) {
        const __m512 xv = _mm512_loadu_ps(x + k);
        for (int i = 0; i < 8; ++i)
          acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * lda_ + k), xv, acc[i]);
      }
      __m256 h[8];  // each accumulator folded to 8 lanes, then the transposing sum
      for (int i = 0; i < 8; ++i)
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(acc[i]), _mm512_extractf32x8_ps(acc[i], 1));
      finish_rows_by_8(sum8(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]), w, x, k, beta,
                       y + r);
    }
    return r;
  }
#endif
  static T hsum(const at::vec::Vectorized<T>& v) {
    T buf[at::vec::Vectorized<T>::size()];
    v.store(buf);
    T s = 0;
    for (int64_t i = 0; i < at::vec::Vectorized<T>::size(); ++i) s += buf[i];
    return s;
  }

  // CBLAS enum values (cblas.h / mkl_cblas.h)
  static constexpr int kColMajor = 102, kNoTrans = 111, kTrans = 112, kPacked = 151,
                       kAMatrix = 161;
  struct Mkl {
    size_t (*pack_get_size)(int, int, int, int) = nullptr;
    void (*pack)(int, int, int, int, int, int, float, const float*, int, float*) = nullptr;
    void (*compute)(int, int, int, int, int, int, const float*, int, const float*, int, float,
                    float*, int) = nullptr;
    bool ok = false;
    static const Mkl& get() {
      static const Mkl m = [] {
        Mkl r;
        r.pack_get_size = reinterpret_cast<decltype(r.pack_get_size)>(
            torch_symbol("cblas_sgemm_pack_get_size"));
        r.pack = reinterpret_cast<decltype(r.pack)>(torch_symbol("cblas_sgemm_pack"));
        r.compute = reinterpret_cast<decltype(r.compute)>(torch_symbol("cblas_sgemm_compute"));
        r.ok = r.pack_get_size && r.pack && r.compute;
        return r;
      }();
      return m;
    }
  };

  bool trans_a_;
  int64_t m_, k_;
  const T* a_;
  int64_t lda_;
  at::Tensor packed_;                 // MKL's packed form
  at::Tensor panels_;                 // or the micro-kernel's
  PanelIsa isa_ = PanelIsa::NONE;
};

}  // namespace cpu
}  // namespace torchlstm
