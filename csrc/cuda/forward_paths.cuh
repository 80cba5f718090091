// forward_paths.cuh — the two CUDA forward paths of one layer and direction, run after
// the input projection (ops_cuda.cu has put x W_ih^T of every step in r.gates):
//   persistent: the whole time loop in ONE cooperative launch (persistent_kernel.cuh),
//               W_hh in shared memory, c in registers, grid.sync per step; small batches
//   GEMM:       per step one cuBLAS GEMM (+ h W_hh^T into the step's gate rows) and ONE
//               fused pointwise kernel (biases, gates, c, h; step_kernels.cuh)
//               [projection: h = r W_hr^T, one more GEMM]
//               With layer normalisation (ln_gemm_forward): x W_ih^T normalised row by
//               row before the loop, then per step R = h W_hh^T and ONE step kernel, a
//               block per batch row (layer_norm_kernels.cuh). The persistent path has no
//               layer normalisation (launch_plan.h).
// Which one runs: launch_plan.h's plan, the device, and the forced-path switch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "../layer_call.h"
#include "cublas_gemm.h"
#include "launch.h"
#include "launch_plan.h"
#include "layer_norm_kernels.cuh"
#include "persistent_kernel.cuh"
#include "step_kernels.cuh"

namespace torchlstm {
namespace cuda {

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

inline cuda_plan::DeviceLimits device_limits(int device) {
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device);
  return {p->multiProcessorCount, static_cast<int64_t>(p->sharedMemPerBlockOptin),
          p->maxThreadsPerBlock};
}

// Whether a cooperative launch may be issued now: the device supports it, and the stream
// is not being captured into a CUDA graph (the GEMM path captures like any other kernels).
inline bool cooperative_launch_ok(int device, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  return at::cuda::getDeviceProperties(device)->cooperativeLaunch &&
         capture == cudaStreamCaptureStatusNone;
}

// Launches the persistent kernel for batches up to MAXB; false where the device cannot
// hold the whole grid at once (the caller then takes the GEMM path).
template <typename scalar_t, typename acc_t, int MAXB>
bool launch_persistent(const cuda_plan::PersistentPlan& p, const PersistentArgs<scalar_t, acc_t>& args,
                       const cuda_plan::DeviceLimits& d, cudaStream_t stream) {
  auto kernel = persistent_forward_kernel<scalar_t, acc_t, MAXB>;
  // The limit is a property of the kernel, process-wide: always set to the device's
  // maximum (never to this call's size, which a concurrent call could undercut).
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(d.smem_per_block)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, kernel, static_cast<int>(p.threads), static_cast<size_t>(p.smem_bytes)));
  if (static_cast<int64_t>(per_sm) * d.sm_count < p.blocks) return false;
  launch_cooperative(kernel, static_cast<unsigned>(p.blocks), static_cast<unsigned>(p.threads),
                     static_cast<size_t>(p.smem_bytes), stream, args);
  return true;
}

// The persistent path; false (nothing run) where its grid does not fit on the device.
template <typename scalar_t, typename acc_t>
bool persistent_forward(const LayerCall& c, const cuda_plan::PersistentPlan& p,
                        const cuda_plan::DeviceLimits& d, cudaStream_t stream, bool save,
                        ForwardResult& r) {
  const LayerSizes& z = c.z;
  auto hbuf = at::empty({2, z.B, z.H}, c.input.options().dtype(c.cell_dtype));
  PersistentArgs<scalar_t, acc_t> a;
  a.w_hh = c.w_hh.data_ptr<scalar_t>();
  a.b_ih = data_or_null<scalar_t>(c.b_ih);
  a.b_hh = data_or_null<scalar_t>(c.b_hh);
  a.h0 = c.h0.data_ptr<scalar_t>();
  a.c0 = c.c0.data_ptr<scalar_t>();
  a.gates = r.gates.data_ptr<scalar_t>();
  a.out = r.output.data_ptr<scalar_t>();
  a.c_n = r.c_n.data_ptr<scalar_t>();
  a.cs = save ? r.cs.data_ptr<acc_t>() : nullptr;
  a.mask = c.mask.defined() ? c.mask.data_ptr<bool>() : nullptr;
  a.rk = data_or_null<scalar_t>(c.reg.recurrent_keep);
  a.zh = data_or_null<scalar_t>(c.reg.zoneout_h);
  a.zc = data_or_null<scalar_t>(c.reg.zoneout_c);
  a.pc = data_or_null<scalar_t>(c.w_ch);
  a.hbuf = hbuf.data_ptr<acc_t>();
  a.T = z.T;
  a.B = z.B;
  a.H = z.H;
  a.U = p.units_per_block;
  a.reverse = c.reverse;
  a.save = save;
  a.act = c.act;
  a.ract = c.ract;
  switch (p.max_batch) {
    case 1: return launch_persistent<scalar_t, acc_t, 1>(p, a, d, stream);
    case 2: return launch_persistent<scalar_t, acc_t, 2>(p, a, d, stream);
    case 4: return launch_persistent<scalar_t, acc_t, 4>(p, a, d, stream);
    case 8: return launch_persistent<scalar_t, acc_t, 8>(p, a, d, stream);
    default:
      if constexpr (sizeof(acc_t) <= 4) return launch_persistent<scalar_t, acc_t, 16>(p, a, d, stream);
      return false;
  }
}

// The GEMM path: the time loop on the host, two or three launches per step.
template <typename scalar_t, typename acc_t>
void gemm_forward(const LayerCall& c, cudaStream_t stream, bool save, ForwardResult& r) {
  using cuda_plan::kPointwiseThreads;
  using cuda_plan::pointwise_blocks;
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const auto opts = c.input.options();
  const scalar_t* rk = data_or_null<scalar_t>(c.reg.recurrent_keep);
  const scalar_t* zh = data_or_null<scalar_t>(c.reg.zoneout_h);
  const scalar_t* zc = data_or_null<scalar_t>(c.reg.zoneout_c);
  // the running cell state, in acc_t: a copy (never c0 itself, which .to() would return
  // for float32/float64 and the kernels would then overwrite)
  auto cell = at::empty({B, H}, opts.dtype(c.cell_dtype));
  cell.copy_(c.c0);
  auto r_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor hk = rk ? at::empty({B, Hout}, opts) : at::Tensor();  // h_{t-1} * recurrent_keep
  const unsigned out_blocks = static_cast<unsigned>(pointwise_blocks(B * Hout));
  const unsigned blocks = static_cast<unsigned>(pointwise_blocks(B * H));
  ForwardStep<scalar_t, acc_t> k;
  k.b_ih = data_or_null<scalar_t>(c.b_ih);
  k.b_hh = data_or_null<scalar_t>(c.b_hh);
  k.pc = data_or_null<scalar_t>(c.w_ch);
  k.c = cell.data_ptr<acc_t>();
  k.B = B;
  k.H = H;
  k.save = save;
  k.proj = z.proj;
  k.act = c.act;
  k.ract = c.ract;
  scalar_t* gates = r.gates.data_ptr<scalar_t>();
  scalar_t* out = r.output.data_ptr<scalar_t>();
  const scalar_t* w_hh = c.w_hh.data_ptr<scalar_t>();
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = c.reverse ? T - 1 - s : s;
    const int64_t tp = c.reverse ? t + 1 : t - 1;
    const scalar_t* h_prev = s == 0 ? c.h0.data_ptr<scalar_t>() : out + tp * B * Hout;
    scalar_t* g_t = gates + t * B * G;
    scalar_t* out_t = out + t * B * Hout;
    const scalar_t* h_in = h_prev;  // what the recurrent products read
    if (rk) {
      launch(mul_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
             hk.data_ptr<scalar_t>(), h_prev, rk, B * Hout);
      h_in = hk.data_ptr<scalar_t>();
    }
    gemm_rm<scalar_t>(false, true, B, G, Hout, h_in, Hout, w_hh, Hout, 1.f, g_t, G);  // += h W_hh^T
    k.g = g_t;
    k.h_prev = h_prev;
    k.r = z.proj ? r_ws.data_ptr<scalar_t>() : out_t;
    k.c_save = save ? r.cs.data_ptr<acc_t>() + t * B * H : nullptr;
    k.mask = c.mask.defined() ? c.mask.data_ptr<bool>() + t * B : nullptr;
    k.zc = zc ? zc + t * B * H : nullptr;
    k.zh = zh && !z.proj ? zh + t * B * Hout : nullptr;
    launch(forward_step_kernel<scalar_t, acc_t>, blocks, kPointwiseThreads, 0, stream, k);
    if (z.proj) {
      gemm_rm<scalar_t>(false, true, B, Hout, H, r_ws.data_ptr<scalar_t>(), H,
                        c.w_hr.data_ptr<scalar_t>(), H, 0.f, out_t, Hout);  // h = r W_hr^T
      if (k.mask || zh)
        launch(finish_projected_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
               out_t, h_prev, k.mask, zh ? zh + t * B * Hout : nullptr, B, Hout);
    }
  }
  r.c_n.copy_(cell);
}

template <typename scalar_t>
LnParams<scalar_t> ln_params(const LayerCall& c) {
  return {c.ln.w_ih.data_ptr<scalar_t>(), c.ln.w_hh.data_ptr<scalar_t>(),
          c.ln.w_c.data_ptr<scalar_t>(),  c.ln.b_c.data_ptr<scalar_t>(),
          data_or_null<scalar_t>(c.b_ih), data_or_null<scalar_t>(c.b_hh),
          data_or_null<scalar_t>(c.w_ch)};
}

inline LnOffsets ln_offsets(const LayerCall& c) {
  const SavedLayout L = c.saved_layout();
  return {L.xhat_ih, L.xhat_hh, L.xhat_c, L.rstd_ih, L.rstd_hh, L.rstd_c, L.width};
}

// The GEMM path with layer normalisation. P (T*B, 4H) holds x W_ih^T of every step; it
// is normalised into the saved rows (save) or in place (inference) first. Per step: R =
// h W_hh^T (cuBLAS), the step kernel (one block per batch row), [the projection].
template <typename scalar_t, typename acc_t>
void ln_gemm_forward(const LayerCall& c, at::Tensor& P, cudaStream_t stream, bool save,
                     ForwardResult& r) {
  using cuda_plan::kPointwiseThreads;
  using cuda_plan::pointwise_blocks;
  const LayerSizes& z = c.z;
  const int64_t T = z.T, B = z.B, H = z.H, Hout = z.Hout, G = 4 * H;
  const LnOffsets L = ln_offsets(c);
  const auto opts = c.input.options();
  const scalar_t* rk = data_or_null<scalar_t>(c.reg.recurrent_keep);
  const scalar_t* zh = data_or_null<scalar_t>(c.reg.zoneout_h);
  const scalar_t* zc = data_or_null<scalar_t>(c.reg.zoneout_c);
  auto cell = at::empty({B, H}, opts.dtype(c.cell_dtype));  // a copy: updated in place
  cell.copy_(c.c0);
  auto ws = at::empty({B, 2 * H}, opts.dtype(c.cell_dtype));
  auto R = at::empty({B, G}, opts);
  auto r_ws = z.proj ? at::empty({B, H}, opts) : at::Tensor();
  at::Tensor hk = rk ? at::empty({B, Hout}, opts) : at::Tensor();
  const unsigned out_blocks = static_cast<unsigned>(pointwise_blocks(B * Hout));
  const acc_t eps = static_cast<acc_t>(c.ln.eps);
  scalar_t* saved = save ? r.gates.data_ptr<scalar_t>() : nullptr;
  scalar_t* xih = save ? saved + L.xhat_ih : P.data_ptr<scalar_t>();
  const int64_t xih_ld = save ? L.width : G;
  const scalar_t* p_rows = P.data_ptr<scalar_t>();
  launch(ln_rows_forward_kernel<scalar_t, acc_t>, static_cast<unsigned>(T * B),
         cuda_plan::ln_row_threads(G), 0, stream, p_rows, G, xih, xih_ld,
         save ? saved + L.rstd_ih : nullptr, G, eps);
  LnForwardStep<scalar_t, acc_t> k;
  k.p = ln_params<scalar_t>(c);
  k.L = L;
  k.xih_ld = xih_ld;
  k.R = R.data_ptr<scalar_t>();
  k.c = cell.data_ptr<acc_t>();
  k.ws = ws.data_ptr<acc_t>();
  k.H = H;
  k.eps = eps;
  k.proj = z.proj;
  k.act = c.act;
  k.ract = c.ract;
  const unsigned threads = static_cast<unsigned>(cuda_plan::ln_row_threads(H));
  scalar_t* out = r.output.data_ptr<scalar_t>();
  const scalar_t* w_hh = c.w_hh.data_ptr<scalar_t>();
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = c.reverse ? T - 1 - s : s;
    const int64_t tp = c.reverse ? t + 1 : t - 1;
    const scalar_t* h_prev = s == 0 ? c.h0.data_ptr<scalar_t>() : out + tp * B * Hout;
    scalar_t* out_t = out + t * B * Hout;
    const scalar_t* h_in = h_prev;  // what the recurrent product reads
    if (rk) {
      launch(mul_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
             hk.data_ptr<scalar_t>(), h_prev, rk, B * Hout);
      h_in = hk.data_ptr<scalar_t>();
    }
    gemm_rm<scalar_t>(false, true, B, G, Hout, h_in, Hout, w_hh, Hout, 0.f,
                      R.data_ptr<scalar_t>(), G);  // R = h W_hh^T
    k.xih = xih + t * B * xih_ld;
    k.save = saved ? saved + t * B * L.width : nullptr;
    k.h_prev = h_prev;
    k.r = z.proj ? r_ws.data_ptr<scalar_t>() : out_t;
    k.c_save = save ? r.cs.data_ptr<acc_t>() + t * B * H : nullptr;
    k.mask = c.mask.defined() ? c.mask.data_ptr<bool>() + t * B : nullptr;
    k.zc = zc ? zc + t * B * H : nullptr;
    k.zh = zh && !z.proj ? zh + t * B * Hout : nullptr;
    launch(ln_forward_step_kernel<scalar_t, acc_t>, static_cast<unsigned>(B), threads, 0,
           stream, k);
    if (z.proj) {
      gemm_rm<scalar_t>(false, true, B, Hout, H, r_ws.data_ptr<scalar_t>(), H,
                        c.w_hr.data_ptr<scalar_t>(), H, 0.f, out_t, Hout);  // h = r W_hr^T
      if (k.mask || zh)
        launch(finish_projected_kernel<scalar_t, acc_t>, out_blocks, kPointwiseThreads, 0, stream,
               out_t, h_prev, k.mask, zh ? zh + t * B * Hout : nullptr, B, Hout);
    }
  }
  r.c_n.copy_(cell);
}

}  // namespace cuda
}  // namespace torchlstm
