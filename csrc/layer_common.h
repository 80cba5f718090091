// layer_common.h — what every backend's layer ops share beyond the argument checks:
// the regularisers of one call, and the gradients computed after the backward time
// loop (a few large ATen GEMMs over all T*B rows; the same on CPU and CUDA).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "lstm_args.h"

namespace torchlstm {

using OptTensor = c10::optional<at::Tensor>;

// The data of an optional tensor (undefined: null), for the kernels' raw pointers.
template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// The regularisers of one op call (see ops.cpp), checked, contiguous, undefined where
// absent. A 0-stride (eval-mode) zoneout z is materialised by contiguous().
struct Regularizers {
  at::Tensor input_keep, recurrent_keep, zoneout_h, zoneout_c;
  Regularizers(const char* op, const LayerSizes& z, const at::Tensor& input, const OptTensor& ik,
               const OptTensor& rk, const OptTensor& zh, const OptTensor& zc);
  // x * input_keep (every step's input through the one mask), or x itself.
  at::Tensor dropped_input(const at::Tensor& x) const;
};

// The gradients after the backward time loop, from dgates (T,B,4H):
//   d_input = dgates W_ih (times input_keep), d_w_ih = dgates^T x_dropped,
//   d_bias = sum of dgates, d_w_hh = sum_t dgates[t]^T (h_{t-1} times recurrent_keep)
//   (h_{t-1}: h0 at the first processed step, else the previous output row),
//   d_w_hr = dh_all^T r_all with a projection (else an empty tensor).
// Returns (d_input, d_w_ih, d_w_hh, d_bias, d_w_hr).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> weight_and_input_grads(
    const LayerSizes& z, bool reverse, const at::Tensor& dgates, const at::Tensor& x_dropped,
    const at::Tensor& w_ih, const at::Tensor& h0, const at::Tensor& output,
    const Regularizers& reg, const at::Tensor& dh_all, const at::Tensor& r_all);

// The cell_backward op of a backend whose layer_backward op is LayerBackward: the layer op
// over one time step. c comes back from cell_forward in the input's dtype and is handed
// on in the dtype the layer ops keep cell states in (float32 for half inputs).
template <auto LayerBackward>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
cell_backward_via_layer(const OptTensor& grad_h, const OptTensor& grad_c, const at::Tensor& input,
                        const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
                        const at::Tensor& w_hh, const at::Tensor& h, const at::Tensor& c,
                        const at::Tensor& gates, int64_t activation,
                        int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 2,
                    "torchlstm.cell_backward: input must be 2-D (batch, input_size), got ",
                    input.dim(), "-D");
  auto [dx, dh, dc, dw_ih, dw_hh, db, dw_hr] = LayerBackward(
      grad_h.has_value() ? OptTensor(grad_h->unsqueeze(0)) : c10::nullopt, c10::nullopt, grad_c,
      input.unsqueeze(0), hx, cx, w_ih, w_hh, c10::nullopt, c10::nullopt, h.unsqueeze(0),
      gates.unsqueeze(0), c.unsqueeze(0).to(cell_state_dtype(input.scalar_type())), false,
      activation, recurrent_activation, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt);
  return {dx.squeeze(0), dh, dc, dw_ih, dw_hh, db};
}

}  // namespace torchlstm
