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
// Regularisers (layer_common.h), as on the CPU: input dropout multiplies x before the
// projection GEMM; recurrent dropout feeds h_{t-1} * recurrent_keep to the recurrent
// products; zoneout blends c and h with their previous values in the fused kernels.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gate_math.h"
#include "../layer_common.h"
#include "../lstm_args.h"
#include "cublas_gemm.h"
#include "launch.h"
#include "launch_plan.h"
#include "persistent_kernel.cuh"
#include "step_kernels.cuh"

namespace torchlstm {
namespace cuda {
namespace {

using cuda_plan::kPointwiseThreads;
using cuda_plan::pointwise_blocks;

cuda_plan::DeviceLimits device_limits(int device) {
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device);
  return {p->multiProcessorCount, static_cast<int64_t>(p->sharedMemPerBlockOptin),
          p->maxThreadsPerBlock};
}

// Launches the persistent kernel; false where the device cannot hold the whole grid at
// once (the caller then takes the GEMM path).
template <typename scalar_t, typename acc_t, int MAXB>
bool launch_persistent(const cuda_plan::PersistentPlan& p, const PersistentArgs<scalar_t, acc_t>& args,
                       int sm_count, int64_t smem_limit, cudaStream_t stream) {
  auto kernel = persistent_forward_kernel<scalar_t, acc_t, MAXB>;
  // The limit is a property of the kernel, process-wide: always set to the device's
  // maximum (never to this call's size, which a concurrent call could undercut).
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_limit)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, kernel, static_cast<int>(p.threads), static_cast<size_t>(p.smem_bytes)));
  if (static_cast<int64_t>(per_sm) * sm_count < p.blocks) return false;
  C10_CUDA_CHECK(launch_cooperative(kernel, dim3(static_cast<unsigned>(p.blocks)),
                                    dim3(static_cast<unsigned>(p.threads)),
                                    static_cast<size_t>(p.smem_bytes), stream, args));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename scalar_t, typename acc_t>
bool run_persistent(const cuda_plan::PersistentPlan& p, const PersistentArgs<scalar_t, acc_t>& args,
                    const cuda_plan::DeviceLimits& d, cudaStream_t stream) {
  const int n = d.sm_count;
  const int64_t smem = d.smem_per_block;
  switch (p.max_batch) {
    case 1: return launch_persistent<scalar_t, acc_t, 1>(p, args, n, smem, stream);
    case 2: return launch_persistent<scalar_t, acc_t, 2>(p, args, n, smem, stream);
    case 4: return launch_persistent<scalar_t, acc_t, 4>(p, args, n, smem, stream);
    case 8: return launch_persistent<scalar_t, acc_t, 8>(p, args, n, smem, stream);
    default:
      if constexpr (sizeof(acc_t) <= 4)
        return launch_persistent<scalar_t, acc_t, 16>(p, args, n, smem, stream);
      return false;
  }
}

// Whether a cooperative launch may be issued now: the device supports it, and the stream
// is not being captured into a CUDA graph (the GEMM path captures like any other kernels).
bool cooperative_launch_ok(int device, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  return at::cuda::getDeviceProperties(device)->cooperativeLaunch &&
         capture == cudaStreamCaptureStatusNone;
}

// Shared by layer_forward (save = true) and layer_inference. Returns out, h_n, c_n,
// gates, cs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
    const char* op, bool save, const at::Tensor& input_, const at::Tensor& h0_,
    const at::Tensor& c0_, const at::Tensor& w_ih_, const at::Tensor& w_hh_,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr_, const c10::optional<at::Tensor>& mask_,
    bool reverse, int64_t activation, int64_t recurrent_activation, const OptTensor& input_keep,
    const OptTensor& recurrent_keep, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    bool allow_persistent = true) {
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, b_ih, b_hh, w_hr_,
                                        mask_, activation, recurrent_activation);
  const c10::cuda::CUDAGuard guard(input_.device());
  const Regularizers reg(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const auto opts = input_.options();
  const auto acc_opts = opts.dtype(cell_state_dtype(input_.scalar_type()));
  const auto h0 = h0_.contiguous();
  const auto w_hh = w_hh_.contiguous();
  const auto w_hr = z.proj ? w_hr_->contiguous() : at::Tensor();
  const auto mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const auto b1 = b_ih.has_value() ? b_ih->contiguous() : at::Tensor();
  const auto b2 = b_hh.has_value() ? b_hh->contiguous() : at::Tensor();

  // The input projection of every step at once: (T*B, 4H). It becomes the saved gates.
  const auto x = reg.dropped_input(input_.contiguous());
  auto gates = at::mm(x.view({T * B, z.I}), w_ih_.t()).view({T, B, G});
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
    const scalar_t* rk = data_or_null<scalar_t>(reg.recurrent_keep);
    const scalar_t* zh = data_or_null<scalar_t>(reg.zoneout_h);
    const scalar_t* zc = data_or_null<scalar_t>(reg.zoneout_c);
    auto plan = cuda_plan::plan_persistent(B, H, z.proj, sizeof(scalar_t), sizeof(acc_t), limits);
    if (!allow_persistent) {
      plan.ok = false;
      plan.why = "one step (the cell ops)";
    } else if (plan.ok && !cooperative_launch_ok(input_.get_device(), stream)) {
      plan.ok = false;
      plan.why = "no cooperative launch here (unsupported, or the stream is capturing a graph)";
    }
    TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT || plan.ok || !allow_persistent, op,
                ": the persistent forward path was forced but does not apply here: ", plan.why);
    if (cuda_plan::use_persistent(forced, plan, T)) {
      PersistentArgs<scalar_t, acc_t> args;
      auto hbuf = at::empty({2, B, H}, acc_opts);
      auto c0 = c0_.contiguous();
      args.w_hh = w_hh.data_ptr<scalar_t>();
      args.b_ih = data_or_null<scalar_t>(b1);
      args.b_hh = data_or_null<scalar_t>(b2);
      args.h0 = h0.data_ptr<scalar_t>();
      args.c0 = c0.data_ptr<scalar_t>();
      args.gates = gates.data_ptr<scalar_t>();
      args.out = out.data_ptr<scalar_t>();
      args.c_n = c_n.data_ptr<scalar_t>();
      args.cs = save ? cs.data_ptr<acc_t>() : nullptr;
      args.mask = mask.defined() ? mask.data_ptr<bool>() : nullptr;
      args.rk = rk;
      args.zh = zh;
      args.zc = zc;
      args.hbuf = hbuf.data_ptr<acc_t>();
      args.T = T;
      args.B = B;
      args.H = H;
      args.U = plan.units_per_block;
      args.reverse = reverse;
      args.save = save;
      args.act = act;
      args.ract = ract;
      if (run_persistent<scalar_t, acc_t>(plan, args, limits, stream)) {
        cuda_plan::last_forward_path().store(2);
        return;
      }
      TORCH_CHECK(forced != cuda_plan::ForwardPath::PERSISTENT, op,
                  ": the persistent forward path was forced but its grid does not fit on the device");
    }
    // GEMM path
    cuda_plan::last_forward_path().store(1);
    // the running cell state, in acc_t: a copy (never c0 itself, which .to() would return
    // for float32/float64 and the kernels would then overwrite)
    auto c = at::empty({B, H}, acc_opts);
    c.copy_(c0_);
    auto r_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
    auto hk = rk ? at::empty({B, Hout}, opts) : at::Tensor();  // h_{t-1} * recurrent_keep
    const unsigned out_blocks = static_cast<unsigned>(pointwise_blocks(B * Hout));
    ForwardStep<scalar_t, acc_t> k;
    k.b_ih = data_or_null<scalar_t>(b1);
    k.b_hh = data_or_null<scalar_t>(b2);
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
      const scalar_t* h_in = h_prev;  // what the recurrent products read
      if (rk) {
        launch(mul_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
               hk.data_ptr<scalar_t>(), h_prev, rk, B * Hout);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        h_in = hk.data_ptr<scalar_t>();
      }
      gemm_rm<scalar_t>(false, true, B, G, Hout, h_in, Hout, w_hh.data_ptr<scalar_t>(), Hout,
                        1.f, g_t, G);  // g_t += h_in W_hh^T
      k.g = g_t;
      k.h_prev = h_prev;
      k.r = z.proj ? r_ws.data_ptr<scalar_t>() : out_t;
      k.c_save = save ? cs.data_ptr<acc_t>() + t * B * H : nullptr;
      k.mask = mask.defined() ? mask.data_ptr<bool>() + t * B : nullptr;
      k.zc = zc ? zc + t * B * H : nullptr;
      k.zh = zh && !z.proj ? zh + t * B * Hout : nullptr;
      launch(forward_step_kernel<scalar_t, acc_t>, blocks, kPointwiseThreads, 0, stream, k);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (z.proj) {
        gemm_rm<scalar_t>(false, true, B, Hout, H, r_ws.data_ptr<scalar_t>(), H,
                          w_hr.data_ptr<scalar_t>(), H, 0.f, out_t, Hout);  // h = r W_hr^T
        if (k.mask || zh) {
          launch(finish_projected_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
              out_t, h_prev, k.mask, zh ? zh + t * B * Hout : nullptr, B, Hout);
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
    int64_t recurrent_activation, const OptTensor& input_keep, const OptTensor& recurrent_keep,
    const OptTensor& zoneout_h, const OptTensor& zoneout_c) {
  return run_forward("torchlstm.layer_forward", true, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                     mask, reverse, activation, recurrent_activation, input_keep, recurrent_keep,
                     zoneout_h, zoneout_c);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_inference_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& mask, bool reverse, int64_t activation,
    int64_t recurrent_activation, const OptTensor& input_keep, const OptTensor& recurrent_keep,
    const OptTensor& zoneout_h, const OptTensor& zoneout_c) {
  auto [out, h_n, c_n, gates, cs] =
      run_forward("torchlstm.layer_inference", false, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                  mask, reverse, activation, recurrent_activation, input_keep, recurrent_keep,
                  zoneout_h, zoneout_c);
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
                    int64_t activation, int64_t recurrent_activation,
                    const OptTensor& input_keep, const OptTensor& recurrent_keep,
                    const OptTensor& zoneout_h, const OptTensor& zoneout_c) {
  const char* op = "torchlstm.layer_backward";
  const LayerSizes z = check_layer_args(op, input_, h0_, c0_, w_ih_, w_hh_, c10::nullopt,
                                        c10::nullopt, w_hr_, mask_, activation,
                                        recurrent_activation);
  const c10::cuda::CUDAGuard guard(input_.device());
  const Regularizers reg(op, z, input_, input_keep, recurrent_keep, zoneout_h, zoneout_c);
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  check_shape(op, "output", output_, {T, B, Hout}, input_);
  check_shape(op, "gates", gates_, {T, B, G}, input_);
  const auto opts = input_.options();
  const auto acc_opts = opts.dtype(cell_state_dtype(input_.scalar_type()));
  check_cell_states(op, cs_, z, input_);
  if (grad_output_.has_value()) check_shape(op, "grad_output", *grad_output_, {T, B, Hout}, input_);
  if (grad_hn_.has_value()) check_shape(op, "grad_hn", *grad_hn_, {B, Hout}, input_);
  if (grad_cn_.has_value()) check_shape(op, "grad_cn", *grad_cn_, {B, H}, input_);

  const auto x = reg.dropped_input(input_.contiguous());  // what W_ih saw
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
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "torchlstm_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* rk = data_or_null<scalar_t>(reg.recurrent_keep);
      const scalar_t* zh = data_or_null<scalar_t>(reg.zoneout_h);
      const scalar_t* zc = data_or_null<scalar_t>(reg.zoneout_c);
      const unsigned out_blocks = static_cast<unsigned>(pointwise_blocks(B * Hout));
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
        const scalar_t* zh_t = zh ? zh + t * B * Hout : nullptr;
        k.zc = zc ? zc + t * B * H : nullptr;
        k.zh = z.proj ? nullptr : zh_t;
        if (z.proj) {
          scalar_t* dht = dh_all.data_ptr<scalar_t>() + t * B * Hout;
          launch(projected_grad_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
              dht, go_t, dh, k.mask, zh_t, B, Hout);
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
        launch(backward_step_kernel<scalar_t, acc_t>, blocks, kPointwiseThreads, 0, stream, k);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        // dh_{t-1} = dgates[t] W_hh, then (mask, dropout, zoneout) what else reaches h_{t-1}
        gemm_rm<scalar_t>(false, false, B, Hout, G, k.dg, G, w_hh.data_ptr<scalar_t>(), Hout,
                          0.f, dh_nx, Hout);
        if (k.mask || rk || zh_t) {
          launch(dh_prev_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
              dh_nx, go_t, dh, k.mask, rk, zh_t, B, Hout);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        std::swap(dh, dh_nx);
      }
      dh0 = dh == dh_a.data_ptr<scalar_t>() ? dh_a : dh_b;
    });
  }

  auto [d_input, d_w_ih, d_w_hh, d_bias, d_w_hr] =
      weight_and_input_grads(z, reverse, dgates, x, w_ih_, h0_, output_, reg, dh_all, r_all);
  return {d_input, dh0, dc.to(opts.dtype()), d_w_ih, d_w_hh, d_bias, d_w_hr};
}

// The cell ops are the layer ops over one time step (the GEMM path: one step never
// repays the persistent kernel's set-up; cell_backward: layer_common.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cell_forward_cuda(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, int64_t activation, int64_t recurrent_activation) {
  TORCH_CHECK_VALUE(input.dim() == 2,
                    "torchlstm.cell_forward: input must be 2-D (batch, input_size), got ",
                    input.dim(), "-D");
  auto [out, h, c, gates, cs] =
      run_forward("torchlstm.cell_forward", true, input.unsqueeze(0), hx, cx, w_ih, w_hh, b_ih,
                  b_hh, c10::nullopt, c10::nullopt, false, activation, recurrent_activation,
                  c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt,
                  /*allow_persistent=*/false);
  return {h, c, gates.squeeze(0)};
}

}  // namespace

// The namespace and dispatch key the kernels register under: torchlstm / CUDA, or, in
// the CUDA emulation (csrc/cuda_emu), torchlstm_emu / CPU.
#ifndef TORCHLSTM_CUDA_NAMESPACE
#define TORCHLSTM_CUDA_NAMESPACE torchlstm
#endif
#ifndef TORCHLSTM_CUDA_DISPATCH_KEY
#define TORCHLSTM_CUDA_DISPATCH_KEY CUDA
#endif

TORCH_LIBRARY_IMPL(TORCHLSTM_CUDA_NAMESPACE, TORCHLSTM_CUDA_DISPATCH_KEY, m) {
  m.impl("layer_forward", &layer_forward_cuda);
  m.impl("layer_inference", &layer_inference_cuda);
  m.impl("layer_backward", &layer_backward_cuda);
  m.impl("cell_forward", &cell_forward_cuda);
  m.impl("cell_backward", &cell_backward_via_layer<&layer_backward_cuda>);
}

}  // namespace cuda
}  // namespace torchlstm
