#include "layer_grads.h"

namespace torchlstm {

void input_projection_grads(const LayerCall& c, const at::Tensor& d_proj,
                            const at::Tensor& dh_all, const at::Tensor& r_all, BackwardResult& g,
                            MatMul mm) {
  const LayerSizes& z = c.z;
  g.d_input = mm(d_proj.view({z.T * z.B, 4 * z.H}), c.w_ih).view({z.T, z.B, z.I});
  if (c.reg.input_keep.defined()) g.d_input.mul_(c.reg.input_keep.unsqueeze(0));
  g.d_w_hr = z.proj ? mm(dh_all.view({z.T * z.B, z.Hout}).t(), r_all.view({z.T * z.B, z.H}))
                    : at::empty({0}, d_proj.options());
}

void input_bias_projection_grads(const LayerCall& c, const at::Tensor& dgates,
                                 const at::Tensor& dh_all, const at::Tensor& r_all,
                                 BackwardResult& g, MatMul mm) {
  input_projection_grads(c, dgates, dh_all, r_all, g, mm);
  g.d_bias = dgates.view({c.z.T * c.z.B, 4 * c.z.H}).sum(0);
}

void peephole_grads(const LayerCall& c, const at::Tensor& dgates, BackwardResult& g) {
  if (!c.w_ch.defined()) {
    g.d_w_ch = at::empty({0}, dgates.options());
    return;
  }
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H;
  const auto dg = dgates.view({T, B, 4, H});
  const auto& cs = c.cs;  // in the cell dtype: the products accumulate in it
  const auto c0 = c.c0.to(cs.scalar_type());
  auto d_if = at::zeros({2, H}, cs.options());
  if (T > 0) {
    const int64_t t_first = c.reverse ? T - 1 : 0;
    d_if.add_((dg[t_first].narrow(1, 0, 2) * c0.unsqueeze(1)).sum(0));
    if (T > 1) {  // c_prev of the other steps: the state of the step processed before
      const auto dg_rest = dg.narrow(0, c.reverse ? 0 : 1, T - 1).narrow(2, 0, 2);
      const auto c_prev = cs.narrow(0, c.reverse ? 1 : 0, T - 1).unsqueeze(2);
      d_if.add_((dg_rest * c_prev).sum(at::IntArrayRef{0, 1}));
    }
  }
  const auto d_o = (dg.select(2, 3) * cs).sum(at::IntArrayRef{0, 1});
  g.d_w_ch = at::cat({d_if.view({2 * H}), d_o.to(d_if.scalar_type())}).to(c.w_ch.scalar_type());
}

void weight_grads(const LayerCall& c, const at::Tensor& dgates, const at::Tensor& x_dropped,
                  BackwardResult& g) {
  const LayerSizes& z = c.z;
  g.d_w_ih = at::mm(dgates.view({z.T * z.B, 4 * z.H}).t(), x_dropped.view({z.T * z.B, z.I}));
  recurrent_weight_grad(c, dgates, g);
}

void recurrent_weight_grad(const LayerCall& c, const at::Tensor& dgates, BackwardResult& g,
                           MatMul mm) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, G = 4 * z.H, Hout = z.Hout;
  const auto& rk = c.reg.recurrent_keep;
  if (T == 0) {
    g.d_w_hh = at::zeros({G, Hout}, dgates.options());
    return;
  }
  const int64_t t_first = c.reverse ? T - 1 : 0;
  g.d_w_hh = mm(dgates[t_first].t(), rk.defined() ? c.h0 * rk : c.h0);
  if (T > 1) {
    const auto dg_rest = c.reverse ? dgates.narrow(0, 0, T - 1) : dgates.narrow(0, 1, T - 1);
    auto h_prev = c.reverse ? c.output.narrow(0, 1, T - 1) : c.output.narrow(0, 0, T - 1);
    if (rk.defined()) h_prev = h_prev * rk.unsqueeze(0);
    g.d_w_hh.add_(mm(dg_rest.reshape({(T - 1) * B, G}).t(), h_prev.reshape({(T - 1) * B, Hout})));
  }
}

}  // namespace torchlstm
