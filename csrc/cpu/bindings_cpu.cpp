// bindings_cpu.cpp — the CPU backend's run-time switches and reports in torchlstm._C.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "../backend_bindings.h"
#include "blas.h"
#include "host_cache.h"

namespace torchlstm {
namespace cpu {

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
