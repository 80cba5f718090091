// layer_call.h — one description of a layer op call, shared by every backend.
//
// Each layer op (layer_forward, layer_inference, layer_backward: see ops.h) turns its
// arguments into ONE LayerCall: the checks run here, once (a wrong shape, dtype or device
// is a Python exception naming the argument, never an out-of-bounds read), the tensors
// are made contiguous, and every backend's time loop takes the call instead of a long
// list of positional arguments. A new option of the cell adds its fields here, its checks
// in layer_call.cpp, and its schema arguments in ops.h.
// (The model: flash-attention's Flash_fwd_params, filled once by set_params_fprop.)
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "gate_math.h"

namespace torchlstm {

using OptTensor = c10::optional<at::Tensor>;

// Sizes of one direction of one layer over a sequence.
struct LayerSizes {
  int64_t T;     // time steps
  int64_t B;     // batch
  int64_t I;     // input features
  int64_t H;     // hidden (cell) size
  int64_t Hout;  // size of h: proj_size with a projection, else H
  bool proj;
};

// Keras dropout and zoneout, each undefined when off: input_keep (B,I) and
// recurrent_keep (B,Hout) are the scaled dropout masks (0 or 1/(1-p), one per sequence);
// zoneout_h (T,B,Hout) and zoneout_c (T,B,H) the per-step z (1 keeps the old value; the
// rate in eval; a 0-stride z is materialised). Values are not checked (that would cost a
// pass over them, and a device sync on CUDA).
struct Regularizers {
  at::Tensor input_keep, recurrent_keep, zoneout_h, zoneout_c;
};

// Layer normalisation (layer_norm=True; gate_math.h's ln_* functions), undefined where off:
// the scales of LN(x W_ih^T) and LN(h W_hh^T) (4H each), the scale and shift of LN(c~)
// (H each), all four or none; eps the variance epsilon.
struct LayerNormArgs {
  at::Tensor w_ih, w_hh, w_c, b_c;
  double eps = 1e-5;
  bool on() const { return w_ih.defined(); }
};

// The cell variants as the schemas pass them (ops.h), before the checks.
struct VariantArgs {
  OptTensor w_ch, ln_w_ih, ln_w_hh, ln_w_c, ln_b_c;
  double ln_eps;
};

// What forward saves per step and batch row for backward (the `gates` output), along its
// last dimension: the gate pre-activations a (4H; with the peephole terms in); with layer
// normalisation instead the normalised products x^_ih = LN(x W_ih^T) and x^_hh (4H each,
// before the scales), x^_c = LN(c~) (H) and the rstd of those three rows, from which
// backward recomputes a (with the biases, which layer_backward then takes).
struct SavedLayout {
  int64_t xhat_ih, xhat_hh, xhat_c, rstd_ih, rstd_hh, rstd_c, width;
  SavedLayout(int64_t H, bool layer_norm)
      : xhat_ih(0), xhat_hh(4 * H), xhat_c(8 * H), rstd_ih(9 * H), rstd_hh(9 * H + 1),
        rstd_c(9 * H + 2), width(layer_norm ? 9 * H + 3 : 4 * H) {}
};

struct LayerCall {
  const char* op;  // for messages: "torchlstm.layer_forward", ...
  LayerSizes z;
  bool reverse;    // process t = T-1 .. 0
  Activation act;  // candidate and output non-linearity
  Activation ract; // gate non-linearity
  at::ScalarType dtype;       // of input, and of every floating argument
  at::ScalarType cell_dtype;  // cell states (kept and saved): float32 for half inputs

  // The forward arguments, checked and contiguous; undefined where absent.
  at::Tensor input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask;
  Regularizers reg;
  // The cell variants, undefined where off. w_ch (3H): the peephole weights p_i, p_f, p_o
  // (gate_math.h's cell_forward_peephole).
  at::Tensor w_ch;
  LayerNormArgs ln;

  // layer_backward only. The incoming gradients, checked but as given (a backend decides
  // how to make them contiguous: they are often expanded), undefined where absent; and
  // what forward saved, contiguous (gates: see SavedLayout).
  at::Tensor grad_output, grad_hn, grad_cn, output, gates, cs;

  SavedLayout saved_layout() const { return SavedLayout(z.H, ln.on()); }

  // x * input_keep (what W_ih sees), or x itself.
  at::Tensor dropped_input() const;
  // The same call with every floating tensor in float32 (cs, mask untouched): the CPU
  // runs half-precision inputs through its float32 kernels.
  LayerCall in_float32() const;
};

// The cell-state dtype of an input dtype: float32 for float16/bfloat16, else its own.
at::ScalarType cell_state_dtype(at::ScalarType input);

// The layer_forward / layer_inference call (checks everything; see ops.h for the shapes).
LayerCall forward_call(const char* op, const at::Tensor& input, const OptTensor& h0,
                       const OptTensor& c0, const OptTensor& w_ih, const OptTensor& w_hh,
                       const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                       const OptTensor& mask, bool reverse, int64_t activation,
                       int64_t recurrent_activation, const Regularizers& reg,
                       const VariantArgs& variants);

// The layer_backward call: the forward call's checks plus the gradients and saved tensors.
LayerCall backward_call(const char* op, const OptTensor& grad_output, const OptTensor& grad_hn,
                        const OptTensor& grad_cn, const at::Tensor& input, const OptTensor& h0,
                        const OptTensor& c0, const OptTensor& w_ih, const OptTensor& w_hh,
                        const OptTensor& w_hr, const OptTensor& mask, const OptTensor& output,
                        const OptTensor& gates, const OptTensor& cs, bool reverse,
                        int64_t activation, int64_t recurrent_activation,
                        const Regularizers& reg, const VariantArgs& variants,
                        const OptTensor& b_ih, const OptTensor& b_hh);

// What a backend's forward returns: output (T,B,Hout), h_n (B,Hout), c_n (B,H), and for
// backward what each step saves (T,B,SavedLayout::width) and the cell states (T,B,H) in
// cell_dtype (empty, T = 0, for inference).
struct ForwardResult {
  at::Tensor output, h_n, c_n, gates, cs;
};

// What a backend's backward returns: the gradient of every differentiable forward
// argument; d_bias (4H) serves b_ih and b_hh alike; d_w_hr empty without a projection,
// d_w_ch without peepholes, d_ln without layer normalisation (else (10H): the gradients
// of ln w_ih (4H), w_hh (4H), w_c (H), b_c (H) one after the other).
struct BackwardResult {
  at::Tensor d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_w_hr, d_w_ch, d_ln;
};

}  // namespace torchlstm
