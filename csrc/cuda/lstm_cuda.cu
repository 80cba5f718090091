// lstm_cuda.cu — the CUDA kernels of the torchlstm ops: host side.
//
// Same structure as the CPU loop (cpu/lstm_cpu.cpp), same saved tensors:
//   forward:  x W_ih^T                         one GEMM over all T*B rows (at::mm)
//             per step, GEMM path:  + h W_hh^T one cuBLAS GEMM into the step's gate rows
//                                   fused pointwise kernel (step_kernels.cuh)
//                                   [projection: h = r W_hr^T, one GEMM]
//             or the persistent kernel: the whole loop in one cooperative launch
//             (persistent_kernel.cuh; which one: launch_plan.h)
//   backward: per step: [projection: dh_all[t] = dout[t] + dh; dr = dh_all[t] W_hr]
//                       fused pointwise kernel: gate gradients, dc carried to t-1
//                       dh_{t-1} = dgates[t] W_hh   one GEMM
//             dW_ih, dW_hh, dW_hr, db, dx: a few large GEMMs / one reduction after the loop.
// Saved for backward: gates (T,B,4H) pre-activations in the input dtype and cs (T,B,H)
// cell states in the accumulation dtype (float32 for float16/bfloat16 inputs). Every
// launch is on the current stream and checked.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gate_math.h"
#include "../lstm_args.h"
#include "cublas_gemm.h"
#include "launch_plan.h"
#include "persistent_kernel.cuh"
#include "step_kernels.cuh"

namespace torchlstm {
namespace cuda {
namespace {

using cuda_plan::kPointwiseThreads;
using cuda_plan::pointwise_blocks;

at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

cuda_plan::DeviceLimits device_limits(int device) {
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device);
  return {p->multiProcessorCount, static_cast<int64_t>(p->sharedMemPerBlockOptin),
          p->maxThreadsPerBlock};
}

void check_input_dtype(const char* op, const at::Tensor& input) {
  const auto t = input.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                   op, ": input must be float16, bfloat16, float32 or float64 on CUDA, got ", t);
}

template <typename scalar_t, typename acc_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// Launches the persistent kernel; false where the device cannot hold the whole grid at
// once (the caller then takes the GEMM path).
template <typename scalar_t, typename acc_t, int MAXB>
bool launch_persistent(const cuda_plan::PersistentPlan& p, const PersistentArgs<scalar_t, acc_t>& args,
                       int sm_count, cudaStream_t stream) {
  auto kernel = persistent_forward_kernel<scalar_t, acc_t, MAXB>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(p.smem_bytes)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, kernel, static_cast<int>(p.threads), static_cast<size_t>(p.smem_bytes)));
  if (static_cast<int64_t>(per_sm) * sm_count < p.blocks) return false;
  PersistentArgs<scalar_t, acc_t> a = args;
  void* params[] = {&a};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel),
                                             dim3(static_cast<unsigned>(p.blocks)),
                                             dim3(static_cast<unsigned>(p.threads)), params,
                                             static_cast<size_t>(p.smem_bytes), stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename scalar_t, typename acc_t>
bool run_persistent(const cuda_plan::PersistentPlan& p, const PersistentArgs<scalar_t, acc_t>& args,
                    int sm_count, cudaStream_t stream) {
  switch (p.max_batch) {
    case 1: return launch_persistent<scalar_t, acc_t, 1>(p, args, sm_count, stream);
    case 2: return launch_persistent<scalar_t, acc_t, 2>(p, args, sm_count, stream);
    case 4: return launch_persistent<scalar_t, acc_t, 4>(p, args, sm_count, stream);
    case 8: return launch_persistent<scalar_t, acc_t, 8>(p, args, sm_count, stream);
    default:
      if constexpr (sizeof(acc_t) <= 4)
        return launch_persistent<scalar_t, acc_t, 16>(p, args, sm_count, stream);
      return false;
  }
}

// Shared by layer_forward (save = true) and layer_inference. Returns out, h_n, c_n,
// gates, cs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
    const char* op, bool save, const at::Tensor& input_, const at::Tensor& h0_,
    const at::Tensor& c0_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr_, const c10::optional<at::Tensor>& mask_,
    bool reverse, int64_t activation, int64_t recurrent_activation) {
  check_input_dtype(op, input_);
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, b_ih, b_hh, w_hr_,
                                        mask_, activation, recurrent_activation);
  const c10::cuda::CUDAGuard guard(input_.device());
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const auto opts = input_.options();
  const auto acc_opts = opts.dtype(acc_dtype(input_.scalar_type()));
  const auto h0 = h0_.contiguous();
  const auto w_hh = w_hh_.contiguous();
  const auto w_hr = z.proj ? w_hr_->contiguous() : at::Tensor();
  const auto mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const auto b1 = b_ih.has_value() ? b_ih->contiguous() : at::Tensor();
  const auto b2 = b_hh.has_value() ? b_hh->contiguous() : at::Tensor();

  // The input projection of every step at once: (T*B, 4H). It becomes the saved gates.
  auto gates = at::mm(input_.reshape({T * B, z.I}), w_ih_.t()).view({T, B, G});
  auto out = at::empty({T, B, Hout}, opts);
  auto c_n = at::empty({B, H}, opts);
  auto cs = at::empty({save ? T : 0, B, H}, acc_opts);
  if (T * B == 0) {
    c_n.copy_(c0_);
    auto h_n = T > 0 ? out.select(0, reverse ? 0 : T - 1).clone() : h0.clone();
    return {out, h_n, c_n, save ? gates : at::empty({0, B, G}, opts), cs};
  }
  const auto act = static_cast<Activation>(activation);
  const auto ract = static_cast<Activation>(recurrent_activation);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto limits = device_limits(input_.get_device());
  const auto forced = static_cast<cuda_plan::ForwardPath>(cuda_plan::forced_forward_path().load());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), "torchlstm_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto plan = cuda_plan::plan_persistent(B, H, z.proj, sizeof(scalar_t), sizeof(acc_t), limits);
    TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT || plan.ok, op,
                ": the persistent forward path was forced but does not apply here: ", plan.why);
    if (cuda_plan::use_persistent(forced, plan, T)) {
      PersistentArgs<scalar_t, acc_t> args;
      auto hbuf = at::empty({2, B, H}, acc_opts);
      auto c0 = c0_.contiguous();
      args.w_hh = w_hh.data_ptr<scalar_t>();
      args.b_ih = ptr_or_null<scalar_t, acc_t>(b1);
      args.b_hh = ptr_or_null<scalar_t, acc_t>(b2);
      args.h0 = h0.data_ptr<scalar_t>();
      args.c0 = c0.data_ptr<scalar_t>();
      args.gates = gates.data_ptr<scalar_t>();
      args.out = out.data_ptr<scalar_t>();
      args.c_n = c_n.data_ptr<scalar_t>();
      args.cs = save ? cs.data_ptr<acc_t>() : nullptr;
      args.mask = mask.defined() ? mask.data_ptr<bool>() : nullptr;
      args.hbuf = hbuf.data_ptr<acc_t>();
      args.T = T;
      args.B = B;
      args.H = H;
      args.U = plan.units_per_block;
      args.reverse = reverse;
      args.save = save;
      args.act = act;
      args.ract = ract;
      if (run_persistent<scalar_t, acc_t>(plan, args, limits.sm_count, stream)) {
        cuda_plan::last_forward_path().store(2);
        return;
      }
      TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT, op,
                  ": the persistent forward path was forced but its grid does not fit on the device");
    }
    // GEMM path
    cuda_plan::last_forward_path().store(1);
    auto c = c0_.to(acc_opts).contiguous();  // the running cell state, in acc_t
    auto r_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
    ForwardStep<scalar_t, acc_t> k;
    k.b_ih = ptr_or_null<scalar_t, acc_t>(b1);
    k.b_hh = ptr_or_null<scalar_t, acc_t>(b2);
    k.c = c.data_ptr<acc_t>();
    k.B = B;
    k.H = H;
    k.save = save;
    k.proj = z.proj;
    k.act = act;
    k.ract = ract;
    const unsigned blocks = static_cast<unsigned>(pointwise_blocks(B * H));
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t tp = reverse ? t + 1 : t - 1;
      const scalar_t* h_prev = s == 0 ? h0.data_ptr<scalar_t>() : out.data_ptr<scalar_t>() + tp * B * Hout;
      scalar_t* g_t = gates.data_ptr<scalar_t>() + t * B * G;
      scalar_t* out_t = out.data_ptr<scalar_t>() + t * B * Hout;
      gemm_rm<scalar_t>(false, true, B, G, Hout, h_prev, Hout, w_hh.data_ptr<scalar_t>(), Hout,
                        1.f, g_t, G);  // g_t += h_prev W_hh^T
      k.g = g_t;
      k.h_prev = h_prev;
      k.r = z.proj ? r_ws.data_ptr<scalar_t>() : out_t;
      k.c_save = save ? cs.data_ptr<acc_t>() + t * B * H : nullptr;
      k.mask = mask.defined() ? mask.data_ptr<bool>() + t * B : nullptr;
      forward_step_kernel<scalar_t, acc_t><<<blocks, kPointwiseThreads, 0, stream>>>(k);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (z.proj) {
        gemm_rm<scalar_t>(false, true, B, Hout, H, r_ws.data_ptr<scalar_t>(), H,
                          w_hr.data_ptr<scalar_t>(), H, 0.f, out_t, Hout);  // h = r W_hr^T
        if (k.mask) {
          carry_masked_rows_kernel<scalar_t>
              <<<static_cast<unsigned>(pointwise_blocks(B * Hout)), kPointwiseThreads, 0, stream>>>(
                  out_t, h_prev, k.mask, B, Hout);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    }
    c_n.copy_(c);
  });
  auto h_n = out.select(0, reverse ? 0 : T - 1).clone();
  return {out, h_n, c_n, save ? gates : at::empty({0, B, G}, opts), cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_forward_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& mask, bool reverse, int64_t activation,
    int64_t recurrent_activation) {
  return run_forward("torchlstm.layer_forward", true, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                     mask, reverse, activation, recurrent_activation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_inference_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& mask, bool reverse, int64_t activation,
    int64_t recurrent_activation) {
  auto [out, h_n, c_n, gates, cs] =
      run_forward("torchlstm.layer_inference", false, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                  mask, reverse, activation, recurrent_activation);
  return {out, h_n, c_n};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
layer_backward_cuda(const c10::optional<at::Tensor>& grad_output_,
                    const c10::optional<at::Tensor>& grad_hn_,
                    const c10::optional<at::Tensor>& grad_cn_, const at::Tensor& input_,
                    const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& w_ih_,
                    const at::Tensor& w_hh_, const c10::optional<at::Tensor>& w_hr_,
                    const c10::optional<at::Tensor>& mask_, const at::Tensor& output_,
                    const at::Tensor& gates_, const at::Tensor& cs_, bool reverse,
                    int64_t activation, int64_t recurrent_activation) {
  const char* op = "torchlstm.layer_backward";
  check_input_dtype(op, input_);
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, c10::nullopt,
                                        c10::nullopt, w_hr_, mask_, activation,
                                        recurrent_activation);
  const c10::cuda::CUDAGuard guard(input_.device());
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  check_shape(op, "output", output_, {T, B, Hout}, input_);
  check_shape(op, "gates", gates_, {T, B, G}, input_);
  const auto opts = input_.options();
  const auto acc_opts = opts.dtype(acc_dtype(input_.scalar_type()));
  TORCH_CHECK_TYPE(cs_.scalar_type() == acc_opts.dtype(), op, ": cs must have dtype ",
                   acc_opts.dtype(), " (the accumulation dtype of ", input_.scalar_type(),
                   "), got ", cs_.scalar_type());
  TORCH_CHECK(cs_.device() == input_.device(), op, ": cs must be on the device of input (",
              input_.device(), "), got ", cs_.device());
  TORCH_CHECK_VALUE(cs_.sizes() == at::IntArrayRef({T, B, H}), op, ": cs must have shape ",
                    at::IntArrayRef({T, B, H}), ", got ", cs_.sizes());
  if (grad_output_.has_value()) check_shape(op, "grad_output", *grad_output_, {T, B, Hout}, input_);
  if (grad_hn_.has_value()) check_shape(op, "grad_hn", *grad_hn_, {B, Hout}, input_);
  if (grad_cn_.has_value()) check_shape(op, "grad_cn", *grad_cn_, {B, H}, input_);

  const auto input = input_.contiguous();
  const auto w_hh = w_hh_.contiguous();
  const auto w_hr = z.proj ? w_hr_->contiguous() : at::Tensor();
  const auto mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const auto grad_out = grad_output_.has_value() ? grad_output_->contiguous() : at::Tensor();
  auto dh_a = grad_hn_.has_value() ? grad_hn_->clone(at::MemoryFormat::Contiguous)
                                   : at::zeros({B, Hout}, opts);
  auto dh_b = at::empty({B, Hout}, opts);
  auto dc = grad_cn_.has_value() ? grad_cn_->to(acc_opts).contiguous() : at::zeros({B, H}, acc_opts);
  if (grad_cn_.has_value() && dc.is_same(*grad_cn_)) dc = dc.clone();  // updated in place
  auto dgates = at::empty({T, B, G}, opts);
  auto dh_all = z.proj ? at::empty({T, B, Hout}, opts) : at::Tensor();
  auto r_all = z.proj ? at::empty({T, B, H}, opts) : at::Tensor();
  auto dr_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor dh0 = dh_a;

  if (T * B > 0) {
    const auto gates = gates_.contiguous();
    const auto cs = cs_.contiguous();
    const auto c0 = c0_.to(acc_opts).contiguous();
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "torchlstm_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      BackwardStep<scalar_t, acc_t> k;
      k.dc = dc.data_ptr<acc_t>();
      k.B = B;
      k.H = H;
      k.Hout = Hout;
      k.proj = z.proj;
      k.act = static_cast<Activation>(activation);
      k.ract = static_cast<Activation>(recurrent_activation);
      const unsigned blocks = static_cast<unsigned>(pointwise_blocks(B * H));
      scalar_t* dh = dh_a.data_ptr<scalar_t>();     // gradient reaching h_t from later steps
      scalar_t* dh_nx = dh_b.data_ptr<scalar_t>();  // ... and h_{t-1}
      for (int64_t s = T - 1; s >= 0; --s) {
        const int64_t t = reverse ? T - 1 - s : s;
        const int64_t tp = reverse ? t + 1 : t - 1;
        const scalar_t* go_t = grad_out.defined() ? grad_out.data_ptr<scalar_t>() + t * B * Hout : nullptr;
        k.mask = mask.defined() ? mask.data_ptr<bool>() + t * B : nullptr;
        if (z.proj) {
          scalar_t* dht = dh_all.data_ptr<scalar_t>() + t * B * Hout;
          add_kernel<scalar_t, acc_t>
              <<<static_cast<unsigned>(pointwise_blocks(B * Hout)), kPointwiseThreads, 0, stream>>>(
                  dht, go_t, dh, B * Hout);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          gemm_rm<scalar_t>(false, false, B, H, Hout, dht, Hout, w_hr.data_ptr<scalar_t>(), H, 0.f,
                            dr_ws.data_ptr<scalar_t>(), H);  // dr = dh W_hr
          k.go = nullptr;
          k.dh = dht;
          k.dr = dr_ws.data_ptr<scalar_t>();
          k.r_save = r_all.data_ptr<scalar_t>() + t * B * H;
        } else {
          k.go = go_t;
          k.dh = dh;
          k.dr = nullptr;
          k.r_save = nullptr;
        }
        k.g = gates.data_ptr<scalar_t>() + t * B * G;
        k.c_prev = s == 0 ? c0.data_ptr<acc_t>() : cs.data_ptr<acc_t>() + tp * B * H;
        k.c = cs.data_ptr<acc_t>() + t * B * H;
        k.dg = dgates.data_ptr<scalar_t>() + t * B * G;
        k.dh_prev = k.mask ? dh_nx : nullptr;
        backward_step_kernel<scalar_t, acc_t><<<blocks, kPointwiseThreads, 0, stream>>>(k);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        // dh_{t-1} (+)= dgates[t] W_hh
        gemm_rm<scalar_t>(false, false, B, Hout, G, k.dg, G, w_hh.data_ptr<scalar_t>(), Hout,
                          k.mask ? 1.f : 0.f, dh_nx, Hout);
        std::swap(dh, dh_nx);
      }
      dh0 = dh == dh_a.data_ptr<scalar_t>() ? dh_a : dh_b;
    });
  }

  // Weight and input gradients: a few large GEMMs over all T*B rows.
  const auto dg2 = dgates.view({T * B, G});
  auto d_input = at::mm(dg2, w_ih_).view({T, B, z.I});
  auto d_w_ih = at::mm(dg2.t(), input.view({T * B, z.I}));
  auto d_bias = dg2.sum(0);
  const int64_t t_first = reverse ? T - 1 : 0;
  auto d_w_hh = T > 0 ? at::mm(dgates[t_first].t(), h0_) : at::zeros({G, Hout}, opts);
  if (T > 1) {
    const auto output = output_.contiguous();
    const auto dg_rest = reverse ? dgates.narrow(0, 0, T - 1) : dgates.narrow(0, 1, T - 1);
    const auto h_prev = reverse ? output.narrow(0, 1, T - 1) : output.narrow(0, 0, T - 1);
    d_w_hh.addmm_(dg_rest.reshape({(T - 1) * B, G}).t(), h_prev.reshape({(T - 1) * B, Hout}));
  }
  auto d_w_hr = z.proj ? at::mm(dh_all.view({T * B, Hout}).t(), r_all.view({T * B, H}))
                       : at::empty({0}, opts);
  return {d_input, dh0, dc.to(opts.dtype()), d_w_ih, d_w_hh, d_bias, d_w_hr};
}

// The cell ops are the layer ops over one time step (the GEMM path: one step never
// repays the persistent kernel's set-up).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cell_forward_cuda(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, int64_t activation, int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 2,
                    "torchlstm.cell_forward: input must be 2-D (batch, input_size), got ",
                    input.dim(), "-D");
  auto [out, h, c, gates, cs] =
      run_forward("torchlstm.cell_forward", true, input.unsqueeze(0), hx, cx, w_ih, w_hh, b_ih,
                  b_hh, c10::nullopt, c10::nullopt, false, activation, recurrent_activation);
  return {h, c, gates.squeeze(0)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
cell_backward_cuda(const c10::optional<at::Tensor>& grad_h, const c10::optional<at::Tensor>& grad_c,
                   const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h,
                   const at::Tensor& c, const at::Tensor& gates, int64_t activation,
                   int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 2,
                    "torchlstm.cell_backward: input must be 2-D (batch, input_size), got ",
                    input.dim(), "-D");
  check_input_dtype("torchlstm.cell_backward", input);
  // The cell op hands back c in the input dtype; the layer backward wants cell states in
  // the accumulation dtype.
  const auto cs = c.unsqueeze(0).to(acc_dtype(input.scalar_type()));
  auto [dx, dh, dc, dw_ih, dw_hh, db, dw_hr] = layer_backward_cuda(
      grad_h.has_value() ? c10::optional<at::Tensor>(grad_h->unsqueeze(0)) : c10::nullopt,
      c10::nullopt, grad_c, input.unsqueeze(0), hx, cx, w_ih, w_hh, c10::nullopt, c10::nullopt,
      h.unsqueeze(0), gates.unsqueeze(0), cs, false, activation, recurrent_activation);
  return {dx.squeeze(0), dh, dc, dw_ih, dw_hh, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchlstm, CUDA, m) {
  m.impl("layer_forward", &layer_forward_cuda);
  m.impl("layer_inference", &layer_inference_cuda);
  m.impl("layer_backward", &layer_backward_cuda);
  m.impl("cell_forward", &cell_forward_cuda);
  m.impl("cell_backward", &cell_backward_cuda);
}

}  // namespace cuda
}  // namespace torchlstm
