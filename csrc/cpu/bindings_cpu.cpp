// bindings_cpu.cpp — the CPU backend's run-time switches and reports in torchlstm._C.
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>
#include <torch/extension.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "../backend_bindings.h"
#include "blas.h"
#include "host_cache.h"
#include "large_gemm.h"
#include "team.h"

namespace torchlstm {
namespace cpu {

namespace {
// The names of each engine choice, in the order of its enum (blas.h, large_gemm.h).
const std::vector<std::string> kStepGemmNames = {"auto", "blas", "avx2", "avx512"};
const std::vector<std::string> kLargeGemmNames = {"auto", "mkl", "openblas"};
const std::vector<std::string> kTeamSplitNames = {"auto", "units", "rows"};
const std::vector<std::string> kDirectionRunNames = {"auto", "sequential", "concurrent"};

// The enum value named `name` among `names`, or an invalid_argument naming the choices.
template <typename E>
E choice_named(const std::vector<std::string>& names, const std::string& name,
               const char* what) {
  for (size_t i = 0; i < names.size(); ++i)
    if (name == names[i]) return static_cast<E>(i);
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
  throw std::invalid_argument(std::string("torchlstm: the ") + what + " must be one of " + list +
                              ", got '" + name + "'");
}

// The start value of a choice: the environment variable, or auto. A bad value is
// reported once on stderr and ignored (this runs inside the first op call: no exception
// there).
template <typename E>
E choice_from_env(const char* var, const std::vector<std::string>& names, const char* what) {
  const char* v = std::getenv(var);
  if (!v || !*v) return static_cast<E>(0);
  try {
    return choice_named<E>(names, v, what);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s (%s); using 'auto'\n", e.what(), var);
    return static_cast<E>(0);
  }
}
}  // namespace

StepGemm step_gemm_from_env() {
  return choice_from_env<StepGemm>("TORCHLSTM_CPU_GEMM", kStepGemmNames, "CPU GEMM");
}
LargeGemm large_gemm_from_env() {
  return choice_from_env<LargeGemm>("TORCHLSTM_CPU_BLAS", kLargeGemmNames, "CPU BLAS");
}

TeamSplit team_split_from_env() {
  return choice_from_env<TeamSplit>("TORCHLSTM_CPU_SPLIT", kTeamSplitNames, "CPU team split");
}

DirectionRun direction_run_from_env() {
  return choice_from_env<DirectionRun>("TORCHLSTM_CPU_DIRECTIONS", kDirectionRunNames,
                                       "CPU directions");
}

double fma_peak_gflops(const std::string& isa, int threads, double seconds);  // fma_peak.cpp

void bind(pybind11::module_& m) {
  m.def("cpu_direct_blas", &has_direct_blas,
        "whether the CPU time loop calls BLAS directly (else through at::mm, slower)");
  m.def("cpu_packed_gemm", &has_packed_gemm,
        "whether float32 recurrent weights are packed once per sequence (MKL packed GEMM)");
  m.def("cpu_avx512", &use_avx512,
        "whether the CPU kernels run their AVX-512 parts (batch 1-4 matrix-vector loop, gate passes)");
  m.def(
      "set_cpu_avx512", [](bool allowed) { return avx512_allowed().exchange(allowed); },
      "allow (default) or forbid the AVX-512 parts of the CPU kernels; returns the previous setting");
  m.def(
      "set_cpu_gemm",
      [](const std::string& name) {
        const StepGemm want = choice_named<StepGemm>(kStepGemmNames, name, "CPU GEMM");
        if ((want == StepGemm::AVX2 && !panel_isa_supported(PanelIsa::AVX2)) ||
            (want == StepGemm::AVX512 && !panel_isa_supported(PanelIsa::AVX512)))
          throw std::invalid_argument("torchlstm: this CPU cannot run the '" + name +
                                      "' GEMM kernel");
        return kStepGemmNames[step_gemm_choice().exchange(static_cast<int>(want))];
      },
      "the GEMM of the CPU time loops' float32 products: 'auto' (the widest micro-kernel the "
      "CPU has), 'blas', 'avx2', 'avx512'; returns the previous setting");
  m.def(
      "cpu_gemm",
      [] {
        switch (step_panel_isa()) {
          case PanelIsa::AVX512:
            return std::string("avx512");
          case PanelIsa::AVX2:
            return std::string("avx2");
          default:
            return std::string("blas");
        }
      },
      "the GEMM the CPU time loops' float32 products run on now: 'avx512', 'avx2' or 'blas'");
  m.def("cpu_gemm_kernels",
        [] {
          std::vector<std::string> k;
          if (panel_isa_supported(PanelIsa::AVX2)) k.push_back("avx2");
          if (panel_isa_supported(PanelIsa::AVX512)) k.push_back("avx512");
          return k;
        },
        "the micro-kernels this CPU can run");
  m.def(
      "set_cpu_split",
      [](const std::string& name) {
        const TeamSplit want = choice_named<TeamSplit>(kTeamSplitNames, name, "CPU team split");
        return kTeamSplitNames[team_split_choice().exchange(static_cast<int>(want))];
      },
      "how the CPU time loops split a step between the team's threads: 'auto', 'units' "
      "(each its outputs of all batch rows, barriers between), 'rows' (each its batch rows, "
      "no barrier); returns the previous setting");
  m.def(
      "set_cpu_directions",
      [](const std::string& name) {
        const DirectionRun want =
            choice_named<DirectionRun>(kDirectionRunNames, name, "CPU directions");
        return kDirectionRunNames[direction_run_choice().exchange(static_cast<int>(want))];
      },
      "how the CPU runs the two directions of a bidirectional layer: 'auto', 'sequential' "
      "(one after the other, each with the whole team), 'concurrent' (at once, one thread "
      "each); returns the previous setting");
  m.def("cpu_load_openblas", &load_openblas,
        "loads OpenBLAS (scipy-openblas32's library) from the path for the large CPU GEMMs; "
        "false where it cannot", pybind11::arg("path"));
  m.def("cpu_openblas_loaded", &openblas_loaded, "whether OpenBLAS is loaded (cpu_load_openblas)");
  m.def(
      "set_cpu_blas",
      [](const std::string& name) {
        const LargeGemm want = choice_named<LargeGemm>(kLargeGemmNames, name, "CPU BLAS");
        return kLargeGemmNames[static_cast<int>(set_large_gemm(want))];
      },
      "the BLAS of the CPU backward's large GEMMs: 'auto' (OpenBLAS on AMD CPUs where it is "
      "loaded, else MKL), 'mkl', 'openblas'; returns the previous setting");
  m.def(
      "cpu_blas",
      [] { return std::string(large_gemm_engine() == LargeGemm::OPENBLAS ? "openblas" : "mkl"); },
      "the BLAS the CPU backward's large GEMMs run on now: 'mkl' or 'openblas'");
  m.def(
      "cpu_panel_gemm",
      [](const std::string& isa_name, const at::Tensor& a, const at::Tensor& w, at::Tensor& c,
         bool accumulate) {
        // for the tests: c (M x N) [+]= a (M x K) . w (K x N) through pack_panels and the
        // named kernel; every tensor float32 on the CPU, any strides of w, a and c with
        // unit stride in their last dimension
        const PanelIsa isa = isa_name == "avx512" ? PanelIsa::AVX512
                             : isa_name == "avx2" ? PanelIsa::AVX2 : PanelIsa::NONE;
        TORCH_CHECK(panel_isa_supported(isa), "this CPU cannot run the '", isa_name, "' kernel");
        TORCH_CHECK(a.dim() == 2 && w.dim() == 2 && c.dim() == 2 && a.size(1) == w.size(0) &&
                        c.size(0) == a.size(0) && c.size(1) == w.size(1),
                    "cpu_panel_gemm: shapes a (M, K), w (K, N), c (M, N)");
        TORCH_CHECK(a.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
                        c.scalar_type() == at::kFloat && a.stride(1) == 1 && c.stride(1) == 1,
                    "cpu_panel_gemm: float32, unit last stride for a and c");
        auto packed = at::empty({packed_floats(isa, w.size(0), w.size(1))}, at::kFloat);
        pack_panels(isa, w.data_ptr<float>(), w.size(0), w.size(1), w.stride(0), w.stride(1),
                    packed.data_ptr<float>());
        panel_gemm(isa, a.size(0), w.size(1), a.size(1), a.data_ptr<float>(), a.stride(0),
                   packed.data_ptr<float>(), c.data_ptr<float>(), c.stride(0), accumulate);
      },
      "tests only: c [+]= a . w through the micro-kernel of the given ISA");
  m.def(
      "cpu_cache_stats",
      [] {
        const auto s = host_cache_stats();
        return pybind11::dict(pybind11::arg("cached_bytes") = s.cached_bytes,
                              pybind11::arg("cached_blocks") = s.cached_blocks,
                              pybind11::arg("limit_bytes") = s.limit_bytes,
                              pybind11::arg("hits") = s.hits, pybind11::arg("misses") = s.misses);
      },
      "the CPU buffer cache (cpu/host_cache.h): free bytes and blocks held, the limit, hits, misses");
  m.def("cpu_fma_peak", &fma_peak_gflops,
        "measured float32 GFLOP/s of `threads` threads each running a tight FMA loop of the "
        "given ISA ('avx2' or 'avx512') for about `seconds`: the roofline's physical peak",
        pybind11::arg("isa"), pybind11::arg("threads"), pybind11::arg("seconds") = 0.5);
  m.def("empty_cpu_cache", &empty_host_cache,
        "frees the CPU buffer cache's free blocks; returns the bytes freed");
}

}  // namespace cpu
}  // namespace torchlstm
