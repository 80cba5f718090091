// ops.cpp — the torchlstm operator schemas and the Python module torchlstm._C.
//
// Schemas live in schemas.h, once (defined here for torchlstm, and by the CUDA
// emulation for torchlstm_emu); each backend adds its kernels with TORCH_LIBRARY_IMPL
// (cpu/lstm_cpu.cpp, cuda/). Fake (meta) kernels and autograd are registered from
// Python in torchlstm/_ops.py.
//
//   layer_forward:  one direction of one layer over a sequence (time-major).
//                   returns (output (T,B,Hout), h_n (B,Hout), c_n (B,H),
//                            gates (T,B,4H) pre-activations, cs (T,B,H) cell states)
//                   the last two are saved for backward.
//   layer_inference: layer_forward's (output, h_n, c_n) with nothing saved for backward
//                   (no autograd: the modules call it when no gradient is needed).
//   layer_backward: gradients of all inputs of layer_forward:
//                   (d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias (4H), d_w_hr or empty)
//   All three take the optional regularisers (R_ARGS below) last.
//   cell_forward / cell_backward: the same maths for one step (LSTMCell).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "cpu/blas.h"
#include "cpu/host_cache.h"
#include "cuda/launch_plan.h"
#include "gate_math.h"
#include "schemas.h"

TORCH_LIBRARY(torchlstm, m) { torchlstm::define_schemas(m); }

// The activation table of gate_math.h, for torchlstm.activations: [(name, id), ...].
static std::vector<std::pair<std::string, int>> activation_table() {
  return {
#define TL_TABLE_ENTRY(name, str, id) {str, id},
      TORCHLSTM_FOR_EACH_ACTIVATION(TL_TABLE_ENTRY)
#undef TL_TABLE_ENTRY
  };
}

static bool cuda_build() {
#ifdef TORCHLSTM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// launch_plan.h's choice for given sizes and device limits, as a dict (tests check the
// CUDA launch logic on the CPU with it; the benchmark reports it).
static pybind11::dict persistent_plan(int64_t B, int64_t H, bool proj, int64_t elem,
                                      int64_t acc_elem, int sm_count, int64_t smem_per_block,
                                      int max_threads_per_block) {
  const auto p = torchlstm::cuda_plan::plan_persistent(
      B, H, proj, elem, acc_elem, {sm_count, smem_per_block, max_threads_per_block});
  pybind11::dict d;
  d["ok"] = p.ok;
  d["why"] = std::string(p.why);
  d["units_per_block"] = p.units_per_block;
  d["blocks"] = p.blocks;
  d["threads"] = p.threads;
  d["smem_bytes"] = p.smem_bytes;
  d["max_batch"] = p.max_batch;
  return d;
}

static void set_cuda_forward_path(const std::string& path) {
  using torchlstm::cuda_plan::ForwardPath;
  ForwardPath p;
  if (path == "auto") p = ForwardPath::AUTO;
  else if (path == "gemm") p = ForwardPath::GEMM;
  else if (path == "persistent") p = ForwardPath::PERSISTENT;
  else throw pybind11::value_error("path must be 'auto', 'gemm' or 'persistent', got '" + path + "'");
  torchlstm::cuda_plan::forced_forward_path().store(static_cast<int>(p));
}

static std::string cuda_forward_path() {
  switch (torchlstm::cuda_plan::forced_forward_path().load()) {
    case 1: return "gemm";
    case 2: return "persistent";
    default: return "auto";
  }
}

static std::string last_cuda_forward_path() {
  switch (torchlstm::cuda_plan::last_forward_path().load()) {
    case 1: return "gemm";
    case 2: return "persistent";
    default: return "none";
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torchlstm kernels; the ops are torch.ops.torchlstm.*";
  m.def("activation_table", &activation_table,
        "[(name, id)] of the activations fused in the kernels");
  m.def("cpu_direct_blas", &torchlstm::cpu::has_direct_blas,
        "whether the CPU time loop calls BLAS directly (else through at::mm, slower)");
  m.def("cpu_packed_gemm", &torchlstm::cpu::has_packed_gemm,
        "whether float32 recurrent weights are packed once per sequence (MKL packed GEMM)");
  m.def("cpu_avx512", &torchlstm::cpu::use_avx512,
        "whether the CPU kernels run their AVX-512 parts (batch 1-4 matrix-vector loop, gate passes)");
  m.def(
      "set_cpu_avx512",
      [](bool allowed) { return torchlstm::cpu::avx512_allowed().exchange(allowed); },
      "allow (default) or forbid the AVX-512 parts of the CPU kernels; returns the previous setting");
  m.def(
      "cpu_cache_stats",
      [] {
        const auto s = torchlstm::cpu::host_cache_stats();
        return pybind11::dict(pybind11::arg("cached_bytes") = s.cached_bytes,
                              pybind11::arg("cached_blocks") = s.cached_blocks,
                              pybind11::arg("limit_bytes") = s.limit_bytes,
                              pybind11::arg("hits") = s.hits, pybind11::arg("misses") = s.misses);
      },
      "the CPU buffer cache (cpu/host_cache.h): free bytes and blocks held, the limit, hits, misses");
  m.def("empty_cpu_cache", &torchlstm::cpu::empty_host_cache,
        "frees the CPU buffer cache's free blocks; returns the bytes freed");
  m.def("cuda_build", &cuda_build, "whether this build was compiled and linked with the CUDA toolkit");
  m.def("persistent_plan", &persistent_plan, "the CUDA persistent kernel's launch plan (launch_plan.h)",
        pybind11::arg("B"), pybind11::arg("H"), pybind11::arg("proj"), pybind11::arg("elem"),
        pybind11::arg("acc_elem"), pybind11::arg("sm_count"), pybind11::arg("smem_per_block"),
        pybind11::arg("max_threads_per_block"));
  m.def("set_cuda_forward_path", &set_cuda_forward_path,
        "'auto' (default), 'gemm' or 'persistent': which CUDA forward path layer ops take");
  m.def("cuda_forward_path", &cuda_forward_path, "the CUDA forward path setting");
  m.def("last_cuda_forward_path", &last_cuda_forward_path,
        "which CUDA forward path the last layer op ran: 'gemm', 'persistent' or 'none'");
}
