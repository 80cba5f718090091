// ops_cuda.cu — the CUDA backend's layer ops: the input projection, the choice of forward
// path (forward_paths.cuh), the backward loop (backward_path.cuh) and the gradients
// after it; registered for the CUDA key.
//   forward:  x W_ih^T, one GEMM over all T*B rows (it becomes the saved gates), then
//             the persistent kernel or the per-step GEMM path
//   backward: the per-step loop, then dW_ih, dW_hh, dW_hr, db, dx as large GEMMs
// Saved for backward: gates (T,B,4H) pre-activations in the input dtype and cs (T,B,H)
// cell states in the cell dtype (float32 for float16/bfloat16 inputs). Every launch is
// on the current stream and checked (launch.h).
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

// The CUDA kernels have no layer normalisation yet: the modules run it through the
// reference loop there (torchlstm/_ops.py run_layer); a direct op call gets this error.
inline void refuse_layer_norm(const LayerCall& c) {
  TORCH_CHECK_NOT_IMPLEMENTED(!c.ln.on(), c.op, ": layer normalisation (ln_w_ih, ...) is not "
                              "in the CUDA kernels; torchlstm.LSTM(layer_norm=True) runs it "
                              "on CUDA through its reference loop");
}

struct CudaBackend {
  static ForwardResult forward(const LayerCall& c, bool save) {
    refuse_layer_norm(c);
    const c10::cuda::CUDAGuard guard(c.input.device());
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, G = 4 * H;
    const auto opts = c.input.options();
    ForwardResult r;
    // The input projection of every step at once: (T*B, 4H). It becomes the saved gates.
    r.gates = at::mm(c.dropped_input().view({T * B, z.I}), c.w_ih.t()).view({T, B, G});
    r.output = at::empty({T, B, z.Hout}, opts);
    r.c_n = at::empty({B, H}, opts);
    r.cs = at::empty({save ? T : 0, B, H}, opts.dtype(c.cell_dtype));
    if (T * B == 0) {
      r.c_n.copy_(c.c0);
      r.h_n = T > 0 ? r.output.select(0, c.reverse ? 0 : T - 1).clone() : c.h0.clone();
      if (!save) r.gates = at::empty({0, B, G}, opts);
      return r;
    }
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const int device = c.input.get_device();
    const auto limits = device_limits(device);
    const auto forced =
        static_cast<cuda_plan::ForwardPath>(cuda_plan::forced_forward_path().load());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dtype, "torchlstm_forward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;  // the cell dtype, and what sums accumulate in
      auto plan = cuda_plan::plan_persistent(B, H, z.proj, sizeof(scalar_t), sizeof(acc_t), limits);
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
      gemm_forward<scalar_t, acc_t>(c, stream, save, r);
    });
    r.h_n = r.output.select(0, c.reverse ? 0 : T - 1).clone();
    if (!save) r.gates = at::empty({0, B, G}, opts);
    return r;
  }

  static BackwardResult backward(const LayerCall& c) {
    refuse_layer_norm(c);
    const c10::cuda::CUDAGuard guard(c.input.device());
    const LayerSizes& z = c.z;
    const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
    const auto opts = c.input.options();
    const auto cell_opts = opts.dtype(c.cell_dtype);
    const auto x = c.dropped_input();  // what W_ih saw
    BackwardBuffers w;
    w.grad_out = c.grad_output.defined() ? c.grad_output.contiguous() : at::Tensor();
    w.dh_a = c.grad_hn.defined() ? c.grad_hn.clone(at::MemoryFormat::Contiguous)
                                 : at::zeros({B, Hout}, opts);
    w.dh_b = at::empty({B, Hout}, opts);
    w.dc = c.grad_cn.defined() ? c.grad_cn.to(cell_opts).contiguous() : at::zeros({B, H}, cell_opts);
    if (c.grad_cn.defined() && w.dc.is_same(c.grad_cn)) w.dc = w.dc.clone();  // updated in place
    w.dgates = at::empty({T, B, G}, opts);
    w.dh_all = z.proj ? at::empty({T, B, Hout}, opts) : at::Tensor();
    w.r_all = z.proj ? at::empty({T, B, H}, opts) : at::Tensor();
    w.dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
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
};

}  // namespace cuda
}  // namespace torchlstm

TORCH_LIBRARY_IMPL(TORCHLSTM_CUDA_NAMESPACE, TORCHLSTM_CUDA_DISPATCH_KEY, m) {
  TORCHLSTM_REGISTER_LAYER_OPS(m, torchlstm::cuda::CudaBackend);
}
