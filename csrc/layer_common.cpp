#include "layer_common.h"

#include "cpu/host_cache.h"

namespace torchlstm {

Regularizers::Regularizers(const char* op, const LayerSizes& z, const at::Tensor& input,
                           const OptTensor& ik, const OptTensor& rk, const OptTensor& zh,
                           const OptTensor& zc) {
  check_regularizer_args(op, z, input, ik, rk, zh, zc);
  if (ik.has_value()) input_keep = ik->contiguous();
  if (rk.has_value()) recurrent_keep = rk->contiguous();
  if (zh.has_value()) zoneout_h = zh->contiguous();
  if (zc.has_value()) zoneout_c = zc->contiguous();
}

at::Tensor Regularizers::dropped_input(const at::Tensor& x) const {
  return input_keep.defined() ? (x * input_keep.unsqueeze(0)).contiguous() : x;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> weight_and_input_grads(
    const LayerSizes& z, bool reverse, const at::Tensor& dgates, const at::Tensor& x_dropped,
    const at::Tensor& w_ih, const at::Tensor& h0, const at::Tensor& output_,
    const Regularizers& reg, const at::Tensor& dh_all, const at::Tensor& r_all) {
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const auto dg2 = dgates.view({T * B, G});
  auto d_input = at::mm(dg2, w_ih).view({T, B, z.I});
  if (reg.input_keep.defined()) d_input.mul_(reg.input_keep.unsqueeze(0));
  auto d_bias = dg2.sum(0);
  const auto& rk = reg.recurrent_keep;
  const int64_t t_first = reverse ? T - 1 : 0;
  at::Tensor d_w_ih, d_w_hh;
  if (dgates.is_cpu() && T > 0) {
    // CPU: both weight gradients from ONE GEMM, dgates^T [x | h_prev], the two inputs
    // side by side in a cached buffer: MKL packs dgates once instead of twice. Measured at
    // the headline size: 8.35 ms for the two GEMMs, 7.7 ms for one plus the copy.
    auto xh = cpu::empty_cached({T, B, z.I + Hout}, dgates.scalar_type());
    xh.narrow(2, 0, z.I).copy_(x_dropped);
    auto h_prev = xh.narrow(2, z.I, Hout);  // h_{t-1} of each step t
    h_prev[t_first].copy_(h0);
    if (T > 1)
      h_prev.narrow(0, reverse ? 0 : 1, T - 1).copy_(output_.narrow(0, reverse ? 1 : 0, T - 1));
    if (rk.defined()) h_prev.mul_(rk.unsqueeze(0));
    const auto both = at::mm(dg2.t(), xh.view({T * B, z.I + Hout}));
    d_w_ih = both.narrow(1, 0, z.I).contiguous();
    d_w_hh = both.narrow(1, z.I, Hout).contiguous();
  } else {
    d_w_ih = at::mm(dg2.t(), x_dropped.view({T * B, z.I}));
    d_w_hh = T > 0 ? at::mm(dgates[t_first].t(), rk.defined() ? h0 * rk : h0)
                   : at::zeros({G, Hout}, dgates.options());
    if (T > 1) {
      const auto output = output_.contiguous();
      const auto dg_rest = reverse ? dgates.narrow(0, 0, T - 1) : dgates.narrow(0, 1, T - 1);
      auto h_prev = reverse ? output.narrow(0, 1, T - 1) : output.narrow(0, 0, T - 1);
      if (rk.defined()) h_prev = h_prev * rk.unsqueeze(0);
      d_w_hh.addmm_(dg_rest.reshape({(T - 1) * B, G}).t(), h_prev.reshape({(T - 1) * B, Hout}));
    }
  }
  auto d_w_hr = z.proj ? at::mm(dh_all.view({T * B, Hout}).t(), r_all.view({T * B, H}))
                       : at::empty({0}, dgates.options());
  return {d_input, d_w_ih, d_w_hh, d_bias, d_w_hr};
}

}  // namespace torchlstm
