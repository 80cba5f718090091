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

// The sum of term(zero, j) over units [0, n), vectorised as for_units.
template <typename V, typename S, typename F>
inline S sum_units(int64_t n, const F& term) {
  V acc(S(0));
  int64_t j = 0;
  for (; j + V::size() <= n; j += V::size()) acc = acc + term(V(S(0)), j);
  S lanes[V::size()];
  acc.store(lanes);
  S s = 0;
  for (int i = 0; i < V::size(); ++i) s += lanes[i];
  for (; j < n; ++j) s += term(S(0), j);
  return s;
}

// mean and rstd of a row of n values (two passes: the row is in L1).
template <typename V, typename S>
inline void row_stats(const S* v, int64_t n, S eps, S& mean, S& rstd) {
  mean = sum_units<V, S>(n, [&](auto z, int64_t j) { return ld<decltype(z)>(v + j); }) / S(n);
  const S var = sum_units<V, S>(n, [&](auto z, int64_t j) {
                  using T = decltype(z);
                  const T d = ld<T>(v + j) - T(mean);
                  return d * d;
                }) / S(n);
  rstd = ln_rstd<S>(var, eps);
}

// Both LN backwards of the pre-activations' gradient dA (4H) at once (one pass for the
// four row means, one for the results): dR through LN(h W_hh^T; g_hh) and dP through
// LN(x W_ih^T; g_ih), and the shares of g_hh's, g_ih's and the biases' gradients.
template <typename V, typename S>
inline void both_norms_backward(int64_t n, const S* dA, const S* g_hh, const S* xhh, S rstd_hh,
                                const S* g_ih, const S* xih, S rstd_ih, S* dR, S* dP,
                                S* acc_ghh, S* acc_gih, S* acc_bias) {
  V a0(S(0)), a1(S(0)), a2(S(0)), a3(S(0));
  S s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  auto terms = [&](auto z, int64_t j, auto& t0, auto& t1, auto& t2, auto& t3) {
    using T = decltype(z);
    const T d = ld<T>(dA + j), uh = ld<T>(g_hh + j) * d, ui = ld<T>(g_ih + j) * d;
    t0 = t0 + uh;
    t1 = t1 + uh * ld<T>(xhh + j);
    t2 = t2 + ui;
    t3 = t3 + ui * ld<T>(xih + j);
  };
  int64_t j = 0;
  for (; j + V::size() <= n; j += V::size()) terms(V(S(0)), j, a0, a1, a2, a3);
  for (; j < n; ++j) terms(S(0), j, s0, s1, s2, s3);
  S lanes[4][V::size()];
  a0.store(lanes[0]);
  a1.store(lanes[1]);
  a2.store(lanes[2]);
  a3.store(lanes[3]);
  for (int i = 0; i < static_cast<int>(V::size()); ++i) {
    s0 += lanes[0][i];
    s1 += lanes[1][i];
    s2 += lanes[2][i];
    s3 += lanes[3][i];
  }
  const S m1h = s0 / S(n), m2h = s1 / S(n), m1i = s2 / S(n), m2i = s3 / S(n);
  for_units<V, S>(n, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T d = ld<T>(dA + j), xh = ld<T>(xhh + j), xi = ld<T>(xih + j);
    st(ld<T>(acc_ghh + j) + d * xh, acc_ghh + j);
    st(ld<T>(acc_gih + j) + d * xi, acc_gih + j);
    st(ld<T>(acc_bias + j) + d, acc_bias + j);
    st(ln_input_grad<T>(ld<T>(g_hh + j) * d, xh, T(rstd_hh), T(m1h), T(m2h)), dR + j);
    st(ln_input_grad<T>(ld<T>(g_ih + j) * d, xi, T(rstd_ih), T(m1i), T(m2i)), dP + j);
  });
}

// The pre-activations of unit j (T lanes from j) before the peephole terms, from the
// normalised rows: a_q = g_ih x^_ih + g_hh x^_hh + b_ih + b_hh.
template <typename T, typename S>
inline void ln_preactivations(const ::torchlstm::cpu::LnArgs<S>& p, int64_t H, int64_t j, const S* xih,
                              const S* xhh, T (&v)[4]) {
  for (int q = 0; q < 4; ++q) {
    const int64_t k = q * H + j;
    v[q] = ld<T>(p.g_ih + k) * ld<T>(xih + k) + ld<T>(p.g_hh + k) * ld<T>(xhh + k);
    if (p.b1) v[q] = v[q] + ld<T>(p.b1 + k);
    if (p.b2) v[q] = v[q] + ld<T>(p.b2 + k);
  }
}

// x^ = (v - mean) rstd of a row of n (written to dst, which may be v); returns rstd.
template <typename V, typename S>
inline S normalise_row(const S* v, int64_t n, S eps, S* dst) {
  S mean, rstd;
  row_stats<V>(v, n, eps, mean, rstd);
  for_units<V, S>(n, [&](auto z, int64_t j) {
    using T = decltype(z);
    st((ld<T>(v + j) - T(mean)) * T(rstd), dst + j);
  });
  return rstd;
}

// Forward of one batch row of one step. P the row's input product x W_ih^T and R its
// recurrent product h_prev W_hh^T (4H each, raw), zc the row's zoneout z of c (or null);
// c (H) is c_prev in, the carried c out; r (H) receives o act(LN(c~)). save (a SavedLayout
// row, or null in inference) receives x^_ih, x^_hh, x^_c and their rstd; tmp (11H) is
// scratch.
template <typename V, bool kDefault, bool kZone, bool kPeep, typename S>
inline void forward_row(Activation act_, Activation ract_, const ::torchlstm::cpu::LnArgs<S>& p,
                        const S* P, const S* R, const S* zc, S* c, S* r,
                        S* save, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  const int64_t H = p.H;
  S* xih = save ? save + p.xhat_ih : tmp;
  S* xhh = save ? save + p.xhat_hh : tmp + 4 * H;
  S* xc = save ? save + p.xhat_c : tmp + 8 * H;
  S* ao = tmp + 9 * H;  // a_o with its peephole term
  S* ct = tmp + 10 * H;
  const S rstd_ih = normalise_row<V>(P, 4 * H, p.eps, xih);
  const S rstd_hh = normalise_row<V>(R, 4 * H, p.eps, xhh);
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    T v[4];
    ln_preactivations<T>(p, H, j, xih, xhh, v);
    const T zero(S(0));
    const auto s = ln_cell_state<kZone, kPeep, T>(
        act, ract, v[0], v[1], v[2], v[3], ld<T>(c + j), kPeep ? ld<T>(p.pc + j) : zero,
        kPeep ? ld<T>(p.pc + H + j) : zero, kPeep ? ld<T>(p.pc + 2 * H + j) : zero,
        kZone ? ld<T>(zc + j) : zero);
    st(v[3], ao + j);
    st(s.c, c + j);
    st(s.ct, ct + j);
  });
  const S rstd_c = normalise_row<V>(ct, H, p.eps, xc);
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    st(ln_cell_output<T>(act, ract, ld<T>(ao + j), ld<T>(xc + j), ld<T>(p.g_c + j),
                         ld<T>(p.b_c + j)),
       r + j);
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
// scratch.
template <typename V, bool kDefault, bool kZone, bool kPeep, typename S>
inline void backward_row(Activation act_, Activation ract_, const ::torchlstm::cpu::LnArgs<S>& p,
                         const S* save, const S* c_prev, const S* c,
                         const S* dr_a, const S* dr_b, const S* zh, const S* zc, S* dc, S* dR,
                         S* dP, S* r, const ::torchlstm::cpu::LnAcc<S>& acc, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  const int64_t H = p.H;
  const S* xih = save + p.xhat_ih;
  const S* xhh = save + p.xhat_hh;
  const S* xc = save + p.xhat_c;
  S* dA = tmp;            // (4H) the pre-activations' gradient (first a_i, a_f, a_g)
  S* dxh = tmp + 4 * H;   // (H) the gradient reaching x^_c
  S* d_o_ = tmp + 5 * H;  // (H) the output gate's gradient
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    T v[4];
    ln_preactivations<T>(p, H, j, xih, xhh, v);
    if (kPeep) {  // the saved rows hold no peephole terms: added as the forward did
      const T cp = ld<T>(c_prev + j);
      v[0] = v[0] + ld<T>(p.pc + j) * cp;
      v[1] = v[1] + ld<T>(p.pc + H + j) * cp;
      v[3] = v[3] + ld<T>(p.pc + 2 * H + j) * ld<T>(c + j);
    }
    T dr = ld<T>(dr_a + j);
    if (dr_b) dr = dr + ld<T>(dr_b + j);
    if (kZone && zh) dr = dr * (T(S(1)) - ld<T>(zh + j));
    const T x = ld<T>(xc + j);
    const auto o = ln_cell_output_grad<T>(act, ract, v[3], x, ld<T>(p.g_c + j), ld<T>(p.b_c + j),
                                          dr);
    for (int q = 0; q < 3; ++q) st(v[q], dA + q * H + j);  // a_i, a_f, a_g for the next pass
    st(o.d_o, d_o_ + j);
    st(o.dxh, dxh + j);
    st(ld<T>(acc.g_c + j) + o.dy * x, acc.g_c + j);
    st(ld<T>(acc.b_c + j) + o.dy, acc.b_c + j);
    if (r) st(o.r, r + j);
  });
  const S m1 = sum_units<V, S>(H, [&](auto z, int64_t j) { return ld<decltype(z)>(dxh + j); }) / S(H);
  const S m2 = sum_units<V, S>(H, [&](auto z, int64_t j) {
                 using T = decltype(z);
                 return ld<T>(dxh + j) * ld<T>(xc + j);
               }) / S(H);
  const S rstd_c = save[p.rstd_c];
  for_units<V, S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T zero(S(0));
    const T cp = ld<T>(c_prev + j), d_o = ld<T>(d_o_ + j);
    const T dct_ln = ln_input_grad<T>(ld<T>(dxh + j), ld<T>(xc + j), T(rstd_c), T(m1), T(m2));
    const auto g = ln_cell_backward<kZone, kPeep, T>(
        act, ract, ld<T>(dA + j), ld<T>(dA + H + j), ld<T>(dA + 2 * H + j), cp, dct_ln,
        ld<T>(dc + j), d_o, kPeep ? ld<T>(p.pc + j) : zero, kPeep ? ld<T>(p.pc + H + j) : zero,
        kPeep ? ld<T>(p.pc + 2 * H + j) : zero, kZone && zc ? ld<T>(zc + j) : zero);
    st(g.d_i, dA + j);
    st(g.d_f, dA + H + j);
    st(g.d_g, dA + 2 * H + j);
    st(d_o, dA + 3 * H + j);
    st(g.dc_prev, dc + j);
    if (kPeep) {
      st(ld<T>(acc.pc + j) + g.d_i * cp, acc.pc + j);
      st(ld<T>(acc.pc + H + j) + g.d_f * cp, acc.pc + H + j);
      st(ld<T>(acc.pc + 2 * H + j) + d_o * ld<T>(c + j), acc.pc + 2 * H + j);
    }
  });
  both_norms_backward<V>(4 * H, dA, p.g_hh, xhh, save[p.rstd_hh], p.g_ih, xih, save[p.rstd_ih],
                         dR, dP, acc.g_hh, acc.g_ih, acc.bias);
}

}  // namespace ln
}  // namespace cpu
}  // namespace torchlstm
