// row_passes.h — the SIMD part of the CPU kernels' fused row passes, written once for any
// vector type Vec (ATen's Vectorized<float/double> in lstm_cpu.cpp; the 16-lane AVX-512
// type in gates_avx512.cpp). Vec needs loadu, store, size() and + - * with Vec(scalar).
//
// It includes nothing on purpose: gates_avx512.cpp includes it (as gate_math.h) inside a
// namespace of its own, to compile it for AVX-512 only there; every includer has
// gate_math.h and <cstdint> included first.
//
// Both do units [j, n) of one batch row, Vec::size() at a time, and return the first unit
// they did not do (the caller finishes the tail with scalars). Layout of the row:
//   forward:  a the input + recurrent products, gate q at a + q*n; b1, b2 the biases (or
//             null), gate q at + q*H. c is updated in place and r = o * act(c) written;
//             for backward, the gate pre-activations go to g_save (gate q at + q*H) and c
//             to c_save, when given. kZc: zc holds the row's zoneout z of c (c becomes
//             z*c_prev + (1-z)*c~, r is o * act(c~): gate_math.h's cell_forward_zoneout).
//   backward: g the saved pre-activations (gate q at + q*H), dr = dr_a (+ dr_b); dc is
//             updated in place to dc_prev, the gate gradients go to dg (gate q at + q*H)
//             and r (if given) receives o * act(c). kZone: zh (or null) the row's z of h
//             (dr scaled by 1 - z), zc (or null) its z of c (cell_backward_zoneout).
//   kPeep (both): pc the row's peephole weights p_i, p_f, p_o (gate q at + q*H);
//             gate_math.h's cell_forward_peephole / cell_backward_peephole, and the
//             saved pre-activations include the peephole terms.
#pragma once

namespace torchlstm {
namespace cpu {

template <typename Vec, bool kZc, bool kPeep, typename S>
inline int64_t forward_rows_vec(Activation act, Activation ract, const S* zc, const S* pc,
                                int64_t j, int64_t n, int64_t H, const S* a, const S* b1,
                                const S* b2, S* c, S* r, S* g_save, S* c_save) {
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec v[4];
    for (int q = 0; q < 4; ++q) {
      v[q] = Vec::loadu(a + q * n + j);
      if (b1) v[q] = v[q] + Vec::loadu(b1 + q * H + j);
      if (b2) v[q] = v[q] + Vec::loadu(b2 + q * H + j);
      if (!kPeep && g_save) v[q].store(g_save + q * H + j);
    }
    CellForward<Vec> o;
    if constexpr (kPeep) {  // the pre-activations gain the peephole terms: saved after
      o = cell_forward_peephole<kZc, Vec>(act, ract, v[0], v[1], v[2], v[3], Vec::loadu(c + j),
                                          Vec::loadu(pc + j), Vec::loadu(pc + H + j),
                                          Vec::loadu(pc + 2 * H + j),
                                          kZc ? Vec::loadu(zc + j) : Vec(S(0)));
      for (int q = 0; g_save && q < 4; ++q) v[q].store(g_save + q * H + j);
    } else if constexpr (kZc) {
      o = cell_forward_zoneout<Vec>(act, ract, v[0], v[1], v[2], v[3], Vec::loadu(c + j),
                                    Vec::loadu(zc + j));
    } else {
      o = cell_forward<Vec>(act, ract, v[0], v[1], v[2], v[3], Vec::loadu(c + j));
    }
    o.c.store(c + j);
    o.r.store(r + j);
    if (c_save) o.c.store(c_save + j);
  }
  return j;
}

template <typename Vec, bool kZone, bool kPeep, typename S>
inline int64_t backward_rows_vec(Activation act, Activation ract, const S* zc, const S* zh,
                                 const S* pc, int64_t j, int64_t n, int64_t H, const S* g,
                                 const S* c_prev, const S* c, const S* dr_a, const S* dr_b,
                                 S* dc, S* dg, S* r) {
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec dr = Vec::loadu(dr_a + j);
    if (dr_b) dr = dr + Vec::loadu(dr_b + j);
    CellBackward<Vec> o;
    if constexpr (kZone)
      if (zh) dr = dr * (Vec(S(1)) - Vec::loadu(zh + j));
    if constexpr (kPeep) {
      const Vec gi = Vec::loadu(g + j), gf = Vec::loadu(g + H + j), gg = Vec::loadu(g + 2 * H + j),
                go = Vec::loadu(g + 3 * H + j), cp = Vec::loadu(c_prev + j),
                cc = Vec::loadu(c + j), dcn = Vec::loadu(dc + j), pi = Vec::loadu(pc + j),
                pf = Vec::loadu(pc + H + j), po = Vec::loadu(pc + 2 * H + j);
      if (kZone && zc)
        o = cell_backward_peephole<true, Vec>(act, ract, gi, gf, gg, go, cp, cc, dr, dcn, pi,
                                              pf, po, Vec::loadu(zc + j));
      else
        o = cell_backward_peephole<false, Vec>(act, ract, gi, gf, gg, go, cp, cc, dr, dcn, pi,
                                               pf, po, Vec(S(0)));
    } else {
      if constexpr (kZone)
        if (zc)
          o = cell_backward_zoneout<Vec>(act, ract, Vec::loadu(g + j), Vec::loadu(g + H + j),
                                         Vec::loadu(g + 2 * H + j), Vec::loadu(g + 3 * H + j),
                                         Vec::loadu(c_prev + j), dr, Vec::loadu(dc + j),
                                         Vec::loadu(zc + j));
      if (!kZone || !zc)
        o = cell_backward<Vec>(act, ract, Vec::loadu(g + j), Vec::loadu(g + H + j),
                               Vec::loadu(g + 2 * H + j), Vec::loadu(g + 3 * H + j),
                               Vec::loadu(c_prev + j), Vec::loadu(c + j), dr, Vec::loadu(dc + j));
    }
    o.d_i.store(dg + j);
    o.d_f.store(dg + H + j);
    o.d_g.store(dg + 2 * H + j);
    o.d_o.store(dg + 3 * H + j);
    o.dc_prev.store(dc + j);
    if (r) o.r.store(r + j);
  }
  return j;
}

}  // namespace cpu
}  // namespace torchlstm
