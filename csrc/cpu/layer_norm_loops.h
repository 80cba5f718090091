// layer_norm_loops.h — the CPU time loops of a layer-normalised LSTM (layer_norm=True):
// forward and backward through time of one layer and direction, the maths of gate_math.h's
// ln_* functions, one thread team per sequence as in time_loops.h.
//
// What differs from the plain loops, and why. LN normalises whole rows (the 4H
// pre-activations of a batch row, its H cell states), so a step's gate pass needs every
// unit of a row at once. The team therefore splits each step in two: the recurrent GEMM
// by columns of W_hh (member k its contiguous slice of the 4H outputs: no gather), then,
// after a barrier, the gate pass by batch rows (member k its rows, whole: the row
// statistics are a thread's own, no cross-thread reduction). Each member computes the
// input product x W_ih^T of its own rows itself (normalised in its row pass), and the
// gradient through that LN (dP, from the backward row pass) feeds the GEMMs of dx and
// dW_ih after the loop. Saved per step and row (layer_call.h's SavedLayout):
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
#include "gates_avx512.h"
#include "layer_norm_args.h"
#include "layer_norm_rows.h"
#include "team.h"
#include "time_loops.h"
#include "vec_math.h"

namespace torchlstm {
namespace cpu {
namespace ln {

// The row passes' instantiation for this call: the default activations in float32 on
// 16-lane AVX-512 where the CPU has it (gates_avx512.cpp), else ATen's vectors with the
// default activations as constants (the activation switches fold away); zoneout and
// peepholes only where on.
template <typename S, template <typename, bool, bool, bool> class Pass, typename... Args>
inline void dispatch(Activation act, Activation ract, bool zone, bool peep, Args&&... args) {
  const bool dflt = act == Activation::TANH && ract == Activation::SIGMOID;
  if constexpr (std::is_same<S, float>::value)
    if (dflt && use_avx512() && Pass<S, true, false, false>::avx512(zone, peep, args...)) return;
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
    forward_row<at::vec::Vectorized<S>, D, Z, P>(act, ract, args...);
  }
  template <typename... Args>
  static bool avx512(bool zone, bool peep, Args... args) {
    return ln_forward_row_avx512(zone, peep, args...);
  }
};
template <typename S, bool D, bool Z, bool P>
struct BackwardRow {
  template <typename... Args>
  static void run(Activation act, Activation ract, Args... args) {
    backward_row<at::vec::Vectorized<S>, D, Z, P>(act, ract, args...);
  }
  template <typename... Args>
  static bool avx512(bool zone, bool peep, Args... args) {
    return ln_backward_row_avx512(zone, peep, args...);
  }
};

// The row passes' arguments of this call.
template <typename S>
LnArgs<S> ln_args(const LayerCall& call, const LoopInputs<S>& in) {
  const SavedLayout L = call.saved_layout();
  return {call.ln.w_ih.data_ptr<S>(), call.ln.w_hh.data_ptr<S>(), call.ln.w_c.data_ptr<S>(),
          call.ln.b_c.data_ptr<S>(), in.b_ih, in.b_hh, in.pc, static_cast<S>(call.ln.eps),
          call.z.H, L.xhat_ih, L.xhat_hh, L.xhat_c, L.rstd_ih, L.rstd_hh, L.rstd_c};
}

}  // namespace ln

// The buffers of the layer-norm loops (see forward_loop_ln / backward_loop_ln).
template <typename S>
struct LnForwardBuffers {
  S* P;             // (B,4H) the step's x W_ih^T (inference; in training it goes to the
                    // saved rows' x^_ih slots, normalised there in place)
  S* out;           // (T,B,Hout)
  S* c_state;       // (B,H) c0 in, c_n out
  S* r_ws;          // (B,H) with a projection
  S* saved;         // (T,B,width) or null (inference)
  S* cs;            // (T,B,H) or null
  S* hk;            // (2,B,Hout) with recurrent dropout
  S* R;             // (B,4H) the step's recurrent product
  S* scratch;       // (nt, 11H) per member
};

// Forward loop of the layer-normalised LSTM (false: the team could not be had). Per step
// each member's input product x W_ih^T for its own batch rows (read by it alone: no
// barrier, and it stays in cache), the recurrent GEMM by columns, a barrier, the gate
// pass by rows (each row normalises its own input and recurrent products), a barrier;
// with a projection then W_hr by output columns and a third barrier. Masks, zoneout,
// recurrent dropout and peepholes as in forward_loop_team.
template <typename S>
bool forward_loop_ln(int nt, const LayerCall& call, const LoopInputs<S>& in,
                     const LnForwardBuffers<S>& io) {
  const LayerSizes& z = call.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const SavedLayout L = call.saved_layout();
  const int64_t W = L.width;
  const LnArgs<S> prm = ln::ln_args(call, in);
  using Vec = at::vec::Vectorized<S>;
  const bool pack = worth_packing(T, B);
  std::vector<Slice> cols(nt), rows(nt), p(nt);
  std::vector<PackedA<S>> hh, hr, wi;
  hh.reserve(nt);
  hr.reserve(nt);
  wi.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    cols[k] = slice_of(G, nt, k, Vec::size());
    rows[k] = slice_of(B, nt, k, 1);
    hh.emplace_back(kT, cols[k].len, B, Hout, in.w_hh + cols[k].begin * Hout, Hout, pack);
    wi.emplace_back(kT, G, rows[k].len, z.I, in.w_ih, z.I, pack);
    if (z.proj) {
      p[k] = slice_of(Hout, nt, k, Vec::size());
      hr.emplace_back(kT, p[k].len, B, H, in.w_hr + p[k].begin * H, H, pack);
    }
  }
  const Activation act = call.act, ract = call.ract;
  const bool zone_c = in.zc != nullptr, peep = in.pc != nullptr;
  return run_team(nt, [&](int k) {
    S* tmp = io.scratch + k * kLnForwardScratch * H;
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

      // own rows of x W_ih^T, then own columns of R = h_in W_hh^T
      const int64_t b0 = rows[k].begin, nb = rows[k].len;
      const int64_t ldp = io.saved ? W : G;
      S* P_t = io.saved ? io.saved + (t * B + b0) * W + L.xhat_ih : io.P + b0 * G;
      if (nb > 0 && z.I > 0) wi[k].gemm(nb, in.x + (t * B + b0) * z.I, z.I, S(0), P_t, ldp);
      for (int64_t b = 0; nb > 0 && z.I == 0 && b < nb; ++b) std::memset(P_t + b * ldp, 0, G * sizeof(S));
      hh[k].gemm(B, h_in, Hout, S(0), io.R + cols[k].begin, G);
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
          ln::dispatch<S, ln::ForwardRow>(act, ract, zone_c, peep, prm, P_t + (b - b0) * ldp,
                                          io.R + b * G, zc_t ? zc_t + b * H : nullptr, c, r,
                                          save, tmp);
          if (c_save) std::memcpy(c_save, c, H * sizeof(S));
          if (zh_t && !z.proj) blend_row(H, zh_t + b * Hout, h_prev + b * Hout, r);
        }
        if (in.rk && !z.proj)  // the next step's GEMM input, this row
          recurrent_input<S>(0, Hout, 1, Hout, r, in.rk + b * Hout,
                             io.hk + ((s + 1) % 2) * B * Hout + b * Hout);
      }
      barrier();
      if (z.proj) {
        project_step(hr[k], p[k].begin, p[k].len, B, H, Hout, io.r_ws, h_prev, m_t, zh_t, out_t);
        if (in.rk)
          recurrent_input(p[k].begin, p[k].len, B, Hout, out_t, in.rk,
                          io.hk + ((s + 1) % 2) * B * Hout);
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
  S* acc;                          // (nt, 17H) per member, zeroed: LnAcc
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
  const LnArgs<S> prm = ln::ln_args(call, in);
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
    S* a = io.acc + k * kLnAccWidth * H;
    const LnAcc<S> acc{a, a + 4 * H, a + 8 * H, a + 9 * H, a + 10 * H, a + 14 * H};
    S* tmp = io.scratch + k * kLnBackwardScratch * H;
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
        projected_dh(p0, pn, B, Hout, go_t, dh, m_t, zh_t, dht);
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
        ln::dispatch<S, ln::BackwardRow>(act, ract, zone, peep, prm, io.saved + row * W,
                                         c_prev + b * H, c_t + b * H, dr_a, dr_b,
                                         zh_t && !z.proj ? zh_t + b * Hout : nullptr,
                                         zc_t ? zc_t + b * H : nullptr, io.dc + b * H,
                                         dR_t + b * G, dP_t + b * G, r, acc, tmp);
      }
      barrier();  // all of dR[t] for every member's dh GEMM
      hh[k].gemm(B, dR_t, G, S(0), dh_nx + p0, Hout);  // dh_prev = dR W_hh
      finish_dh_prev(p0, pn, B, Hout, go_t, dh, m_t, in.rk, zh_t, dh_nx);
      barrier();
      std::swap(dh, dh_nx);
    }
  });
}

}  // namespace cpu
}  // namespace torchlstm
