// layer_norm_loops.h — the CPU time loops of a layer-normalised LSTM (layer_norm=True):
// forward and backward through time of one layer and direction, the maths of gate_math.h's
// ln_* functions, one thread team per sequence as in time_loops.h.
//
// What differs from the plain loops, and why. LN normalises whole rows (the 4H
// pre-activations of a batch row, its H cell states), so a step's gate pass needs every
// unit of a row at once. The team therefore splits each step in two: the recurrent GEMM
// by columns of W_hh (member k its contiguous slice of the 4H outputs: no gather), then,
// after a barrier, the gate pass by batch rows (member k its rows, whole: the row
// statistics are a thread's own, no cross-thread reduction). The input side is not
// recurrent: x W_ih^T is one GEMM over all steps before the loop (each row normalised in
// its step's row pass), and its gradient through LN (dP, from the row pass) feeds the
// GEMMs of dx and dW_ih after it. Saved per step and row (layer_call.h's SavedLayout):
// the three normalised rows and their rstd; backward recomputes the pre-activations
// from them, and sums the parameters' gradients (LN scales, biases, peepholes) per
// member as it goes: the gradient of the pre-activations is never stored.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../gate_math.h"
#include "../layer_call.h"
#include "blas.h"
#include "team.h"
#include "time_loops.h"
#include "vec_math.h"

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
template <typename T, typename S>
inline T ld_or(const S* p, S dflt) {  // p null: dflt
  return p ? ld<T>(p) : T(dflt);
}

// body(zero, j) over units [0, n): SIMD vectors first (zero a Vectorized<S>), then the
// scalar tail (zero an S). The maths is written once, in the body, for both.
template <typename S, typename F>
inline void for_units(int64_t n, const F& body) {
  using V = at::vec::Vectorized<S>;
  int64_t j = 0;
  for (; j + V::size() <= n; j += V::size()) body(V(S(0)), j);
  for (; j < n; ++j) body(S(0), j);
}

// The sum of term(zero, j) over units [0, n), vectorised as for_units.
template <typename S, typename F>
inline S sum_units(int64_t n, const F& term) {
  using V = at::vec::Vectorized<S>;
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
template <typename S>
inline void row_stats(const S* v, int64_t n, S eps, S& mean, S& rstd) {
  mean = sum_units<S>(n, [&](auto z, int64_t j) { return ld<decltype(z)>(v + j); }) / S(n);
  const S var = sum_units<S>(n, [&](auto z, int64_t j) {
                  using T = decltype(z);
                  const T d = ld<T>(v + j) - T(mean);
                  return d * d;
                }) / S(n);
  rstd = ln_rstd<S>(var, eps);
}

// The backward of LN over a row of n: dv = rstd (u - mean(u) - x^ mean(u x^)), u = g dy
// (g null: 1); acc_g += dy x^ (the scale's gradient; null: skipped).
template <typename S>
inline void row_norm_backward(int64_t n, const S* dy, const S* g, const S* xhat, S rstd, S* dv,
                              S* acc_g) {
  auto u = [&](auto z, int64_t j) {
    using T = decltype(z);
    return g ? ld<T>(g + j) * ld<T>(dy + j) : ld<T>(dy + j);
  };
  const S m1 = sum_units<S>(n, u) / S(n);
  const S m2 = sum_units<S>(n, [&](auto z, int64_t j) {
                 return u(z, j) * ld<decltype(z)>(xhat + j);
               }) / S(n);
  for_units<S>(n, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T xh = ld<T>(xhat + j);
    if (acc_g) st(ld<T>(acc_g + j) + ld<T>(dy + j) * xh, acc_g + j);
    st(ln_input_grad<T>(u(z, j), xh, T(rstd), T(m1), T(m2)), dv + j);
  });
}

// The layer's parameters and per-step inputs as the row passes read them (null: absent).
template <typename S>
struct Params {
  const S *g_ih, *g_hh, *g_c, *b_c;  // LN scales (4H, 4H, H) and the shift of LN(c) (H)
  const S *b1, *b2, *pc;             // b_ih, b_hh (4H), peephole weights (3H)
  S eps;
};

// The pre-activations of unit j (T lanes from j) before the peephole terms, from the
// normalised rows: a_q = g_ih x^_ih + g_hh x^_hh + b_ih + b_hh.
template <typename T, typename S>
inline void ln_preactivations(const Params<S>& p, int64_t H, int64_t j, const S* xih,
                              const S* xhh, T (&v)[4]) {
  for (int q = 0; q < 4; ++q) {
    const int64_t k = q * H + j;
    v[q] = ld<T>(p.g_ih + k) * ld<T>(xih + k) + ld<T>(p.g_hh + k) * ld<T>(xhh + k);
    if (p.b1) v[q] = v[q] + ld<T>(p.b1 + k);
    if (p.b2) v[q] = v[q] + ld<T>(p.b2 + k);
  }
}

// x^ = (v - mean) rstd of a row of n (written to dst, which may be v); returns rstd.
template <typename S>
inline S normalise_row(const S* v, int64_t n, S eps, S* dst) {
  S mean, rstd;
  row_stats(v, n, eps, mean, rstd);
  for_units<S>(n, [&](auto z, int64_t j) {
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
template <typename S, bool kDefault, bool kZone, bool kPeep>
inline void forward_row(Activation act_, Activation ract_, int64_t H, const Params<S>& p,
                        const SavedLayout& L, const S* P, const S* R, const S* zc, S* c, S* r,
                        S* save, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  S* xih = save ? save + L.xhat_ih : tmp;
  S* xhh = save ? save + L.xhat_hh : tmp + 4 * H;
  S* xc = save ? save + L.xhat_c : tmp + 8 * H;
  S* ao = tmp + 9 * H;  // a_o with its peephole term
  S* ct = tmp + 10 * H;
  const S rstd_ih = normalise_row(P, 4 * H, p.eps, xih);
  const S rstd_hh = normalise_row(R, 4 * H, p.eps, xhh);
  for_units<S>(H, [&](auto z, int64_t j) {
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
  const S rstd_c = normalise_row(ct, H, p.eps, xc);
  for_units<S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    st(ln_cell_output<T>(act, ract, ld<T>(ao + j), ld<T>(xc + j), ld<T>(p.g_c + j),
                         ld<T>(p.b_c + j)),
       r + j);
  });
  if (save) {
    save[L.rstd_ih] = rstd_ih;
    save[L.rstd_hh] = rstd_hh;
    save[L.rstd_c] = rstd_c;
  }
}

// Each member's share of the parameters' gradients, summed over its rows of all steps.
template <typename S>
struct GradAcc {
  S *g_ih, *g_hh, *g_c, *b_c;  // LN parameters (4H, 4H, H, H): BackwardResult::d_ln's order
  S *bias, *pc;                // b_ih / b_hh (4H), peephole weights (3H)
};
constexpr int64_t kGradAccWidth = 17;  // x H

// Backward of one batch row of one step. save the row forward saved, c_prev and c (H) the
// carried states before and after the step, dr = dr_a (+ dr_b) the gradient reaching r
// (scaled by 1 - zh where zh, h's zoneout z, is given), zc the z of c (or null); dc (H) is
// the gradient reaching the carried c in, that reaching c_prev out. Writes dR and dP (4H
// each: the gradients of the recurrent and of the input product) and r (H, or null: o
// act(y) for the projection's gradient), and adds the row's share to acc. tmp (6H) is
// scratch.
template <typename S, bool kDefault, bool kZone, bool kPeep>
inline void backward_row(Activation act_, Activation ract_, int64_t H, const Params<S>& p,
                         const SavedLayout& L, const S* save, const S* c_prev, const S* c,
                         const S* dr_a, const S* dr_b, const S* zh, const S* zc, S* dc, S* dR,
                         S* dP, S* r, const GradAcc<S>& acc, S* tmp) {
  const Activation act = kDefault ? Activation::TANH : act_;
  const Activation ract = kDefault ? Activation::SIGMOID : ract_;
  const S* xih = save + L.xhat_ih;
  const S* xhh = save + L.xhat_hh;
  const S* xc = save + L.xhat_c;
  S* dA = tmp;           // (4H) the gradient of the pre-activations
  S* dxh = tmp + 4 * H;  // (H)
  S* a3 = tmp + 5 * H;   // (H) a_i, a_f, a_g live in dA until overwritten: see below
  for_units<S>(H, [&](auto z, int64_t j) {
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
    st(o.d_o, a3 + j);
    st(o.dxh, dxh + j);
    st(ld<T>(acc.g_c + j) + o.dy * x, acc.g_c + j);
    st(ld<T>(acc.b_c + j) + o.dy, acc.b_c + j);
    if (r) st(o.r, r + j);
  });
  const S m1 = sum_units<S>(H, [&](auto z, int64_t j) { return ld<decltype(z)>(dxh + j); }) / S(H);
  const S m2 = sum_units<S>(H, [&](auto z, int64_t j) {
                 using T = decltype(z);
                 return ld<T>(dxh + j) * ld<T>(xc + j);
               }) / S(H);
  const S rstd_c = save[L.rstd_c];
  for_units<S>(H, [&](auto z, int64_t j) {
    using T = decltype(z);
    const T zero(S(0));
    const T cp = ld<T>(c_prev + j), d_o = ld<T>(a3 + j);
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
  for_units<S>(4 * H, [&](auto z, int64_t j) {
    using T = decltype(z);
    st(ld<T>(acc.bias + j) + ld<T>(dA + j), acc.bias + j);
  });
  row_norm_backward(4 * H, dA, p.g_hh, xhh, save[L.rstd_hh], dR, acc.g_hh);
  row_norm_backward(4 * H, dA, p.g_ih, xih, save[L.rstd_ih], dP, acc.g_ih);
}

// The row passes' instantiation for this call: the default activations as constants (the
// activation switches fold away), zoneout and peepholes only where on.
template <typename S, template <typename, bool, bool, bool> class Pass, typename... Args>
inline void dispatch(Activation act, Activation ract, bool zone, bool peep, Args&&... args) {
  const bool dflt = act == Activation::TANH && ract == Activation::SIGMOID;
#define TL_LN_CASE(D, Z, P) \
  if (dflt == D && zone == Z && peep == P) return Pass<S, D, Z, P>::run(act, ract, args...);
  TL_LN_CASE(true, false, false)
  TL_LN_CASE(true, true, false)
  TL_LN_CASE(true, false, true)
  TL_LN_CASE(true, true, true)
  TL_LN_CASE(false, false, false)
  TL_LN_CASE(false, true, false)
  TL_LN_CASE(false, false, true)
  TL_LN_CASE(false, true, true)
#undef TL_LN_CASE
}
template <typename S, bool D, bool Z, bool P>
struct ForwardRow {
  template <typename... Args>
  static void run(Activation act, Activation ract, Args... args) {
    forward_row<S, D, Z, P>(act, ract, args...);
  }
};
template <typename S, bool D, bool Z, bool P>
struct BackwardRow {
  template <typename... Args>
  static void run(Activation act, Activation ract, Args... args) {
    backward_row<S, D, Z, P>(act, ract, args...);
  }
};

}  // namespace ln

// The buffers of the layer-norm loops (see forward_loop_ln / backward_loop_ln).
template <typename S>
struct LnForwardBuffers {
  const S* P;       // (T*B, 4H) x W_ih^T of every step
  S* out;           // (T,B,Hout)
  S* c_state;       // (B,H) c0 in, c_n out
  S* r_ws;          // (B,H) with a projection
  S* saved;         // (T,B,width) or null (inference)
  S* cs;            // (T,B,H) or null
  S* hk;            // (2,B,Hout) with recurrent dropout
  S* R;             // (B,4H) the step's recurrent product
  S* scratch;       // (nt, 11H) per member
};
constexpr int64_t kForwardScratch = 11;  // x H per member
constexpr int64_t kBackwardScratch = 6;

// Forward loop of the layer-normalised LSTM (false: the team could not be had). Per step
// the recurrent GEMM by columns, a barrier, the gate pass by rows (each row normalises
// its own input and recurrent products), a barrier; with a projection then W_hr by output
// columns and a third barrier. Masks, zoneout, recurrent dropout and peepholes as in
// forward_loop_team.
template <typename S>
bool forward_loop_ln(int nt, const LayerCall& call, const LoopInputs<S>& in,
                     const LnForwardBuffers<S>& io) {
  const LayerSizes& z = call.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const SavedLayout L = call.saved_layout();
  const int64_t W = L.width;
  const ln::Params<S> prm{call.ln.w_ih.data_ptr<S>(), call.ln.w_hh.data_ptr<S>(),
                          call.ln.w_c.data_ptr<S>(), call.ln.b_c.data_ptr<S>(),
                          in.b_ih, in.b_hh, in.pc, static_cast<S>(call.ln.eps)};
  using Vec = at::vec::Vectorized<S>;
  const bool pack = worth_packing(T, B);
  std::vector<Slice> cols(nt), rows(nt), p(nt);
  std::vector<PackedA<S>> hh, hr;
  hh.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    cols[k] = slice_of(G, nt, k, Vec::size());
    rows[k] = slice_of(B, nt, k, 1);
    hh.emplace_back(kT, cols[k].len, B, Hout, in.w_hh + cols[k].begin * Hout, Hout, pack);
    if (z.proj) {
      p[k] = slice_of(Hout, nt, k, Vec::size());
      hr.emplace_back(kT, p[k].len, B, H, in.w_hr + p[k].begin * H, H, pack);
    }
  }
  const Activation act = call.act, ract = call.ract;
  const bool zone_c = in.zc != nullptr, peep = in.pc != nullptr;
  return run_team(nt, [&](int k) {
    S* tmp = io.scratch + k * kForwardScratch * H;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = time_of(s, T, call.reverse);
      const int64_t tp = time_of(s - 1, T, call.reverse);
      const S* h_prev = s == 0 ? in.h0 : io.out + tp * B * Hout;
      const S* h_in = in.rk ? io.hk + (s % 2) * B * Hout : h_prev;
      S* out_t = io.out + t * B * Hout;
      S* r_t = z.proj ? io.r_ws : out_t;
      const bool* m_t = in.mask ? in.mask + t * B : nullptr;
      const S* zh_t = in.zh ? in.zh + t * B * Hout : nullptr;
      const S* zc_t = in.zc ? in.zc + t * B * H : nullptr;

      hh[k].gemm(B, h_in, Hout, S(0), io.R + cols[k].begin, G);  // own columns of R
      barrier();
      for (int64_t b = rows[k].begin; b < rows[k].begin + rows[k].len; ++b) {
        const int64_t row = t * B + b;
        S* c = io.c_state + b * H;
        S* r = r_t + b * H;
        S* save = io.saved ? io.saved + row * W : nullptr;
        S* c_save = io.cs ? io.cs + row * H : nullptr;
        if (m_t && !m_t[b]) {  // masked step: the state carries over
          if (z.proj) std::memset(r, 0, H * sizeof(S));
          else std::memcpy(r, h_prev + b * Hout, H * sizeof(S));
          if (c_save) std::memcpy(c_save, c, H * sizeof(S));
          if (save) std::memset(save, 0, W * sizeof(S));  // never read; defined all the same
        } else {
          ln::dispatch<S, ln::ForwardRow>(act, ract, zone_c, peep, H, prm, L, io.P + row * G,
                                          io.R + b * G, zc_t ? zc_t + b * H : nullptr, c, r,
                                          save, tmp);
          if (c_save) std::memcpy(c_save, c, H * sizeof(S));
          if (zh_t && !z.proj) blend_row(H, zh_t + b * Hout, h_prev + b * Hout, r);
        }
        if (in.rk && !z.proj) {  // the next step's GEMM input, this row
          S* hk_next = io.hk + ((s + 1) % 2) * B * Hout + b * Hout;
          for (int64_t i = 0; i < Hout; ++i) hk_next[i] = r[i] * in.rk[b * Hout + i];
        }
      }
      barrier();
      if (z.proj) {
        const int64_t p0 = p[k].begin, pn = p[k].len;
        hr[k].gemm(B, io.r_ws, H, S(0), out_t + p0, Hout);
        for (int64_t b = 0; zh_t && b < B; ++b)
          if (!m_t || m_t[b])
            blend_row(pn, zh_t + b * Hout + p0, h_prev + b * Hout + p0, out_t + b * Hout + p0);
        for (int64_t b = 0; m_t && b < B; ++b)
          if (!m_t[b])
            std::memcpy(out_t + b * Hout + p0, h_prev + b * Hout + p0, pn * sizeof(S));
        if (in.rk) {
          S* hk_next = io.hk + ((s + 1) % 2) * B * Hout;
          for (int64_t b = 0; b < B; ++b)
            for (int64_t i = p0; i < p0 + pn; ++i)
              hk_next[b * Hout + i] = out_t[b * Hout + i] * in.rk[b * Hout + i];
        }
        barrier();
      }
    }
  });
}

template <typename S>
struct LnBackwardBuffers {
  const S *grad_out, *saved, *cs;  // (T,B,Hout), (T,B,width), (T,B,H)
  S *dR, *dP;                      // (T,B,4H): the gradients of the recurrent and input products
  S *dh_a, *dh_b, *dc;             // (B,Hout) x2 (grad_hn in dh_a), (B,H) grad_cn in, d c0 out
  S *dh_all, *r_all, *dr_ws;       // with a projection: (T,B,Hout), (T,B,H), (B,H)
  S* acc;                          // (nt, 17H) per member, zeroed: ln::GradAcc
  S* scratch;                      // (nt, 6H)
};

// Backward loop of the layer-normalised LSTM. Per step: with a projection dr = dh W_hr by
// columns (and a barrier); the row pass by rows (dR, dP, the parameters' shares); a
// barrier; dh_prev = dR W_hh by output columns; a barrier. d h0 ends in dh_a after an
// even number of steps, in dh_b after an odd one, as in backward_loop_team.
template <typename S>
bool backward_loop_ln(int nt, const LayerCall& call, const LoopInputs<S>& in,
                      const LnBackwardBuffers<S>& io) {
  const LayerSizes& z = call.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const SavedLayout L = call.saved_layout();
  const int64_t W = L.width;
  const ln::Params<S> prm{call.ln.w_ih.data_ptr<S>(), call.ln.w_hh.data_ptr<S>(),
                          call.ln.w_c.data_ptr<S>(), call.ln.b_c.data_ptr<S>(),
                          in.b_ih, in.b_hh, in.pc, static_cast<S>(call.ln.eps)};
  using Vec = at::vec::Vectorized<S>;
  const bool pack = worth_packing(T, B);
  std::vector<Slice> u(nt), p(nt), rows(nt);
  std::vector<PackedA<S>> hh, hr;
  hh.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    u[k] = slice_of(H, nt, k, Vec::size());
    p[k] = slice_of(Hout, nt, k, Vec::size());
    rows[k] = slice_of(B, nt, k, 1);
    hh.emplace_back(kN, p[k].len, B, G, in.w_hh + p[k].begin, Hout, pack);
    if (z.proj) hr.emplace_back(kN, u[k].len, B, Hout, in.w_hr + u[k].begin, H, pack);
  }
  const Activation act = call.act, ract = call.ract;
  const bool zone = in.zc || in.zh, peep = in.pc != nullptr;
  return run_team(nt, [&](int k) {
    S* a = io.acc + k * ln::kGradAccWidth * H;
    const ln::GradAcc<S> acc{a, a + 4 * H, a + 8 * H, a + 9 * H, a + 10 * H, a + 14 * H};
    S* tmp = io.scratch + k * kBackwardScratch * H;
    S* dh = io.dh_a;
    S* dh_nx = io.dh_b;
    const int64_t p0 = p[k].begin, pn = p[k].len;
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = time_of(s, T, call.reverse);
      const int64_t tp = time_of(s - 1, T, call.reverse);
      const S* c_prev = s == 0 ? in.c0 : io.cs + tp * B * H;
      const S* c_t = io.cs + t * B * H;
      const S* go_t = io.grad_out + t * B * Hout;
      const bool* m_t = in.mask ? in.mask + t * B : nullptr;
      const S* zh_t = in.zh ? in.zh + t * B * Hout : nullptr;
      const S* zc_t = in.zc ? in.zc + t * B * H : nullptr;
      S* dR_t = io.dR + t * B * G;
      S* dP_t = io.dP + t * B * G;
      if (z.proj) {
        S* dht = io.dh_all + t * B * Hout;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = p0; i < p0 + pn; ++i) dht[b * Hout + i] = go_t[b * Hout + i] + dh[b * Hout + i];
        for (int64_t b = 0; zh_t && b < B; ++b) {
          if (m_t && !m_t[b]) continue;
          for (int64_t i = p0; i < p0 + pn; ++i) dht[b * Hout + i] *= S(1) - zh_t[b * Hout + i];
        }
        barrier();  // all of dh[t] for every member's dr
        hr[k].gemm(B, dht, Hout, S(0), io.dr_ws + u[k].begin, H);
        barrier();  // all of dr for the row pass
      }
      for (int64_t b = rows[k].begin; b < rows[k].begin + rows[k].len; ++b) {
        const int64_t row = t * B + b;
        S* r = z.proj ? io.r_all + row * H : nullptr;
        if (m_t && !m_t[b]) {  // masked: no gradient reaches the step, dc passes through
          std::memset(dR_t + b * G, 0, G * sizeof(S));
          std::memset(dP_t + b * G, 0, G * sizeof(S));
          if (r) std::memset(r, 0, H * sizeof(S));
          continue;
        }
        const S* dr_a = z.proj ? io.dr_ws + b * H : go_t + b * Hout;
        const S* dr_b = z.proj ? nullptr : dh + b * Hout;
        ln::dispatch<S, ln::BackwardRow>(act, ract, zone, peep, H, prm, L, io.saved + row * W,
                                         c_prev + b * H, c_t + b * H, dr_a, dr_b,
                                         zh_t && !z.proj ? zh_t + b * Hout : nullptr,
                                         zc_t ? zc_t + b * H : nullptr, io.dc + b * H,
                                         dR_t + b * G, dP_t + b * G, r, acc, tmp);
      }
      barrier();  // all of dR[t] for every member's dh GEMM
      hh[k].gemm(B, dR_t, G, S(0), dh_nx + p0, Hout);  // dh_prev = dR W_hh
      for (int64_t b = 0; (m_t || in.rk || zh_t) && b < B; ++b) {
        S* d = dh_nx + b * Hout;
        const S* go = go_t + b * Hout;
        const S* dl = dh + b * Hout;
        if (m_t && !m_t[b]) {
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] = go[i] + dl[i];
          continue;
        }
        if (in.rk)
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] *= in.rk[b * Hout + i];
        if (zh_t)
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] += zh_t[b * Hout + i] * (go[i] + dl[i]);
      }
      barrier();
      std::swap(dh, dh_nx);
    }
  });
}

}  // namespace cpu
}  // namespace torchlstm
