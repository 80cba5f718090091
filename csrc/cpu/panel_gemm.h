// panel_gemm.h — torchlstm's own float32 GEMM for the products inside the CPU time loops.
//
// Why: inside the loop every product is small (per step and team member: batch rows x
// its gates' columns x H), and a BLAS call there runs at about half of the FMA peak on
// every library measured (MKL, OpenBLAS: bench/RESULTS.md) — per-call overhead, and a
// re-pack of the weights per call. Here the weight side is packed ONCE per sequence into
// NR-column panels (pack_panels) and every step runs the register-blocked micro-kernel
// of panel_kernel.h over it, as oneDNN's brgemm and libxsmm do inside their RNNs.
//
// Two builds of the kernel, chosen at run time for the CPU (both are compiled into every
// x86-64 extension under `#pragma GCC target`): AVX2+FMA (6 x 16 tiles) and AVX-512
// (12 x 32 tiles). The ISA is an argument, so the tests run each one on any machine that
// has it (torchlstm._C.set_cpu_gemm). Plain C++: no ATen.
#pragma once

#include <cstdint>

// The kernels are built with GCC on x86-64 (they need `#pragma GCC target`); elsewhere
// there are none and every choice falls back to BLAS.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TORCHLSTM_PANEL_KERNELS 1
#endif

namespace torchlstm {
namespace cpu {

enum class PanelIsa : int { NONE = 0, AVX2 = 1, AVX512 = 2 };

// The best kernel this CPU (and compiler) can run: AVX512 (F) > AVX2 (+FMA) > NONE.
PanelIsa best_panel_isa();
// Whether this CPU can run the kernel of `isa` (NONE: false).
bool panel_isa_supported(PanelIsa isa);

// Panel width NR of a kernel (columns per panel).
int64_t panel_width(PanelIsa isa);

// Floats the packed form of a K x N matrix takes.
int64_t packed_floats(PanelIsa isa, int64_t K, int64_t N);

// Packs the K x N matrix whose element (k, n) is w[k * sk + n * sn] into `out`
// (packed_floats(isa, K, N) floats; zeros fill the last panel's missing columns).
void pack_panels(PanelIsa isa, const float* w, int64_t K, int64_t N, int64_t sk, int64_t sn,
                 float* out);

// C (M x N, row-major, ldc) = A (M x K, row-major, lda) . packed, or C += ... with
// accumulate. `isa` must be supported (panel_isa_supported).
void panel_gemm(PanelIsa isa, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                const float* packed, float* c, int64_t ldc, bool accumulate);

}  // namespace cpu
}  // namespace torchlstm
