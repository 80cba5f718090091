// persistent_kernel.cuh — the whole forward time loop of one layer direction in ONE
// cooperative launch, for small batches (see launch_plan.h for when it is used).
//
// Block k owns hidden units [k*U, k*U + U), one warp per unit. For the whole sequence:
//   - the unit's four rows of W_hh (gates i, f, g, o) sit in shared memory,
//   - lane b of the unit's warp keeps c[b][unit] in a register.
// Per step:
//   1. the block reads h_{t-1} (B x H, written by every block at the previous step) into
//      shared memory,
//   2. each warp computes its unit's 4 x B recurrent products (lanes split the sum over
//      H; a butterfly of shuffles leaves every total in every lane),
//   3. lane b adds the input projection (precomputed by one GEMM over all steps) and the
//      biases and runs gate_math.h's cell_forward, writes h_t[b][unit] to the output and
//      to the exchange buffer, and (training) the pre-activations and c_t for backward,
//   4. grid.sync(): every block's h_t is written before any block reads it.
// The exchange buffer is double-buffered (step s writes half s&1 and reads half (s-1)&1),
// so one grid barrier per step suffices; it is read with ld.global.cg (L2, never a stale
// L1 line).
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../gate_math.h"
#include "launch_plan.h"

namespace torchlstm {
namespace cuda {

template <typename scalar_t, typename acc_t>
struct PersistentArgs {
  const scalar_t* w_hh;  // (4H, H)
  const scalar_t* b_ih;  // (4H) or null
  const scalar_t* b_hh;  // (4H) or null
  const scalar_t* h0;    // (B, H)
  const scalar_t* c0;    // (B, H)
  scalar_t* gates;       // (T, B, 4H) x W_ih^T in; with save, the pre-activations out
  scalar_t* out;         // (T, B, H) h of every step
  scalar_t* c_n;         // (B, H)
  acc_t* cs;             // (T, B, H) or null: cell states for backward
  const bool* mask;      // (T, B) or null
  const scalar_t* rk;    // (B, H) recurrent dropout's keep mask, or null
  const scalar_t* zh;    // (T, B, H) zoneout z of h, or null
  const scalar_t* zc;    // (T, B, H) zoneout z of c, or null
  const scalar_t* pc;    // (3H) peephole weights p_i, p_f, p_o, or null
  acc_t* hbuf;           // (2, B, H) exchange buffer
  int64_t T, B, H, U;
  bool reverse, save;
  Activation act, ract;
};

template <typename T>
__device__ __forceinline__ T load_cg(const T* p) {
  return __ldcg(p);
}

template <typename scalar_t, typename acc_t, int MAXB>
__global__ void __launch_bounds__(cuda_plan::kPersistentMaxThreads)
    persistent_forward_kernel(PersistentArgs<scalar_t, acc_t> a) {
  namespace cg = cooperative_groups;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t T = a.T, B = a.B, H = a.H, U = a.U;
  scalar_t* ws = reinterpret_cast<scalar_t*>(smem_raw);                             // [U][4][H]
  acc_t* hs = reinterpret_cast<acc_t*>(smem_raw + U * 4 * H * sizeof(scalar_t));  // [B][H]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t unit0 = static_cast<int64_t>(blockIdx.x) * U;
  const int64_t j = unit0 + warp;  // this warp's hidden unit
  const bool active = j < H;

  for (int64_t e = threadIdx.x; e < U * 4 * H; e += blockDim.x) {
    const int64_t u = e / (4 * H), rem = e - u * 4 * H, q = rem / H, k = rem - q * H;
    ws[e] = unit0 + u < H ? a.w_hh[(q * H + unit0 + u) * H + k] : scalar_t(0);
  }
  acc_t c = 0;  // lane b: c[b][j]
  if (active && lane < B) c = static_cast<acc_t>(a.c0[lane * H + j]);
  const scalar_t* w = ws + static_cast<int64_t>(warp) * 4 * H;

  cg::grid_group grid = cg::this_grid();
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = a.reverse ? T - 1 - s : s;
    // h_{t-1} of every unit (times recurrent dropout's mask: what the products read)
    const acc_t* src = a.hbuf + ((s - 1) & 1) * B * H;
    for (int64_t e = threadIdx.x; e < B * H; e += blockDim.x) {
      const acc_t hv = s == 0 ? static_cast<acc_t>(a.h0[e]) : load_cg(src + e);
      // (the product rounded to the storage dtype, as the GEMM path and dW_hh have it)
      hs[e] = a.rk ? static_cast<acc_t>(static_cast<scalar_t>(hv * static_cast<acc_t>(a.rk[e])))
                   : hv;
    }
    __syncthreads();

    if (active) {
      acc_t acc[MAXB][4];
#pragma unroll
      for (int bb = 0; bb < MAXB; ++bb)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[bb][q] = 0;
      for (int64_t k = lane; k < H; k += 32) {
        const acc_t w0 = static_cast<acc_t>(w[k]), w1 = static_cast<acc_t>(w[H + k]),
                    w2 = static_cast<acc_t>(w[2 * H + k]), w3 = static_cast<acc_t>(w[3 * H + k]);
#pragma unroll
        for (int bb = 0; bb < MAXB; ++bb) {
          if (bb < B) {
            const acc_t hv = hs[bb * H + k];
            acc[bb][0] += w0 * hv;
            acc[bb][1] += w1 * hv;
            acc[bb][2] += w2 * hv;
            acc[bb][3] += w3 * hv;
          }
        }
      }
#pragma unroll
      for (int bb = 0; bb < MAXB; ++bb) {
        if (bb < B) {
#pragma unroll
          for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int off = 16; off > 0; off /= 2)
              acc[bb][q] += __shfl_xor_sync(0xffffffffu, acc[bb][q], off);
        }
      }
      if (lane < B) {
        acc_t pre[4] = {0, 0, 0, 0};
#pragma unroll
        for (int bb = 0; bb < MAXB; ++bb)  // constant indices: acc stays in registers
          if (bb == lane)
#pragma unroll
            for (int q = 0; q < 4; ++q) pre[q] = acc[bb][q];
        const int64_t b = lane;
        scalar_t* g = a.gates + (t * B + b) * 4 * H + j;
        const int64_t e = b * H + j, te = t * B * H + e;
        // h_{t-1} itself (the carried state): the shared copy unless recurrent dropout
        // scaled that one, then once more from memory
        const acc_t h_old = !a.rk   ? hs[e]
                            : s == 0 ? static_cast<acc_t>(a.h0[e])
                                     : load_cg(src + e);
        acc_t h;
        if (a.mask && !a.mask[t * B + b]) {  // masked step: h and c carry over
          h = h_old;
          if (a.save)
            for (int q = 0; q < 4; ++q) g[q * H] = scalar_t(0);
        } else {
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            pre[q] += static_cast<acc_t>(g[q * H]);
            if (a.b_ih) pre[q] += static_cast<acc_t>(a.b_ih[q * H + j]);
            if (a.b_hh) pre[q] += static_cast<acc_t>(a.b_hh[q * H + j]);
          }
          const auto o = cell_forward_any<acc_t, scalar_t>(
              a.act, a.ract, pre, c, a.zc != nullptr,
              a.zc ? static_cast<acc_t>(a.zc[te]) : acc_t(0), a.pc ? a.pc + j : nullptr, H);
          if (a.save)  // with peepholes, pre has their terms added
#pragma unroll
            for (int q = 0; q < 4; ++q) g[q * H] = static_cast<scalar_t>(pre[q]);
          c = o.c;
          h = a.zh ? zoneout_blend<acc_t>(static_cast<acc_t>(a.zh[te]), h_old, o.r) : o.r;
        }
        // h as the output dtype holds it (float16/bfloat16 round here): the next step, the
        // GEMM path and backward's dW_hh (which reads the output) all see the same h
        h = static_cast<acc_t>(static_cast<scalar_t>(h));
        a.out[te] = static_cast<scalar_t>(h);
        a.hbuf[(s & 1) * B * H + e] = h;
        if (a.cs) a.cs[te] = c;
      }
    }
    grid.sync();
  }
  if (active && lane < B) a.c_n[lane * H + j] = static_cast<scalar_t>(c);
}

}  // namespace cuda
}  // namespace torchlstm
