#include "lstm_args.h"

#include <c10/util/Exception.h>

#include <limits>

namespace torchlstm {
namespace {

void check_like(const char* op, const char* name, const at::Tensor& t,
                const at::Tensor& input) {
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), op, ": ", name,
                   " must have the dtype of input (", input.scalar_type(), "), got ",
                   t.scalar_type());
  TORCH_CHECK(t.device() == input.device(), op, ": ", name,
              " must be on the device of input (", input.device(), "), got ", t.device());
}

void check_dims(const char* op, const char* name, const at::Tensor& t,
                at::IntArrayRef expected, const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must have shape ", expected,
                    " ", meaning, ", got ", t.sizes());
}

}  // namespace

at::ScalarType cell_state_dtype(at::ScalarType input) {
  return input == at::kHalf || input == at::kBFloat16 ? at::kFloat : input;
}

void check_cell_states(const char* op, const at::Tensor& cs, const LayerSizes& s,
                       const at::Tensor& input) {
  const auto want = cell_state_dtype(input.scalar_type());
  TORCH_CHECK_TYPE(cs.scalar_type() == want, op, ": cs must have dtype ", want,
                   " (the cell-state dtype of ", input.scalar_type(), " input), got ",
                   cs.scalar_type());
  TORCH_CHECK(cs.device() == input.device(), op, ": cs must be on the device of input (",
              input.device(), "), got ", cs.device());
  check_dims(op, "cs", cs, {s.T, s.B, s.H}, "(seq_len, batch, hidden_size)");
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 at::IntArrayRef expected, const at::Tensor& like) {
  check_like(op, name, t, like);
  check_dims(op, name, t, expected, "");
}

void check_regularizer_args(const char* op, const LayerSizes& s, const at::Tensor& input,
                            const c10::optional<at::Tensor>& input_keep,
                            const c10::optional<at::Tensor>& recurrent_keep,
                            const c10::optional<at::Tensor>& zoneout_h,
                            const c10::optional<at::Tensor>& zoneout_c) {
  if (input_keep.has_value()) {
    check_like(op, "input_keep", *input_keep, input);
    check_dims(op, "input_keep", *input_keep, {s.B, s.I}, "(batch, input_size)");
  }
  if (recurrent_keep.has_value()) {
    check_like(op, "recurrent_keep", *recurrent_keep, input);
    check_dims(op, "recurrent_keep", *recurrent_keep, {s.B, s.Hout},
               "(batch, proj_size or hidden_size)");
  }
  if (zoneout_h.has_value()) {
    check_like(op, "zoneout_h", *zoneout_h, input);
    check_dims(op, "zoneout_h", *zoneout_h, {s.T, s.B, s.Hout},
               "(seq_len, batch, proj_size or hidden_size)");
  }
  if (zoneout_c.has_value()) {
    check_like(op, "zoneout_c", *zoneout_c, input);
    check_dims(op, "zoneout_c", *zoneout_c, {s.T, s.B, s.H}, "(seq_len, batch, hidden_size)");
  }
}

LayerSizes check_layer_args(const char* op, const at::Tensor& input, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                            const c10::optional<at::Tensor>& b_hh,
                            const c10::optional<at::Tensor>& w_hr,
                            const c10::optional<at::Tensor>& mask, int64_t activation,
                            int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 3, op, ": input must be 3-D (seq_len, batch, input_size), got ",
                    input.dim(), "-D with shape ", input.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   op, ": input must be float16, bfloat16, float32 or float64, got ", dtype);
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op,
                    ": w_ih must have shape (4*hidden_size, input_size), got ", w_ih.sizes());
  TORCH_CHECK_VALUE(!w_hr.has_value() || w_hr->dim() == 2, op,
                    ": w_hr must have shape (proj_size, hidden_size), got ", w_hr->sizes());
  LayerSizes s;
  s.T = input.size(0);
  s.B = input.size(1);
  s.I = input.size(2);
  s.H = w_ih.size(0) / 4;
  s.proj = w_hr.has_value();
  s.Hout = s.proj ? w_hr->size(0) : s.H;

  check_like(op, "w_ih", w_ih, input);
  check_dims(op, "w_ih", w_ih, {4 * s.H, s.I}, "(4*hidden_size, input_size)");
  check_like(op, "w_hh", w_hh, input);
  check_dims(op, "w_hh", w_hh, {4 * s.H, s.Hout}, "(4*hidden_size, proj_size or hidden_size)");
  if (s.proj) {
    check_like(op, "w_hr", *w_hr, input);
    check_dims(op, "w_hr", *w_hr, {s.Hout, s.H}, "(proj_size, hidden_size)");
    TORCH_CHECK_VALUE(s.Hout > 0, op, ": w_hr must have proj_size > 0 rows, got ", w_hr->sizes());
  }
  if (b_ih.has_value()) {
    check_like(op, "b_ih", *b_ih, input);
    check_dims(op, "b_ih", *b_ih, {4 * s.H}, "(4*hidden_size)");
  }
  if (b_hh.has_value()) {
    check_like(op, "b_hh", *b_hh, input);
    check_dims(op, "b_hh", *b_hh, {4 * s.H}, "(4*hidden_size)");
  }
  check_like(op, "h0", h0, input);
  check_dims(op, "h0", h0, {s.B, s.Hout}, "(batch, proj_size or hidden_size)");
  check_like(op, "c0", c0, input);
  check_dims(op, "c0", c0, {s.B, s.H}, "(batch, hidden_size)");
  if (mask.has_value()) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
                     mask->scalar_type());
    TORCH_CHECK(mask->device() == input.device(), op,
                ": mask must be on the device of input (", input.device(), "), got ",
                mask->device());
    check_dims(op, "mask", *mask, {s.T, s.B}, "(seq_len, batch)");
  }
  // The per-step BLAS calls take 32-bit sizes (LP64 BLAS).
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(s.B <= kIntMax && 4 * s.H <= kIntMax && s.Hout <= kIntMax, op,
                    ": batch, 4*hidden_size and proj_size must each be below 2^31, got batch ",
                    s.B, ", hidden_size ", s.H, ", output size ", s.Hout);
  TORCH_CHECK_VALUE(is_valid_activation(activation), op, ": unknown activation id ",
                    activation, " (see torchlstm.activations)");
  TORCH_CHECK_VALUE(is_valid_activation(recurrent_activation), op,
                    ": unknown recurrent_activation id ", recurrent_activation,
                    " (see torchlstm.activations)");
  return s;
}

}  // namespace torchlstm
