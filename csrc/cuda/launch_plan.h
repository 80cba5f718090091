// launch_plan.h — how the CUDA kernels are launched, decided on the host.
//
// Plain C++ (no CUDA headers): the choices below depend only on sizes and on device
// limits read with cudaGetDeviceProperties, so they are compiled into every build and
// tested on the CPU (torchlstm._C.persistent_plan, tests/test_cuda_plan.py) even where
// no GPU exists.
//
// Two forward paths (lstm_cuda.cu):
//   GEMM path        per step one cuBLAS GEMM (h W_hh^T) + one fused pointwise kernel.
//                    Any size, any option.
//   persistent path  ONE cooperative launch per sequence. Block k owns hidden units
//                    [k*U, k*U + U): their four rows of W_hh stay in shared memory for the
//                    whole sequence, their cell states in registers; per step each block
//                    reads h_{t-1} (B x H) into shared memory, computes its 4U x B recurrent
//                    products and the gates, writes its units of h_t, and the grid meets
//                    at grid.sync(). One warp per unit (lanes split the dot products over
//                    H), so U warps per block.
//   The persistent path needs: no projection, no layer normalisation (its row statistics
//   span every block: the GEMM path's step kernel takes a whole batch row per block),
//   B <= kPersistentMaxBatch, every block
//   resident at once (one block per multiprocessor here), and its shared memory
//   (4·U·H weights + B·H state) within the per-block opt-in limit.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace torchlstm {
namespace cuda_plan {

constexpr int64_t kPersistentMaxBatch = 16;  // accumulators per lane: 4 gates x batch
// float64 accumulators take two registers each: at most 8 rows (32 accumulators) then.
constexpr int64_t kPersistentMaxBatchDouble = 8;
// The kernel's __launch_bounds__: 512 threads leave 128 registers a thread, room for the
// 4 x 16 accumulators without spilling.
constexpr int kPersistentMaxThreads = 512;
// Shorter sequences take the GEMM path: loading W_hh into shared memory costs about one
// step's GEMM, and a cooperative launch more than an ordinary one.
constexpr int64_t kPersistentMinSteps = 4;
constexpr int kWarp = 32;

// What the kernels need to know about the device (cudaDeviceProp fields).
struct DeviceLimits {
  int sm_count;                // multiProcessorCount
  int64_t smem_per_block;      // sharedMemPerBlockOptin (bytes a block may opt in to)
  int max_threads_per_block;   // maxThreadsPerBlock
};

struct PersistentPlan {
  bool ok = false;
  const char* why = "";        // the first condition that failed, when !ok
  int64_t units_per_block = 0; // U: hidden units (warps) per block
  int64_t blocks = 0;          // ceil(H / U) <= sm_count
  int64_t threads = 0;         // 32 * U
  int64_t smem_bytes = 0;      // 4·U·H·elem + B·H·acc_elem
  int64_t max_batch = 0;       // the kernel instance: smallest of 1, 2, 4, 8, 16 >= B
};

// Smallest power of two >= b (b >= 1), the batch the persistent kernel is compiled for.
inline int64_t batch_instance(int64_t b) {
  int64_t m = 1;
  while (m < b) m *= 2;
  return m;
}

// elem: bytes of one weight (the input dtype); acc_elem: bytes of the accumulation type.
inline PersistentPlan plan_persistent(int64_t B, int64_t H, bool proj, int64_t elem,
                                      int64_t acc_elem, const DeviceLimits& d,
                                      bool layer_norm = false) {
  PersistentPlan p;
  if (layer_norm) {
    p.why = "layer normalisation (layer_norm=True): the persistent kernel has none, the GEMM "
            "path runs it";
    return p;
  }
  if (proj) { p.why = "projection (proj_size > 0)"; return p; }
  const int64_t max_b = acc_elem > 4 ? kPersistentMaxBatchDouble : kPersistentMaxBatch;
  if (B < 1 || B > max_b) { p.why = "batch too large (at most 16; 8 in float64)"; return p; }
  if (H < 1 || d.sm_count < 1) { p.why = "empty layer"; return p; }
  // One block per multiprocessor; as few units per block as fills them.
  const int64_t U = (H + d.sm_count - 1) / d.sm_count;
  p.units_per_block = U;
  p.blocks = (H + U - 1) / U;
  p.threads = kWarp * U;
  p.smem_bytes = 4 * U * H * elem + B * H * acc_elem;
  p.max_batch = batch_instance(B);
  const int64_t max_threads =
      d.max_threads_per_block < kPersistentMaxThreads ? d.max_threads_per_block : kPersistentMaxThreads;
  if (p.threads > max_threads) { p.why = "hidden size too large for one block per SM"; return p; }
  if (p.smem_bytes > d.smem_per_block) { p.why = "weights do not fit in shared memory"; return p; }
  p.ok = true;
  return p;
}

// Threads and blocks of the element-wise kernels (one thread per element).
constexpr int kPointwiseThreads = 256;
inline int64_t pointwise_blocks(int64_t n) {
  return n <= 0 ? 1 : (n + kPointwiseThreads - 1) / kPointwiseThreads;
}

// Threads of the layer-norm kernels (layer_norm_kernels.cuh: one block per row of n
// elements, strided over the row): whole warps (their block reductions shuffle across a
// full warp), as few as cover the row, at most kLnMaxThreads.
constexpr int kLnMaxThreads = 256;
inline int ln_row_threads(int64_t n) {
  const int64_t t = (n + kWarp - 1) / kWarp * kWarp;
  return t < kWarp ? kWarp : t > kLnMaxThreads ? kLnMaxThreads : static_cast<int>(t);
}

// Which forward path to take: 0 = automatic, 1 = always the GEMM path, 2 = the
// persistent path wherever plan_persistent allows it (else an error). Tests and the
// benchmark set it through torchlstm._C.set_cuda_forward_path.
enum class ForwardPath : int { AUTO = 0, GEMM = 1, PERSISTENT = 2 };

// Automatic choice: the persistent kernel where it applies and the sequence is long
// enough to repay its set-up; forced, wherever it applies at all.
inline bool use_persistent(ForwardPath forced, const PersistentPlan& p, int64_t T) {
  if (forced == ForwardPath::GEMM || !p.ok) return false;
  return forced == ForwardPath::PERSISTENT || T >= kPersistentMinSteps;
}

// The process-wide setting and what the last CUDA forward call ran (1 = GEMM path,
// 2 = persistent, 0 = none yet): inline functions, so every translation unit of the
// extension shares the one variable.
inline std::atomic<int>& forced_forward_path() {
  static std::atomic<int> v{0};
  return v;
}
inline std::atomic<int>& last_forward_path() {
  static std::atomic<int> v{0};
  return v;
}

}  // namespace cuda_plan
}  // namespace torchlstm
