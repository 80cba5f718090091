// time_loops.h — the CPU time loops of one layer and direction: forward (training and
// inference) and backward through time, each run by ONE thread team for the whole
// sequence (team.h), with a barrier per step (none when split by batch rows:
// split_by_rows) and no allocation, dispatcher call or thread fork inside the loop. Per
// step: one GEMM per member for its slice of hidden units (blas.h, weights packed once)
// and the fused gate pass (row_dispatch.h).
//
// Masks (PackedSequence lengths, Keras masks): at a step where mask[t,b] is false the
// state of row b carries over unchanged (h, c) and output[t,b] holds that carried h.
// So `output` is always the sequence of h states and h_{t-1} of any step is the
// previous output row: the dW_hh GEMM needs no separate state history.
// Regularisers: Keras input dropout multiplies the input once (x * input_keep, before
// the input projection); recurrent dropout feeds h_{t-1} * recurrent_keep to the
// recurrent GEMM; zoneout blends c and h with their previous values in the fused pass.
// Nothing extra is saved: `cs` holds the blended c, and backward recomputes
// c~ = f c_prev + i g from the saved gates.
// Peephole connections (w_ch): the fused passes add p_i c_prev, p_f c_prev, p_o c to the
// pre-activations (saved with them); the gradient of w_ch is a reduction after the loop.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../layer_call.h"
#include "blas.h"
#include "row_dispatch.h"
#include "team.h"

namespace torchlstm {
namespace cpu {

constexpr bool kT = true;   // transpose (BLAS 'T')
constexpr bool kN = false;  // as is    (BLAS 'N')

// The data of an optional tensor (undefined: null), for the loops' raw pointers.
template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}
template <typename scalar_t>
scalar_t* mutable_data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// The call's tensors as the loops read them (null where absent); x is the input as W_ih
// sees it (after input dropout).
template <typename scalar_t>
struct LoopInputs {
  const scalar_t *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh, *w_hr;
  const bool* mask;
  const scalar_t *rk, *zh, *zc;  // recurrent_keep, zoneout_h, zoneout_c
  const scalar_t* pc;             // w_ch, the peephole weights (3H: i, f, o)
  LoopInputs(const LayerCall& c, const at::Tensor& x_dropped)
      : x(data_or_null<scalar_t>(x_dropped)),
        h0(data_or_null<scalar_t>(c.h0)),
        c0(data_or_null<scalar_t>(c.c0)),
        w_ih(data_or_null<scalar_t>(c.w_ih)),
        w_hh(data_or_null<scalar_t>(c.w_hh)),
        b_ih(data_or_null<scalar_t>(c.b_ih)),
        b_hh(data_or_null<scalar_t>(c.b_hh)),
        w_hr(data_or_null<scalar_t>(c.w_hr)),
        mask(c.mask.defined() ? c.mask.data_ptr<bool>() : nullptr),
        rk(data_or_null<scalar_t>(c.reg.recurrent_keep)),
        zh(data_or_null<scalar_t>(c.reg.zoneout_h)),
        zc(data_or_null<scalar_t>(c.reg.zoneout_c)),
        pc(data_or_null<scalar_t>(c.w_ch)) {}
};

// What the forward loop writes: out (T,B,Hout); c_state (B,H) c0 in, c_n out; r_ws (B,H)
// with a projection; gates (T,B,4H) and cs (T,B,H) in training (null in inference); hk
// (2,B,Hout) with recurrent dropout, h0 * rk in its first half.
template <typename scalar_t>
struct ForwardBuffers {
  scalar_t *out, *c_state, *r_ws, *gates, *cs, *hk;
};

// What the backward loop reads and writes: grad_out (T,B,Hout) and the saved gates and
// cs; dgates (T,B,4H); dh_a, dh_b (B,Hout) (grad_hn in dh_a on entry), dc (B,H) (grad_cn
// on entry, d c0 on return); with a projection dh_all (T,B,Hout), r_all (T,B,H), dr_ws (B,H).
template <typename scalar_t>
struct BackwardBuffers {
  const scalar_t *grad_out, *gates, *cs;
  scalar_t *dgates, *dh_a, *dh_b, *dc, *dh_all, *r_all, *dr_ws;
};

// Time index of processing step s.
inline int64_t time_of(int64_t s, int64_t T, bool reverse) { return reverse ? T - 1 - s : s; }

// Smallest slice of hidden units worth a thread of its own.
constexpr int64_t kMinUnitsPerThread = 32;

// Threads for a sequence of these sizes. Below about 65 thousand multiply-adds per step
// waking a second thread and meeting it at a barrier every step costs more than it
// saves. Measured on an AMD EPYC (Zen 4, 2 cores; nn.LSTM / torchlstm in the same run,
// three runs): B=1, H=128 (65 thousand) inference 1.05-1.11 with one thread, 1.33-1.35
// with two (each streams half of W_hh from its own L2); B=4, H=64 0.90-1.06 -> 1.47-2.02;
// B=1, H=64 (16 thousand) 1.91-2.24 with one, 1.73-2.16 with two. A few steps (the
// LSTMCell's one) stay on one thread up to 250 thousand: waking the team costs more than
// the steps (measured earlier at B=1, H=128: a one-step call 50 us cheaper on one).
inline int threads_for(const LayerSizes& z) {
  const int64_t macs_per_step = 4 * z.H * z.Hout * z.B;
  if (macs_per_step < (int64_t(1) << 16)) return 1;
  if (z.T < 8 && macs_per_step < (int64_t(1) << 18)) return 1;
  return team_size(std::min(z.H, z.Hout), kMinUnitsPerThread);
}

// Whether packing the recurrent weights once pays for itself over the sequence: packing
// costs about as much as 40 steps' savings at batch 1, 3 at batch 32 (measured with
// MKL on the benchmark machine), so short sequences and the cell op skip it.
inline bool worth_packing(int64_t T, int64_t B) { return T * std::min<int64_t>(B, 8) >= 64; }

// Whether a team of nt splits the time loops' steps by batch rows (team.h's ROWS: every
// member an LSTM of its own rows, no barrier at all, each with all of W_hh) rather than
// by units (UNITS). AUTO takes ROWS where every member has at least min_rows rows and
// W_hh takes at most half of a core's L2. Measured on an Intel Xeon (L2 2 MiB; ms,
// units -> rows, T=100 I=128 H=256: W_hh 1 MiB):
//  - layer norm (min_rows 8; its input product is per step and row either way),
//    inference / backward: B=32 10.4 / 25.7 -> 10.0 / 24.5, B=16 5.5 / 13.1 -> 5.2 /
//    12.4, B=8 4.0 / 6.3 -> 5.8 / 6.1 (4 rows: the matrix-vector loop); H=512 (W_hh
//    4 MiB) B=32 27.9 / 52.9 -> 27.7 / 54.2, B=64 36.8 / 82.3 -> 37.3 / 84.4;
//  - plain forward (min_rows 16: by rows the input projection is one product per step,
//    not per chunk of steps): 2 layers bidirectional, B=16, I=H=256 (8 rows each)
//    inference 17.1 -> 18.7; plain backward (min_rows 8). Both, inference /
//    forward+backward: B=32 9.66 / 33.3 -> 9.15 / 31.8; T=50 B=16 I=H=256 forward+
//    backward 11.5 -> 11.1; the bidirectional one 56.2 -> 55.3.
inline bool split_by_rows(int nt, int64_t B, int64_t w_hh_bytes, int64_t min_rows) {
  switch (team_split()) {
    case TeamSplit::UNITS:
      return false;
    case TeamSplit::ROWS:
      return true;
    default:
      return nt > 1 && B >= min_rows * nt && 2 * w_hh_bytes <= l2_cache_bytes();
  }
}

// The per-step pieces both loop families (these plain ones and layer_norm_loops.h) share,
// each over one member's slice [o0, o0 + on) of the Hout outputs of every batch row.
//
// Forward, with a projection: out_t = r W_hr^T on the slice, then h's zoneout blend and
// the masked rows' carried h (m_t, zh_t null when off).
template <typename S>
inline void project_step(const PackedA<S>& hr, int64_t o0, int64_t on, int64_t B, int64_t H,
                         int64_t Hout, const S* r_ws, const S* h_prev, const bool* m_t,
                         const S* zh_t, S* out_t) {
  hr.gemm(B, r_ws, H, S(0), out_t + o0, Hout);
  for (int64_t b = 0; zh_t && b < B; ++b)
    if (!m_t || m_t[b])
      blend_row(on, zh_t + b * Hout + o0, h_prev + b * Hout + o0, out_t + b * Hout + o0);
  for (int64_t b = 0; m_t && b < B; ++b)
    if (!m_t[b]) std::memcpy(out_t + b * Hout + o0, h_prev + b * Hout + o0, on * sizeof(S));
}

// Forward, recurrent dropout: the next step's GEMM input h_t * rk on the slice.
template <typename S>
inline void recurrent_input(int64_t o0, int64_t on, int64_t B, int64_t Hout, const S* out_t,
                            const S* rk, S* hk_next) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = o0; i < o0 + on; ++i) hk_next[b * Hout + i] = out_t[b * Hout + i] * rk[b * Hout + i];
}

// Backward, with a projection: dht = the total gradient reaching h_t (go_t from the
// output, dh from the next step), times 1 - zh where zoneout of h is on (the part that
// reaches h~; masked rows pass it all through).
template <typename S>
inline void projected_dh(int64_t o0, int64_t on, int64_t B, int64_t Hout, const S* go_t,
                         const S* dh, const bool* m_t, const S* zh_t, S* dht) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = o0; i < o0 + on; ++i) dht[b * Hout + i] = go_t[b * Hout + i] + dh[b * Hout + i];
  for (int64_t b = 0; zh_t && b < B; ++b) {
    if (m_t && !m_t[b]) continue;
    for (int64_t i = o0; i < o0 + on; ++i) dht[b * Hout + i] *= S(1) - zh_t[b * Hout + i];
  }
}

// Backward, after dh_prev = d(recurrent product) W_hh on the slice: the masked rows'
// carried gradient, recurrent dropout's scale, zoneout's direct path to h_{t-1}.
template <typename S>
inline void finish_dh_prev(int64_t o0, int64_t on, int64_t B, int64_t Hout, const S* go_t,
                           const S* dh, const bool* m_t, const S* rk, const S* zh_t, S* dh_prev) {
  for (int64_t b = 0; (m_t || rk || zh_t) && b < B; ++b) {
    S* d = dh_prev + b * Hout;
    const S* go = go_t + b * Hout;
    const S* dl = dh + b * Hout;
    if (m_t && !m_t[b]) {  // masked rows: h carried, and its gradient
      for (int64_t i = o0; i < o0 + on; ++i) d[i] = go[i] + dl[i];
      continue;
    }
    if (rk)  // the GEMM read h_prev * rk
      for (int64_t i = o0; i < o0 + on; ++i) d[i] *= rk[b * Hout + i];
    if (zh_t)  // h_t = z h_prev + (1 - z) h~
      for (int64_t i = o0; i < o0 + on; ++i) d[i] += zh_t[b * Hout + i] * (go[i] + dl[i]);
  }
}

// The forward time loop, run by a team of nt threads (false: the team could not be had).
// Split by units (by rows, the same with "units" read as all units of the member's batch
// rows, and no barrier at all: split_by_rows):
// Member k owns hidden units u[k] (and, with a projection, outputs p[k]) outright: it
// computes their input projection itself, a chunk of steps at a time into a cache-sized
// buffer, adds the recurrent product of each step into the same buffer (its rows of W_hh,
// the four gates of its units, gathered into one matrix and packed once: ONE GEMM per
// member per step), and keeps its units' c in place in c_state. The team meets at a
// barrier once per step (twice with a projection). Training also stores the gate
// pre-activations (gates, (T,B,4H)) and the cell states (cs, (T,B,H)) for backward;
// inference passes null there and writes nothing of size T x 4H at all.
// Regularisers (each null when absent): x already carries the input dropout. rk (B,Hout)
// the recurrent dropout: the recurrent GEMM reads h_prev * rk from hk, two (B,Hout)
// buffers used in turn (step s reads hk[s%2], which holds h0 * rk at s = 0, and each
// member writes its own slice of the product for the next step into the other one).
// zh (T,B,Hout), zc (T,B,H): zoneout's z; the blended c is what c_state and cs hold,
// and the blended h what out holds (masked steps carry the state over all the same).
template <typename scalar_t>
bool forward_loop_team(int nt, const LayerCall& call, const LoopInputs<scalar_t>& in,
                       const ForwardBuffers<scalar_t>& io) {
  const LayerSizes& z = call.z;
  const bool reverse = call.reverse;
  const Activation act = call.act, ract = call.ract;
  const scalar_t *x = in.x, *h0 = in.h0, *w_ih = in.w_ih, *w_hh = in.w_hh, *b_ih = in.b_ih,
                 *b_hh = in.b_hh, *w_hr = in.w_hr, *rk = in.rk, *zh = in.zh, *zc = in.zc,
                 *pc = in.pc;
  const bool* mask = in.mask;
  scalar_t *out = io.out, *c_state = io.c_state, *r_ws = io.r_ws, *gates = io.gates,
           *cs = io.cs, *hk = io.hk;
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t T = z.T, B = z.B, H = z.H, I = z.I, Hout = z.Hout;
  const bool pack = worth_packing(T, B);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto w_hh_t = at::from_blob(const_cast<scalar_t*>(w_hh), {4, H, Hout}, opts);
  auto w_ih_t = at::from_blob(const_cast<scalar_t*>(w_ih), {4, H, I}, opts);
  // Member k: hidden units u[k] of batch rows r[k] (UNITS: its units of every row; ROWS:
  // every unit of its rows, no barrier), outputs p[k] of rows pr[k] with a projection.
  const bool by_rows = split_by_rows(nt, B, 4 * H * Hout * int64_t(sizeof(scalar_t)), 16);
  std::vector<Slice> u(nt), r(nt), p(nt), pr(nt);
  std::vector<at::Tensor> w_k(nt), wi_k(nt), buf(nt);
  std::vector<PackedA<scalar_t>> hh, wi, hr;
  std::vector<int64_t> chunk(nt);
  hh.reserve(nt);
  wi.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    const StepPart part = step_part(by_rows, B, H, nt, k, Vec::size());
    u[k] = part.cols;
    r[k] = part.rows;
    const int64_t n4 = 4 * u[k].len, nb = r[k].len;
    // steps per chunk: the member's buffer stays around 256 KB (in L2)
    chunk[k] = std::max<int64_t>(
        1, std::min<int64_t>(T, (int64_t(1) << 18) /
                                    (int64_t(sizeof(scalar_t)) * std::max<int64_t>(nb, 1) * n4)));
    w_k[k] = w_hh_t.narrow(1, u[k].begin, u[k].len).reshape({n4, Hout});
    wi_k[k] = w_ih_t.narrow(1, u[k].begin, u[k].len).reshape({n4, I});
    hh.emplace_back(kT, n4, nb, Hout, w_k[k].template data_ptr<scalar_t>(), Hout, pack);
    // (by rows a chunk's rows are not one matrix: one product per step of the chunk)
    wi.emplace_back(kT, n4, (by_rows ? 1 : chunk[k]) * nb, I,
                    wi_k[k].template data_ptr<scalar_t>(), I, pack);
    buf[k] = at::empty({chunk[k] * nb * n4}, opts);
    if (z.proj) {
      const StepPart pp = step_part(by_rows, B, Hout, nt, k, Vec::size());
      p[k] = pp.cols;
      pr[k] = pp.rows;
      hr.emplace_back(kT, p[k].len, pr[k].len, H, w_hr + p[k].begin * H, H, pack);
    }
  }
  return run_team(nt, [&](int k) {
    const int64_t j0 = u[k].begin, n = u[k].len, n4 = 4 * n, Tc = chunk[k];
    const int64_t b0 = r[k].begin, nb = r[k].len;
    scalar_t* g = buf[k].template data_ptr<scalar_t>();  // (Tc, nb, 4n): gate q of unit j at q*n + j
    int64_t t_lo = 0;  // first time index held in the buffer
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = time_of(s, T, reverse);
      const int64_t tp = time_of(s - 1, T, reverse);
      if (s % Tc == 0) {  // the next chunk's input projections, own units of own rows
        const int64_t len = std::min(Tc, T - s);
        t_lo = reverse ? t - len + 1 : t;
        if (!by_rows) wi[k].gemm(len * B, x + t_lo * B * I, I, scalar_t(0), g, n4);
        for (int64_t q = 0; by_rows && q < len; ++q)
          wi[k].gemm(nb, x + ((t_lo + q) * B + b0) * I, I, scalar_t(0), g + q * nb * n4, n4);
      }
      const scalar_t* h_prev = s == 0 ? h0 : out + tp * B * Hout;
      const scalar_t* h_in = rk ? hk + (s % 2) * B * Hout : h_prev;  // the GEMM's h
      scalar_t* g_t = g + (t - t_lo) * nb * n4;  // row b at (b - b0) * n4
      scalar_t* out_t = out + t * B * Hout;
      scalar_t* r_t = z.proj ? r_ws : out_t;
      const bool* m_t = mask ? mask + t * B : nullptr;
      const scalar_t* zh_t = zh ? zh + t * B * Hout : nullptr;
      const scalar_t* zc_t = zc ? zc + t * B * H : nullptr;

      hh[k].gemm(nb, h_in + b0 * Hout, Hout, scalar_t(1), g_t, n4);  // += h_prev W_k^T
      for (int64_t b = b0; b < b0 + nb; ++b) {
        scalar_t* c = c_state + b * H + j0;  // c_prev in, c out: own units, in place
        scalar_t* r = r_t + b * H + j0;
        scalar_t* g_save = gates ? gates + (t * B + b) * 4 * H + j0 : nullptr;
        scalar_t* c_save = cs ? cs + (t * B + b) * H + j0 : nullptr;
        if (m_t && !m_t[b]) {  // masked step: the state carries over
          if (z.proj) std::memset(r, 0, n * sizeof(scalar_t));
          else std::memcpy(r, h_prev + b * Hout + j0, n * sizeof(scalar_t));
          if (c_save) std::memcpy(c_save, c, n * sizeof(scalar_t));
          for (int64_t q = 0; g_save && q < 4; ++q)  // never read; defined all the same
            std::memset(g_save + q * H, 0, n * sizeof(scalar_t));
          continue;
        }
        forward_row<scalar_t>(act, ract, zc_t ? zc_t + b * H + j0 : nullptr,
                              pc ? pc + j0 : nullptr, n, H,
                              g_t + (b - b0) * n4, b_ih ? b_ih + j0 : nullptr,
                              b_hh ? b_hh + j0 : nullptr, c, r, g_save, c_save);
        if (zh_t && !z.proj) blend_row(n, zh_t + b * Hout + j0, h_prev + b * Hout + j0, r);
      }
      if (z.proj) {  // on the member's part of (B, Hout): offsets of its first row
        split_barrier(by_rows);
        const int64_t ro = pr[k].begin * Hout;
        project_step(hr[k], p[k].begin, p[k].len, pr[k].len, H, Hout, r_ws + pr[k].begin * H,
                     h_prev + ro, m_t ? m_t + pr[k].begin : nullptr, zh_t ? zh_t + ro : nullptr,
                     out_t + ro);
      }
      if (rk) {  // the next step's GEMM input, this member's part of h
        const Slice h_rows = z.proj ? pr[k] : r[k];
        const int64_t ro = h_rows.begin * Hout;
        recurrent_input(z.proj ? p[k].begin : j0, z.proj ? p[k].len : n, h_rows.len, Hout,
                        out_t + ro, rk + ro, hk + ((s + 1) % 2) * B * Hout + ro);
      }
      split_barrier(by_rows);
    }
  });
}

// The backward time loop, run by a team of nt threads. dh_a holds grad_hn on entry; d h0
// ends in dh_a after an even number of steps, in dh_b after an odd one (the buffers
// ping-pong). dc holds grad_cn on entry and d c0 on return.
// Regularisers (null when absent): rk (B,Hout) scales the recurrent GEMM's dh_prev;
// zh (T,B,Hout): of the gradient dh reaching h_t, (1 - z) dh reaches h~ (r, or the
// projection) and z dh goes straight to h_{t-1}; zc (T,B,H): see backward_row.
template <typename scalar_t>
bool backward_loop_team(int nt, const LayerCall& call, const LoopInputs<scalar_t>& in,
                        const BackwardBuffers<scalar_t>& io) {
  const LayerSizes& z = call.z;
  const bool reverse = call.reverse;
  const Activation act = call.act, ract = call.ract;
  const scalar_t *c0 = in.c0, *w_hh = in.w_hh, *w_hr = in.w_hr, *rk = in.rk, *zh = in.zh,
                 *zc = in.zc, *pc = in.pc;
  const bool* mask = in.mask;
  const scalar_t *grad_out = io.grad_out, *gates = io.gates, *cs = io.cs;
  scalar_t *dgates = io.dgates, *dh_a = io.dh_a, *dh_b = io.dh_b, *dc = io.dc,
           *dh_all = io.dh_all, *r_all = io.r_all, *dr_ws = io.dr_ws;
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  // Member k owns hidden units u[k] (gate pass, dr) and h units p[k] (dh GEMM):
  //   dh_prev^T rows p = (W_hh columns p)^T . dgates[t]^T     (needs all of dgates[t])
  //   dr^T rows u      = (W_hr columns u)^T . dh^T            (needs all of dh)
  // (ROWS: every unit and output of the member's batch rows r[k], no barrier)
  const bool pack = worth_packing(T, B);
  const bool by_rows = split_by_rows(nt, B, G * Hout * int64_t(sizeof(scalar_t)), 8);
  std::vector<Slice> u(nt), p(nt), r(nt);
  std::vector<PackedA<scalar_t>> hh, hr;
  hh.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    const StepPart pu = step_part(by_rows, B, H, nt, k, Vec::size());
    const StepPart pp = step_part(by_rows, B, Hout, nt, k, Vec::size());
    u[k] = pu.cols;
    p[k] = pp.cols;
    r[k] = pu.rows;
    hh.emplace_back(kN, p[k].len, r[k].len, G, w_hh + p[k].begin, Hout, pack);
    if (z.proj) hr.emplace_back(kN, u[k].len, r[k].len, Hout, w_hr + u[k].begin, H, pack);
  }
  return run_team(nt, [&](int k) {
    const int64_t j0 = u[k].begin, n = u[k].len, p0 = p[k].begin, pn = p[k].len;
    const int64_t b0 = r[k].begin, nb = r[k].len, ro = b0 * Hout;
    scalar_t* dh = dh_a;     // gradient reaching h of the current step from later steps
    scalar_t* dh_nx = dh_b;  // ... and of the step before it
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = time_of(s, T, reverse);
      const int64_t tp = time_of(s - 1, T, reverse);
      const scalar_t* c_prev = s == 0 ? c0 : cs + tp * B * H;
      const scalar_t* g_t = gates + t * B * G;
      const scalar_t* c_t = cs + t * B * H;
      const scalar_t* go_t = grad_out + t * B * Hout;
      scalar_t* dg_t = dgates + t * B * G;
      scalar_t* dht = z.proj ? dh_all + t * B * Hout : nullptr;  // total dh, for dW_hr
      const bool* m_t = mask ? mask + t * B : nullptr;
      const scalar_t* zh_t = zh ? zh + t * B * Hout : nullptr;
      const scalar_t* zc_t = zc ? zc + t * B * H : nullptr;

      const bool* m_r = m_t ? m_t + b0 : nullptr;  // the member's rows from here
      const scalar_t* zh_r = zh_t ? zh_t + ro : nullptr;
      if (z.proj) {
        projected_dh(p0, pn, nb, Hout, go_t + ro, dh + ro, m_r, zh_r, dht + ro);
        split_barrier(by_rows);  // all of dh[t] is needed by every member's dr
        hr[k].gemm(nb, dht + ro, Hout, scalar_t(0), dr_ws + b0 * H + j0, H);  // dr = dh W_hr
      }
      for (int64_t b = b0; b < b0 + nb; ++b) {
        scalar_t* dg = dg_t + b * G + j0;
        if (m_t && !m_t[b]) {  // masked: no gate gradient, dc passes through
          for (int64_t q = 0; q < 4; ++q) std::memset(dg + q * H, 0, n * sizeof(scalar_t));
          if (z.proj) std::memset(r_all + (t * B + b) * H + j0, 0, n * sizeof(scalar_t));
          continue;
        }
        const scalar_t* dr_a = z.proj ? dr_ws + b * H + j0 : go_t + b * Hout + j0;
        const scalar_t* dr_b = z.proj ? nullptr : dh + b * Hout + j0;
        backward_row<scalar_t>(act, ract, zc_t ? zc_t + b * H + j0 : nullptr,
                               zh_t && !z.proj ? zh_t + b * Hout + j0 : nullptr,
                               pc ? pc + j0 : nullptr, n, H,
                               g_t + b * G + j0, c_prev + b * H + j0, c_t + b * H + j0, dr_a,
                               dr_b, dc + b * H + j0, dg,
                               z.proj ? r_all + (t * B + b) * H + j0 : static_cast<scalar_t*>(nullptr));
      }
      split_barrier(by_rows);  // all of dgates[t] is needed by every member's dh GEMM
      hh[k].gemm(nb, dg_t + b0 * G, G, scalar_t(0), dh_nx + ro + p0, Hout);  // dgates[t] W_hh
      finish_dh_prev(p0, pn, nb, Hout, go_t + ro, dh + ro, m_r, rk ? rk + ro : nullptr, zh_r,
                     dh_nx + ro);
      split_barrier(by_rows);  // dh_prev complete, and every read of dh done, before the swap
      std::swap(dh, dh_nx);
    }
  });
}

}  // namespace cpu
}  // namespace torchlstm
