#include "large_gemm.h"

#include "blas.h"

#include <dlfcn.h>

#include <atomic>
#include <algorithm>
#include <mutex>
#include <stdexcept>

#include "host_cache.h"
#include "team.h"

namespace torchlstm {
namespace cpu {
namespace {

// CBLAS enum values (cblas.h)
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

template <typename T>
using cblas_gemm_t = void (*)(int, int, int, int, int, int, T, const T*, int, const T*, int, T,
                              T*, int);

struct OpenBlas {
  cblas_gemm_t<float> sgemm = nullptr;
  cblas_gemm_t<double> dgemm = nullptr;
  void (*set_num_threads)(int) = nullptr;
};
std::atomic<const OpenBlas*> g_openblas{nullptr};
std::mutex g_load_mutex;

std::atomic<int>& choice() {
  static std::atomic<int> c{static_cast<int>(large_gemm_from_env())};
  return c;
}

// How BLAS reads a 2-D view: as is (row-major, ld = stride(0)) or transposed (ld =
// stride(1)); `ok` false where neither fits (then the caller copies). Size-1 dimensions
// make both strides 1 possible: the test decides and the gemm uses the same answer.
struct BlasView {
  bool ok, trans;
  int64_t ld;
};
BlasView blas_view(const at::Tensor& t) {
  if (t.dim() != 2) return {false, false, 0};
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1)))
    return {true, false, t.stride(0)};
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0)))
    return {true, true, t.stride(1)};
  return {false, false, 0};
}

template <typename T>
void openblas_rows(const OpenBlas& ob, int64_t M, int64_t N, int64_t K, const at::Tensor& a,
                   const at::Tensor& b, T* c) {
  const BlasView va = blas_view(a), vb = blas_view(b);
  const T* ap = a.data_ptr<T>();
  const T* bp = b.data_ptr<T>();
  const auto gemm = [&](int64_t r0, int64_t rows) {
    if (rows <= 0) return;
    const T* a_r = ap + r0 * a.stride(0);  // row r0 of a, either way it is stored
    const T one = 1, zero = 0;
    const int ta = va.trans ? kTrans : kNoTrans, tb = vb.trans ? kTrans : kNoTrans;
    if constexpr (std::is_same<T, float>::value)
      ob.sgemm(kRowMajor, ta, tb, rows, N, K, one, a_r, va.ld, bp, vb.ld, zero, c + r0 * N, N);
    else
      ob.dgemm(kRowMajor, ta, tb, rows, N, K, one, a_r, va.ld, bp, vb.ld, zero, c + r0 * N, N);
  };
  // one OpenBLAS thread per team member, each its rows of C (whole SIMD-friendly blocks)
  const int nt = team_size(M, 64);
  if (!run_team(nt, [&](int k) {
        const Slice s = slice_of(M, nt, k, 16);
        gemm(s.begin, s.len);
      }))
    gemm(0, M);
}

}  // namespace

bool load_openblas(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (g_openblas.load()) return true;
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) return false;
  auto* ob = new OpenBlas;  // lives as long as the process (as the library)
  ob->sgemm = reinterpret_cast<cblas_gemm_t<float>>(dlsym(h, "scipy_cblas_sgemm"));
  ob->dgemm = reinterpret_cast<cblas_gemm_t<double>>(dlsym(h, "scipy_cblas_dgemm"));
  ob->set_num_threads =
      reinterpret_cast<void (*)(int)>(dlsym(h, "scipy_openblas_set_num_threads"));
  if (!ob->sgemm || !ob->dgemm || !ob->set_num_threads) {
    delete ob;
    dlclose(h);
    return false;
  }
  ob->set_num_threads(1);  // each call runs in the calling team member's thread
  g_openblas.store(ob);
  return true;
}

bool openblas_loaded() { return g_openblas.load() != nullptr; }

LargeGemm large_gemm_engine() {
  const auto c = static_cast<LargeGemm>(choice().load(std::memory_order_relaxed));
  if (c == LargeGemm::OPENBLAS && openblas_loaded()) return LargeGemm::OPENBLAS;
  if (c == LargeGemm::AUTO && cpu_is_amd() && openblas_loaded()) return LargeGemm::OPENBLAS;
  return LargeGemm::MKL;
}

LargeGemm set_large_gemm(LargeGemm c) {
  if (c == LargeGemm::OPENBLAS && !openblas_loaded())
    throw std::invalid_argument(
        "torchlstm: OpenBLAS is not loaded (pip install scipy-openblas32, then import torchlstm)");
  return static_cast<LargeGemm>(choice().exchange(static_cast<int>(c)));
}

at::Tensor large_mm(const at::Tensor& a, const at::Tensor& b) {
  const OpenBlas* ob = g_openblas.load();
  const auto dt = a.scalar_type();
  if ((dt != at::kFloat && dt != at::kDouble) || b.scalar_type() != dt || a.dim() != 2 ||
      b.dim() != 2 || a.size(1) != b.size(0))
    return at::mm(a, b);  // (at::mm gives the errors for bad operands)
  if (!ob || large_gemm_engine() != LargeGemm::OPENBLAS ||
      std::max({a.size(0), a.size(1), b.size(1)}) >= (int64_t(1) << 31)) {
    // MKL, into a buffer of the cache (host_cache.h: a fresh one would page-fault)
    auto c = empty_cached({a.size(0), b.size(1)}, dt);
    at::mm_out(c, a, b);
    return c;
  }
  const auto A = blas_view(a).ok ? a : a.contiguous();
  const auto B = blas_view(b).ok ? b : b.contiguous();
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  auto c = empty_cached({M, N}, dt);
  if (M == 0 || N == 0) return c;
  if (K == 0) return c.zero_();
  if (dt == at::kFloat) openblas_rows<float>(*ob, M, N, K, A, B, c.data_ptr<float>());
  else openblas_rows<double>(*ob, M, N, K, A, B, c.data_ptr<double>());
  return c;
}

}  // namespace cpu
}  // namespace torchlstm
