// layer_norm_loops.h — the CPU time loops of a layer-normalised LSTM (layer_norm=True):
// forward and backward through time of one layer and direction, the maths of gate_math.h's
// ln_* functions, one thread team per sequence as in time_loops.h.
//
// What differs from the plain loops, and why. LN normalises whole rows (the 4H
// pre-activations of a batch row, its H cell states), so a step's gate pass needs every
// unit of a row at once: it runs by batch rows (member k its rows, whole: the row
// statistics are a thread's own, no cross-thread reduction). The GEMMs then either run
// on the member's rows too (team.h's ROWS, the default wherever each member has rows:
// every member an LSTM of its own rows, no barrier at all; measured at the headline
// size, T=100 B=32 I=128 H=256 on an Intel Xeon, inference 10.3 -> 9.6 ms, backward
// 24.5 -> 23.7 ms) or by columns of W_hh (UNITS: member k its contiguous slice of the 4H
// outputs, a barrier before the row pass and after it). Each member computes the
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

// The row passes' arguments of this call. With both biases, their sum, once, in
// bias_sum (the passes add one bias instead of two).
template <typename S>
LnArgs<S> ln_args(const LayerCall& call, const LoopInputs<S>& in, std::vector<S>& bias_sum) {
  const SavedLayout L = call.saved_layout();
  const S *b1 = in.b_ih, *b2 = in.b_hh;
  if (b1 && b2) {
    bias_sum.resize(4 * call.z.H);
    for (int64_t j = 0; j < 4 * call.z.H; ++j) bias_sum[j] = b1[j] + b2[j];
    b1 = bias_sum.data();
    b2 = nullptr;
  }
  return {call.ln.w_ih.data_ptr<S>(), call.ln.w_hh.data_ptr<S>(), call.ln.w_c.data_ptr<S>(),
          call.ln.b_c.data_ptr<S>(), b1 ? b1 : b2, b1 ? b2 : nullptr, in.pc,
          static_cast<S>(call.ln.eps), call.z.H, L.xhat_ih, L.xhat_hh, L.xhat_c, L.rstd_ih,
          L.rstd_hh, L.rstd_c};
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
  S* scratch;       // (nt, 2H) per member
};

// Forward loop of the layer-normalised LSTM (false: the team could not be had). Per step
// each member's input product x W_ih^T for its own batch rows (read by it alone: no
// barrier, and it stays in cache), the recurrent GEMM (units: by columns, then a barrier;
// rows: the member's rows), the gate pass by rows (each row normalises its own input and
// recurrent products), a barrier (units); with a projection then W_hr (by output
// columns and a third barrier, or the member's rows). Masks, zoneout, recurrent dropout
// and peepholes as in forward_loop_team.
template <typename S>
bool forward_loop_ln(int nt, const LayerCall& call, const LoopInputs<S>& in,
                     const LnForwardBuffers<S>& io) {
  const LayerSizes& z = call.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const SavedLayout L = call.saved_layout();
  const int64_t W = L.width;
  std::vector<S> bias_sum;
  const LnArgs<S> prm = ln::ln_args(call, in, bias_sum);
  using Vec = at::vec::Vectorized<S>;
  const bool pack = worth_packing(T, B);
  const bool by_rows = split_by_rows(nt, B, G * Hout * int64_t(sizeof(S)), 8);
  std::vector<Slice> rows(nt);
  std::vector<StepPart> rec(nt), prj(nt);  // each member's part of h W_hh^T, r W_hr^T
  std::vector<PackedA<S>> hh, hr, wi;
  hh.reserve(nt);
  hr.reserve(nt);
  wi.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    rows[k] = slice_of(B, nt, k, 1);
    rec[k] = step_part(by_rows, B, G, nt, k, Vec::size());
    const Slice& c = rec[k].cols;
    hh.emplace_back(kT, c.len, rec[k].rows.len, Hout, in.w_hh + c.begin * Hout, Hout, pack);
    wi.emplace_back(kT, G, rows[k].len, z.I, in.w_ih, z.I, pack);
    if (z.proj) {
      prj[k] = step_part(by_rows, B, Hout, nt, k, Vec::size());
      const Slice& o = prj[k].cols;
      hr.emplace_back(kT, o.len, prj[k].rows.len, H, in.w_hr + o.begin * H, H, pack);
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
      const Slice rr = rec[k].rows;
      hh[k].gemm(rr.len, h_in + rr.begin * Hout, Hout, S(0),
                 io.R + rr.begin * G + rec[k].cols.begin, G);
      split_barrier(by_rows);
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
      split_barrier(by_rows);
      if (z.proj) {  // on the member's part of (B, Hout): offsets of its first row
        const Slice pr = prj[k].rows, po = prj[k].cols;
        const int64_t ro = pr.begin * Hout;
        project_step(hr[k], po.begin, po.len, pr.len, H, Hout, io.r_ws + pr.begin * H,
                     h_prev + ro, m_t ? m_t + pr.begin : nullptr, zh_t ? zh_t + ro : nullptr,
                     out_t + ro);
        if (in.rk)
          recurrent_input(po.begin, po.len, pr.len, Hout, out_t + ro, in.rk + ro,
                          io.hk + ((s + 1) % 2) * B * Hout + ro);
        split_barrier(by_rows);
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

// Backward loop of the layer-normalised LSTM. Per step: with a projection dr = dh W_hr
// (and a barrier where split by units); the row pass by rows (dR, dP, the parameters'
// shares); a barrier (units); dh_prev = dR W_hh
// (units: by output columns; rows: the member's rows); a barrier (units). d h0 ends in
// dh_a after an even number of steps, in dh_b after an odd one, as in backward_loop_team.
template <typename S>
bool backward_loop_ln(int nt, const LayerCall& call, const LoopInputs<S>& in,
                      const LnBackwardBuffers<S>& io) {
  const LayerSizes& z = call.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const SavedLayout L = call.saved_layout();
  const int64_t W = L.width;
  std::vector<S> bias_sum;
  const LnArgs<S> prm = ln::ln_args(call, in, bias_sum);
  using Vec = at::vec::Vectorized<S>;
  const bool pack = worth_packing(T, B);
  const bool by_rows = split_by_rows(nt, B, G * Hout * int64_t(sizeof(S)), 8);
  std::vector<Slice> rows(nt);
  std::vector<StepPart> dhp(nt), drp(nt);  // each member's part of dR W_hh, dh W_hr
  std::vector<PackedA<S>> hh, hr;
  hh.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    rows[k] = slice_of(B, nt, k, 1);
    dhp[k] = step_part(by_rows, B, Hout, nt, k, Vec::size());
    const Slice& p = dhp[k].cols;
    hh.emplace_back(kN, p.len, dhp[k].rows.len, G, in.w_hh + p.begin, Hout, pack);
    if (z.proj) {
      drp[k] = step_part(by_rows, B, H, nt, k, Vec::size());
      const Slice& u = drp[k].cols;
      hr.emplace_back(kN, u.len, drp[k].rows.len, Hout, in.w_hr + u.begin, H, pack);
    }
  }
  const Activation act = call.act, ract = call.ract;
  const bool zone = in.zc || in.zh, peep = in.pc != nullptr;
  return run_team(nt, [&](int k) {
    S* a = io.acc + k * kLnAccWidth * H;
    const LnAcc<S> acc{a, a + 4 * H, a + 8 * H, a + 9 * H, a + 10 * H, a + 14 * H};
    S* tmp = io.scratch + k * kLnBackwardScratch * H;
    S* dh = io.dh_a;
    S* dh_nx = io.dh_b;
    // the member's part of dh_prev (B, Hout): its rows' offset, its columns
    const Slice dh_rows = dhp[k].rows;
    const int64_t ro = dh_rows.begin * Hout, p0 = dhp[k].cols.begin, pn = dhp[k].cols.len;
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
        projected_dh(p0, pn, dh_rows.len, Hout, go_t + ro, dh + ro, m_t ? m_t + dh_rows.begin : nullptr,
                     zh_t ? zh_t + ro : nullptr, dht + ro);
        split_barrier(by_rows);  // all of dh[t] for every member's dr
        const Slice dr = drp[k].rows;
        hr[k].gemm(dr.len, dht + dr.begin * Hout, Hout, S(0),
                   io.dr_ws + dr.begin * H + drp[k].cols.begin, H);
        split_barrier(by_rows);  // all of dr for the row pass
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
      split_barrier(by_rows);  // all of dR[t] for every member's dh GEMM
      hh[k].gemm(dh_rows.len, dR_t + dh_rows.begin * G, G, S(0), dh_nx + ro + p0,
                 Hout);  // dh_prev = dR W_hh
      finish_dh_prev(p0, pn, dh_rows.len, Hout, go_t + ro, dh + ro,
                     m_t ? m_t + dh_rows.begin : nullptr, in.rk ? in.rk + ro : nullptr,
                     zh_t ? zh_t + ro : nullptr, dh_nx + ro);
      split_barrier(by_rows);
      std::swap(dh, dh_nx);
    }
  });
}

}  // namespace cpu
}  // namespace torchlstm
