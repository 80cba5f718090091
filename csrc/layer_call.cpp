#include "layer_call.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

namespace torchlstm {
namespace {

// A required tensor argument (the schema makes them optional so that None gets this
// message, naming the argument, rather than the dispatcher's "UNKNOWN_SCALAR").
const at::Tensor& required(const char* op, const char* name, const OptTensor& t,
                           const char* shape) {
  TORCH_CHECK_TYPE(t.has_value() && t->defined(), op, ": ", name, " must be a tensor of shape ",
                   shape, ", got None");
  return *t;
}

// Every tensor argument lives where the input does (a meta or other-device tensor would
// otherwise reach the kernels' raw pointers, or route the call to another backend).
void check_device(const char* op, const char* name, const at::Tensor& t,
                  const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " must be on the device of input (",
              input.device(), "), got ", t.device());
}

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), op, ": ", name,
                   " must have the dtype of input (", input.scalar_type(), "), got ",
                   t.scalar_type());
  check_device(op, name, t, input);
}

void check_dims(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected,
                const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, op, ": ", name, " must have shape ", expected, " ",
                    meaning, ", got ", t.sizes());
}

// A checked argument, contiguous (undefined stays undefined).
at::Tensor arg(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
               const char* meaning, const at::Tensor& input) {
  check_like(op, name, t, input);
  check_dims(op, name, t, shape, meaning);
  return t.contiguous();
}

at::Tensor opt_arg(const char* op, const char* name, const OptTensor& t, at::IntArrayRef shape,
                   const char* meaning, const at::Tensor& input) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return arg(op, name, *t, shape, meaning, input);
}

// The checks both call kinds share: sizes from input, w_ih and w_hr, then every argument.
LayerCall common_call(const char* op, const at::Tensor& input, const OptTensor& h0_,
                      const OptTensor& c0_, const OptTensor& w_ih_, const OptTensor& w_hh_,
                      const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                      const OptTensor& mask, bool reverse, int64_t activation,
                      int64_t recurrent_activation, const Regularizers& reg,
                      const VariantArgs& v) {
  TORCH_CHECK_TYPE(input.defined(), op,
                   ": input must be a tensor of shape (seq_len, batch, input_size), got None");
  TORCH_CHECK_VALUE(input.dim() == 3, op,
                    ": input must be 3-D (seq_len, batch, input_size), got ", input.dim(),
                    "-D with shape ", input.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   op, ": input must be float16, bfloat16, float32 or float64, got ", dtype);
  const auto& h0 = required(op, "h0", h0_, "(batch, proj_size or hidden_size)");
  const auto& c0 = required(op, "c0", c0_, "(batch, hidden_size)");
  const auto& w_ih = required(op, "w_ih", w_ih_, "(4*hidden_size, input_size)");
  const auto& w_hh = required(op, "w_hh", w_hh_, "(4*hidden_size, proj_size or hidden_size)");
  const bool proj = w_hr.has_value() && w_hr->defined();
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op,
                    ": w_ih must have shape (4*hidden_size, input_size), got ", w_ih.sizes());
  TORCH_CHECK_VALUE(!proj || w_hr->dim() == 2, op,
                    ": w_hr must have shape (proj_size, hidden_size), got ", w_hr->sizes());
  LayerCall c;
  c.op = op;
  c.z.T = input.size(0);
  c.z.B = input.size(1);
  c.z.I = input.size(2);
  c.z.H = w_ih.size(0) / 4;
  c.z.proj = proj;
  c.z.Hout = proj ? w_hr->size(0) : c.z.H;
  c.reverse = reverse;
  c.dtype = dtype;
  c.cell_dtype = cell_state_dtype(dtype);
  const LayerSizes& z = c.z;

  TORCH_CHECK_VALUE(is_valid_activation(activation), op, ": unknown activation id ", activation,
                    " (see torchlstm.activations)");
  TORCH_CHECK_VALUE(is_valid_activation(recurrent_activation), op,
                    ": unknown recurrent_activation id ", recurrent_activation,
                    " (see torchlstm.activations)");
  c.act = static_cast<Activation>(activation);
  c.ract = static_cast<Activation>(recurrent_activation);

  c.input = input.contiguous();
  c.w_ih = arg(op, "w_ih", w_ih, {4 * z.H, z.I}, "(4*hidden_size, input_size)", input);
  c.w_hh = arg(op, "w_hh", w_hh, {4 * z.H, z.Hout}, "(4*hidden_size, proj_size or hidden_size)",
               input);
  if (proj) {
    c.w_hr = arg(op, "w_hr", *w_hr, {z.Hout, z.H}, "(proj_size, hidden_size)", input);
    TORCH_CHECK_VALUE(z.Hout > 0, op, ": w_hr must have proj_size > 0 rows, got ", w_hr->sizes());
  }
  c.b_ih = opt_arg(op, "b_ih", b_ih, {4 * z.H}, "(4*hidden_size)", input);
  c.b_hh = opt_arg(op, "b_hh", b_hh, {4 * z.H}, "(4*hidden_size)", input);
  c.h0 = arg(op, "h0", h0, {z.B, z.Hout}, "(batch, proj_size or hidden_size)", input);
  c.c0 = arg(op, "c0", c0, {z.B, z.H}, "(batch, hidden_size)", input);
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
                     mask->scalar_type());
    check_device(op, "mask", *mask, input);
    check_dims(op, "mask", *mask, {z.T, z.B}, "(seq_len, batch)");
    c.mask = mask->contiguous();
  }
  auto regularizer = [&](const char* name, const at::Tensor& t, at::IntArrayRef shape,
                         const char* meaning) {
    return t.defined() ? arg(op, name, t, shape, meaning, input) : at::Tensor();
  };
  c.reg.input_keep = regularizer("input_keep", reg.input_keep, {z.B, z.I}, "(batch, input_size)");
  c.reg.recurrent_keep = regularizer("recurrent_keep", reg.recurrent_keep, {z.B, z.Hout},
                                     "(batch, proj_size or hidden_size)");
  c.reg.zoneout_h = regularizer("zoneout_h", reg.zoneout_h, {z.T, z.B, z.Hout},
                                "(seq_len, batch, proj_size or hidden_size)");
  c.reg.zoneout_c = regularizer("zoneout_c", reg.zoneout_c, {z.T, z.B, z.H},
                                "(seq_len, batch, hidden_size)");
  c.w_ch = opt_arg(op, "w_ch", v.w_ch, {3 * z.H},
                   "(3*hidden_size: the peephole weights of the i, f and o gates)", input);
  const OptTensor* ln[] = {&v.ln_w_ih, &v.ln_w_hh, &v.ln_w_c, &v.ln_b_c};
  const int given = std::count_if(std::begin(ln), std::end(ln),
                                  [](const OptTensor* t) { return t->has_value() && (*t)->defined(); });
  TORCH_CHECK_VALUE(given == 0 || given == 4, op, ": layer normalisation takes all four of "
                    "ln_w_ih, ln_w_hh, ln_w_c and ln_b_c, got ", given);
  if (given == 4) {
    c.ln.w_ih = opt_arg(op, "ln_w_ih", v.ln_w_ih, {4 * z.H}, "(4*hidden_size)", input);
    c.ln.w_hh = opt_arg(op, "ln_w_hh", v.ln_w_hh, {4 * z.H}, "(4*hidden_size)", input);
    c.ln.w_c = opt_arg(op, "ln_w_c", v.ln_w_c, {z.H}, "(hidden_size)", input);
    c.ln.b_c = opt_arg(op, "ln_b_c", v.ln_b_c, {z.H}, "(hidden_size)", input);
    TORCH_CHECK_VALUE(v.ln_eps > 0 && std::isfinite(v.ln_eps), op,
                      ": layer_norm_eps must be a positive finite number, got ", v.ln_eps);
    c.ln.eps = v.ln_eps;
  }
  // The CPU BLAS calls take 32-bit sizes (LP64 BLAS), so does cuBLAS.
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  TORCH_CHECK_VALUE(z.B <= kIntMax && z.I <= kIntMax && 4 * z.H <= kIntMax && z.Hout <= kIntMax,
                    op, ": batch, input_size, 4*hidden_size and proj_size must each be below "
                    "2^31, got batch ", z.B, ", input_size ",
                    z.I, ", hidden_size ", z.H, ", output size ", z.Hout);
  return c;
}

}  // namespace

at::ScalarType cell_state_dtype(at::ScalarType input) {
  return input == at::kHalf || input == at::kBFloat16 ? at::kFloat : input;
}

at::Tensor LayerCall::dropped_input() const {
  return reg.input_keep.defined() ? (input * reg.input_keep.unsqueeze(0)).contiguous() : input;
}

LayerCall LayerCall::in_float32() const {
  auto up = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
  LayerCall c = *this;
  c.dtype = at::kFloat;
  for (at::Tensor* t : {&c.input, &c.h0, &c.c0, &c.w_ih, &c.w_hh, &c.b_ih, &c.b_hh, &c.w_hr,
                        &c.reg.input_keep, &c.reg.recurrent_keep, &c.reg.zoneout_h,
                        &c.reg.zoneout_c, &c.w_ch, &c.ln.w_ih, &c.ln.w_hh, &c.ln.w_c,
                        &c.ln.b_c, &c.grad_output, &c.grad_hn, &c.grad_cn, &c.output,
                        &c.gates})
    *t = up(*t);
  return c;  // cs is float32 already (cell_dtype), mask is bool
}

LayerCall forward_call(const char* op, const at::Tensor& input, const OptTensor& h0,
                       const OptTensor& c0, const OptTensor& w_ih, const OptTensor& w_hh,
                       const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                       const OptTensor& mask, bool reverse, int64_t activation,
                       int64_t recurrent_activation, const Regularizers& reg,
                       const VariantArgs& variants) {
  return common_call(op, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse, activation,
                     recurrent_activation, reg, variants);
}

LayerCall backward_call(const char* op, const OptTensor& grad_output, const OptTensor& grad_hn,
                        const OptTensor& grad_cn, const at::Tensor& input, const OptTensor& h0,
                        const OptTensor& c0, const OptTensor& w_ih, const OptTensor& w_hh,
                        const OptTensor& w_hr, const OptTensor& mask, const OptTensor& output,
                        const OptTensor& gates, const OptTensor& cs, bool reverse,
                        int64_t activation, int64_t recurrent_activation,
                        const Regularizers& reg, const VariantArgs& variants,
                        const OptTensor& b_ih, const OptTensor& b_hh) {
  LayerCall c = common_call(op, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask, reverse,
                            activation, recurrent_activation, reg, variants);
  const LayerSizes& z = c.z;
  c.output = arg(op, "output", required(op, "output", output, "(seq_len, batch, output size)"),
                 {z.T, z.B, z.Hout}, "(seq_len, batch, proj_size or hidden_size)", input);
  c.gates = arg(op, "gates", required(op, "gates", gates, "(seq_len, batch, saved width)"),
                {z.T, z.B, c.saved_layout().width},
                c.ln.on() ? "(seq_len, batch, 9*hidden_size+3: what layer_forward saved with "
                            "layer normalisation)"
                          : "(seq_len, batch, 4*hidden_size)",
                input);
  const auto& cs_ = required(op, "cs", cs, "(seq_len, batch, hidden_size)");
  TORCH_CHECK_TYPE(cs_.scalar_type() == c.cell_dtype, op, ": cs must have dtype ", c.cell_dtype,
                   " (the cell-state dtype of ", input.scalar_type(), " input), got ",
                   cs_.scalar_type());
  check_device(op, "cs", cs_, input);
  check_dims(op, "cs", cs_, {z.T, z.B, z.H}, "(seq_len, batch, hidden_size)");
  c.cs = cs_.contiguous();
  auto grad = [&](const char* name, const OptTensor& t, at::IntArrayRef shape) {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    check_like(op, name, *t, input);
    check_dims(op, name, *t, shape, "");
    return *t;  // as given: see LayerCall
  };
  c.grad_output = grad("grad_output", grad_output, {z.T, z.B, z.Hout});
  c.grad_hn = grad("grad_hn", grad_hn, {z.B, z.Hout});
  c.grad_cn = grad("grad_cn", grad_cn, {z.B, z.H});
  return c;
}

}  // namespace torchlstm
