// layer_norm_kernels.cuh — the kernels of the layer-normalised LSTM (layer_norm=True) on
// the GEMM path: ONE block per row (a batch row of a step, or a row of x W_ih^T), its
// threads strided over the row's units, the row statistics by block reductions. The
// per-element maths is gate_math.h's ln_* functions, the CPU's (cpu/layer_norm_loops.h);
// it runs in acc_t on values loaded from scalar_t storage.
//
//   forward:  ln_rows_forward_kernel   x^_ih = LN(x W_ih^T) of every row of every step,
//                                      before the time loop (and its rstd)
//             ln_forward_step_kernel   per step, after R = h W_hh^T (cuBLAS): x^_hh, the
//                                      gates, c~, LN(c~), r, the carried c
//   backward: ln_backward_step_kernel  per step: dA (the pre-activations' gradient), dy
//                                      (that of g_c x^_c + b_c), dR (the recurrent
//                                      product's, for dh_{t-1} = dR W_hh), dc carried
//             ln_rows_backward_kernel  after the loop: dP (the input product's) from dA
// What forward saves per row is layer_call.h's SavedLayout (offsets passed in, never
// assumed): the normalised rows and their rstd; backward recomputes the pre-activations
// a = g_ih x^_ih + g_hh x^_hh + b_ih + b_hh (+ peephole terms) from them. The parameters'
// gradients are sums over rows of dA and dy (with the saved rows), taken after the loop.
// Block sizes: launch_plan.h's ln_row_threads (whole warps).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../gate_math.h"
#include "step_kernels.cuh"

namespace torchlstm {
namespace cuda {

// The sum of v over the block's threads, to every thread in the same order (so all agree
// bit for bit). blockDim.x a multiple of 32; every thread of the block calls it.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v) {
  __shared__ acc_t part[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // the previous call's readers are done with part
  if (lane == 0) part[warp] = v;
  __syncthreads();
  acc_t s = acc_t(0);
  for (int k = 0; k < warps; ++k) s += part[k];
  return s;
}

// mean and rstd of a row of n values (two passes, as the CPU's row_stats2).
template <typename T, typename acc_t>
__device__ __forceinline__ void block_row_stats(const T* v, int64_t n, acc_t eps, acc_t& mean,
                                                acc_t& rstd) {
  acc_t s = acc_t(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += load<T, acc_t>(v, j);
  mean = block_sum(s) / acc_t(n);
  acc_t q = acc_t(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const acc_t d = load<T, acc_t>(v, j) - mean;
    q += d * d;
  }
  rstd = ln_rstd<acc_t>(block_sum(q) / acc_t(n), eps);
}

// LN's backward over a row of n: dv = rstd (u - mean(u) - x^ mean(u x^)), u = g dy.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void block_row_norm_backward(int64_t n, const acc_t* dy,
                                                        const scalar_t* g, const scalar_t* xhat,
                                                        acc_t rstd, scalar_t* dv) {
  acc_t s1 = acc_t(0), s2 = acc_t(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const acc_t u = load<scalar_t, acc_t>(g, j) * dy[j];
    s1 += u;
    s2 += u * load<scalar_t, acc_t>(xhat, j);
  }
  const acc_t m1 = block_sum(s1) / acc_t(n), m2 = block_sum(s2) / acc_t(n);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const acc_t u = load<scalar_t, acc_t>(g, j) * dy[j];
    dv[j] = static_cast<scalar_t>(
        ln_input_grad<acc_t>(u, load<scalar_t, acc_t>(xhat, j), rstd, m1, m2));
  }
}

// x^ = LN(src row) of n values to dst (which may be src) and its rstd (rstd null: not
// kept); one block per row, row k at src + k src_ld, dst + k dst_ld, rstd + k dst_ld.
template <typename scalar_t, typename acc_t>
__global__ void ln_rows_forward_kernel(const scalar_t* src, int64_t src_ld, scalar_t* dst,
                                       int64_t dst_ld, scalar_t* rstd, int64_t n, acc_t eps) {
  const int64_t row = blockIdx.x;
  const scalar_t* v = src + row * src_ld;
  scalar_t* x = dst + row * dst_ld;
  acc_t mean, rs;
  block_row_stats<scalar_t, acc_t>(v, n, eps, mean, rs);  // dst may be src: each thread
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)  // rewrites only what it read
    x[j] = static_cast<scalar_t>((load<scalar_t, acc_t>(v, j) - mean) * rs);
  if (rstd && threadIdx.x == 0) rstd[row * dst_ld] = static_cast<scalar_t>(rs);
}

// dP = LN's input gradient of the input product, from dA (the gradient reaching LN's
// output, before its scale g_ih) and the saved x^_ih and rstd_ih; one block per row.
template <typename scalar_t, typename acc_t>
__global__ void ln_rows_backward_kernel(const acc_t* dA, int64_t n, const scalar_t* g,
                                        const scalar_t* xhat, const scalar_t* rstd, int64_t ld,
                                        scalar_t* dv) {
  const int64_t row = blockIdx.x;
  block_row_norm_backward<scalar_t, acc_t>(n, dA + row * n, g, xhat + row * ld,
                                           load<scalar_t, acc_t>(rstd, row * ld), dv + row * n);
}

// The layer's layer-norm and gate parameters (4H, 4H, H, H; b_ih, b_hh 4H; pc 3H), null
// where absent (biases, peepholes).
template <typename scalar_t>
struct LnParams {
  const scalar_t *g_ih, *g_hh, *g_c, *b_c, *b_ih, *b_hh, *pc;
};

// Offsets of the saved row's members and its width (SavedLayout's fields).
struct LnOffsets {
  int64_t xhat_ih, xhat_hh, xhat_c, rstd_ih, rstd_hh, rstd_c, width;
};

// a_q of unit j before the peephole terms: g_ih x^_ih + g_hh x^_hh + b_ih + b_hh (the
// CPU's ln_preactivations, in its order).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t ln_preactivation(const LnParams<scalar_t>& p, int64_t k,
                                                  acc_t xih, acc_t xhh) {
  acc_t v = load<scalar_t, acc_t>(p.g_ih, k) * xih + load<scalar_t, acc_t>(p.g_hh, k) * xhh;
  if (p.b_ih) v += load<scalar_t, acc_t>(p.b_ih, k);
  if (p.b_hh) v += load<scalar_t, acc_t>(p.b_hh, k);
  return v;
}

// Forward of step t, one block per batch row b.
template <typename scalar_t, typename acc_t>
struct LnForwardStep {
  LnParams<scalar_t> p;
  LnOffsets L;
  const scalar_t* xih;     // row b's x^_ih at xih + b xih_ld (the saved rows, or P in place)
  int64_t xih_ld;
  const scalar_t* R;       // (B, 4H) h_{t-1} W_hh^T (times recurrent_keep), raw
  scalar_t* save;          // (B, width) step t's saved rows, or null (inference)
  acc_t* c;                // (B, H) the carried cell state: c_{t-1} in, c_t out
  acc_t* ws;               // (B, 2H) scratch: c~ and a_o (peephole term in)
  const scalar_t* h_prev;  // (B, H) h_{t-1} (no projection: carried at masked rows)
  scalar_t* r;             // (B, H) o act(LN(c~)): h_t itself, or the projection's input
  acc_t* c_save;           // (B, H) cs[t], or null
  const bool* mask;        // (B) mask[t], or null
  const scalar_t* zc;      // (B, H) zoneout z of c at step t, or null
  const scalar_t* zh;      // (B, H) zoneout z of h at step t (no projection), or null
  int64_t H;
  acc_t eps;
  bool proj;
  Activation act, ract;
};

template <bool kZone, bool kPeep, typename scalar_t, typename acc_t>
__device__ void ln_forward_row(const LnForwardStep<scalar_t, acc_t>& a, int64_t b) {
  const int64_t H = a.H, G = 4 * H;
  const LnParams<scalar_t>& p = a.p;
  const scalar_t* R = a.R + b * G;
  const scalar_t* xih = a.xih + b * a.xih_ld;
  scalar_t* save = a.save ? a.save + b * a.L.width : nullptr;
  acc_t* c = a.c + b * H;
  acc_t* ct = a.ws + b * 2 * H;
  acc_t* ao = ct + H;
  acc_t mean_hh, rstd_hh;
  block_row_stats<scalar_t, acc_t>(R, G, a.eps, mean_hh, rstd_hh);
  acc_t s = acc_t(0);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    acc_t v[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t k = q * H + j;
      // x^_hh as saved (backward recomputes a from the saved values: the same a)
      const scalar_t xh = static_cast<scalar_t>((load<scalar_t, acc_t>(R, k) - mean_hh) * rstd_hh);
      if (save) save[a.L.xhat_hh + k] = xh;
      v[q] = ln_preactivation<scalar_t, acc_t>(p, k, load<scalar_t, acc_t>(xih, k),
                                               static_cast<acc_t>(xh));
    }
    const acc_t zero(0);
    const auto st = ln_cell_state<kZone, kPeep, acc_t>(
        a.act, a.ract, v[0], v[1], v[2], v[3], c[j],
        kPeep ? load<scalar_t, acc_t>(p.pc, j) : zero,
        kPeep ? load<scalar_t, acc_t>(p.pc, H + j) : zero,
        kPeep ? load<scalar_t, acc_t>(p.pc, 2 * H + j) : zero,
        kZone ? load<scalar_t, acc_t>(a.zc, b * H + j) : zero);
    c[j] = st.c;
    if (a.c_save) a.c_save[b * H + j] = st.c;
    ct[j] = st.ct;  // each thread reads back only its own units: no barrier needed
    ao[j] = v[3];
    s += st.ct;
  }
  const acc_t mean_c = block_sum(s) / acc_t(H);
  acc_t q2 = acc_t(0);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const acc_t d = ct[j] - mean_c;
    q2 += d * d;
  }
  const acc_t rstd_c = ln_rstd<acc_t>(block_sum(q2) / acc_t(H), a.eps);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const scalar_t xc = static_cast<scalar_t>((ct[j] - mean_c) * rstd_c);
    if (save) save[a.L.xhat_c + j] = xc;
    acc_t r = ln_cell_output<acc_t>(a.act, a.ract, ao[j], static_cast<acc_t>(xc),
                                    load<scalar_t, acc_t>(p.g_c, j),
                                    load<scalar_t, acc_t>(p.b_c, j));
    if (a.zh)
      r = zoneout_blend<acc_t>(load<scalar_t, acc_t>(a.zh, b * H + j),
                               load<scalar_t, acc_t>(a.h_prev, b * H + j), r);
    a.r[b * H + j] = static_cast<scalar_t>(r);
  }
  if (save && threadIdx.x == 0) {
    save[a.L.rstd_hh] = static_cast<scalar_t>(rstd_hh);
    save[a.L.rstd_c] = static_cast<scalar_t>(rstd_c);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void ln_forward_step_kernel(LnForwardStep<scalar_t, acc_t> a) {
  const int64_t b = blockIdx.x, H = a.H;
  if (a.mask && !a.mask[b]) {  // masked step (the whole block): h and c carry over
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      a.r[b * H + j] = a.proj ? scalar_t(0) : a.h_prev[b * H + j];  // projection: after it
      if (a.c_save) a.c_save[b * H + j] = a.c[b * H + j];
    }
    if (a.save)  // never read; defined all the same (zeros, as the CPU's)
      for (int64_t j = threadIdx.x; j < a.L.width; j += blockDim.x)
        a.save[b * a.L.width + j] = scalar_t(0);
    return;
  }
  const bool zone = a.zc != nullptr, peep = a.p.pc != nullptr;
  if (zone) {
    if (peep) ln_forward_row<true, true>(a, b);
    else ln_forward_row<true, false>(a, b);
  } else {
    if (peep) ln_forward_row<false, true>(a, b);
    else ln_forward_row<false, false>(a, b);
  }
}

// Backward of step t, one block per batch row b.
template <typename scalar_t, typename acc_t>
struct LnBackwardStep {
  LnParams<scalar_t> p;
  LnOffsets L;
  const scalar_t* save;  // (B, width) step t's saved rows
  const acc_t* c_prev;   // (B, H) c_{t-1}
  const acc_t* c;        // (B, H) c_t (carried)
  const scalar_t* go;    // (B, H) grad_output[t] or null (no projection)
  const scalar_t* dh;    // (B, Hout) no projection: the gradient reaching h_t from step t+1
  const scalar_t* dr;    // (B, H) with a projection: dh_all[t] W_hr; else null
  acc_t* dc;             // (B, H) dc_t in, dc_{t-1} out
  acc_t* dA;             // (B, 4H) out: the gradient of the pre-activations (LN sums' input)
  acc_t* dy;             // (B, H) out: the gradient of y = g_c x^_c + b_c
  acc_t* ws;             // (B, H) scratch: dxh
  scalar_t* dR;          // (B, 4H) out: the gradient of h_{t-1} W_hh^T
  scalar_t* r_save;      // (B, H) with a projection: o act(y) for dW_hr; else null
  const bool* mask;      // (B) or null
  const scalar_t* zc;    // (B, H) zoneout z of c at step t, or null
  const scalar_t* zh;    // (B, H) zoneout z of h at step t (no projection), or null
  int64_t H;
  bool proj;
  Activation act, ract;
};

template <bool kZone, bool kPeep, typename scalar_t, typename acc_t>
__device__ void ln_backward_row(const LnBackwardStep<scalar_t, acc_t>& a, int64_t b) {
  const int64_t H = a.H, G = 4 * H;
  const LnParams<scalar_t>& p = a.p;
  const scalar_t* row = a.save + b * a.L.width;
  const scalar_t* xih = row + a.L.xhat_ih;
  const scalar_t* xhh = row + a.L.xhat_hh;
  const scalar_t* xc = row + a.L.xhat_c;
  const acc_t* cp = a.c_prev + b * H;
  const acc_t* cc = a.c + b * H;
  acc_t* dA = a.dA + b * G;
  acc_t* dy = a.dy + b * H;
  acc_t* dxh = a.ws + b * H;
  acc_t* dc = a.dc + b * H;
  const acc_t zero(0);
  acc_t s1 = zero, s2 = zero;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    acc_t v[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t k = q * H + j;
      v[q] = ln_preactivation<scalar_t, acc_t>(p, k, load<scalar_t, acc_t>(xih, k),
                                               load<scalar_t, acc_t>(xhh, k));
    }
    if (kPeep) {  // the saved rows hold no peephole terms: added as the forward did
      v[0] += load<scalar_t, acc_t>(p.pc, j) * cp[j];
      v[1] += load<scalar_t, acc_t>(p.pc, H + j) * cp[j];
      v[3] += load<scalar_t, acc_t>(p.pc, 2 * H + j) * cc[j];
    }
    acc_t dr;  // the gradient reaching r = o act(y)
    if (a.proj) {
      dr = load<scalar_t, acc_t>(a.dr, b * H + j);
    } else {  // h = r: the output's gradient plus step t+1's, zoned out
      dr = load<scalar_t, acc_t>(a.dh, b * H + j);
      if (a.go) dr += load<scalar_t, acc_t>(a.go, b * H + j);
      if (a.zh) dr *= acc_t(1) - load<scalar_t, acc_t>(a.zh, b * H + j);
    }
    const acc_t x = load<scalar_t, acc_t>(xc, j);
    const auto o = ln_cell_output_grad<acc_t>(a.act, a.ract, v[3], x,
                                              load<scalar_t, acc_t>(p.g_c, j),
                                              load<scalar_t, acc_t>(p.b_c, j), dr);
    dA[j] = v[0];  // a_i, a_f, a_g for the next pass (this thread's own units)
    dA[H + j] = v[1];
    dA[2 * H + j] = v[2];
    dA[3 * H + j] = o.d_o;
    dxh[j] = o.dxh;
    dy[j] = o.dy;
    if (a.r_save) a.r_save[b * H + j] = static_cast<scalar_t>(o.r);
    s1 += o.dxh;
    s2 += o.dxh * x;
  }
  const acc_t m1 = block_sum(s1) / acc_t(H), m2 = block_sum(s2) / acc_t(H);
  const acc_t rstd_c = load<scalar_t, acc_t>(row, a.L.rstd_c);
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
    const acc_t dct_ln = ln_input_grad<acc_t>(dxh[j], load<scalar_t, acc_t>(xc, j), rstd_c, m1, m2);
    const auto g = ln_cell_backward<kZone, kPeep, acc_t>(
        a.act, a.ract, dA[j], dA[H + j], dA[2 * H + j], cp[j], dct_ln, dc[j], dA[3 * H + j],
        kPeep ? load<scalar_t, acc_t>(p.pc, j) : zero,
        kPeep ? load<scalar_t, acc_t>(p.pc, H + j) : zero,
        kPeep ? load<scalar_t, acc_t>(p.pc, 2 * H + j) : zero,
        kZone ? load<scalar_t, acc_t>(a.zc, b * H + j) : zero);
    dA[j] = g.d_i;
    dA[H + j] = g.d_f;
    dA[2 * H + j] = g.d_g;
    dc[j] = g.dc_prev;
  }
  __syncthreads();  // the whole dA row, for the recurrent product's LN backward
  block_row_norm_backward<scalar_t, acc_t>(G, dA, p.g_hh, xhh,
                                           load<scalar_t, acc_t>(row, a.L.rstd_hh), a.dR + b * G);
}

template <typename scalar_t, typename acc_t>
__global__ void ln_backward_step_kernel(LnBackwardStep<scalar_t, acc_t> a) {
  const int64_t b = blockIdx.x, H = a.H, G = 4 * H;
  if (a.mask && !a.mask[b]) {  // nothing computed at this step: no gradient, dc passes
    for (int64_t j = threadIdx.x; j < G; j += blockDim.x) {
      a.dA[b * G + j] = acc_t(0);
      a.dR[b * G + j] = scalar_t(0);
    }
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      a.dy[b * H + j] = acc_t(0);
      if (a.r_save) a.r_save[b * H + j] = scalar_t(0);
    }
    return;
  }
  const bool zone = a.zc != nullptr, peep = a.p.pc != nullptr;
  if (zone) {
    if (peep) ln_backward_row<true, true>(a, b);
    else ln_backward_row<true, false>(a, b);
  } else {
    if (peep) ln_backward_row<false, true>(a, b);
    else ln_backward_row<false, false>(a, b);
  }
}

}  // namespace cuda
}  // namespace torchlstm
