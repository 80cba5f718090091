// backend_bindings.h — each backend's run-time switches and reports, added to the Python
// module torchlstm._C by the backend itself (ops.cpp calls these).
#pragma once

#include <pybind11/pybind11.h>

namespace torchlstm {
namespace cpu {
void bind(pybind11::module_& m);  // cpu/bindings_cpu.cpp: AVX-512, BLAS, buffer cache
}
namespace cuda_plan {
// cuda/plan_bindings.cpp: the CUDA launch plan and forward-path switch (plain C++, in
// every build, so the launch logic is tested on machines without a GPU)
void bind(pybind11::module_& m);
}
}  // namespace torchlstm
