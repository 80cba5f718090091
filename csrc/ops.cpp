// ops.cpp — the torchlstm operator schemas and the Python module torchlstm._C.
//
// Schemas live here, once; each backend adds its kernels with TORCH_LIBRARY_IMPL
// (cpu/lstm_cpu.cpp, cuda/). Fake (meta) kernels and autograd are registered from
// Python in torchlstm/_ops.py.
//
//   layer_forward:  one direction of one layer over a sequence (time-major).
//                   returns (output (T,B,Hout), h_n (B,Hout), c_n (B,H),
//                            gates (T,B,4H) pre-activations, cs (T,B,H) cell states)
//                   the last two are saved for backward.
//   layer_inference: layer_forward's (output, h_n, c_n) with nothing saved for backward
//                   (no autograd: the modules call it when no gradient is needed).
//   layer_backward: gradients of all inputs of layer_forward:
//                   (d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias (4H), d_w_hr or empty)
//   All three take the optional regularisers (R_ARGS below) last.
//   cell_forward / cell_backward: the same maths for one step (LSTMCell).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "cpu/blas.h"
#include "gate_math.h"

// The regularisers, last in the layer ops' argument lists (all optional: existing callers
// are unaffected). input_keep (B,I), recurrent_keep (B,Hout): scaled Keras dropout masks
// (0 or 1/(1-p), constant over the sequence); zoneout_h (T,B,Hout), zoneout_c (T,B,H):
// per-step zoneout z (1 keeps the old value; the rate in eval). See lstm_cpu.cpp.
#define R_ARGS \
  "Tensor? input_keep=None, Tensor? recurrent_keep=None, Tensor? zoneout_h=None, " \
  "Tensor? zoneout_c=None"

TORCH_LIBRARY(torchlstm, m) {
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

// The activation table of gate_math.h, for torchlstm.activations: [(name, id), ...].
static std::vector<std::pair<std::string, int>> activation_table() {
  return {
#define TL_TABLE_ENTRY(name, str, id) {str, id},
      TORCHLSTM_FOR_EACH_ACTIVATION(TL_TABLE_ENTRY)
#undef TL_TABLE_ENTRY
  };
}

static bool cuda_build() {
#ifdef TORCHLSTM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torchlstm kernels; the ops are torch.ops.torchlstm.*";
  m.def("activation_table", &activation_table,
        "[(name, id)] of the activations fused in the kernels");
  m.def("cpu_direct_blas", &torchlstm::cpu::has_direct_blas,
        "whether the CPU time loop calls BLAS directly (else through at::mm, slower)");
  m.def("cpu_packed_gemm", &torchlstm::cpu::has_packed_gemm,
        "whether float32 recurrent weights are packed once per sequence (MKL packed GEMM)");
  m.def("cuda_build", &cuda_build, "whether this build was compiled and linked with the CUDA toolkit");
}
