// large_gemm.h — the CPU backend's large matrix products (the gradients after the
// backward loop: dW_ih|dW_hh as one GEMM, dx, dW_hr; all T*B rows at once), on the BLAS
// that is fastest for the CPU.
//
// Measured (bench/RESULTS.md; AMD EPYC Zen 4, one thread, at these products' shapes):
// OpenBLAS 88-98 GFLOP/s, torch's MKL 62-85 — MKL takes its slower paths on AMD CPUs; on
// Intel it is the reference. So `auto` is OpenBLAS on AMD (when the scipy-openblas32
// wheel, a dependency, is installed: torchlstm/__init__.py hands its library to
// load_openblas) and MKL (at::mm) elsewhere. torchlstm._C.set_cpu_blas("mkl" /
// "openblas" / "auto") chooses, so the tests run both; TORCHLSTM_CPU_BLAS sets the start
// value. OpenBLAS runs one thread per member of the CPU team (team.h): each member
// computes its slice of C's rows, so no second thread pool competes with the team's.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace torchlstm {
namespace cpu {

// Loads OpenBLAS (scipy-openblas32's libscipy_openblas.so) from `path`; false, with
// nothing changed, where it cannot be loaded or lacks the symbols.
bool load_openblas(const std::string& path);
bool openblas_loaded();

enum class LargeGemm : int { AUTO = 0, MKL = 1, OPENBLAS = 2 };
LargeGemm large_gemm_from_env();  // bindings_cpu.cpp (a bad value is reported there)
// The engine in use now (AUTO resolved): MKL or OPENBLAS.
LargeGemm large_gemm_engine();
// Sets the choice (OPENBLAS refused, by an exception, where it is not loaded); returns
// the previous choice.
LargeGemm set_large_gemm(LargeGemm choice);

// a (M x K) . b (K x N) as a new contiguous tensor from the buffer cache (host_cache.h:
// no page faults on reuse); float32 / float64, any strides with a unit stride in one
// dimension of each operand; MKL (at::mm_out) where OpenBLAS is not in use.
at::Tensor large_mm(const at::Tensor& a, const at::Tensor& b);

}  // namespace cpu
}  // namespace torchlstm
