// schemas.h — the torchlstm operator schemas (see ops.cpp for what each op does).
#pragma once

#include <torch/library.h>

// The regularisers, last in the layer ops' argument lists (all optional: existing callers
// are unaffected). input_keep (B,I), recurrent_keep (B,Hout): scaled Keras dropout masks
// (0 or 1/(1-p), constant over the sequence); zoneout_h (T,B,Hout), zoneout_c (T,B,H):
// per-step zoneout z (1 keeps the old value; the rate in eval). See lstm_cpu.cpp.
#define R_ARGS \
  "Tensor? input_keep=None, Tensor? recurrent_keep=None, Tensor? zoneout_h=None, " \
  "Tensor? zoneout_c=None"

namespace torchlstm {

// The schemas of the torchlstm ops, defined once: in torchlstm (ops.cpp) and, for the
// CUDA emulation, in torchlstm_emu (cuda_emu/module.cpp).
inline void define_schemas(torch::Library& m) {
  m.def(
      "layer_forward(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? mask, bool reverse, "
      "int activation, int recurrent_activation, " R_ARGS ") -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "layer_inference(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor? mask, bool reverse, "
      "int activation, int recurrent_activation, " R_ARGS ") -> (Tensor, Tensor, Tensor)");
  m.def(
      "layer_backward(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, Tensor input, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? mask, "
      "Tensor output, Tensor gates, Tensor cs, bool reverse, int activation, "
      "int recurrent_activation, " R_ARGS
      ") -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "cell_forward(Tensor input, Tensor hx, Tensor cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, int activation, int recurrent_activation) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "cell_backward(Tensor? grad_h, Tensor? grad_c, Tensor input, Tensor hx, Tensor cx, "
      "Tensor w_ih, Tensor w_hh, Tensor h, Tensor c, Tensor gates, int activation, "
      "int recurrent_activation) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace torchlstm

#undef R_ARGS
