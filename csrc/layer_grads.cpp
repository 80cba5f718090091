#include "layer_grads.h"

namespace torchlstm {

void input_bias_projection_grads(const LayerCall& c, const at::Tensor& dgates,
                                 const at::Tensor& dh_all, const at::Tensor& r_all,
                                 BackwardResult& g, MatMul mm) {
  const LayerSizes& z = c.z;
  const auto dg2 = dgates.view({z.T * z.B, 4 * z.H});
  g.d_input = mm(dg2, c.w_ih).view({z.T, z.B, z.I});
  if (c.reg.input_keep.defined()) g.d_input.mul_(c.reg.input_keep.unsqueeze(0));
  g.d_bias = dg2.sum(0);
  g.d_w_hr = z.proj ? mm(dh_all.view({z.T * z.B, z.Hout}).t(), r_all.view({z.T * z.B, z.H}))
                    : at::empty({0}, dgates.options());
}

void weight_grads(const LayerCall& c, const at::Tensor& dgates, const at::Tensor& x_dropped,
                  BackwardResult& g) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, G = 4 * z.H, Hout = z.Hout;
  const auto& rk = c.reg.recurrent_keep;
  g.d_w_ih = at::mm(dgates.view({T * B, G}).t(), x_dropped.view({T * B, z.I}));
  if (T == 0) {
    g.d_w_hh = at::zeros({G, Hout}, dgates.options());
    return;
  }
  const int64_t t_first = c.reverse ? T - 1 : 0;
  g.d_w_hh = at::mm(dgates[t_first].t(), rk.defined() ? c.h0 * rk : c.h0);
  if (T > 1) {
    const auto dg_rest = c.reverse ? dgates.narrow(0, 0, T - 1) : dgates.narrow(0, 1, T - 1);
    auto h_prev = c.reverse ? c.output.narrow(0, 1, T - 1) : c.output.narrow(0, 0, T - 1);
    if (rk.defined()) h_prev = h_prev * rk.unsqueeze(0);
    g.d_w_hh.addmm_(dg_rest.reshape({(T - 1) * B, G}).t(), h_prev.reshape({(T - 1) * B, Hout}));
  }
}

}  // namespace torchlstm
