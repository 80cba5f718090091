// ops.cpp — the torchlstm library: the schemas (ops.h) and the Python module
// torchlstm._C. Each backend adds its kernels with TORCH_LIBRARY_IMPL in its own folder
// (cpu/ops_cpu.cpp, cuda/ops_cuda.cu) and its run-time switches with its bind function.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "backend_bindings.h"
#include "gate_math.h"
#include "ops.h"

TORCH_LIBRARY(torchlstm, m) { torchlstm::define_schemas(m); }

namespace {

// The activation table of gate_math.h, for torchlstm.activations: [(name, id), ...].
std::vector<std::pair<std::string, int>> activation_table() {
  return {
#define TL_TABLE_ENTRY(name, str, id) {str, id},
      TORCHLSTM_FOR_EACH_ACTIVATION(TL_TABLE_ENTRY)
#undef TL_TABLE_ENTRY
  };
}

bool cuda_build() {
#ifdef TORCHLSTM_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torchlstm kernels; the ops are torch.ops.torchlstm.*";
  m.def("activation_table", &activation_table,
        "[(name, id)] of the activations fused in the kernels");
  m.def("cuda_build", &cuda_build, "whether this build was compiled and linked with the CUDA toolkit");
  torchlstm::cpu::bind(m);
  torchlstm::cuda_plan::bind(m);
}
