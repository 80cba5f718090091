// lstm_cpu.cpp — the CPU kernels of the torchlstm ops.
//
// One direction of one layer over a whole sequence, forward and backward through time,
// in C++. The structure (the CUDA kernels, cuda/lstm_cuda.cu, follow it):
//   forward:  input projection x W_ih^T        GEMMs over chunks of steps (T*B rows in all)
//             per step: + h W_hh^T             one GEMM (BLAS called directly, blas.h: no
//                                              dispatcher round-trip, no allocation)
//                       fused pass: bias, 4 gates, c, r = o*act(c) (gate_math.h)
//                       [projection: h = r W_hr^T, one GEMM]
//             all of it split over one thread team by hidden units (team.h)
//   backward: per step: fused pass: gate derivatives, dc carried to t-1
//                       dh = dgates W_hh       one GEMM
//             dW_ih, dW_hh, dW_hr, db, dx: a few large GEMMs / one reduction after
//             the loop, over all T*B rows at once.
// Saved for backward: the gate pre-activations (T,B,4H), the cell states (T,B,H) and
// the output (the h states). Activations are recomputed from pre-activations in
// backward, which keeps every activation's derivative exact (not only those that can
// be written in terms of their output).
//
// Masks (PackedSequence lengths, Keras masks): at a step where mask[t,b] is false the
// state of row b carries over unchanged (h, c) and output[t,b] holds that carried h.
// So `output` is always the sequence of h states and h_{t-1} of any step is the
// previous output row: the dW_hh GEMM needs no separate state history.
//
// Regularisers (optional, see ops.cpp): Keras input dropout multiplies the input once
// (x * input_keep, before the input projection; backward scales dx and uses the same
// product for dW_ih); recurrent dropout feeds h_{t-1} * recurrent_keep to the recurrent
// GEMM (backward scales its dh and recomputes the product for dW_hh); zoneout blends
// c and h with their previous values in the fused pass. Nothing extra is saved: `cs`
// holds the blended c, and backward recomputes c~ = f c_prev + i g from the saved gates.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "../gate_math.h"
#include "../layer_common.h"
#include "../lstm_args.h"
#include "blas.h"
#include "gates_avx512.h"
#include "host_cache.h"
#include "row_passes.h"
#include "team.h"
#include "vec_math.h"

namespace torchlstm {
namespace {

constexpr bool kT = true;   // transpose (BLAS 'T')
constexpr bool kN = false;  // as is    (BLAS 'N')

// n units of one batch row in the forward pass (arguments: row_passes.h): SIMD vectors
// first (16 lanes with AVX-512 for the default pair in float32, else ATen's vectors),
// then the tail.
template <typename scalar_t, bool kDefaultPair, bool kZc>
inline void forward_row_impl(Activation act_, Activation ract_, const scalar_t* zc, int64_t n,
                             int64_t H, const scalar_t* a, const scalar_t* b1,
                             const scalar_t* b2, scalar_t* c, scalar_t* r, scalar_t* g_save,
                             scalar_t* c_save) {
  const Activation act = kDefaultPair ? Activation::TANH : act_;  // see DEFAULT_PAIR below
  const Activation ract = kDefaultPair ? Activation::SIGMOID : ract_;
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;  // the default pair in float32: 16 units at a time where the CPU can
  if constexpr (kDefaultPair && !kZc && std::is_same<scalar_t, float>::value)
    if (cpu::use_avx512()) j = cpu::forward_row_default_avx512(n, H, a, b1, b2, c, r, g_save, c_save);
  j = cpu::forward_rows_vec<Vec, kZc>(act, ract, zc, j, n, H, a, b1, b2, c, r, g_save, c_save);
  for (; j < n; ++j) {
    scalar_t v[4];
    for (int q = 0; q < 4; ++q) {
      v[q] = a[q * n + j] + (b1 ? b1[q * H + j] : scalar_t(0)) + (b2 ? b2[q * H + j] : scalar_t(0));
      if (g_save) g_save[q * H + j] = v[q];
    }
    CellForward<scalar_t> o;
    if constexpr (kZc)
      o = cell_forward_zoneout<scalar_t>(act, ract, v[0], v[1], v[2], v[3], c[j], zc[j]);
    else
      o = cell_forward<scalar_t>(act, ract, v[0], v[1], v[2], v[3], c[j]);
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
template <typename scalar_t, bool kDefaultPair, bool kZone>
inline void backward_row_impl(Activation act_, Activation ract_, const scalar_t* zc,
                              const scalar_t* zh, int64_t n, int64_t H, const scalar_t* g,
                              const scalar_t* c_prev, const scalar_t* c, const scalar_t* dr_a,
                              const scalar_t* dr_b, scalar_t* dc, scalar_t* dg, scalar_t* r) {
  const Activation act = kDefaultPair ? Activation::TANH : act_;
  const Activation ract = kDefaultPair ? Activation::SIGMOID : ract_;
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;  // the default pair in float32: 16 units at a time where the CPU can
  if constexpr (kDefaultPair && !kZone && std::is_same<scalar_t, float>::value)
    if (cpu::use_avx512())
      j = cpu::backward_row_default_avx512(n, H, g, c_prev, c, dr_a, dr_b, dc, dg, r);
  j = cpu::backward_rows_vec<Vec, kZone>(act, ract, zc, zh, j, n, H, g, c_prev, c, dr_a, dr_b, dc,
                                         dg, r);
  for (; j < n; ++j) {
    scalar_t dr = dr_b ? dr_a[j] + dr_b[j] : dr_a[j];
    CellBackward<scalar_t> o;
    if constexpr (kZone) {
      if (zh) dr = dr * (scalar_t(1) - zh[j]);
      if (zc)
        o = cell_backward_zoneout<scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j],
                                            g[3 * H + j], c_prev[j], dr, dc[j], zc[j]);
    }
    if (!kZone || !zc)
      o = cell_backward<scalar_t>(act, ract, g[j], g[H + j], g[2 * H + j], g[3 * H + j],
                                  c_prev[j], c[j], dr, dc[j]);
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
// gate_math.h fold away; every other pair takes the switch. Zoneout has instantiations
// of its own, so the path without it is exactly what it was.
template <typename scalar_t, typename... Args>
inline void forward_row(Activation act, Activation ract, const scalar_t* zc, Args... args) {
  const bool pair = act == Activation::TANH && ract == Activation::SIGMOID;
  if (zc) {
    if (pair) forward_row_impl<scalar_t, true, true>(act, ract, zc, args...);
    else forward_row_impl<scalar_t, false, true>(act, ract, zc, args...);
  } else {
    if (pair) forward_row_impl<scalar_t, true, false>(act, ract, zc, args...);
    else forward_row_impl<scalar_t, false, false>(act, ract, zc, args...);
  }
}

template <typename scalar_t, typename... Args>
inline void backward_row(Activation act, Activation ract, const scalar_t* zc,
                         const scalar_t* zh, Args... args) {
  const bool pair = act == Activation::TANH && ract == Activation::SIGMOID;
  if (zc || zh) {
    if (pair) backward_row_impl<scalar_t, true, true>(act, ract, zc, zh, args...);
    else backward_row_impl<scalar_t, false, true>(act, ract, zc, zh, args...);
  } else {
    if (pair) backward_row_impl<scalar_t, true, false>(act, ract, zc, zh, args...);
    else backward_row_impl<scalar_t, false, false>(act, ract, zc, zh, args...);
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

// Time index of processing step s.
inline int64_t time_of(int64_t s, int64_t T, bool reverse) { return reverse ? T - 1 - s : s; }

// Smallest slice of hidden units worth a thread of its own.
constexpr int64_t kMinUnitsPerThread = 32;

// Threads for a sequence of these sizes. Below about 250 thousand multiply-adds per step
// (B=1, H=128 is 65 thousand) waking a second thread and meeting it at a barrier every
// step costs more than it saves: measured at B=1, H=128, one thread is 5-10% faster and
// a one-step call 50 us cheaper; at B=1, H=256 two threads win (each streams half of
// W_hh from its own L2).
inline int threads_for(const LayerSizes& z) {
  const int64_t macs_per_step = 4 * z.H * z.Hout * z.B;
  if (macs_per_step < (int64_t(1) << 18)) return 1;
  return cpu::team_size(std::min(z.H, z.Hout), kMinUnitsPerThread);
}

// Whether packing the recurrent weights once pays for itself over the sequence: packing
// costs about as much as 40 steps' savings at batch 1, 3 at batch 32 (measured with
// MKL on the benchmark machine), so short sequences and the cell op skip it.
inline bool worth_packing(int64_t T, int64_t B) { return T * std::min<int64_t>(B, 8) >= 64; }

// The forward time loop, run by a team of nt threads (false: the team could not be had).
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
bool forward_loop_team(int nt, const LayerSizes& z, bool reverse, Activation act,
                       Activation ract, const scalar_t* x, const scalar_t* h0,
                       const scalar_t* w_ih, const scalar_t* w_hh, const scalar_t* b_ih,
                       const scalar_t* b_hh, const scalar_t* w_hr, const bool* mask,
                       scalar_t* out, scalar_t* c_state, scalar_t* r_ws, scalar_t* gates,
                       scalar_t* cs, const scalar_t* rk, scalar_t* hk, const scalar_t* zh,
                       const scalar_t* zc) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t T = z.T, B = z.B, H = z.H, I = z.I, Hout = z.Hout;
  const bool pack = worth_packing(T, B);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto w_hh_t = at::from_blob(const_cast<scalar_t*>(w_hh), {4, H, Hout}, opts);
  auto w_ih_t = at::from_blob(const_cast<scalar_t*>(w_ih), {4, H, I}, opts);
  std::vector<cpu::Slice> u(nt), p(nt);
  std::vector<at::Tensor> w_k(nt), wi_k(nt), buf(nt);
  std::vector<cpu::PackedA<scalar_t>> hh, wi, hr;
  std::vector<int64_t> chunk(nt);
  hh.reserve(nt);
  wi.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    u[k] = cpu::slice_of(H, nt, k, Vec::size());
    const int64_t n4 = 4 * u[k].len;
    // steps per chunk: the member's buffer stays around 256 KB (in L2)
    chunk[k] = std::max<int64_t>(1, std::min<int64_t>(T, (int64_t(1) << 18) /
                                                              (int64_t(sizeof(scalar_t)) * B * n4)));
    w_k[k] = w_hh_t.narrow(1, u[k].begin, u[k].len).reshape({n4, Hout});
    wi_k[k] = w_ih_t.narrow(1, u[k].begin, u[k].len).reshape({n4, I});
    hh.emplace_back(kT, n4, B, Hout, w_k[k].template data_ptr<scalar_t>(), Hout, pack);
    wi.emplace_back(kT, n4, chunk[k] * B, I, wi_k[k].template data_ptr<scalar_t>(), I, pack);
    buf[k] = at::empty({chunk[k] * B * n4}, opts);
    if (z.proj) {
      p[k] = cpu::slice_of(Hout, nt, k, Vec::size());
      hr.emplace_back(kT, p[k].len, B, H, w_hr + p[k].begin * H, H, pack);
    }
  }
  return cpu::run_team(nt, [&](int k) {
    const int64_t j0 = u[k].begin, n = u[k].len, n4 = 4 * n, Tc = chunk[k];
    scalar_t* g = buf[k].template data_ptr<scalar_t>();  // (Tc, B, 4n): gate q of unit j at q*n + j
    int64_t t_lo = 0;  // first time index held in the buffer
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = time_of(s, T, reverse);
      const int64_t tp = time_of(s - 1, T, reverse);
      if (s % Tc == 0) {  // the next chunk's input projections, own units
        const int64_t len = std::min(Tc, T - s);
        t_lo = reverse ? t - len + 1 : t;
        wi[k].gemm(len * B, x + t_lo * B * I, I, scalar_t(0), g, n4);
      }
      const scalar_t* h_prev = s == 0 ? h0 : out + tp * B * Hout;
      const scalar_t* h_in = rk ? hk + (s % 2) * B * Hout : h_prev;  // the GEMM's h
      scalar_t* g_t = g + (t - t_lo) * B * n4;
      scalar_t* out_t = out + t * B * Hout;
      scalar_t* r_t = z.proj ? r_ws : out_t;
      const bool* m_t = mask ? mask + t * B : nullptr;
      const scalar_t* zh_t = zh ? zh + t * B * Hout : nullptr;
      const scalar_t* zc_t = zc ? zc + t * B * H : nullptr;

      hh[k].gemm(B, h_in, Hout, scalar_t(1), g_t, n4);  // += h_prev W_k^T
      for (int64_t b = 0; b < B; ++b) {
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
        forward_row<scalar_t>(act, ract, zc_t ? zc_t + b * H + j0 : nullptr, n, H,
                              g_t + b * n4, b_ih ? b_ih + j0 : nullptr,
                              b_hh ? b_hh + j0 : nullptr, c, r, g_save, c_save);
        if (zh_t && !z.proj) blend_row(n, zh_t + b * Hout + j0, h_prev + b * Hout + j0, r);
      }
      if (z.proj) {
        cpu::barrier();
        const int64_t p0 = p[k].begin, pn = p[k].len;
        hr[k].gemm(B, r_ws, H, scalar_t(0), out_t + p0, Hout);
        for (int64_t b = 0; zh_t && b < B; ++b)
          if (!m_t || m_t[b])
            blend_row(pn, zh_t + b * Hout + p0, h_prev + b * Hout + p0, out_t + b * Hout + p0);
        for (int64_t b = 0; m_t && b < B; ++b)
          if (!m_t[b])
            std::memcpy(out_t + b * Hout + p0, h_prev + b * Hout + p0, pn * sizeof(scalar_t));
      }
      if (rk) {  // the next step's GEMM input, this member's slice of h
        const int64_t o0 = z.proj ? p[k].begin : j0, on = z.proj ? p[k].len : n;
        scalar_t* hk_next = hk + ((s + 1) % 2) * B * Hout;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = o0; i < o0 + on; ++i)
            hk_next[b * Hout + i] = out_t[b * Hout + i] * rk[b * Hout + i];
      }
      cpu::barrier();
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
bool backward_loop_team(int nt, const LayerSizes& z, bool reverse, Activation act,
                        Activation ract, const scalar_t* grad_out, const scalar_t* c0,
                        const scalar_t* w_hh, const scalar_t* w_hr, const bool* mask,
                        const scalar_t* gates, const scalar_t* cs, scalar_t* dgates,
                        scalar_t* dh_a, scalar_t* dh_b, scalar_t* dc, scalar_t* dh_all,
                        scalar_t* r_all, scalar_t* dr_ws, const scalar_t* rk,
                        const scalar_t* zh, const scalar_t* zc) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  // Member k owns hidden units u[k] (gate pass, dr) and h units p[k] (dh GEMM):
  //   dh_prev^T rows p = (W_hh columns p)^T . dgates[t]^T     (needs all of dgates[t])
  //   dr^T rows u      = (W_hr columns u)^T . dh^T            (needs all of dh)
  const bool pack = worth_packing(T, B);
  std::vector<cpu::Slice> u(nt), p(nt);
  std::vector<cpu::PackedA<scalar_t>> hh, hr;
  hh.reserve(nt);
  hr.reserve(nt);
  for (int k = 0; k < nt; ++k) {
    u[k] = cpu::slice_of(H, nt, k, Vec::size());
    p[k] = cpu::slice_of(Hout, nt, k, Vec::size());
    hh.emplace_back(kN, p[k].len, B, G, w_hh + p[k].begin, Hout, pack);
    if (z.proj) hr.emplace_back(kN, u[k].len, B, Hout, w_hr + u[k].begin, H, pack);
  }
  return cpu::run_team(nt, [&](int k) {
    const int64_t j0 = u[k].begin, n = u[k].len, p0 = p[k].begin, pn = p[k].len;
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

      if (z.proj) {
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = p0; i < p0 + pn; ++i) dht[b * Hout + i] = go_t[b * Hout + i] + dh[b * Hout + i];
        for (int64_t b = 0; zh_t && b < B; ++b) {  // the part reaching h~
          if (m_t && !m_t[b]) continue;              // (masked: none, dht passes through)
          for (int64_t i = p0; i < p0 + pn; ++i) dht[b * Hout + i] *= scalar_t(1) - zh_t[b * Hout + i];
        }
        cpu::barrier();  // all of dh[t] is needed by every member's dr
        hr[k].gemm(B, dht, Hout, scalar_t(0), dr_ws + j0, H);  // dr = dh W_hr, own units
      }
      for (int64_t b = 0; b < B; ++b) {
        scalar_t* dg = dg_t + b * G + j0;
        if (m_t && !m_t[b]) {  // masked: no gate gradient, dc passes through
          for (int64_t q = 0; q < 4; ++q) std::memset(dg + q * H, 0, n * sizeof(scalar_t));
          if (z.proj) std::memset(r_all + (t * B + b) * H + j0, 0, n * sizeof(scalar_t));
          continue;
        }
        const scalar_t* dr_a = z.proj ? dr_ws + b * H + j0 : go_t + b * Hout + j0;
        const scalar_t* dr_b = z.proj ? nullptr : dh + b * Hout + j0;
        backward_row<scalar_t>(act, ract, zc_t ? zc_t + b * H + j0 : nullptr,
                               zh_t && !z.proj ? zh_t + b * Hout + j0 : nullptr, n, H,
                               g_t + b * G + j0, c_prev + b * H + j0, c_t + b * H + j0, dr_a,
                               dr_b, dc + b * H + j0, dg,
                               z.proj ? r_all + (t * B + b) * H + j0 : static_cast<scalar_t*>(nullptr));
      }
      cpu::barrier();  // all of dgates[t] is needed by every member's dh GEMM
      hh[k].gemm(B, dg_t, G, scalar_t(0), dh_nx + p0, Hout);  // dh_prev = dgates[t] W_hh
      for (int64_t b = 0; (m_t || rk || zh_t) && b < B; ++b) {
        scalar_t* d = dh_nx + b * Hout;
        const scalar_t* go = go_t + b * Hout;
        const scalar_t* dl = dh + b * Hout;
        if (m_t && !m_t[b]) {  // masked rows: h carried, and its gradient
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] = go[i] + dl[i];
          continue;
        }
        if (rk)  // the GEMM read h_prev * rk
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] *= rk[b * Hout + i];
        if (zh_t)  // h_t = z h_prev + (1 - z) h~
          for (int64_t i = p0; i < p0 + pn; ++i) d[i] += zh_t[b * Hout + i] * (go[i] + dl[i]);
      }
      cpu::barrier();  // dh_prev complete, and every read of dh done, before the swap
      std::swap(dh, dh_nx);
    }
  });
}

}  // namespace

// float16 / bfloat16 on the CPU: the arguments (checked in their own dtype first) are
// cast to float32, the float32 kernels run, and the results are cast back — except the
// saved cell states, which stay float32 (as on CUDA). Correct and drop-in; no faster
// than float32 (the SIMD gate maths and BLAS here are float32/float64).
namespace {
bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}
at::Tensor up(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }
OptTensor up(const OptTensor& t) {
  return t.has_value() && t->is_floating_point() ? OptTensor(t->to(at::kFloat)) : t;
}
}  // namespace

// Shared by layer_forward (save = true: gates and cell states kept for backward) and
// layer_inference (save = false). Returns out, h_n, c_n, gates, cs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
    const char* op, bool save, const at::Tensor& input_, const at::Tensor& h0_,
    const at::Tensor& c0_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr_,
    const OptTensor& mask_, bool reverse, int64_t activation, int64_t recurrent_activation,
    const OptTensor& input_keep, const OptTensor& recurrent_keep, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c) {
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, b_ih, b_hh, w_hr_,
                                        mask_, activation, recurrent_activation);
  if (is_half(input_)) {
    check_regularizer_args(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);
    const auto dt = input_.scalar_type();
    auto [out, h_n, c_n, gates, cs] =
        run_forward(op, save, up(input_), up(h0_), up(c0_), up(w_ih_), up(w_hh_), up(b_ih),
                    up(b_hh), up(w_hr_), mask_, reverse, activation, recurrent_activation,
                    up(input_keep), up(recurrent_keep), up(zoneout_h), up(zoneout_c));
    return {out.to(dt), h_n.to(dt), c_n.to(dt), gates.to(dt), cs};
  }
  const Regularizers reg(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);
  const int64_t T = z.T, B = z.B;
  const auto input = reg.dropped_input(input_.contiguous());
  const auto h0 = h0_.contiguous();
  const auto w_ih = w_ih_.contiguous();
  const auto w_hh = w_hh_.contiguous();
  const auto w_hr = z.proj ? w_hr_->contiguous() : at::Tensor();
  const auto mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const auto b1 = b_ih.has_value() ? b_ih->contiguous() : at::Tensor();
  const auto b2 = b_hh.has_value() ? b_hh->contiguous() : at::Tensor();
  const auto opts = input.options();
  const auto dt = input.scalar_type();
  // the large outputs from the buffer cache (host_cache.h: no page faults on reuse)
  auto out = cpu::empty_cached({T, B, z.Hout}, dt);
  auto c_n = c0_.clone(at::MemoryFormat::Contiguous);  // the running cell state
  auto gates = cpu::empty_cached({save ? T : 0, B, 4 * z.H}, dt);
  auto cs = cpu::empty_cached({save ? T : 0, B, z.H}, dt);
  if (T * B > 0) {
    auto r_ws = z.proj ? at::empty({B, z.H}, opts) : at::Tensor();
    // the recurrent GEMM's input h * recurrent_keep, two buffers used in turn; h0's first
    auto hk = reg.recurrent_keep.defined() ? at::empty({2, B, z.Hout}, opts) : at::Tensor();
    if (hk.defined()) hk[0].copy_(h0 * reg.recurrent_keep);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchlstm_forward_cpu", [&] {
      auto run = [&](int nt) {
        return forward_loop_team<scalar_t>(
            nt, z, reverse, static_cast<Activation>(activation),
            static_cast<Activation>(recurrent_activation), input.data_ptr<scalar_t>(),
            h0.data_ptr<scalar_t>(), w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
            b1.defined() ? b1.data_ptr<scalar_t>() : nullptr,
            b2.defined() ? b2.data_ptr<scalar_t>() : nullptr,
            z.proj ? w_hr.data_ptr<scalar_t>() : nullptr,
            mask.defined() ? mask.data_ptr<bool>() : nullptr, out.data_ptr<scalar_t>(),
            c_n.data_ptr<scalar_t>(), z.proj ? r_ws.data_ptr<scalar_t>() : nullptr,
            save ? gates.data_ptr<scalar_t>() : nullptr,
            save ? cs.data_ptr<scalar_t>() : nullptr,
            data_or_null<scalar_t>(reg.recurrent_keep),
            hk.defined() ? hk.data_ptr<scalar_t>() : nullptr,
            data_or_null<scalar_t>(reg.zoneout_h), data_or_null<scalar_t>(reg.zoneout_c));
      };
      if (!run(threads_for(z))) run(1);
    });
  }
  // h_n: the last processed step's output row (or h0 when T = 0)
  auto h_n = at::empty({B, z.Hout}, opts);
  const auto elem = input.element_size();
  std::memcpy(h_n.data_ptr(),
              T > 0 ? static_cast<char*>(out.data_ptr()) + (reverse ? 0 : T - 1) * B * z.Hout * elem
                    : h0.data_ptr(),
              B * z.Hout * elem);
  return {out, h_n, c_n, gates, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_forward_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& mask, bool reverse, int64_t activation, int64_t recurrent_activation,
    const OptTensor& input_keep, const OptTensor& recurrent_keep, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c) {
  return run_forward("torchlstm.layer_forward", true, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                     w_hr, mask, reverse, activation, recurrent_activation, input_keep,
                     recurrent_keep, zoneout_h, zoneout_c);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_inference_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& mask, bool reverse, int64_t activation, int64_t recurrent_activation,
    const OptTensor& input_keep, const OptTensor& recurrent_keep, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c) {
  auto [out, h_n, c_n, gates, cs] =
      run_forward("torchlstm.layer_inference", false, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                  w_hr, mask, reverse, activation, recurrent_activation, input_keep,
                  recurrent_keep, zoneout_h, zoneout_c);
  return {out, h_n, c_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
layer_backward_cpu(const OptTensor& grad_output_, const OptTensor& grad_hn_,
                   const OptTensor& grad_cn_, const at::Tensor& input_, const at::Tensor& h0_,
                   const at::Tensor& c0_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
                   const OptTensor& w_hr_, const OptTensor& mask_, const at::Tensor& output_,
                   const at::Tensor& gates_, const at::Tensor& cs_, bool reverse,
                   int64_t activation, int64_t recurrent_activation,
                   const OptTensor& input_keep, const OptTensor& recurrent_keep,
                   const OptTensor& zoneout_h, const OptTensor& zoneout_c) {
  const char* op = "torchlstm.layer_backward";
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, c10::nullopt,
                                        c10::nullopt, w_hr_, mask_, activation,
                                        recurrent_activation);
  check_regularizer_args(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  check_shape(op, "output", output_, {T, B, Hout}, input_);
  check_shape(op, "gates", gates_, {T, B, G}, input_);
  check_cell_states(op, cs_, z, input_);
  if (grad_output_.has_value()) check_shape(op, "grad_output", *grad_output_, {T, B, Hout}, input_);
  if (grad_hn_.has_value()) check_shape(op, "grad_hn", *grad_hn_, {B, Hout}, input_);
  if (grad_cn_.has_value()) check_shape(op, "grad_cn", *grad_cn_, {B, H}, input_);
  if (is_half(input_)) {  // in float32, the gradients cast back (see run_forward)
    const auto dt = input_.scalar_type();
    auto grads = layer_backward_cpu(
        up(grad_output_), up(grad_hn_), up(grad_cn_), up(input_), up(h0_), up(c0_), up(w_ih_),
        up(w_hh_), up(w_hr_), mask_, up(output_), up(gates_), cs_, reverse, activation,
        recurrent_activation, up(input_keep), up(recurrent_keep), up(zoneout_h), up(zoneout_c));
    auto& [dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr] = grads;
    return {dx.to(dt), dh0.to(dt), dc0.to(dt), dw_ih.to(dt), dw_hh.to(dt), db.to(dt), dw_hr.to(dt)};
  }
  const Regularizers reg(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);

  const auto opts = input_.options();
  const auto input = reg.dropped_input(input_.contiguous());  // what W_ih saw
  const auto w_hh = w_hh_.contiguous();
  const auto w_hr = z.proj ? w_hr_->contiguous() : at::Tensor();
  const auto mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  // grad_output is often an expanded tensor (the gradient of a sum): made contiguous in
  // a cached buffer, as the other large buffers here (host_cache.h)
  at::Tensor grad_out;
  if (grad_output_.has_value() && grad_output_->is_contiguous()) {
    grad_out = *grad_output_;
  } else {
    grad_out = cpu::empty_cached({T, B, Hout}, input_.scalar_type());
    if (grad_output_.has_value()) grad_out.copy_(*grad_output_);
    else grad_out.zero_();
  }
  // Working buffers: dh ping-pongs between two (B,Hout) buffers; dc is updated in place.
  auto dh0 = grad_hn_.has_value() ? grad_hn_->clone(at::MemoryFormat::Contiguous)
                                  : at::zeros({B, Hout}, opts);
  auto dh_tmp = at::empty({B, Hout}, opts);
  auto dc0 = grad_cn_.has_value() ? grad_cn_->clone(at::MemoryFormat::Contiguous)
                                  : at::zeros({B, H}, opts);
  const auto dt = input_.scalar_type();
  auto dgates = cpu::empty_cached({T, B, G}, dt);
  auto dh_all = z.proj ? cpu::empty_cached({T, B, Hout}, dt) : at::Tensor();
  auto r_all = z.proj ? cpu::empty_cached({T, B, H}, dt) : at::Tensor();
  auto dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();

  if (T * B > 0) {
    const auto gates = gates_.contiguous();
    const auto cs = cs_.contiguous();
    const auto c0 = c0_.contiguous();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchlstm_layer_backward_cpu", [&] {
      auto run = [&](int nt) {
        return backward_loop_team<scalar_t>(
            nt, z, reverse, static_cast<Activation>(activation),
            static_cast<Activation>(recurrent_activation), grad_out.data_ptr<scalar_t>(),
            c0.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(),
            z.proj ? w_hr.data_ptr<scalar_t>() : nullptr,
            mask.defined() ? mask.data_ptr<bool>() : nullptr, gates.data_ptr<scalar_t>(),
            cs.data_ptr<scalar_t>(), dgates.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(),
            dh_tmp.data_ptr<scalar_t>(), dc0.data_ptr<scalar_t>(),
            z.proj ? dh_all.data_ptr<scalar_t>() : nullptr,
            z.proj ? r_all.data_ptr<scalar_t>() : nullptr,
            z.proj ? dr_ws.data_ptr<scalar_t>() : nullptr,
            data_or_null<scalar_t>(reg.recurrent_keep),
            data_or_null<scalar_t>(reg.zoneout_h), data_or_null<scalar_t>(reg.zoneout_c));
      };
      if (!run(threads_for(z))) run(1);
    });
    if (T % 2 == 1) dh0.copy_(dh_tmp);  // after T swaps the last dh_prev sits in dh_tmp
  }

  // Weight and input gradients: a few large GEMMs over all T*B rows.
  auto [d_input, d_w_ih, d_w_hh, d_bias, d_w_hr] =
      weight_and_input_grads(z, reverse, dgates, input, w_ih_, h0_, output_, reg, dh_all, r_all);
  return {d_input, dh0, dc0, d_w_ih, d_w_hh, d_bias, d_w_hr};
}

// The cell ops are the layer ops over one time step (cell_backward: layer_common.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cell_forward_cpu(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, int64_t activation,
    int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 2, "torchlstm.cell_forward: input must be 2-D (batch, input_size), got ",
                    input.dim(), "-D");
  auto [out, h, c, gates, cs] =
      layer_forward_cpu(input.unsqueeze(0), hx, cx, w_ih, w_hh, b_ih, b_hh, c10::nullopt,
                        c10::nullopt, false, activation, recurrent_activation, c10::nullopt,
                        c10::nullopt, c10::nullopt, c10::nullopt);
  return {h, c, gates.squeeze(0)};
}

TORCH_LIBRARY_IMPL(torchlstm, CPU, m) {
  m.impl("layer_forward", &layer_forward_cpu);
  m.impl("layer_inference", &layer_inference_cpu);
  m.impl("layer_backward", &layer_backward_cpu);
  m.impl("cell_forward", &cell_forward_cpu);
  m.impl("cell_backward", &cell_backward_via_layer<&layer_backward_cpu>);
}

}  // namespace torchlstm
