// plan_bindings.cpp — the CUDA launch plan and forward-path switch in torchlstm._C.
// launch_plan.h is plain C++, so this is built into every extension, with or without
// CUDA: the tests check the launch logic on the CPU, and the benchmark reports it.
#include <pybind11/pybind11.h>

#include <string>

#include "../backend_bindings.h"
#include "launch_plan.h"

namespace torchlstm {
namespace cuda_plan {
namespace {

// plan_persistent's choice for given sizes and device limits, as a dict.
pybind11::dict persistent_plan(int64_t B, int64_t H, bool proj, int64_t elem, int64_t acc_elem,
                               int sm_count, int64_t smem_per_block, int max_threads_per_block,
                               bool layer_norm) {
  const auto p = plan_persistent(B, H, proj, elem, acc_elem,
                                 {sm_count, smem_per_block, max_threads_per_block}, layer_norm);
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

const char* path_name(int p, const char* none) {
  switch (p) {
    case static_cast<int>(ForwardPath::GEMM): return "gemm";
    case static_cast<int>(ForwardPath::PERSISTENT): return "persistent";
    default: return none;
  }
}

}  // namespace

void bind(pybind11::module_& m) {
  m.def("persistent_plan", &persistent_plan, "the CUDA persistent kernel's launch plan (launch_plan.h)",
        pybind11::arg("B"), pybind11::arg("H"), pybind11::arg("proj"), pybind11::arg("elem"),
        pybind11::arg("acc_elem"), pybind11::arg("sm_count"), pybind11::arg("smem_per_block"),
        pybind11::arg("max_threads_per_block"), pybind11::arg("layer_norm") = false);
  m.def(
      "set_cuda_forward_path",
      [](const std::string& path) {
        ForwardPath p;
        if (path == "auto") p = ForwardPath::AUTO;
        else if (path == "gemm") p = ForwardPath::GEMM;
        else if (path == "persistent") p = ForwardPath::PERSISTENT;
        else throw pybind11::value_error("path must be 'auto', 'gemm' or 'persistent', got '" + path + "'");
        forced_forward_path().store(static_cast<int>(p));
      },
      "'auto' (default), 'gemm' or 'persistent': which CUDA forward path layer ops take");
  m.def(
      "cuda_forward_path", [] { return std::string(path_name(forced_forward_path().load(), "auto")); },
      "the CUDA forward path setting");
  m.def(
      "last_cuda_forward_path",
      [] { return std::string(path_name(last_forward_path().load(), "none")); },
      "which CUDA forward path the last layer op ran: 'gemm', 'persistent' or 'none'");
}

}  // namespace cuda_plan
}  // namespace torchlstm
