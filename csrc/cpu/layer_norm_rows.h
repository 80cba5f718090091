// layer_norm_rows.h — the row passes of the layer-normalised LSTM (layer_norm_loops.h):
// one batch row of one step, forward and backward, written once for any SIMD vector type
// V (ATen's Vectorized<float/double> there; the 16-lane AVX-512 type of gates_avx512.cpp,
// which compiles this file for AVX-512 inside a namespace of its own, as row_passes.h).
// The maths is gate_math.h's ln_* functions; the row statistics are these passes' own (a
// whole row belongs to one thread).
//
// It includes nothing on purpose: each includer has gate_math.h, <cstdint>,
// <type_traits> and layer_norm_args.h (at global scope) included first. V needs loadu,
// store, size(), + - * / and V(S); GateOps<V> (gate_math.h).
#pragma once

namespace torchlstm {
namespace cpu {
namespace ln {

// Load / store of a T (a SIMD vector of S, or S itself) at p.
template <typename T, typename S>
inline T ld(const S* p) {
  if constexpr (std::is_same<T, S>::value) return *p;
  else return T::loadu(p);
}
template <typename T, typename S>
inline void st(const T& v, S* p) {
  if constexpr (std::is_same<T, S>::value) *p = v;
  else v.store(p);
}
// body(zero, j) over units [0, n): SIMD vectors first (zero a Vectorized<S>), then the
// scalar tail (zero an S). The maths is written once, in the body, for both.
template <typename V, typename S, typename F>
inline void for_units(int64_t n, const F& body) {
  int64_t j = 0;
  for (; j + V::size() <= n; j += V::size()) body(V(S(0)), j);
  for (; j < n; ++j) body(S(0), j);
}

// A row sum accumulated in SIMD lanes (add a V) and a scalar tail (add an S).
template <typename V, typename S>
struct RowSum {
  V lanes = V(S(0));
  S tail = 0;
  template <typename T>
  void add(const T& x) {
    if constexpr (std::is_same<T, S>::value) tail += x;
    else lanes = lanes + x;
  }
  S total() const {
    S l[V::size()];
    lanes.store(l);
    S t = tail;
    for (int i = 0; i < static_cast<int>(V::size()); ++i) t += l[i];
    return t;
  }
};

// The pre-activation at k (T lanes from k) before the peephole terms, from the
// normalised rows: g_ih x^_ih + g_hh x^_hh + b_ih + b_hh.
template <typename T, typename S>
inline T preactivation(const ::torchlstm::cpu::LnArgs<S>& p, int64_t k, const S* xih,
                       const S* xhh) {
  T v = ld<T>(p.g_ih + k) * ld<T>(xih + k) + ld<T>(p.g_hh + k) * ld<T>(xhh + k);
  if (p.b1) v = v + ld<T>(p.b1 + k);
  if (p.b2) v = v + ld<T>(p.b2 + k);
  return v;
}

// The mean and rstd of two rows of n values at once (two passes: the rows are in L1).
template <typename V, typename S>
inline void row_stats2(const S* a, const S* b, int64_t n, S eps, S& mean_a, S& rstd_a,
                       S& mean_b, S& rstd_b) {
  RowSum<V, S> sa, sb;
  for_units<V, S>(n, [&](auto z, int64_t j) {
    using T = decltype(z);
    sa.add(ld<T>(a + j));
    sb.add(ld<T>(b + j));
  });
  mean_a = sa.total() / S(n);
  mean_b = sb.total() / S(n);
  RowSum<V, S> va, vb;
  for_units<V, S>(n, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T da = ld<T>(a + j) - T(mean_a), db = ld<T>(b + j) - T(mean_b);
    va.add(da * da);
    vb.add(db * db);
  });
  rstd_a = ln_rstd<S>(va.total() / S(n), eps);
  rstd_b = ln_rstd<S>(vb.total() / S(n), eps);
}

// Forward of one batch row of one step. P the row's input product x W_ih^T and R its
// recurrent product h_prev W_hh^T (4H each, raw; in training P is the saved row's x^_ih
// slot, overwritten with x^_ih), zc the row's zoneout z of c (or null); c (H) is c_prev
// in, the carried c out; r (H) receives o act(LN(c~)). save (a SavedLayout row, or null
// in inference) receives x^_ih, x^_hh, x^_c and their rstd; tmp (2H) is scratch.
// Passes: the statistics of both products; the gates over H (normalising on the way);
// the variance of c~; the output over H.
template <typename V, bool kDefault, bool kZone, bool kPeep, typename S>
inline void forward_row(Activation act_, Activation ract_, const ::torchlstm::cpu::LnArgs<S>& p,
                        const S* P, const S* R, const S* zc, S* c, S* r,
                        S* save, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  const int64_t H = p.H;
  S* xih = save ? save + p.xhat_ih : nullptr;
  S* xhh = save ? save + p.xhat_hh : nullptr;
  S* xc = save ? save + p.xhat_c : nullptr;
  S* ao = tmp;  // a_o with its peephole term
  S* ct = tmp + H;
  S mean_ih, rstd_ih, mean_hh, rstd_hh;
  row_stats2<V>(P, R, 4 * H, p.eps, mean_ih, rstd_ih, mean_hh, rstd_hh);
  RowSum<V, S> sum_c;
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    T v[4];
    for (int q = 0; q < 4; ++q) {
      const int64_t k = q * H + j;
      const T xi = (ld<T>(P + k) - T(mean_ih)) * T(rstd_ih);
      const T xh = (ld<T>(R + k) - T(mean_hh)) * T(rstd_hh);
      if (save) {
        st(xi, xih + k);
        st(xh, xhh + k);
      }
      v[q] = ld<T>(p.g_ih + k) * xi + ld<T>(p.g_hh + k) * xh;
      if (p.b1) v[q] = v[q] + ld<T>(p.b1 + k);
      if (p.b2) v[q] = v[q] + ld<T>(p.b2 + k);
    }
    const T zero(S(0));
    const auto s = ln_cell_state<kZone, kPeep, T>(
        act, ract, v[0], v[1], v[2], v[3], ld<T>(c + j), kPeep ? ld<T>(p.pc + j) : zero,
        kPeep ? ld<T>(p.pc + H + j) : zero, kPeep ? ld<T>(p.pc + 2 * H + j) : zero,
        kZone ? ld<T>(zc + j) : zero);
    st(v[3], ao + j);
    st(s.c, c + j);
    st(s.ct, ct + j);
    sum_c.add(s.ct);
  });
  const S mean_c = sum_c.total() / S(H);
  RowSum<V, S> var_c;
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T d = ld<T>(ct + j) - T(mean_c);
    var_c.add(d * d);
  });
  const S rstd_c = ln_rstd<S>(var_c.total() / S(H), p.eps);
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T x = (ld<T>(ct + j) - T(mean_c)) * T(rstd_c);
    if (save) st(x, xc + j);
    st(ln_cell_output<T>(act, ract, ld<T>(ao + j), x, ld<T>(p.g_c + j), ld<T>(p.b_c + j)), r + j);
  });
  if (save) {
    save[p.rstd_ih] = rstd_ih;
    save[p.rstd_hh] = rstd_hh;
    save[p.rstd_c] = rstd_c;
  }
}

// Backward of one batch row of one step. save the row forward saved, c_prev and c (H) the
// carried states before and after the step, dr = dr_a (+ dr_b) the gradient reaching r
// (scaled by 1 - zh where zh, h's zoneout z, is given), zc the z of c (or null); dc (H) is
// the gradient reaching the carried c in, that reaching c_prev out. Writes dR and dP (4H
// each: the gradients of the recurrent and of the input product) and r (H, or null: o
// act(y) for the projection's gradient), and adds the row's share to acc. tmp (6H) is
// scratch. Three passes: over H to the gradient reaching x^_c (and its two row means);
// over H to the pre-activations' gradient dA (4H) with the parameters' shares and the
// four row means of both LN backwards; over 4H to dR and dP.
template <typename V, bool kDefault, bool kZone, bool kPeep, typename S>
inline void backward_row(Activation act_, Activation ract_, const ::torchlstm::cpu::LnArgs<S>& p,
                         const S* save, const S* c_prev, const S* c,
                         const S* dr_a, const S* dr_b, const S* zh, const S* zc, S* dc, S* dR,
                         S* dP, S* r, const ::torchlstm::cpu::LnAcc<S>& acc, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  const int64_t H = p.H, G = 4 * H;
  const S* xih = save + p.xhat_ih;
  const S* xhh = save + p.xhat_hh;
  const S* xc = save + p.xhat_c;
  S* dA = tmp;            // (4H) the pre-activations' gradient (first a_i, a_f, a_g)
  S* dxh = tmp + 4 * H;   // (H) the gradient reaching x^_c
  S* d_o_ = tmp + 5 * H;  // (H) the output gate's gradient
  RowSum<V, S> sc1, sc2;  // sums of dxh, dxh x^_c
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    T v[4];
    for (int q = 0; q < 4; ++q) v[q] = preactivation<T>(p, q * H + j, xih, xhh);
    if (kPeep) {  // the saved rows hold no peephole terms: added as the forward did
      const T cp = ld<T>(c_prev + j);
      v[0] = v[0] + ld<T>(p.pc + j) * cp;
      v[1] = v[1] + ld<T>(p.pc + H + j) * cp;
      v[3] = v[3] + ld<T>(p.pc + 2 * H + j) * ld<T>(c + j);
    }
    for (int q = 0; q < 3; ++q) st(v[q], dA + q * H + j);  // a_i, a_f, a_g for the next pass
    T dr = ld<T>(dr_a + j);
    if (dr_b) dr = dr + ld<T>(dr_b + j);
    if (kZone && zh) dr = dr * (T(S(1)) - ld<T>(zh + j));
    const T x = ld<T>(xc + j);
    const auto o = ln_cell_output_grad<T>(act, ract, v[3], x, ld<T>(p.g_c + j), ld<T>(p.b_c + j),
                                          dr);
    st(o.d_o, d_o_ + j);
    st(o.dxh, dxh + j);
    sc1.add(o.dxh);
    sc2.add(o.dxh * x);
    st(ld<T>(acc.g_c + j) + o.dy * x, acc.g_c + j);
    st(ld<T>(acc.b_c + j) + o.dy, acc.b_c + j);
    if (r) st(o.r, r + j);
  });
  const S m1 = sc1.total() / S(H), m2 = sc2.total() / S(H);
  const S rstd_c = save[p.rstd_c];
  RowSum<V, S> sh1, sh2, si1, si2;  // sums of g_hh dA, g_hh dA x^_hh, g_ih dA, g_ih dA x^_ih
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T zero(S(0));
    const T cp = ld<T>(c_prev + j), d_o = ld<T>(d_o_ + j);
    const T dct_ln = ln_input_grad<T>(ld<T>(dxh + j), ld<T>(xc + j), T(rstd_c), T(m1), T(m2));
    const auto g = ln_cell_backward<kZone, kPeep, T>(
        act, ract, ld<T>(dA + j), ld<T>(dA + H + j), ld<T>(dA + 2 * H + j), cp, dct_ln,
        ld<T>(dc + j), d_o, kPeep ? ld<T>(p.pc + j) : zero, kPeep ? ld<T>(p.pc + H + j) : zero,
        kPeep ? ld<T>(p.pc + 2 * H + j) : zero, kZone && zc ? ld<T>(zc + j) : zero);
    st(g.dc_prev, dc + j);
    if (kPeep) {
      st(ld<T>(acc.pc + j) + g.d_i * cp, acc.pc + j);
      st(ld<T>(acc.pc + H + j) + g.d_f * cp, acc.pc + H + j);
      st(ld<T>(acc.pc + 2 * H + j) + d_o * ld<T>(c + j), acc.pc + 2 * H + j);
    }
    const T d[4] = {g.d_i, g.d_f, g.d_g, d_o};
    for (int q = 0; q < 4; ++q) {
      const int64_t k = q * H + j;
      const T xh = ld<T>(xhh + k), xi = ld<T>(xih + k);
      const T uh = ld<T>(p.g_hh + k) * d[q], ui = ld<T>(p.g_ih + k) * d[q];
      st(d[q], dA + k);
      sh1.add(uh);
      sh2.add(uh * xh);
      si1.add(ui);
      si2.add(ui * xi);
      st(ld<T>(acc.g_hh + k) + d[q] * xh, acc.g_hh + k);
      st(ld<T>(acc.g_ih + k) + d[q] * xi, acc.g_ih + k);
      st(ld<T>(acc.bias + k) + d[q], acc.bias + k);
    }
  });
  const S m1h = sh1.total() / S(G), m2h = sh2.total() / S(G);
  const S m1i = si1.total() / S(G), m2i = si2.total() / S(G);
  const S rstd_hh = save[p.rstd_hh], rstd_ih = save[p.rstd_ih];
  for_units<V, S>(G, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T d = ld<T>(dA + j);
    st(ln_input_grad<T>(ld<T>(p.g_hh + j) * d, ld<T>(xhh + j), T(rstd_hh), T(m1h), T(m2h)),
       dR + j);
    st(ln_input_grad<T>(ld<T>(p.g_ih + j) * d, ld<T>(xih + j), T(rstd_ih), T(m1i), T(m2i)),
       dP + j);
  });
}

}  // namespace ln
}  // namespace cpu
}  // namespace torchlstm
