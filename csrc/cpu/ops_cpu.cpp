// ops_cpu.cpp — the CPU backend's layer ops: buffers, the half-precision path, the time
// loops (time_loops.h) and the gradients after them; registered for the CPU key.
//
//   forward:  per step, per team member (its slice of hidden units): its input
//             projection a chunk of steps at a time, + h W_hh^T (one GEMM), the fused
//             gate pass (bias, 4 gates, c, r = o*act(c)) [projection: h = r W_hr^T]
//   backward: per step: fused pass (gate derivatives, dc carried to t-1), dh = dgates W_hh;
//             then dW_ih and dW_hh as ONE GEMM, dx, db, dW_hr over all T*B rows at once
//             (on the BLAS of large_gemm.h).
//   layer_norm=True: its own loops (layer_norm_loops.h), below.
// Saved for backward: the gate pre-activations (T,B,4H), the cell states (T,B,H) and the
// output (the h states). Activations are recomputed from pre-activations in backward,
// which keeps every activation's derivative exact.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>

#include "../layer_call.h"
#include "../layer_grads.h"
#include "../ops.h"
#include "host_cache.h"
#include "large_gemm.h"
#include "layer_norm_loops.h"
#include "time_loops.h"

namespace torchlstm {
namespace cpu {
namespace {

bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// Runs loop(nt) with the team size the sizes call for; again with one thread if the
// runtime could not give that team.
template <typename Loop>
void run_loop(const LayerSizes& z, const Loop& loop) {
  if (!loop(threads_for(z))) loop(1);
}

// d_w_ih and d_w_hh from ONE GEMM, dgates^T [x | h_prev], the two inputs side by side in
// a cached buffer: MKL packs dgates once instead of twice. Measured at the headline
// size: 8.35 ms for the two GEMMs, 7.7 ms for one plus the copy.
void weight_grads_one_gemm(const LayerCall& c, const at::Tensor& dgates,
                           const at::Tensor& x_dropped, BackwardResult& g) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, I = z.I, Hout = z.Hout;
  if (T == 0) return weight_grads(c, dgates, x_dropped, g);
  auto xh = empty_cached({T, B, I + Hout}, dgates.scalar_type());
  xh.narrow(2, 0, I).copy_(x_dropped);
  auto h_prev = xh.narrow(2, I, Hout);  // h_{t-1} of each step t
  h_prev[c.reverse ? T - 1 : 0].copy_(c.h0);
  if (T > 1)
    h_prev.narrow(0, c.reverse ? 0 : 1, T - 1).copy_(c.output.narrow(0, c.reverse ? 1 : 0, T - 1));
  if (c.reg.recurrent_keep.defined()) h_prev.mul_(c.reg.recurrent_keep.unsqueeze(0));
  const auto both = large_mm(dgates.view({T * B, 4 * z.H}).t(), xh.view({T * B, I + Hout}));
  g.d_w_ih = both.narrow(1, 0, I).contiguous();
  g.d_w_hh = both.narrow(1, I, Hout).contiguous();
}

// The incoming output gradient, contiguous: often an expanded tensor (the gradient of a
// sum), made contiguous in a cached buffer as the other large buffers (host_cache.h).
at::Tensor contiguous_grad_output(const LayerCall& c) {
  if (c.grad_output.defined() && c.grad_output.is_contiguous()) return c.grad_output;
  auto grad_out = empty_cached({c.z.T, c.z.B, c.z.Hout}, c.dtype);
  if (c.grad_output.defined()) grad_out.copy_(c.grad_output);
  else grad_out.zero_();
  return grad_out;
}

// The state gradients a backward loop starts from and updates in place: dh ping-pongs
// between g.d_h0 (grad_hn on entry, or zeros) and the returned (B,Hout) buffer; dc is
// g.d_c0 (grad_cn on entry, or zeros), d c0 on return.
at::Tensor start_state_grads(const LayerCall& c, BackwardResult& g) {
  const auto opts = c.input.options();
  g.d_h0 = c.grad_hn.defined() ? c.grad_hn.clone(at::MemoryFormat::Contiguous)
                               : at::zeros({c.z.B, c.z.Hout}, opts);
  g.d_c0 = c.grad_cn.defined() ? c.grad_cn.clone(at::MemoryFormat::Contiguous)
                               : at::zeros({c.z.B, c.z.H}, opts);
  return at::empty({c.z.B, c.z.Hout}, opts);
}

// The layer-normalised LSTM (layer_norm_loops.h): each member computes x W_ih^T for its
// own batch rows step by step; backward's dP (its gradient through LN) feeds the GEMMs of
// dx and dW_ih, dR (the recurrent product's) that of dW_hh, and the loop sums the other
// parameters' gradients. (dx = dP W_ih of its rows in the loop, in cache, measured
// slower at the headline size: 25.3 against 24.1 ms for the backward.)
ForwardResult layer_norm_forward(const LayerCall& c, bool save) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, G = 4 * H;
  const auto x = c.dropped_input();
  const auto dt = c.dtype;
  const auto opts = x.options();
  ForwardResult r;
  r.output = empty_cached({T, B, z.Hout}, dt);
  r.c_n = c.c0.clone(at::MemoryFormat::Contiguous);
  r.gates = empty_cached({save ? T : 0, B, c.saved_layout().width}, dt);
  r.cs = empty_cached({save ? T : 0, B, H}, dt);
  if (T * B > 0) {
    auto P = save ? at::Tensor() : at::empty({B, G}, opts);  // the step's x W_ih^T
    auto r_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
    const auto& rk = c.reg.recurrent_keep;
    auto hk = rk.defined() ? at::empty({2, B, z.Hout}, opts) : at::Tensor();
    if (hk.defined()) hk[0].copy_(c.h0 * rk);
    auto R = at::empty({B, G}, opts);
    auto scratch = at::empty({threads_for(z), kLnForwardScratch * H}, opts);
    AT_DISPATCH_FLOATING_TYPES(dt, "torchlstm_ln_forward_cpu", [&] {
      const LoopInputs<scalar_t> in(c, x);
      const LnForwardBuffers<scalar_t> io{
          mutable_data_or_null<scalar_t>(P), r.output.data_ptr<scalar_t>(),
          r.c_n.data_ptr<scalar_t>(),
          mutable_data_or_null<scalar_t>(r_ws), save ? r.gates.data_ptr<scalar_t>() : nullptr,
          save ? r.cs.data_ptr<scalar_t>() : nullptr, mutable_data_or_null<scalar_t>(hk),
          R.data_ptr<scalar_t>(), scratch.data_ptr<scalar_t>()};
      run_loop(z, [&](int nt) { return forward_loop_ln<scalar_t>(nt, c, in, io); });
    });
  }
  r.h_n = T > 0 ? r.output[c.reverse ? 0 : T - 1].clone() : c.h0.clone();
  return r;
}

BackwardResult layer_norm_backward(const LayerCall& c) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const auto opts = c.input.options();
  const auto dt = c.dtype;
  const auto x = c.dropped_input();
  const auto grad_out = contiguous_grad_output(c);
  BackwardResult g;
  auto dh_tmp = start_state_grads(c, g);
  auto dR = empty_cached({T, B, G}, dt);
  auto dP = empty_cached({T, B, G}, dt);
  auto dh_all = z.proj ? empty_cached({T, B, Hout}, dt) : at::Tensor();
  auto r_all = z.proj ? empty_cached({T, B, H}, dt) : at::Tensor();
  auto dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
  const int nt = threads_for(z);
  auto acc = at::zeros({nt, kLnAccWidth * H}, opts);  // each member's LnAcc
  if (T * B > 0) {
    auto scratch = at::empty({nt, kLnBackwardScratch * H}, opts);
    AT_DISPATCH_FLOATING_TYPES(dt, "torchlstm_ln_backward_cpu", [&] {
      const LoopInputs<scalar_t> in(c, x);
      const LnBackwardBuffers<scalar_t> io{
          grad_out.data_ptr<scalar_t>(), c.gates.data_ptr<scalar_t>(), c.cs.data_ptr<scalar_t>(),
          dR.data_ptr<scalar_t>(), dP.data_ptr<scalar_t>(), g.d_h0.data_ptr<scalar_t>(),
          dh_tmp.data_ptr<scalar_t>(), g.d_c0.data_ptr<scalar_t>(),
          mutable_data_or_null<scalar_t>(dh_all), mutable_data_or_null<scalar_t>(r_all),
          mutable_data_or_null<scalar_t>(dr_ws), acc.data_ptr<scalar_t>(),
          scratch.data_ptr<scalar_t>()};
      run_loop(z, [&](int n) { return backward_loop_ln<scalar_t>(n, c, in, io); });
    });
    if (T % 2 == 1) g.d_h0.copy_(dh_tmp);
  }
  const auto sums = acc.sum(0);
  // (copies: an op's outputs must not be views of one another)
  g.d_ln = sums.narrow(0, 0, 10 * H).clone();
  g.d_bias = sums.narrow(0, 10 * H, G).clone();
  g.d_w_ch = c.w_ch.defined() ? sums.narrow(0, 14 * H, 3 * H).clone() : at::empty({0}, opts);
  input_projection_grads(c, dP, dh_all, r_all, g, &large_mm);
  g.d_w_ih = large_mm(dP.view({T * B, G}).t(), x.view({T * B, z.I}));
  recurrent_weight_grad(c, dR, g, &large_mm);
  return g;
}

}  // namespace

struct CpuBackend {
  // The pair ops' two directions (team.h's DirectionRun). Concurrent, each thread runs
  // its direction's whole layer (the loop, then the large GEMMs on one thread) and the
  // two never meet. Measured on 2 threads (Intel Xeon, ms, sequential -> concurrent,
  // inference / forward+backward): 2 layers T=50 B=16 I=H=256 14.0-16.5 / 47.5-50.2 ->
  // 12.5-13.3 / 44.7-44.8; T=100 B=32 I=128 H=256 16.1-16.8 / 55-58 -> 15.2-15.6 /
  // 50-52; B=1 H=128 0.63 / 2.38 -> 0.40 / 1.70-1.83; even T=100 B=64 I=H=512 (W_hh
  // 4 MiB, more than a core's L2) 154-164 / 488-525 -> 154-160 / 474-500. With more
  // threads a direction would get one where a team could use several: concurrent then
  // only for layers too small for a team (threads_for 1).
  template <typename F>
  static void both_directions(const LayerSizes& z, const F& one) {
    bool concurrent = false;
    switch (static_cast<DirectionRun>(direction_run_choice().load(std::memory_order_relaxed))) {
      case DirectionRun::SEQUENTIAL:
        break;
      case DirectionRun::CONCURRENT:
        concurrent = true;
        break;
      case DirectionRun::AUTO:
        concurrent = at::get_num_threads() == 2 || threads_for(z) == 1;
        break;
    }
    run_directions(concurrent, one);
  }

  // float16 / bfloat16: checked in their own dtype (the LayerCall), run by the float32
  // kernels, the results cast back — except the saved cell states, which stay float32
  // (as on CUDA). Correct and drop-in; no faster than float32.
  static ForwardResult forward(const LayerCall& c, bool save) {
    if (is_half(c.dtype)) {
      auto r = forward(c.in_float32(), save);
      return {r.output.to(c.dtype), r.h_n.to(c.dtype), r.c_n.to(c.dtype), r.gates.to(c.dtype),
              r.cs};
    }
    if (c.ln.on()) return layer_norm_forward(c, save);
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B;
    const auto x = c.dropped_input();
    const auto dt = c.dtype;
    const auto opts = x.options();
    ForwardResult r;
    // the large outputs from the buffer cache (host_cache.h: no page faults on reuse)
    r.output = empty_cached({T, B, z.Hout}, dt);
    r.c_n = c.c0.clone(at::MemoryFormat::Contiguous);  // the running cell state
    r.gates = empty_cached({save ? T : 0, B, 4 * z.H}, dt);
    r.cs = empty_cached({save ? T : 0, B, z.H}, dt);
    if (T * B > 0) {
      auto r_ws = z.proj ? at::empty({B, z.H}, opts) : at::Tensor();
      // the recurrent GEMM's input h * recurrent_keep, two buffers used in turn; h0's first
      const auto& rk = c.reg.recurrent_keep;
      auto hk = rk.defined() ? at::empty({2, B, z.Hout}, opts) : at::Tensor();
      if (hk.defined()) hk[0].copy_(c.h0 * rk);
      AT_DISPATCH_FLOATING_TYPES(dt, "torchlstm_forward_cpu", [&] {
        const LoopInputs<scalar_t> in(c, x);
        const ForwardBuffers<scalar_t> io{
            r.output.data_ptr<scalar_t>(), r.c_n.data_ptr<scalar_t>(),
            mutable_data_or_null<scalar_t>(r_ws), save ? r.gates.data_ptr<scalar_t>() : nullptr,
            save ? r.cs.data_ptr<scalar_t>() : nullptr, mutable_data_or_null<scalar_t>(hk)};
        run_loop(z, [&](int nt) { return forward_loop_team<scalar_t>(nt, c, in, io); });
      });
    }
    // h_n: the last processed step's output row (h0 when T = 0)
    r.h_n = T > 0 ? r.output[c.reverse ? 0 : T - 1].clone() : c.h0.clone();
    return r;
  }

  static BackwardResult backward(const LayerCall& c) {
    if (is_half(c.dtype)) {  // in float32, the gradients cast back (see forward)
      auto g = backward(c.in_float32());
      for (at::Tensor* t : {&g.d_input, &g.d_h0, &g.d_c0, &g.d_w_ih, &g.d_w_hh, &g.d_bias,
                            &g.d_w_hr, &g.d_w_ch, &g.d_ln})
        *t = t->to(c.dtype);
      return g;
    }
    if (c.ln.on()) return layer_norm_backward(c);
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
    const auto opts = c.input.options();
    const auto dt = c.dtype;
    const auto x = c.dropped_input();  // what W_ih saw
    const auto grad_out = contiguous_grad_output(c);
    BackwardResult g;
    auto dh_tmp = start_state_grads(c, g);
    auto dgates = empty_cached({T, B, G}, dt);
    auto dh_all = z.proj ? empty_cached({T, B, Hout}, dt) : at::Tensor();
    auto r_all = z.proj ? empty_cached({T, B, H}, dt) : at::Tensor();
    auto dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
    if (T * B > 0) {
      AT_DISPATCH_FLOATING_TYPES(dt, "torchlstm_backward_cpu", [&] {
        const LoopInputs<scalar_t> in(c, x);
        const BackwardBuffers<scalar_t> io{
            grad_out.data_ptr<scalar_t>(), c.gates.data_ptr<scalar_t>(),
            c.cs.data_ptr<scalar_t>(), dgates.data_ptr<scalar_t>(), g.d_h0.data_ptr<scalar_t>(),
            dh_tmp.data_ptr<scalar_t>(), g.d_c0.data_ptr<scalar_t>(),
            mutable_data_or_null<scalar_t>(dh_all), mutable_data_or_null<scalar_t>(r_all),
            mutable_data_or_null<scalar_t>(dr_ws)};
        run_loop(z, [&](int nt) { return backward_loop_team<scalar_t>(nt, c, in, io); });
      });
      if (T % 2 == 1) g.d_h0.copy_(dh_tmp);  // after T swaps the last dh_prev sits in dh_tmp
    }
    // The weight and input gradients: a few large GEMMs over all T*B rows.
    input_bias_projection_grads(c, dgates, dh_all, r_all, g, &large_mm);
    weight_grads_one_gemm(c, dgates, x, g);
    peephole_grads(c, dgates, g);
    g.d_ln = at::empty({0}, opts);
    return g;
  }
};

TORCH_LIBRARY_IMPL(torchlstm, CPU, m) { TORCHLSTM_REGISTER_LAYER_OPS(m, CpuBackend); }

}  // namespace cpu
}  // namespace torchlstm
