// ops_cuda.cu — the CUDA backend's layer ops: the input projection, the choice of forward
// path (forward_paths.cuh), the backward loop (backward_path.cuh) and the gradients
// after it; registered for the CUDA key.
//   forward:  x W_ih^T, one GEMM over all T*B rows (it becomes the saved gates), then
//             the persistent kernel or the per-step GEMM path
//   backward: the per-step loop, then dW_ih, dW_hh, dW_hr, db, dx as large GEMMs
// Saved for backward: gates (T,B,4H) pre-activations in the input dtype and cs (T,B,H)
// cell states in the cell dtype (float32 for float16/bfloat16 inputs). With layer
// normalisation (layer_norm=True; the GEMM path only) gates holds layer_call.h's
// SavedLayout rows instead (the normalised products and their rstd), and backward's
// parameter gradients are sums over the rows of its dA and dy. Every launch is on the
// current stream and checked (launch.h).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../layer_call.h"
#include "../layer_grads.h"
#include "../ops.h"
#include "backward_path.cuh"
#include "forward_paths.cuh"
#include "launch_plan.h"

// The library and dispatch key the CUDA kernels register for (the CPU emulation of the
// device API builds these same sources for its own library and the CPU key).
#ifndef TORCHLSTM_CUDA_NAMESPACE
#define TORCHLSTM_CUDA_NAMESPACE torchlstm
#endif
#ifndef TORCHLSTM_CUDA_DISPATCH_KEY
#define TORCHLSTM_CUDA_DISPATCH_KEY CUDA
#endif

namespace torchlstm {
namespace cuda {

// The backward loops' buffers but dgates (backward_path.cuh's BackwardBuffers).
inline BackwardBuffers backward_buffers(const LayerCall& c) {
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout;
  const auto opts = c.input.options();
  const auto cell_opts = opts.dtype(c.cell_dtype);
  BackwardBuffers w;
  w.grad_out = c.grad_output.defined() ? c.grad_output.contiguous() : at::Tensor();
  w.dh_a = c.grad_hn.defined() ? c.grad_hn.clone(at::MemoryFormat::Contiguous)
                               : at::zeros({B, Hout}, opts);
  w.dh_b = at::empty({B, Hout}, opts);
  w.dc = c.grad_cn.defined() ? c.grad_cn.to(cell_opts).contiguous() : at::zeros({B, H}, cell_opts);
  if (c.grad_cn.defined() && w.dc.is_same(c.grad_cn)) w.dc = w.dc.clone();  // updated in place
  w.dh_all = z.proj ? at::empty({T, B, Hout}, opts) : at::Tensor();
  w.r_all = z.proj ? at::empty({T, B, H}, opts) : at::Tensor();
  w.dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
  return w;
}

struct CudaBackend {
  // The pair ops' two directions: one after the other, on the current stream.
  template <typename F>
  static void both_directions(const LayerSizes&, const F& one) {
    one(0);
    one(1);
  }

  static ForwardResult forward(const LayerCall& c, bool save) {
    const c10::cuda::CUDAGuard guard(c.input.device());
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, G = 4 * H;
    const int64_t W = c.saved_layout().width;  // 4H, or layer norm's saved row
    const bool ln = c.ln.on();
    const auto opts = c.input.options();
    ForwardResult r;
    // The input projection of every step at once: (T*B, 4H). It becomes the saved gates;
    // with layer normalisation it is normalised into the saved rows (or in place).
    auto P = at::mm(c.dropped_input().view({T * B, z.I}), c.w_ih.t());
    r.gates = ln ? at::empty({save ? T : 0, B, W}, opts) : P.view({T, B, G});
    r.output = at::empty({T, B, z.Hout}, opts);
    r.c_n = at::empty({B, H}, opts);
    r.cs = at::empty({save ? T : 0, B, H}, opts.dtype(c.cell_dtype));
    if (T * B == 0) {
      r.c_n.copy_(c.c0);
      r.h_n = T > 0 ? r.output.select(0, c.reverse ? 0 : T - 1).clone() : c.h0.clone();
      if (!save) r.gates = at::empty({0, B, W}, opts);
      return r;
    }
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const int device = c.input.get_device();
    const auto limits = device_limits(device);
    const auto forced =
        static_cast<cuda_plan::ForwardPath>(cuda_plan::forced_forward_path().load());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dtype, "torchlstm_forward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;  // the cell dtype, and what sums accumulate in
      auto plan = cuda_plan::plan_persistent(B, H, z.proj, sizeof(scalar_t), sizeof(acc_t), limits,
                                             ln);
      if (plan.ok && !cooperative_launch_ok(device, stream)) {
        plan.ok = false;
        plan.why = "no cooperative launch here (unsupported, or the stream is capturing a graph)";
      }
      TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT || plan.ok, c.op,
                  ": the persistent forward path was forced but does not apply here: ", plan.why);
      if (cuda_plan::use_persistent(forced, plan, T)) {
        if (persistent_forward<scalar_t, acc_t>(c, plan, limits, stream, save, r)) {
          cuda_plan::last_forward_path().store(static_cast<int>(cuda_plan::ForwardPath::PERSISTENT));
          return;
        }
        TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT, c.op,
                    ": the persistent forward path was forced but its grid does not fit on the device");
      }
      cuda_plan::last_forward_path().store(static_cast<int>(cuda_plan::ForwardPath::GEMM));
      if (ln) ln_gemm_forward<scalar_t, acc_t>(c, P, stream, save, r);
      else gemm_forward<scalar_t, acc_t>(c, stream, save, r);
    });
    r.h_n = r.output.select(0, c.reverse ? 0 : T - 1).clone();
    if (!save) r.gates = at::empty({0, B, W}, opts);
    return r;
  }

  static BackwardResult backward(const LayerCall& c) {
    if (c.ln.on()) return layer_norm_backward(c);
    const c10::cuda::CUDAGuard guard(c.input.device());
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, G = 4 * H;
    const auto opts = c.input.options();
    const auto cell_opts = opts.dtype(c.cell_dtype);
    const auto x = c.dropped_input();  // what W_ih saw
    BackwardBuffers w = backward_buffers(c);
    w.dgates = at::empty({T, B, G}, opts);
    BackwardResult g;
    g.d_h0 = w.dh_a;
    if (T * B > 0) {
      const auto c0 = c.c0.to(cell_opts).contiguous();
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dtype, "torchlstm_backward_cuda", [&] {
        g.d_h0 = backward_loop<scalar_t, at::opmath_type<scalar_t>>(c, c0, stream, w);
      });
    }
    input_bias_projection_grads(c, w.dgates, w.dh_all, w.r_all, g);
    weight_grads(c, w.dgates, x, g);
    peephole_grads(c, w.dgates, g);
    g.d_c0 = w.dc.to(opts.dtype());
    g.d_ln = at::empty({0}, opts);
    return g;
  }

  // layer_norm=True (backward_path.cuh's ln_backward_loop). The loop's dA (the gradient
  // of the pre-activations) and dy (that of g_c x^_c + b_c), both in the cell dtype, give
  // the biases', peepholes' and layer-norm parameters' gradients as sums over all rows;
  // dP (through LN(x W_ih^T), from dA) those of x and W_ih; dR (through LN(h W_hh^T))
  // that of W_hh.
  static BackwardResult layer_norm_backward(const LayerCall& c) {
    const c10::cuda::CUDAGuard guard(c.input.device());
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, G = 4 * H;
    const SavedLayout L = c.saved_layout();
    const auto opts = c.input.options();
    const auto cell_opts = opts.dtype(c.cell_dtype);
    const auto x = c.dropped_input();
    BackwardBuffers w = backward_buffers(c);  // w.dgates unused: dA, dR, dP instead
    LnBackwardBuffers l;
    l.dA = at::empty({T, B, G}, cell_opts);
    l.dy = at::empty({T, B, H}, cell_opts);
    l.dR = at::empty({T, B, G}, opts);
    l.ws = at::empty({B, H}, cell_opts);
    BackwardResult g;
    g.d_h0 = w.dh_a;
    at::Tensor dP = at::empty({T * B, G}, opts);  // T * B = 0: stays empty
    if (T * B > 0) {
      const auto c0 = c.c0.to(cell_opts).contiguous();
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dtype,
                                      "torchlstm_ln_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        g.d_h0 = ln_backward_loop<scalar_t, acc_t>(c, c0, stream, w, l);
        dP = ln_input_product_grad<scalar_t, acc_t>(c, l.dA, stream);
      });
    }
    input_projection_grads(c, dP, w.dh_all, w.r_all, g);
    g.d_w_ih = at::mm(dP.t(), x.view({T * B, z.I}));
    recurrent_weight_grad(c, l.dR, g);
    peephole_grads(c, l.dA, g);
    const auto dA = l.dA.view({T * B, G});
    const auto dy = l.dy.view({T * B, H});
    const auto saved = c.gates.view({T * B, L.width});
    const auto row = [&](int64_t offset, int64_t n) {
      return saved.narrow(1, offset, n).to(c.cell_dtype);
    };
    g.d_bias = dA.sum(0).to(c.dtype);
    g.d_ln = at::cat({(dA * row(L.xhat_ih, G)).sum(0), (dA * row(L.xhat_hh, G)).sum(0),
                      (dy * row(L.xhat_c, H)).sum(0), dy.sum(0)})
                 .to(c.dtype);
    g.d_c0 = w.dc.to(opts.dtype());
    return g;
  }
};

}  // namespace cuda
}  // namespace torchlstm

TORCH_LIBRARY_IMPL(TORCHLSTM_CUDA_NAMESPACE, TORCHLSTM_CUDA_DISPATCH_KEY, m) {
  TORCHLSTM_REGISTER_LAYER_OPS(m, torchlstm::cuda::CudaBackend);
}
