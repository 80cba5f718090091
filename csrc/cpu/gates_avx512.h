// gates_avx512.h — the fused gate passes of the default activations (tanh, sigmoid) in
// float32 with 16-lane AVX-512 vectors, for CPUs that have it (chosen at run time by
// lstm_cpu.cpp; the build itself stays AVX2, so the extension runs on any x86-64 CPU with
// AVX2). The maths is gate_math.h's, compiled for a 16-float vector type in
// gates_avx512.cpp: no second copy of any formula.
//
// Each function does units [0, n - n % 16) of one batch row, with the arguments of
// lstm_cpu.cpp's forward_row_impl / backward_row_impl (default pair, no zoneout), and
// returns where it stopped; the caller does the remaining units with its AVX2 loop.
#pragma once

#include <cstdint>

namespace torchlstm {
namespace cpu {

// Whether this build has the AVX-512 gate passes (x86-64 built with GCC; elsewhere the
// functions below do nothing and return 0).
bool avx512_gates_built();

// pc: the row's peephole weights (gate q at + q*H), or null without peepholes.
int64_t forward_row_default_avx512(int64_t n, int64_t H, const float* a, const float* b1,
                                   const float* b2, const float* pc, float* c, float* r,
                                   float* g_save, float* c_save);

int64_t backward_row_default_avx512(int64_t n, int64_t H, const float* g, const float* c_prev,
                                    const float* c, const float* dr_a, const float* dr_b,
                                    const float* pc, float* dc, float* dg, float* r);

}  // namespace cpu
}  // namespace torchlstm
