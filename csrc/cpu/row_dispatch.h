// row_dispatch.h — the fused gate passes over one batch row's slice of hidden units, with
// the SIMD version picked per call: 16-lane AVX-512 (gates_avx512.h) for the default
// activations in float32 where the CPU has it, else ATen's vectors (row_passes.h), then
// the scalar tail. The maths itself is gate_math.h's.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#include "../gate_math.h"
#include "blas.h"
#include "gates_avx512.h"
#include "row_passes.h"
#include "vec_math.h"

namespace torchlstm {
namespace cpu {

// n units of one batch row in the forward pass (arguments: row_passes.h): SIMD vectors
// first (16 lanes with AVX-512 for the default pair in float32, else ATen's vectors),
// then the tail. kPeep: pc the row's peephole weights (gate q at + q*H).
template <typename scalar_t, bool kDefaultPair, bool kZc, bool kPeep>
inline void forward_row_impl(Activation act_, Activation ract_, const scalar_t* zc,
                             const scalar_t* pc, int64_t n, int64_t H, const scalar_t* a,
                             const scalar_t* b1, const scalar_t* b2, scalar_t* c, scalar_t* r,
                             scalar_t* g_save, scalar_t* c_save) {
  const Activation act = kDefaultPair ? Activation::TANH : act_;  // see DEFAULT_PAIR below
  const Activation ract = kDefaultPair ? Activation::SIGMOID : ract_;
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;  // the default pair in float32: 16 units at a time where the CPU can
  if constexpr (kDefaultPair && !kZc && std::is_same<scalar_t, float>::value)
    if (use_avx512())
      j = forward_row_default_avx512(n, H, a, b1, b2, kPeep ? pc : nullptr, c, r, g_save,
                                     c_save);
  j = forward_rows_vec<Vec, kZc, kPeep>(act, ract, zc, pc, j, n, H, a, b1, b2, c, r, g_save,
                                        c_save);
  for (; j < n; ++j) {
    scalar_t v[4];
    for (int q = 0; q < 4; ++q)
      v[q] = a[q * n + j] + (b1 ? b1[q * H + j] : scalar_t(0)) + (b2 ? b2[q * H + j] : scalar_t(0));
    CellForward<scalar_t> o;
    if constexpr (kPeep)
      o = cell_forward_peephole<kZc, scalar_t>(act, ract, v[0], v[1], v[2], v[3], c[j], pc[j],
                                               pc[H + j], pc[2 * H + j],
                                               kZc ? zc[j] : scalar_t(0));
    else if constexpr (kZc)
      o = cell_forward_zoneout<scalar_t>(act, ract, v[0], v[1], v[2], v[3], c[j], zc[j]);
    else
      o = cell_forward<scalar_t>(act, ract, v[0], v[1], v[2], v[3], c[j]);
    for (int q = 0; g_save && q < 4; ++q) g_save[q * H + j] = v[q];
    c[j] = o.c;
    r[j] = o.r;
    if (c_save) c_save[j] = o.c;
  }
}

// n units of one batch row in the backward pass (layout as forward_row; dg likewise).
// dr = dr_a (+ dr_b when given: the output gradient plus the recurrent one, without a
// projection). dc is updated in place to dc_prev. r (if given) receives o * act(c).
// kZone (zoneout): zh (or null) the row's z of h: dr is scaled by 1 - z (the gradient
// reaching h~); zc (or null) the row's z of c: c~ is recomputed from the gates and c_prev
// (the saved c is the blended state) and dc splits as in cell_backward_zoneout.
// kPeep: pc the row's peephole weights (cell_backward_peephole).
template <typename scalar_t, bool kDefaultPair, bool kZone, bool kPeep>
inline void backward_row_impl(Activation act_, Activation ract_, const scalar_t* zc,
                              const scalar_t* zh, const scalar_t* pc, int64_t n, int64_t H,
                              const scalar_t* g, const scalar_t* c_prev, const scalar_t* c,
                              const scalar_t* dr_a, const scalar_t* dr_b, scalar_t* dc,
                              scalar_t* dg, scalar_t* r) {
  const Activation act = kDefaultPair ? Activation::TANH : act_;
  const Activation ract = kDefaultPair ? Activation::SIGMOID : ract_;
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;  // the default pair in float32: 16 units at a time where the CPU can
  if constexpr (kDefaultPair && !kZone && std::is_same<scalar_t, float>::value)
    if (use_avx512())
      j = backward_row_default_avx512(n, H, g, c_prev, c, dr_a, dr_b, kPeep ? pc : nullptr, dc,
                                      dg, r);
  j = backward_rows_vec<Vec, kZone, kPeep>(act, ract, zc, zh, pc, j, n, H, g, c_prev, c, dr_a,
                                           dr_b, dc, dg, r);
  for (; j < n; ++j) {
    scalar_t dr = dr_b ? dr_a[j] + dr_b[j] : dr_a[j];
    CellBackward<scalar_t> o;
    if constexpr (kZone)
      if (zh) dr = dr * (scalar_t(1) - zh[j]);
    if constexpr (kPeep) {
      if (kZone && zc)
        o = cell_backward_peephole<true, scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j],
                                                   g[3 * H + j], c_prev[j], c[j], dr, dc[j],
                                                   pc[j], pc[H + j], pc[2 * H + j], zc[j]);
      else
        o = cell_backward_peephole<false, scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j],
                                                    g[3 * H + j], c_prev[j], c[j], dr, dc[j],
                                                    pc[j], pc[H + j], pc[2 * H + j],
                                                    scalar_t(0));
    } else {
      if constexpr (kZone)
        if (zc)
          o = cell_backward_zoneout<scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j],
                                              g[3 * H + j], c_prev[j], dr, dc[j], zc[j]);
      if (!kZone || !zc)
        o = cell_backward<scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j], g[3 * H + j],
                                    c_prev[j], c[j], dr, dc[j]);
    }
    dg[j] = o.d_i;
    dg[H + j] = o.d_f;
    dg[2 * H + j] = o.d_g;
    dg[3 * H + j] = o.d_o;
    dc[j] = o.dc_prev;
    if (r) r[j] = o.r;
  }
}

// DEFAULT_PAIR: with the default activations (tanh, sigmoid) the row passes are
// instantiated with them as constants, so the per-vector activation switches of
// gate_math.h fold away; every other pair takes the switch. Zoneout and the peephole
// have instantiations of their own, so the path without them is exactly what it was.
template <typename scalar_t, bool kZc, bool kPeep, typename... Args>
inline void forward_row_pair(Activation act, Activation ract, Args... args) {
  if (act == Activation::TANH && ract == Activation::SIGMOID)
    forward_row_impl<scalar_t, true, kZc, kPeep>(act, ract, args...);
  else
    forward_row_impl<scalar_t, false, kZc, kPeep>(act, ract, args...);
}

template <typename scalar_t, typename... Args>
inline void forward_row(Activation act, Activation ract, const scalar_t* zc,
                        const scalar_t* pc, Args... args) {
  if (pc) {
    if (zc) forward_row_pair<scalar_t, true, true>(act, ract, zc, pc, args...);
    else forward_row_pair<scalar_t, false, true>(act, ract, zc, pc, args...);
  } else {
    if (zc) forward_row_pair<scalar_t, true, false>(act, ract, zc, pc, args...);
    else forward_row_pair<scalar_t, false, false>(act, ract, zc, pc, args...);
  }
}

template <typename scalar_t, bool kZone, bool kPeep, typename... Args>
inline void backward_row_pair(Activation act, Activation ract, Args... args) {
  if (act == Activation::TANH && ract == Activation::SIGMOID)
    backward_row_impl<scalar_t, true, kZone, kPeep>(act, ract, args...);
  else
    backward_row_impl<scalar_t, false, kZone, kPeep>(act, ract, args...);
}

template <typename scalar_t, typename... Args>
inline void backward_row(Activation act, Activation ract, const scalar_t* zc,
                         const scalar_t* zh, const scalar_t* pc, Args... args) {
  const bool zone = zc || zh;
  if (pc) {
    if (zone) backward_row_pair<scalar_t, true, true>(act, ract, zc, zh, pc, args...);
    else backward_row_pair<scalar_t, false, true>(act, ract, zc, zh, pc, args...);
  } else {
    if (zone) backward_row_pair<scalar_t, true, false>(act, ract, zc, zh, pc, args...);
    else backward_row_pair<scalar_t, false, false>(act, ract, zc, zh, pc, args...);
  }
}

// fresh = z * old + (1 - z) * fresh over n elements: zoneout of h.
template <typename scalar_t>
inline void blend_row(int64_t n, const scalar_t* z, const scalar_t* old, scalar_t* fresh) {
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size())
    zoneout_blend<Vec>(Vec::loadu(z + j), Vec::loadu(old + j), Vec::loadu(fresh + j))
        .store(fresh + j);
  for (; j < n; ++j) fresh[j] = zoneout_blend<scalar_t>(z[j], old[j], fresh[j]);
}

}  // namespace cpu
}  // namespace torchlstm
