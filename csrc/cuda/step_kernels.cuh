// step_kernels.cuh — the fused element-wise kernels of the GEMM path, one launch per
// time step each, one thread per (batch row, hidden unit).
//
// The maths is gate_math.h's cell_forward / cell_backward (cell_forward_any /
// cell_backward_any: with zoneout and peepholes where the call has them), the same
// functions the CPU loop runs; here they run in acc_t (float for float16/bfloat16/float32, double for
// float64) on values loaded from scalar_t storage. The cell state and its gradient stay
// in acc_t from the first step to the last.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../gate_math.h"

namespace torchlstm {
namespace cuda {

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load(const scalar_t* p, int64_t i) {
  return static_cast<acc_t>(p[i]);
}

// Forward of step t. g holds x W_ih^T + h W_hh^T of the step (B, 4H): the two GEMMs
// have written it; this kernel adds the biases and runs the gates and the cell update.
template <typename scalar_t, typename acc_t>
struct ForwardStep {
  scalar_t* g;             // (B, 4H); with save, the pre-activations (biases added) go back here
  const scalar_t* b_ih;    // (4H) or null
  const scalar_t* b_hh;    // (4H) or null
  acc_t* c;                // (B, H) the running cell state: c_{t-1} in, c_t out
  const scalar_t* h_prev;  // (B, H) h_{t-1}, carried at masked steps (no projection)
  scalar_t* r;             // (B, H) o * act(c): h_t itself, or the projection's input
  acc_t* c_save;           // (B, H) cs[t] for backward, or null
  const bool* mask;        // (B) mask[t], or null
  const scalar_t* zc;      // (B, H) zoneout z of c at step t, or null
  const scalar_t* zh;      // (B, Hout = H) zoneout z of h at step t (no projection), or null
  const scalar_t* pc;      // (3H) peephole weights p_i, p_f, p_o, or null
  int64_t B, H;
  bool save, proj;
  Activation act, ract;
};

template <typename scalar_t, typename acc_t>
__global__ void forward_step_kernel(ForwardStep<scalar_t, acc_t> a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.B * a.H) return;
  const int64_t b = idx / a.H, j = idx - b * a.H, H = a.H;
  scalar_t* g = a.g + b * 4 * H + j;
  if (a.mask && !a.mask[b]) {  // masked step: h and c carry over
    a.r[idx] = a.proj ? scalar_t(0) : a.h_prev[idx];  // with a projection: fixed after it
    if (a.c_save) a.c_save[idx] = a.c[idx];
    if (a.save)
      for (int q = 0; q < 4; ++q) g[q * H] = scalar_t(0);  // never read; defined all the same
    return;
  }
  acc_t v[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    v[q] = load<scalar_t, acc_t>(g, q * H);
    if (a.b_ih) v[q] += load<scalar_t, acc_t>(a.b_ih, q * H + j);
    if (a.b_hh) v[q] += load<scalar_t, acc_t>(a.b_hh, q * H + j);
  }
  const auto o = cell_forward_any<acc_t, scalar_t>(
      a.act, a.ract, v, a.c[idx], a.zc != nullptr, a.zc ? load<scalar_t, acc_t>(a.zc, idx) : acc_t(0),
      a.pc ? a.pc + j : nullptr, H);
  if (a.save)  // with peepholes, v has their terms added
#pragma unroll
    for (int q = 0; q < 4; ++q) g[q * H] = static_cast<scalar_t>(v[q]);
  a.c[idx] = o.c;
  const acc_t r = a.zh ? zoneout_blend<acc_t>(load<scalar_t, acc_t>(a.zh, idx),
                                              load<scalar_t, acc_t>(a.h_prev, idx), o.r)
                       : o.r;
  a.r[idx] = static_cast<scalar_t>(r);
  if (a.c_save) a.c_save[idx] = o.c;
}

// With a projection, after the projection GEMM wrote out[t]: masked rows get h_{t-1}
// back, the others zoneout's blend with h_{t-1} (zh given). One thread per (b, k < Hout).
template <typename scalar_t, typename acc_t>
__global__ void finish_projected_kernel(scalar_t* out, const scalar_t* h_prev, const bool* mask,
                                        const scalar_t* zh, int64_t B, int64_t Hout) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * Hout) return;
  if (mask && !mask[idx / Hout])
    out[idx] = h_prev[idx];
  else if (zh)
    out[idx] = static_cast<scalar_t>(zoneout_blend<acc_t>(load<scalar_t, acc_t>(zh, idx),
                                                          load<scalar_t, acc_t>(h_prev, idx),
                                                          load<scalar_t, acc_t>(out, idx)));
}

// dst = a * b: recurrent dropout, the recurrent GEMM's input h_{t-1} * recurrent_keep.
template <typename scalar_t, typename acc_t>
__global__ void mul_kernel(scalar_t* dst, const scalar_t* a, const scalar_t* b, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  dst[idx] = static_cast<scalar_t>(load<scalar_t, acc_t>(a, idx) * load<scalar_t, acc_t>(b, idx));
}

// With a projection, before the backward step: the gradient reaching the projection's
// output h~ at step t, kept in dh_all[t] for dW_hr: go + dh (the output's gradient and
// step t+1's), times 1 - z of h's zoneout at unmasked rows. go may be null (zero).
template <typename scalar_t, typename acc_t>
__global__ void projected_grad_kernel(scalar_t* dht, const scalar_t* go, const scalar_t* dh,
                                      const bool* mask, const scalar_t* zh, int64_t B,
                                      int64_t Hout) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * Hout) return;
  acc_t s = load<scalar_t, acc_t>(dh, idx);
  if (go) s += load<scalar_t, acc_t>(go, idx);
  if (zh && !(mask && !mask[idx / Hout])) s *= acc_t(1) - load<scalar_t, acc_t>(zh, idx);
  dht[idx] = static_cast<scalar_t>(s);
}

// After the dh GEMM (dh_prev = dgates[t] W_hh), where a mask or a regulariser applies:
// the total gradient of h_t is go + dh; a masked row carried h over, so it passes on
// whole; otherwise the GEMM read h_{t-1} * recurrent_keep, and zoneout kept z of h_{t-1}:
//   dh_prev = masked ? go + dh : dh_prev * rk + z (go + dh).
template <typename scalar_t, typename acc_t>
__global__ void dh_prev_kernel(scalar_t* dh_prev, const scalar_t* go, const scalar_t* dh,
                               const bool* mask, const scalar_t* rk, const scalar_t* zh,
                               int64_t B, int64_t Hout) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * Hout) return;
  acc_t total = load<scalar_t, acc_t>(dh, idx);
  if (go) total += load<scalar_t, acc_t>(go, idx);
  acc_t d;
  if (mask && !mask[idx / Hout]) {
    d = total;
  } else {
    d = load<scalar_t, acc_t>(dh_prev, idx);
    if (rk) d *= load<scalar_t, acc_t>(rk, idx);
    if (zh) d += load<scalar_t, acc_t>(zh, idx) * total;
  }
  dh_prev[idx] = static_cast<scalar_t>(d);
}

// Backward of step t: the gate gradients dgates[t] and dc carried to t-1. The GEMM
// dh_{t-1} = dgates[t] W_hh follows it.
template <typename scalar_t, typename acc_t>
struct BackwardStep {
  const scalar_t* g;       // (B, 4H) saved pre-activations of step t
  const acc_t* c_prev;     // (B, H) c_{t-1}
  const acc_t* c;          // (B, H) c_t
  const scalar_t* go;      // (B, H) grad_output[t] or null (no projection)
  const scalar_t* dh;      // (B, Hout) without projection: the gradient reaching h_t from
                           // step t+1; with one: the total gradient of h_t (dh_all[t])
  const scalar_t* dr;      // (B, H) with a projection: dh_all[t] W_hr; else null
  acc_t* dc;               // (B, H) dc_t in, dc_{t-1} out
  scalar_t* dg;            // (B, 4H) out
  scalar_t* r_save;        // (B, H) with a projection: o * act(c~) for dW_hr; else null
  const bool* mask;        // (B) or null
  const scalar_t* zc;      // (B, H) zoneout z of c at step t, or null
  const scalar_t* zh;      // (B, Hout = H) zoneout z of h at step t (no projection), or null
  const scalar_t* pc;      // (3H) peephole weights p_i, p_f, p_o, or null
  int64_t B, H, Hout;
  bool proj;
  Activation act, ract;
};

template <typename scalar_t, typename acc_t>
__global__ void backward_step_kernel(BackwardStep<scalar_t, acc_t> a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.B * a.H) return;
  const int64_t H = a.H, b = idx / H, j = idx - b * H;
  scalar_t* dg = a.dg + b * 4 * H + j;
  if (a.mask && !a.mask[b]) {  // nothing computed at this step: no gate gradient, dc passes
    for (int q = 0; q < 4; ++q) dg[q * H] = scalar_t(0);
    if (a.r_save) a.r_save[idx] = scalar_t(0);
    return;
  }
  acc_t dr;  // the gradient reaching r = o * act(c~)
  if (a.proj) {
    dr = load<scalar_t, acc_t>(a.dr, idx);
  } else {  // h = r (Hout = H): the output's gradient plus step t+1's, zoned out
    dr = load<scalar_t, acc_t>(a.dh, idx);
    if (a.go) dr += load<scalar_t, acc_t>(a.go, idx);
    if (a.zh) dr *= acc_t(1) - load<scalar_t, acc_t>(a.zh, idx);
  }
  const scalar_t* g = a.g + b * 4 * H + j;
  const acc_t ai = load<scalar_t, acc_t>(g, 0), af = load<scalar_t, acc_t>(g, H),
              ag = load<scalar_t, acc_t>(g, 2 * H), ao = load<scalar_t, acc_t>(g, 3 * H);
  const auto o = cell_backward_any<acc_t, scalar_t>(
      a.act, a.ract, ai, af, ag, ao, a.c_prev[idx], a.c[idx], dr, a.dc[idx], a.zc != nullptr,
      a.zc ? load<scalar_t, acc_t>(a.zc, idx) : acc_t(0), a.pc ? a.pc + j : nullptr, H);
  dg[0] = static_cast<scalar_t>(o.d_i);
  dg[H] = static_cast<scalar_t>(o.d_f);
  dg[2 * H] = static_cast<scalar_t>(o.d_g);
  dg[3 * H] = static_cast<scalar_t>(o.d_o);
  a.dc[idx] = o.dc_prev;
  if (a.r_save) a.r_save[idx] = static_cast<scalar_t>(o.r);
}

}  // namespace cuda
}  // namespace torchlstm
