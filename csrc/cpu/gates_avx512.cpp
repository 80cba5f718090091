// gates_avx512.cpp — gate_math.h compiled for 16-lane AVX-512 vectors (see gates_avx512.h).
//
// How one AVX2 build carries AVX-512 code safely: everything from gate_math.h on is
// compiled with `#pragma GCC target` AVX-512, and gate_math.h is included inside a
// namespace of its own (tl_avx512::torchlstm::...). So every function instantiated here,
// for the 16-lane type V16 and for anything else, has a name no other file uses: the
// linker can never hand an AVX-512 copy of an inline function to the AVX2 code, and this
// code only runs after the CPU was checked (lstm_cpu.cpp). Only standard headers are
// included before the pragma (their inline functions stay generic). GCC only: clang
// ignores `#pragma GCC target` (it gets the stubs at the end: AVX2 gate passes only).
#include "gates_avx512.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq")

namespace tl_avx512 {

// Sixteen floats, with what gate_math.h's templates need of a value type.
struct V16 {
  __m512 v;
  V16() = default;
  V16(__m512 x) : v(x) {}                      // NOLINT: implicit, as at::vec's types
  V16(float s) : v(_mm512_set1_ps(s)) {}       // NOLINT
  V16(double s) : V16(static_cast<float>(s)) {}  // NOLINT: gate_math's double constants
  V16(int s) : V16(static_cast<float>(s)) {}     // NOLINT: T(0), T(1)
  static constexpr int64_t size() { return 16; }
  static V16 loadu(const float* p) { return _mm512_loadu_ps(p); }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
inline V16 operator+(V16 a, V16 b) { return _mm512_add_ps(a.v, b.v); }
inline V16 operator-(V16 a, V16 b) { return _mm512_sub_ps(a.v, b.v); }
inline V16 operator*(V16 a, V16 b) { return _mm512_mul_ps(a.v, b.v); }
inline V16 operator/(V16 a, V16 b) { return _mm512_div_ps(a.v, b.v); }

namespace detail {
// exp for float32, about 1 ulp: e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln(2) / 2,
// e^r from Cephes' expf polynomial, 2^n applied by vscalefps (exact, and it gives inf
// and 0 beyond float's range). x is clamped to +-104 first (beyond, the result is inf or
// 0 all the same) so that r stays finite; the clamp keeps NaN (vminps/vmaxps return
// their second operand when one is NaN), so NaN in gives NaN out, as nn.LSTM.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.f), _mm512_min_ps(_mm512_set1_ps(104.f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}
// Lane by lane through the C library: for the functions the default activations never
// reach (log1p, erf); they must exist for gate_math.h's activation switch to compile.
template <float (*F)(float)>
inline V16 per_lane(V16 x) {
  alignas(64) float t[16];
  x.store(t);
  for (float& e : t) e = F(e);
  return _mm512_load_ps(t);
}
inline float log1p_f(float x) { return std::log1p(x); }
inline float erf_f(float x) { return std::erf(x); }
}  // namespace detail

}  // namespace tl_avx512

// gate_math.h and the row passes, compiled for this file only (see the top).
namespace tl_avx512 {
#include "../gate_math.h"
#include "row_passes.h"
#include "layer_norm_rows.h"
}

namespace tl_avx512 {
namespace torchlstm {

template <>
struct GateOps<V16> {
  using V = V16;
  // tanh as the AVX2 path computes it (vec_math.h): 2 / (1 + e^-2x) - 1, exact at +-1
  static V exp(V x) { return detail::exp16(x.v); }
  static V tanh(V x) { return V(2.0f) / (V(1.0f) + exp(V(-2.0f) * x)) - V(1.0f); }
  static V log1p(V x) { return detail::per_lane<detail::log1p_f>(x); }
  static V erf(V x) { return detail::per_lane<detail::erf_f>(x); }
  static V sqrt(V x) { return _mm512_sqrt_ps(x.v); }
  static V abs(V x) { return _mm512_abs_ps(x.v); }
  // NaN-propagating, like torch.maximum / torch.minimum (and GateOps' scalar versions)
  static V max(V a, V b) {
    const __mmask16 keep_a = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q) |
                             _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ);
    return _mm512_mask_blend_ps(keep_a, b.v, a.v);
  }
  static V min(V a, V b) {
    const __mmask16 keep_a = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q) |
                             _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ);
    return _mm512_mask_blend_ps(keep_a, b.v, a.v);
  }
  static V step(V x) {  // 1 where x > 0, else 0
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x.v, _mm512_setzero_ps(), _CMP_GT_OQ),
                               _mm512_set1_ps(1.f));
  }
};

constexpr Activation kAct = Activation::TANH, kRact = Activation::SIGMOID;

// lstm_cpu.cpp's row passes for the default pair without zoneout, 16 units at a time;
// pc: the row's peephole weights, or null (no peephole).
int64_t forward_row(int64_t n, int64_t H, const float* a, const float* b1, const float* b2,
                    const float* pc, float* c, float* r, float* g_save, float* c_save) {
  const float* none = nullptr;
  if (pc)
    return cpu::forward_rows_vec<V16, false, true>(kAct, kRact, none, pc, 0, n, H, a, b1, b2, c,
                                                   r, g_save, c_save);
  return cpu::forward_rows_vec<V16, false, false>(kAct, kRact, none, none, 0, n, H, a, b1, b2,
                                                  c, r, g_save, c_save);
}

int64_t backward_row(int64_t n, int64_t H, const float* g, const float* c_prev, const float* c,
                     const float* dr_a, const float* dr_b, const float* pc, float* dc,
                     float* dg, float* r) {
  const float* none = nullptr;
  if (pc)
    return cpu::backward_rows_vec<V16, false, true>(kAct, kRact, none, none, pc, 0, n, H, g,
                                                    c_prev, c, dr_a, dr_b, dc, dg, r);
  return cpu::backward_rows_vec<V16, false, false>(kAct, kRact, none, none, none, 0, n, H, g,
                                                   c_prev, c, dr_a, dr_b, dc, dg, r);
}

// The layer-norm row passes, each variant (zoneout, peepholes) its instantiation.
void ln_forward_row(bool zone, bool peep, const ::torchlstm::cpu::LnArgs<float>& p,
                    const float* P, const float* R, const float* zc, float* c, float* r,
                    float* save, float* tmp) {
#define TL_LN_FWD(Z, PP) \
  if (zone == Z && peep == PP) \
    return cpu::ln::forward_row<V16, true, Z, PP>(kAct, kRact, p, P, R, zc, c, r, save, tmp);
  TL_LN_FWD(false, false)
  TL_LN_FWD(true, false)
  TL_LN_FWD(false, true)
  TL_LN_FWD(true, true)
#undef TL_LN_FWD
}

void ln_backward_row(bool zone, bool peep, const ::torchlstm::cpu::LnArgs<float>& p,
                     const float* save, const float* c_prev, const float* c, const float* dr_a,
                     const float* dr_b, const float* zh, const float* zc, float* dc, float* dR,
                     float* dP, float* r, const ::torchlstm::cpu::LnAcc<float>& acc,
                     float* tmp) {
#define TL_LN_BWD(Z, PP)                                                                     \
  if (zone == Z && peep == PP)                                                               \
    return cpu::ln::backward_row<V16, true, Z, PP>(kAct, kRact, p, save, c_prev, c, dr_a, dr_b, \
                                                   zh, zc, dc, dR, dP, r, acc, tmp);
  TL_LN_BWD(false, false)
  TL_LN_BWD(true, false)
  TL_LN_BWD(false, true)
  TL_LN_BWD(true, true)
#undef TL_LN_BWD
}

}  // namespace torchlstm
}  // namespace tl_avx512

#pragma GCC pop_options

namespace torchlstm {
namespace cpu {

bool avx512_gates_built() { return true; }

int64_t forward_row_default_avx512(int64_t n, int64_t H, const float* a, const float* b1,
                                   const float* b2, const float* pc, float* c, float* r,
                                   float* g_save, float* c_save) {
  return tl_avx512::torchlstm::forward_row(n, H, a, b1, b2, pc, c, r, g_save, c_save);
}

int64_t backward_row_default_avx512(int64_t n, int64_t H, const float* g, const float* c_prev,
                                    const float* c, const float* dr_a, const float* dr_b,
                                    const float* pc, float* dc, float* dg, float* r) {
  return tl_avx512::torchlstm::backward_row(n, H, g, c_prev, c, dr_a, dr_b, pc, dc, dg, r);
}

bool ln_forward_row_avx512(bool zone, bool peep, const LnArgs<float>& p, const float* P,
                           const float* R, const float* zc, float* c, float* r, float* save,
                           float* tmp) {
  tl_avx512::torchlstm::ln_forward_row(zone, peep, p, P, R, zc, c, r, save, tmp);
  return true;
}

bool ln_backward_row_avx512(bool zone, bool peep, const LnArgs<float>& p, const float* save,
                            const float* c_prev, const float* c, const float* dr_a,
                            const float* dr_b, const float* zh, const float* zc, float* dc,
                            float* dR, float* dP, float* r, const LnAcc<float>& acc,
                            float* tmp) {
  tl_avx512::torchlstm::ln_backward_row(zone, peep, p, save, c_prev, c, dr_a, dr_b, zh, zc, dc,
                                        dR, dP, r, acc, tmp);
  return true;
}

}  // namespace cpu
}  // namespace torchlstm

#else  // not x86-64 GCC: no AVX-512 gate passes (the callers fall through to AVX2)

namespace torchlstm {
namespace cpu {
bool avx512_gates_built() { return false; }
int64_t forward_row_default_avx512(int64_t, int64_t, const float*, const float*, const float*,
                                   const float*, float*, float*, float*, float*) {
  return 0;
}
int64_t backward_row_default_avx512(int64_t, int64_t, const float*, const float*, const float*,
                                    const float*, const float*, const float*, float*, float*,
                                    float*) {
  return 0;
}
bool ln_forward_row_avx512(bool, bool, const LnArgs<float>&, const float*, const float*,
                           const float*, float*, float*, float*, float*) {
  return false;
}
bool ln_backward_row_avx512(bool, bool, const LnArgs<float>&, const float*, const float*,
                            const float*, const float*, const float*, const float*, const float*,
                            float*, float*, float*, float*, const LnAcc<float>&, float*) {
  return false;
}
}  // namespace cpu
}  // namespace torchlstm

#endif
