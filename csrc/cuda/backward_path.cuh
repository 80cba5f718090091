// backward_path.cuh — the CUDA backward time loop of one layer and direction:
//   per step: [projection: dh_all[t] = dout[t] + dh; dr = dh_all[t] W_hr]
//             one fused kernel: gate gradients, dc carried to t-1 (step_kernels.cuh)
//             dh_{t-1} = dgates[t] W_hh   one GEMM [+ mask / dropout / zoneout terms]
// The weight and input gradients follow as large GEMMs (layer_grads.h).
// With layer normalisation (ln_backward_loop) the fused kernel is layer_norm_kernels.cuh's
// step kernel (a block per batch row): it writes dA and dy (summed into the parameters'
// gradients after the loop) and dR, the recurrent product's gradient: dh_{t-1} = dR W_hh.
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "../layer_call.h"
#include "cublas_gemm.h"
#include "forward_paths.cuh"
#include "launch.h"
#include "launch_plan.h"
#include "step_kernels.cuh"

namespace torchlstm {
namespace cuda {

// Buffers of the loop: dgates (T,B,4H) out; dh_a (grad_hn in) and dh_b (B,Hout) ping-pong,
// the one holding d h0 at the end is returned; dc (B,H) in the cell dtype, grad_cn in
// and d c0 out; with a projection dh_all (T,B,Hout), r_all (T,B,H), dr_ws (B,H).
struct BackwardBuffers {
  at::Tensor grad_out, dgates, dh_a, dh_b, dc, dh_all, r_all, dr_ws;
};

// What both backward loops (backward_loop, ln_backward_loop) do at step t around their
// step kernel, on its argument struct k (BackwardStep / LnBackwardStep: the same field
// names): the step's mask and zoneout z, and where the gradient reaching r comes from —
// with a projection dh_all[t] = dout[t] + dh and dr = dh_all[t] W_hr first. Returns the
// step's z of h (or null).
template <typename scalar_t, typename acc_t, typename Step>
const scalar_t* backward_step_inputs(const LayerCall& c, BackwardBuffers& w,
                                     cudaStream_t stream, int64_t t, const scalar_t* go_t,
                                     const scalar_t* dh, Step& k) {
  const LayerSizes& z = c.z;
  const int64_t B = z.B, H = z.H, Hout = z.Hout;
  const scalar_t* zh = data_or_null<scalar_t>(c.reg.zoneout_h);
  const scalar_t* zc = data_or_null<scalar_t>(c.reg.zoneout_c);
  k.mask = c.mask.defined() ? c.mask.data_ptr<bool>() + t * B : nullptr;
  const scalar_t* zh_t = zh ? zh + t * B * Hout : nullptr;
  k.zc = zc ? zc + t * B * H : nullptr;
  k.zh = z.proj ? nullptr : zh_t;
  if (z.proj) {
    scalar_t* dht = w.dh_all.data_ptr<scalar_t>() + t * B * Hout;
    launch(projected_grad_kernel<scalar_t, acc_t>,
           static_cast<unsigned>(cuda_plan::pointwise_blocks(B * Hout)),
           cuda_plan::kPointwiseThreads, 0, stream, dht, go_t, dh, k.mask, zh_t, B, Hout);
    gemm_rm<scalar_t>(false, false, B, H, Hout, dht, Hout, c.w_hr.data_ptr<scalar_t>(), H, 0.f,
                      w.dr_ws.data_ptr<scalar_t>(), H);  // dr = dh W_hr
    k.go = nullptr;
    k.dh = dht;
    k.dr = w.dr_ws.data_ptr<scalar_t>();
    k.r_save = w.r_all.data_ptr<scalar_t>() + t * B * H;
  } else {
    k.go = go_t;
    k.dh = dh;
    k.dr = nullptr;
    k.r_save = nullptr;
  }
  return zh_t;
}

// dh_{t-1} = d W_hh (d: dgates[t], or with layer norm dR[t]), then (mask, dropout,
// zoneout) what else reaches h_{t-1}.
template <typename scalar_t, typename acc_t>
void backward_dh_prev(const LayerCall& c, cudaStream_t stream, const scalar_t* d,
                      const scalar_t* go_t, const scalar_t* dh, const bool* mask,
                      const scalar_t* zh_t, scalar_t* dh_nx) {
  const int64_t B = c.z.B, Hout = c.z.Hout, G = 4 * c.z.H;
  const scalar_t* rk = data_or_null<scalar_t>(c.reg.recurrent_keep);
  gemm_rm<scalar_t>(false, false, B, Hout, G, d, G, c.w_hh.data_ptr<scalar_t>(), Hout, 0.f,
                    dh_nx, Hout);
  if (mask || rk || zh_t)
    launch(dh_prev_kernel<scalar_t, acc_t>,
           static_cast<unsigned>(cuda_plan::pointwise_blocks(B * Hout)),
           cuda_plan::kPointwiseThreads, 0, stream, dh_nx, go_t, dh, mask, rk, zh_t, B, Hout);
}

template <typename scalar_t, typename acc_t>
at::Tensor backward_loop(const LayerCall& c, const at::Tensor& c0, cudaStream_t stream,
                         BackwardBuffers& w) {
  using cuda_plan::kPointwiseThreads;
  using cuda_plan::pointwise_blocks;
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const scalar_t* grad_out = data_or_null<scalar_t>(w.grad_out);
  const unsigned blocks = static_cast<unsigned>(pointwise_blocks(B * H));
  BackwardStep<scalar_t, acc_t> k;
  k.dc = w.dc.data_ptr<acc_t>();
  k.pc = data_or_null<scalar_t>(c.w_ch);
  k.B = B;
  k.H = H;
  k.Hout = Hout;
  k.proj = z.proj;
  k.act = c.act;
  k.ract = c.ract;
  scalar_t* dh = w.dh_a.data_ptr<scalar_t>();     // gradient reaching h_t from later steps
  scalar_t* dh_nx = w.dh_b.data_ptr<scalar_t>();  // ... and h_{t-1}
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t t = c.reverse ? T - 1 - s : s;
    const int64_t tp = c.reverse ? t + 1 : t - 1;
    const scalar_t* go_t = grad_out ? grad_out + t * B * Hout : nullptr;
    const scalar_t* zh_t = backward_step_inputs<scalar_t, acc_t>(c, w, stream, t, go_t, dh, k);
    k.g = c.gates.data_ptr<scalar_t>() + t * B * G;
    k.c_prev = s == 0 ? c0.data_ptr<acc_t>() : c.cs.data_ptr<acc_t>() + tp * B * H;
    k.c = c.cs.data_ptr<acc_t>() + t * B * H;
    k.dg = w.dgates.data_ptr<scalar_t>() + t * B * G;
    launch(backward_step_kernel<scalar_t, acc_t>, blocks, kPointwiseThreads, 0, stream, k);
    backward_dh_prev<scalar_t, acc_t>(c, stream, k.dg, go_t, dh, k.mask, zh_t, dh_nx);
    std::swap(dh, dh_nx);
  }
  return dh == w.dh_a.data_ptr<scalar_t>() ? w.dh_a : w.dh_b;
}

// The layer-norm loop's extra buffers: dA (T,B,4H) and dy (T,B,H) in the cell dtype, dR
// (T,B,4H) in the input dtype, ws (B,H) scratch in the cell dtype. (w.dgates is unused.)
struct LnBackwardBuffers {
  at::Tensor dA, dy, dR, ws;
};

template <typename scalar_t, typename acc_t>
at::Tensor ln_backward_loop(const LayerCall& c, const at::Tensor& c0, cudaStream_t stream,
                            BackwardBuffers& w, LnBackwardBuffers& l) {
  using cuda_plan::kPointwiseThreads;
  using cuda_plan::pointwise_blocks;
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const LnOffsets L = ln_offsets(c);
  const scalar_t* grad_out = data_or_null<scalar_t>(w.grad_out);
  const unsigned threads = static_cast<unsigned>(cuda_plan::ln_row_threads(H));
  LnBackwardStep<scalar_t, acc_t> k;
  k.p = ln_params<scalar_t>(c);
  k.L = L;
  k.dc = w.dc.data_ptr<acc_t>();
  k.ws = l.ws.data_ptr<acc_t>();
  k.H = H;
  k.proj = z.proj;
  k.act = c.act;
  k.ract = c.ract;
  scalar_t* dh = w.dh_a.data_ptr<scalar_t>();     // gradient reaching h_t from later steps
  scalar_t* dh_nx = w.dh_b.data_ptr<scalar_t>();  // ... and h_{t-1}
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t t = c.reverse ? T - 1 - s : s;
    const int64_t tp = c.reverse ? t + 1 : t - 1;
    const scalar_t* go_t = grad_out ? grad_out + t * B * Hout : nullptr;
    const scalar_t* zh_t = backward_step_inputs<scalar_t, acc_t>(c, w, stream, t, go_t, dh, k);
    k.save = c.gates.data_ptr<scalar_t>() + t * B * L.width;
    k.c_prev = s == 0 ? c0.data_ptr<acc_t>() : c.cs.data_ptr<acc_t>() + tp * B * H;
    k.c = c.cs.data_ptr<acc_t>() + t * B * H;
    k.dA = l.dA.data_ptr<acc_t>() + t * B * G;
    k.dy = l.dy.data_ptr<acc_t>() + t * B * H;
    k.dR = l.dR.data_ptr<scalar_t>() + t * B * G;
    launch(ln_backward_step_kernel<scalar_t, acc_t>, static_cast<unsigned>(B), threads, 0,
           stream, k);
    backward_dh_prev<scalar_t, acc_t>(c, stream, k.dR, go_t, dh, k.mask, zh_t, dh_nx);
    std::swap(dh, dh_nx);
  }
  return dh == w.dh_a.data_ptr<scalar_t>() ? w.dh_a : w.dh_b;
}

// dP (T*B, 4H), the input product's gradient, from dA after the loop: one block per row.
template <typename scalar_t, typename acc_t>
at::Tensor ln_input_product_grad(const LayerCall& c, const at::Tensor& dA, cudaStream_t stream) {
  const LayerSizes& z = c.z;
  const int64_t G = 4 * z.H;
  const LnOffsets L = ln_offsets(c);
  auto dP = at::empty({z.T * z.B, G}, c.input.options());
  const scalar_t* saved = c.gates.data_ptr<scalar_t>();
  launch(ln_rows_backward_kernel<scalar_t, acc_t>, static_cast<unsigned>(z.T * z.B),
         cuda_plan::ln_row_threads(G), 0, stream, static_cast<const acc_t*>(dA.data_ptr<acc_t>()),
         G, static_cast<const scalar_t*>(c.ln.w_ih.data_ptr<scalar_t>()), saved + L.xhat_ih,
         saved + L.rstd_ih, L.width, dP.data_ptr<scalar_t>());
  return dP;
}

}  // namespace cuda
}  // namespace torchlstm
