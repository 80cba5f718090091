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

#include "layer_norm_args.h"

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

// The layer-norm row passes (layer_norm_rows.h) of the default activations in float32:
// the whole row; false (nothing done) where this build has no AVX-512 copy.
bool ln_forward_row_avx512(bool zone, bool peep, const LnArgs<float>& p, const float* P,
                           const float* R, const float* zc, float* c, float* r, float* save,
                           float* tmp);
bool ln_backward_row_avx512(bool zone, bool peep, const LnArgs<float>& p, const float* save,
                            const float* c_prev, const float* c, const float* dr_a,
                            const float* dr_b, const float* zh, const float* zc, float* dc,
                            float* dR, float* dP, float* r, const LnAcc<float>& acc,
                            float* tmp);

}  // namespace cpu
}  // namespace torchlstm
