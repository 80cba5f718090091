// panel_gemm_avx512.cpp — panel_kernel.h compiled for AVX-512 (16-float vectors), tiles
// of 12 rows x 32 columns: 24 of the 32 zmm registers accumulate, 2 panel loads and 12
// broadcasts per k. See panel_gemm.h.
#include "panel_gemm.h"

#include <algorithm>
#include <cstdint>

#ifdef TORCHLSTM_PANEL_KERNELS
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace tl_panel_avx512 {

struct V {
  using reg = __m512;
  static constexpr int kLanes = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static __mmask16 first(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_first(float* p, int64_t n, reg x) { _mm512_mask_storeu_ps(p, first(n), x); }
};

#ifndef TORCHLSTM_AVX512_MR
#define TORCHLSTM_AVX512_MR 12
#define TORCHLSTM_AVX512_NV 2
#endif
constexpr int MR = TORCHLSTM_AVX512_MR, NV = TORCHLSTM_AVX512_NV, NR = NV * V::kLanes;

#include "panel_kernel.h"

}  // namespace tl_panel_avx512

#pragma GCC pop_options

namespace torchlstm {
namespace cpu {
int64_t panel_width_avx512() { return tl_panel_avx512::NR; }
void panel_gemm_avx512(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                       const float* packed, float* c, int64_t ldc, bool accumulate) {
  tl_panel_avx512::panel_gemm_impl(M, N, K, a, lda, packed, c, ldc, accumulate);
}
}  // namespace cpu
}  // namespace torchlstm

#endif  // TORCHLSTM_PANEL_KERNELS
