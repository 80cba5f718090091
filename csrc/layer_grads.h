// layer_grads.h — the gradients every backend computes after its backward time loop,
// from the gate gradients dgates (T,B,4H): a few large ATen GEMMs over all T*B rows.
#pragma once

#include <ATen/ATen.h>

#include "layer_call.h"

namespace torchlstm {

// `mm` computes the matrix products (at::mm, or a backend's own: the CPU's large_gemm.h).
using MatMul = at::Tensor (*)(const at::Tensor&, const at::Tensor&);

// d_input = d_proj W_ih (times input_keep), d_proj (T,B,4H) the gradient of the input
// products x W_ih^T, and with a projection d_w_hr = dh_all^T r_all (dh_all (T,B,Hout) the
// total gradient of each step's h, r_all (T,B,H) each step's o*act(c)), else an empty
// tensor.
void input_projection_grads(const LayerCall& c, const at::Tensor& d_proj,
                            const at::Tensor& dh_all, const at::Tensor& r_all, BackwardResult& g,
                            MatMul mm = &at::mm);

// input_projection_grads with d_proj = dgates, and d_bias = the sum of dgates over T*B
// rows (without layer normalisation both are the pre-activations' gradient).
void input_bias_projection_grads(const LayerCall& c, const at::Tensor& dgates,
                                 const at::Tensor& dh_all, const at::Tensor& r_all,
                                 BackwardResult& g, MatMul mm = &at::mm);

// d_w_ch, the peephole weights' gradient (empty without peepholes): the sums over all
// steps and rows of d_i c_prev, d_f c_prev (c_prev: c0 at the first processed step, else
// the previous saved state) and d_o c (the saved state), from dgates and cs.
void peephole_grads(const LayerCall& c, const at::Tensor& dgates, BackwardResult& g);

// d_w_ih = dgates^T x_dropped and d_w_hh = sum_t dgates[t]^T (h_{t-1} * recurrent_keep),
// h_{t-1} being h0 at the first processed step, else the previous output row: two GEMMs.
// (The CPU backend writes both as one GEMM: cpu/ops_cpu.cpp.)
void weight_grads(const LayerCall& c, const at::Tensor& dgates, const at::Tensor& x_dropped,
                  BackwardResult& g);

// weight_grads' d_w_hh alone, from the gradient dR (T,B,4H) of the recurrent products
// (layer normalisation: the input products' gradient differs, d_w_ih is the caller's).
void recurrent_weight_grad(const LayerCall& c, const at::Tensor& dR, BackwardResult& g,
                           MatMul mm = &at::mm);

}  // namespace torchlstm
