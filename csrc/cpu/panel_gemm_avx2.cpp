// panel_gemm_avx2.cpp — panel_kernel.h compiled for AVX2 + FMA (8-float vectors), tiles
// of 6 rows x 16 columns: 12 accumulators, 2 panel loads and 6 broadcasts per k (the
// 16 ymm registers allow no larger tile). See panel_gemm.h.
#include "panel_gemm.h"

#include <algorithm>
#include <cstdint>

#ifdef TORCHLSTM_PANEL_KERNELS
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace tl_panel_avx2 {

struct V {
  using reg = __m256;
  static constexpr int kLanes = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, reg x) { _mm256_storeu_ps(p, x); }
  static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static __m256i first(int64_t n) {  // lanes [0, n) set
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static reg load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_first(float* p, int64_t n, reg x) { _mm256_maskstore_ps(p, first(n), x); }
};

#ifndef TORCHLSTM_AVX2_MR
#define TORCHLSTM_AVX2_MR 6
#define TORCHLSTM_AVX2_NV 2
#endif
constexpr int MR = TORCHLSTM_AVX2_MR, NV = TORCHLSTM_AVX2_NV, NR = NV * V::kLanes;

#include "panel_kernel.h"

}  // namespace tl_panel_avx2

#pragma GCC pop_options

namespace torchlstm {
namespace cpu {
int64_t panel_width_avx2() { return tl_panel_avx2::NR; }
void panel_gemm_avx2(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                     const float* packed, float* c, int64_t ldc, bool accumulate) {
  tl_panel_avx2::panel_gemm_impl(M, N, K, a, lda, packed, c, ldc, accumulate);
}
}  // namespace cpu
}  // namespace torchlstm

#endif  // TORCHLSTM_PANEL_KERNELS
