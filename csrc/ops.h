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
//   layer_pair_forward / layer_pair_inference / layer_pair_backward: the same for both
//                    directions of a bidirectional layer in ONE call, so that a backend
//                    can run them at once (the CPU: one thread each, no barrier between
//                    them). Every per-direction argument is a list [forward, reverse]
//                    (no `reverse` flag); the input and mask are shared. Returns output
//                    (T,B,2*Hout) (the directions side by side, as nn.LSTM), h_n
//                    (2,B,Hout), c_n (2,B,H), and for backward the lists gates, cs;
//                    backward gives d_input (both directions' summed) and a list
//                    [forward, reverse] for each other gradient. No defaults: every
//                    argument is given (the modules call these, torchlstm/_ops.py).
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

#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

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

// The pair ops' arguments: layer_forward's with a list [forward, reverse] for each
// per-direction tensor, no `reverse`, no defaults.
#define TORCHLSTM_PAIR_ARGS                                                              \
  "Tensor input, Tensor?[] h0, Tensor?[] c0, Tensor?[] w_ih, Tensor?[] w_hh, "          \
  "Tensor?[] b_ih, Tensor?[] b_hh, Tensor?[] w_hr, Tensor? mask, int activation, "      \
  "int recurrent_activation, " TORCHLSTM_PAIR_TAIL_ARGS
#define TORCHLSTM_PAIR_TAIL_ARGS                                                         \
  "Tensor?[] input_keep, Tensor?[] recurrent_keep, Tensor?[] zoneout_h, "               \
  "Tensor?[] zoneout_c, Tensor?[] w_ch, Tensor?[] ln_w_ih, Tensor?[] ln_w_hh, "         \
  "Tensor?[] ln_w_c, Tensor?[] ln_b_c, float layer_norm_eps"

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
  m.def("layer_pair_forward(" TORCHLSTM_PAIR_ARGS
        ") -> (Tensor, Tensor, Tensor, Tensor[], Tensor[])");
  m.def("layer_pair_inference(" TORCHLSTM_PAIR_ARGS ") -> (Tensor, Tensor, Tensor)");
  m.def(
      "layer_pair_backward(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, "
      "Tensor input, Tensor?[] h0, Tensor?[] c0, Tensor?[] w_ih, Tensor?[] w_hh, "
      "Tensor?[] w_hr, Tensor? mask, Tensor? output, Tensor?[] gates, Tensor?[] cs, "
      "int activation, int recurrent_activation, " TORCHLSTM_PAIR_TAIL_ARGS
      ", Tensor?[] b_ih, Tensor?[] b_hh) -> (Tensor, Tensor[], Tensor[], Tensor[], Tensor[], "
      "Tensor[], Tensor[], Tensor[], Tensor[])");
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

// The pair ops (both directions of a layer): two LayerCalls, built and checked before
// anything runs, then Backend::both_directions(z, run) runs run(0) and run(1) (the CPU
// at once on two threads, CUDA one after the other). run(d) must only write its own
// results.
template <class Backend>
struct LayerPairOps {
  using List = c10::List<OptTensor>;
  using Forward5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>,
                              std::vector<at::Tensor>>;
  using Forward3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
  using Pair = std::vector<at::Tensor>;
  using Backward9 = std::tuple<at::Tensor, Pair, Pair, Pair, Pair, Pair, Pair, Pair, Pair>;

  // The op's name as each direction's checks report it.
  static const char* direction_op(bool backward, bool save, int d) {
    static const char* names[3][2] = {
        {"torchlstm.layer_pair_inference (forward direction)",
         "torchlstm.layer_pair_inference (reverse direction)"},
        {"torchlstm.layer_pair_forward (forward direction)",
         "torchlstm.layer_pair_forward (reverse direction)"},
        {"torchlstm.layer_pair_backward (forward direction)",
         "torchlstm.layer_pair_backward (reverse direction)"}};
    return names[backward ? 2 : save ? 1 : 0][d];
  }

  // Entry d of a per-direction list argument, which must hold two tensors or two None
  // (autograd differentiates a list of tensors; one with a None in it is a constant).
  struct Lists {
    const char* op;
    OptTensor operator()(const List& l, const char* name, int d) const {
      TORCH_CHECK(l.size() == 2, op, ": ", name,
                  " must be a list of 2: [forward direction, reverse direction], got ",
                  l.size());
      TORCH_CHECK(l.get(0).has_value() == l.get(1).has_value(), op, ": ", name,
                  " must be two tensors or two None, got one of each");
      return l.get(d);
    }
  };

  // The two directions must have the same sizes: their h_n, c_n are stacked.
  static void check_same_sizes(const char* op, const LayerCall& f, const LayerCall& r) {
    TORCH_CHECK(f.z.H == r.z.H && f.z.Hout == r.z.Hout, op,
                ": both directions must have the same hidden size and output size, got "
                "hidden_size ",
                f.z.H, " / ", r.z.H, ", output size ", f.z.Hout, " / ", r.z.Hout);
  }

  // (the pair ops' forward arguments, in schema order: TORCHLSTM_PAIR_ARGS)
#define TORCHLSTM_PAIR_PARAMS                                                                 \
  const at::Tensor &input, const List &h0, const List &c0, const List &w_ih, const List &w_hh, \
      const List &b_ih, const List &b_hh, const List &w_hr, const OptTensor &mask,           \
      int64_t act, int64_t ract, const List &ik, const List &rk, const List &zh,             \
      const List &zc, const List &w_ch, const List &ln_w_ih, const List &ln_w_hh,            \
      const List &ln_w_c, const List &ln_b_c, double eps
#define TORCHLSTM_PAIR_VALUES                                                                \
  input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, act, ract, ik, rk, zh, zc, w_ch, ln_w_ih, \
      ln_w_hh, ln_w_c, ln_b_c, eps

  static std::array<ForwardResult, 2> run(bool save, TORCHLSTM_PAIR_PARAMS) {
    std::array<LayerCall, 2> calls;
    for (int d = 0; d < 2; ++d) {
      const Lists arg{direction_op(false, save, d)};
      calls[d] = forward_call(
          arg.op, input, arg(h0, "h0", d), arg(c0, "c0", d), arg(w_ih, "w_ih", d),
          arg(w_hh, "w_hh", d), arg(b_ih, "b_ih", d), arg(b_hh, "b_hh", d), arg(w_hr, "w_hr", d),
          mask, d == 1, act, ract,
          detail::regularizers(arg(ik, "input_keep", d), arg(rk, "recurrent_keep", d),
                               arg(zh, "zoneout_h", d), arg(zc, "zoneout_c", d)),
          VariantArgs{arg(w_ch, "w_ch", d), arg(ln_w_ih, "ln_w_ih", d), arg(ln_w_hh, "ln_w_hh", d),
                      arg(ln_w_c, "ln_w_c", d), arg(ln_b_c, "ln_b_c", d), eps});
    }
    check_same_sizes(save ? "torchlstm.layer_pair_forward" : "torchlstm.layer_pair_inference",
                     calls[0], calls[1]);
    std::array<ForwardResult, 2> r;
    Backend::both_directions(calls[0].z, [&](int d) { r[d] = Backend::forward(calls[d], save); });
    return r;
  }

  static Forward5 forward(TORCHLSTM_PAIR_PARAMS) {
    auto r = run(true, TORCHLSTM_PAIR_VALUES);
    return {at::cat({r[0].output, r[1].output}, 2), at::stack({r[0].h_n, r[1].h_n}),
            at::stack({r[0].c_n, r[1].c_n}), Pair{r[0].gates, r[1].gates},
            Pair{r[0].cs, r[1].cs}};
  }

  static Forward3 inference(TORCHLSTM_PAIR_PARAMS) {
    auto r = run(false, TORCHLSTM_PAIR_VALUES);
    return {at::cat({r[0].output, r[1].output}, 2), at::stack({r[0].h_n, r[1].h_n}),
            at::stack({r[0].c_n, r[1].c_n})};
  }
#undef TORCHLSTM_PAIR_PARAMS
#undef TORCHLSTM_PAIR_VALUES

  // Direction d's share of a tensor holding both side by side along dim (output,
  // grad_output: dim 2, each Hout wide) or stacked along dim 0 (grad_hn, grad_cn).
  static OptTensor half(const OptTensor& t, int64_t dim, int d, const char* op,
                        const char* name) {
    if (!t.has_value()) return t;
    TORCH_CHECK(t->dim() > dim && t->size(dim) % 2 == 0, op, ": ", name,
                " must hold both directions along dimension ", dim, ", got shape ",
                t->sizes());
    const int64_t n = t->size(dim) / 2;
    return dim == 0 ? t->select(0, d) : t->narrow(dim, d * n, n);
  }

  static Backward9 backward(const OptTensor& grad_output, const OptTensor& grad_hn,
                            const OptTensor& grad_cn, const at::Tensor& input, const List& h0,
                            const List& c0, const List& w_ih, const List& w_hh,
                            const List& w_hr, const OptTensor& mask, const OptTensor& output,
                            const List& gates, const List& cs, int64_t act, int64_t ract,
                            const List& ik, const List& rk, const List& zh, const List& zc,
                            const List& w_ch, const List& ln_w_ih, const List& ln_w_hh,
                            const List& ln_w_c, const List& ln_b_c, double eps,
                            const List& b_ih, const List& b_hh) {
    const char* op = "torchlstm.layer_pair_backward";
    std::array<LayerCall, 2> calls;
    for (int d = 0; d < 2; ++d) {
      const Lists arg{direction_op(true, true, d)};
      calls[d] = backward_call(
          arg.op, half(grad_output, 2, d, op, "grad_output"), half(grad_hn, 0, d, op, "grad_hn"),
          half(grad_cn, 0, d, op, "grad_cn"), input, arg(h0, "h0", d), arg(c0, "c0", d),
          arg(w_ih, "w_ih", d), arg(w_hh, "w_hh", d), arg(w_hr, "w_hr", d), mask,
          half(output, 2, d, op, "output"), arg(gates, "gates", d), arg(cs, "cs", d), d == 1, act,
          ract,
          detail::regularizers(arg(ik, "input_keep", d), arg(rk, "recurrent_keep", d),
                               arg(zh, "zoneout_h", d), arg(zc, "zoneout_c", d)),
          VariantArgs{arg(w_ch, "w_ch", d), arg(ln_w_ih, "ln_w_ih", d), arg(ln_w_hh, "ln_w_hh", d),
                      arg(ln_w_c, "ln_w_c", d), arg(ln_b_c, "ln_b_c", d), eps},
          arg(b_ih, "b_ih", d), arg(b_hh, "b_hh", d));
    }
    check_same_sizes(op, calls[0], calls[1]);
    std::array<BackwardResult, 2> g;
    Backend::both_directions(calls[0].z, [&](int d) { g[d] = Backend::backward(calls[d]); });
    const auto two = [&](at::Tensor BackwardResult::*m) { return Pair{g[0].*m, g[1].*m}; };
    return {g[0].d_input.add_(g[1].d_input), two(&BackwardResult::d_h0),
            two(&BackwardResult::d_c0), two(&BackwardResult::d_w_ih),
            two(&BackwardResult::d_w_hh), two(&BackwardResult::d_bias),
            two(&BackwardResult::d_w_hr), two(&BackwardResult::d_w_ch),
            two(&BackwardResult::d_ln)};
  }
};

#define TORCHLSTM_REGISTER_LAYER_OPS(m, Backend)                                        \
  do {                                                                                  \
    (m).impl("layer_forward", &::torchlstm::LayerOps<Backend>::forward);                \
    (m).impl("layer_inference", &::torchlstm::LayerOps<Backend>::inference);            \
    (m).impl("layer_backward", &::torchlstm::LayerOps<Backend>::backward);              \
    (m).impl("layer_pair_forward", &::torchlstm::LayerPairOps<Backend>::forward);       \
    (m).impl("layer_pair_inference", &::torchlstm::LayerPairOps<Backend>::inference);   \
    (m).impl("layer_pair_backward", &::torchlstm::LayerPairOps<Backend>::backward);     \
  } while (0)

}  // namespace torchlstm
