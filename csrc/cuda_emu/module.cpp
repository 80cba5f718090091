// module.cpp (EMULATION) — torchlstm._cuda_emu: the op schemas under torchlstm_emu (the
// CUDA host code registers its kernels there for CPU tensors: lstm_cuda_emu.cpp) and the
// emulated device's controls. The schemas are torchlstm's own (ops.h: define_schemas).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include <string>

#include "../backend_bindings.h"
#include "../ops.h"
#include "runtime.h"

void torchlstm_emu_register_selftest(pybind11::module_& m);  // selftest.cpp

TORCH_LIBRARY(torchlstm_emu, m) { torchlstm::define_schemas(m); }

namespace {

namespace py = pybind11;

py::dict device_properties() {
  const cudaDeviceProp& p = torchlstm_emu::mutable_properties();
  py::dict d;
  d["name"] = std::string(p.name);
  d["multiProcessorCount"] = p.multiProcessorCount;
  d["sharedMemPerBlock"] = p.sharedMemPerBlock;
  d["sharedMemPerBlockOptin"] = p.sharedMemPerBlockOptin;
  d["sharedMemPerMultiprocessor"] = p.sharedMemPerMultiprocessor;
  d["reservedSharedMemPerBlock"] = p.reservedSharedMemPerBlock;
  d["maxThreadsPerBlock"] = p.maxThreadsPerBlock;
  d["maxThreadsPerMultiProcessor"] = p.maxThreadsPerMultiProcessor;
  d["maxBlocksPerMultiProcessor"] = p.maxBlocksPerMultiProcessor;
  d["cooperativeLaunch"] = p.cooperativeLaunch;
  d["major"] = p.major;
  d["minor"] = p.minor;
  return d;
}

void set_device(const std::string& preset, const py::kwargs& overrides) {
  if (!torchlstm_emu::set_device_preset(preset))
    throw py::value_error("device preset must be 'h100', 'h200' or 'small', got '" + preset + "'");
  cudaDeviceProp& p = torchlstm_emu::mutable_properties();
  for (auto item : overrides) {
    const std::string k = py::str(item.first);
    const int64_t v = py::cast<int64_t>(item.second);
    if (k == "multiProcessorCount") p.multiProcessorCount = static_cast<int>(v);
    else if (k == "sharedMemPerBlockOptin") p.sharedMemPerBlockOptin = static_cast<size_t>(v);
    else if (k == "sharedMemPerMultiprocessor") p.sharedMemPerMultiprocessor = static_cast<size_t>(v);
    else if (k == "maxThreadsPerBlock") p.maxThreadsPerBlock = static_cast<int>(v);
    else if (k == "maxThreadsPerMultiProcessor") p.maxThreadsPerMultiProcessor = static_cast<int>(v);
    else if (k == "maxBlocksPerMultiProcessor") p.maxBlocksPerMultiProcessor = static_cast<int>(v);
    else if (k == "cooperativeLaunch") p.cooperativeLaunch = static_cast<int>(v);
    else throw py::value_error("unknown device property '" + k + "'");
  }
}

py::dict stats() {
  auto& s = torchlstm_emu::stats();
  py::dict d;
  d["launches"] = s.launches.load();
  d["cooperative_launches"] = s.cooperative_launches.load();
  d["failed_launches"] = s.failed_launches.load();
  d["fibers"] = s.fibers.load();
  d["switches"] = s.switches.load();
  d["gemms"] = s.gemms.load();
  d["last_compute_type"] = s.last_compute_type.load();
  d["last_math_mode"] = s.last_math_mode.load();
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torchlstm's CUDA code on an emulated device (CPU tensors): torch.ops.torchlstm_emu.*";
  m.def("set_device", &set_device, py::arg("preset") = "h100",
        "the emulated device: 'h100', 'h200' or 'small', with cudaDeviceProp fields overridden "
        "by keyword (multiProcessorCount=..., sharedMemPerBlockOptin=..., cooperativeLaunch=0, ...)");
  m.def("device_properties", &device_properties, "the emulated device's properties");
  m.def(
      "set_capture_status",
      [](const std::string& s) {
        if (s == "none") torchlstm_emu::set_capture_status(cudaStreamCaptureStatusNone);
        else if (s == "active") torchlstm_emu::set_capture_status(cudaStreamCaptureStatusActive);
        else if (s == "invalidated") torchlstm_emu::set_capture_status(cudaStreamCaptureStatusInvalidated);
        else throw py::value_error("capture status must be 'none', 'active' or 'invalidated'");
      },
      "what cudaStreamIsCapturing reports for every stream (kernels still run at once)");
  m.def("set_block_threads", &torchlstm_emu::set_block_threads,
        "run each block on its own OS thread (default: all blocks on the calling thread)");
  m.def("block_threads", &torchlstm_emu::block_threads);
  m.def("stats", &stats, "counters: launches, cooperative_launches, failed_launches, fibers, switches, gemms");
  m.def("last_error_message", &torchlstm_emu::last_error_message);
  // the forward-path switch and report (this library's own copies of the process-wide
  // settings) and the launch plan: the same bindings as torchlstm._C's
  torchlstm::cuda_plan::bind(m);
  torchlstm_emu_register_selftest(m);
#if defined(__SANITIZE_THREAD__)
  m.attr("tsan") = true;
#else
  m.attr("tsan") = false;
#endif
}
