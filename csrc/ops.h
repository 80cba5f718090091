// ops.h — the torchlstm operators: their schemas, and the one adapter from a schema's
// arguments to a LayerCall (layer_call.h) that every backend registers.
//
//   layer_forward:   one direction of one layer over a sequence (time-major).
//                    returns (output (T,B,Hout), h_n (B,Hout), c_n (B,H),
//                             gates (T,B,4H) pre-activations, cs (T,B,H) cell states)
//                    the last two are saved for backward (with layer normalisation
//                    gates is (T,B,9H+3): layer_call.h's SavedLayout).
//   layer_inference: layer_forward's (output, h_n, c_n), nothing saved (no autograd: the
//                    modules call it when no gradient is needed).
//   layer_backward:  the gradients of layer_forward's inputs:
//                    (d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias (4H), d_w_hr or empty,
//                     d_w_ch or empty, d_ln (10H) or empty)
// Shapes: input (T,B,I), h0 (B,Hout), c0 (B,H), w_ih (4H,I), w_hh (4H,Hout), b_ih/b_hh
// (4H), w_hr (Hout,H) (the projection; absent without), mask (T,B) bool (false: the state
// carries over), then the regularisers (layer_call.h), then the cell variants: w_ch (3H)
// the peephole weights (i, f, o); ln_w_ih, ln_w_hh (4H), ln_w_c, ln_b_c (H) and
// layer_norm_eps, the layer normalisation (all four or none); all optional and last.
// layer_backward takes b_ih and b_hh last (layer normalisation's backward recomputes the
// pre-activations with them; unused otherwise).
// h0, c0, w_ih, w_hh, output, gates and cs are required but typed `Tensor?`, so that None
// gets an error naming the argument. LSTMCell is layer_forward over one step.
// Fake kernels and autograd are registered from Python (torchlstm/_ops.py), which is the
// one Python file that knows these argument orders.
#pragma once

#include <torch/library.h>

#include <tuple>

#include "layer_call.h"

namespace torchlstm {

#define TORCHLSTM_FORWARD_ARGS                                                          \
  "Tensor input, Tensor? h0, Tensor? c0, Tensor? w_ih, Tensor? w_hh, Tensor? b_ih, "    \
  "Tensor? b_hh, Tensor? w_hr, Tensor? mask, bool reverse, int activation, "            \
  "int recurrent_activation, Tensor? input_keep=None, Tensor? recurrent_keep=None, "    \
  "Tensor? zoneout_h=None, Tensor? zoneout_c=None, " TORCHLSTM_VARIANT_ARGS
#define TORCHLSTM_VARIANT_ARGS                                                   \
  "Tensor? w_ch=None, Tensor? ln_w_ih=None, Tensor? ln_w_hh=None, "              \
  "Tensor? ln_w_c=None, Tensor? ln_b_c=None, float layer_norm_eps=1e-05"

inline void define_schemas(torch::Library& m) {
  m.def("layer_forward(" TORCHLSTM_FORWARD_ARGS
        ") -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("layer_inference(" TORCHLSTM_FORWARD_ARGS ") -> (Tensor, Tensor, Tensor)");
  m.def(
      "layer_backward(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, Tensor input, "
      "Tensor? h0, Tensor? c0, Tensor? w_ih, Tensor? w_hh, Tensor? w_hr, Tensor? mask, "
      "Tensor? output, Tensor? gates, Tensor? cs, bool reverse, int activation, "
      "int recurrent_activation, Tensor? input_keep=None, Tensor? recurrent_keep=None, "
      "Tensor? zoneout_h=None, Tensor? zoneout_c=None, " TORCHLSTM_VARIANT_ARGS
      ", Tensor? b_ih=None, Tensor? b_hh=None) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace detail {
inline at::Tensor value_or_undefined(const OptTensor& t) {
  return t.has_value() ? *t : at::Tensor();
}
inline Regularizers regularizers(const OptTensor& ik, const OptTensor& rk, const OptTensor& zh,
                                 const OptTensor& zc) {
  return {value_or_undefined(ik), value_or_undefined(rk), value_or_undefined(zh),
          value_or_undefined(zc)};
}
// The cell variants' schema arguments, in schema order (TORCHLSTM_VARIANT_ARGS).
#define TORCHLSTM_VARIANT_PARAMS                                                          \
  const OptTensor &w_ch, const OptTensor &ln_w_ih, const OptTensor &ln_w_hh,              \
      const OptTensor &ln_w_c, const OptTensor &ln_b_c, double layer_norm_eps
#define TORCHLSTM_VARIANT_VALUES                                        \
  ::torchlstm::VariantArgs { w_ch, ln_w_ih, ln_w_hh, ln_w_c, ln_b_c, layer_norm_eps }
}  // namespace detail

// The op entry points of a backend: Backend::forward(const LayerCall&, bool save) ->
// ForwardResult and Backend::backward(const LayerCall&) -> BackwardResult. Register with
//   TORCHLSTM_REGISTER_LAYER_OPS(m, Backend)
template <class Backend>
struct LayerOps {
  using Forward5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
  using Forward3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
  using Backward9 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

  static ForwardResult run(const char* op, bool save, const at::Tensor& input,
                           const OptTensor& h0, const OptTensor& c0, const OptTensor& w_ih,
                           const OptTensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                           const OptTensor& w_hr, const OptTensor& mask, bool reverse,
                           int64_t act, int64_t ract, const OptTensor& ik, const OptTensor& rk,
                           const OptTensor& zh, const OptTensor& zc, const VariantArgs& v) {
    return Backend::forward(forward_call(op, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask,
                                         reverse, act, ract, detail::regularizers(ik, rk, zh, zc),
                                         v),
                            save);
  }

  static Forward5 forward(const at::Tensor& input, const OptTensor& h0, const OptTensor& c0,
                          const OptTensor& w_ih, const OptTensor& w_hh, const OptTensor& b_ih,
                          const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& mask,
                          bool reverse, int64_t act, int64_t ract, const OptTensor& ik,
                          const OptTensor& rk, const OptTensor& zh, const OptTensor& zc,
                          TORCHLSTM_VARIANT_PARAMS) {
    auto r = run("torchlstm.layer_forward", true, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                 mask, reverse, act, ract, ik, rk, zh, zc, TORCHLSTM_VARIANT_VALUES);
    return {r.output, r.h_n, r.c_n, r.gates, r.cs};
  }

  static Forward3 inference(const at::Tensor& input, const OptTensor& h0, const OptTensor& c0,
                            const OptTensor& w_ih, const OptTensor& w_hh, const OptTensor& b_ih,
                            const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& mask,
                            bool reverse, int64_t act, int64_t ract, const OptTensor& ik,
                            const OptTensor& rk, const OptTensor& zh, const OptTensor& zc,
                            TORCHLSTM_VARIANT_PARAMS) {
    auto r = run("torchlstm.layer_inference", false, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                 mask, reverse, act, ract, ik, rk, zh, zc, TORCHLSTM_VARIANT_VALUES);
    return {r.output, r.h_n, r.c_n};
  }

  static Backward9 backward(const OptTensor& grad_output, const OptTensor& grad_hn,
                            const OptTensor& grad_cn, const at::Tensor& input,
                            const OptTensor& h0, const OptTensor& c0, const OptTensor& w_ih,
                            const OptTensor& w_hh, const OptTensor& w_hr, const OptTensor& mask,
                            const OptTensor& output, const OptTensor& gates,
                            const OptTensor& cs, bool reverse, int64_t act, int64_t ract,
                            const OptTensor& ik, const OptTensor& rk, const OptTensor& zh,
                            const OptTensor& zc, TORCHLSTM_VARIANT_PARAMS,
                            const OptTensor& b_ih, const OptTensor& b_hh) {
    auto g = Backend::backward(backward_call("torchlstm.layer_backward", grad_output, grad_hn,
                                             grad_cn, input, h0, c0, w_ih, w_hh, w_hr, mask,
                                             output, gates, cs, reverse, act, ract,
                                             detail::regularizers(ik, rk, zh, zc),
                                             TORCHLSTM_VARIANT_VALUES, b_ih, b_hh));
    return {g.d_input, g.d_h0, g.d_c0, g.d_w_ih, g.d_w_hh, g.d_bias, g.d_w_hr, g.d_w_ch, g.d_ln};
  }
};

#define TORCHLSTM_REGISTER_LAYER_OPS(m, Backend)                              \
  do {                                                                        \
    (m).impl("layer_forward", &::torchlstm::LayerOps<Backend>::forward);      \
    (m).impl("layer_inference", &::torchlstm::LayerOps<Backend>::inference);  \
    (m).impl("layer_backward", &::torchlstm::LayerOps<Backend>::backward);    \
  } while (0)

}  // namespace torchlstm
