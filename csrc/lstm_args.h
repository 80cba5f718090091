// lstm_args.h — validation of the torchlstm ops' arguments, shared by every backend.
//
// The Python modules check their inputs with nn.LSTM's messages before calling an op;
// these checks protect direct callers of torch.ops.torchlstm.* (and the kernels' raw
// pointer arithmetic): a wrong shape, dtype or device is a Python exception naming the
// argument, never an out-of-bounds read.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "gate_math.h"

namespace torchlstm {

// Sizes of one direction of one layer over a sequence.
struct LayerSizes {
  int64_t T;     // time steps
  int64_t B;     // batch
  int64_t I;     // input features
  int64_t H;     // hidden (cell) size
  int64_t Hout;  // size of h: proj_size with a projection, else H
  bool proj;
};

// input (T,B,I), h0 (B,Hout), c0 (B,H), w_ih (4H,I), w_hh (4H,Hout), b_ih/b_hh (4H),
// w_hr (Hout,H), mask (T,B) bool. All tensors on one device with one float dtype.
LayerSizes check_layer_args(const char* op, const at::Tensor& input, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                            const c10::optional<at::Tensor>& b_hh,
                            const c10::optional<at::Tensor>& w_hr,
                            const c10::optional<at::Tensor>& mask, int64_t activation,
                            int64_t recurrent_activation);

// The regularisers' optional tensors (Keras dropout, zoneout), all of input's dtype and
// device: input_keep (B,I) and recurrent_keep (B,Hout) the scaled dropout masks (0 or
// 1/(1-p), one per sequence), zoneout_h (T,B,Hout) and zoneout_c (T,B,H) the per-step z
// (1 keeps the old value; the rate in eval). Values are not checked (that would cost a
// pass over them, and a device sync on CUDA).
void check_regularizer_args(const char* op, const LayerSizes& s, const at::Tensor& input,
                            const c10::optional<at::Tensor>& input_keep,
                            const c10::optional<at::Tensor>& recurrent_keep,
                            const c10::optional<at::Tensor>& zoneout_h,
                            const c10::optional<at::Tensor>& zoneout_c);

// The dtype cell states are kept and saved in: float32 for float16/bfloat16 input, else
// the input's own.
at::ScalarType cell_state_dtype(at::ScalarType input);

// The saved cell states `cs` of layer_backward: (T, B, H) in cell_state_dtype(input).
void check_cell_states(const char* op, const at::Tensor& cs, const LayerSizes& s,
                       const at::Tensor& input);

// A tensor that must have exactly `expected` as its shape (gradients, saved tensors).
void check_shape(const char* op, const char* name, const at::Tensor& t,
                 at::IntArrayRef expected, const at::Tensor& like);

}  // namespace torchlstm
