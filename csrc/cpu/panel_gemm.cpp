// panel_gemm.cpp — the choice of micro-kernel (panel_gemm.h) and the packing.
#include "panel_gemm.h"

#include <algorithm>

namespace torchlstm {
namespace cpu {

#ifdef TORCHLSTM_PANEL_KERNELS
// the two kernel builds (panel_gemm_avx2.cpp, panel_gemm_avx512.cpp)
int64_t panel_width_avx2();
int64_t panel_width_avx512();
void panel_gemm_avx2(int64_t, int64_t, int64_t, const float*, int64_t, const float*, float*,
                     int64_t, bool);
void panel_gemm_avx512(int64_t, int64_t, int64_t, const float*, int64_t, const float*, float*,
                       int64_t, bool);

bool panel_isa_supported(PanelIsa isa) {
  switch (isa) {
    case PanelIsa::AVX2: {
      static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
      return yes;
    }
    case PanelIsa::AVX512: {
      static const bool yes = __builtin_cpu_supports("avx512f");
      return yes;
    }
    default:
      return false;
  }
}

int64_t panel_width(PanelIsa isa) {
  return isa == PanelIsa::AVX512 ? panel_width_avx512() : panel_width_avx2();
}

void panel_gemm(PanelIsa isa, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                const float* packed, float* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (isa == PanelIsa::AVX512) panel_gemm_avx512(M, N, K, a, lda, packed, c, ldc, accumulate);
  else panel_gemm_avx2(M, N, K, a, lda, packed, c, ldc, accumulate);
}
#else
bool panel_isa_supported(PanelIsa) { return false; }
// (never reached: no ISA is supported, so nothing is packed or multiplied here)
int64_t panel_width(PanelIsa) { return 1; }
void panel_gemm(PanelIsa, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                float*, int64_t, bool) {}
#endif

PanelIsa best_panel_isa() {
  if (panel_isa_supported(PanelIsa::AVX512)) return PanelIsa::AVX512;
  if (panel_isa_supported(PanelIsa::AVX2)) return PanelIsa::AVX2;
  return PanelIsa::NONE;
}

int64_t packed_floats(PanelIsa isa, int64_t K, int64_t N) {
  const int64_t nr = panel_width(isa);
  return (N + nr - 1) / nr * nr * K;
}

void pack_panels(PanelIsa isa, const float* w, int64_t K, int64_t N, int64_t sk, int64_t sn,
                 float* out) {
  const int64_t nr = panel_width(isa);
  for (int64_t n0 = 0; n0 < N; n0 += nr) {
    const int64_t cols = std::min(nr, N - n0);
    float* p = out + n0 * K;  // panel n0 / nr starts at (n0 / nr) * K * nr
    if (sk == 1) {
      // columns contiguous in k (a weight read transposed): 16 k at a time, so that each
      // column's read is one cache line and the block written (16 x nr floats) stays in L1
      for (int64_t k0 = 0; k0 < K; k0 += 16) {
        const int64_t kn = std::min<int64_t>(16, K - k0);
        for (int64_t j = 0; j < nr; ++j) {
          const float* src = w + k0 + (n0 + j) * sn;
          float* dst = p + k0 * nr + j;
          if (j < cols)
            for (int64_t kk = 0; kk < kn; ++kk) dst[kk * nr] = src[kk];
          else
            for (int64_t kk = 0; kk < kn; ++kk) dst[kk * nr] = 0.f;
        }
      }
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < nr; ++j) p[k * nr + j] = j < cols ? w[k * sk + (n0 + j) * sn] : 0.f;
    }
  }
}

}  // namespace cpu
}  // namespace torchlstm
