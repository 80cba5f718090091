// bench/gemm_kernels.cpp — one thread, one GEMM shape: torchlstm's own micro-kernels
// (csrc/cpu/panel_gemm.h, each ISA the CPU has) beside MKL's packed GEMM (torch's MKL,
// cblas_sgemm_compute over weights packed once), the choice the CPU time loops make. Best
// of 5 batches of `reps` calls; C = A (M x K) . W^T with W (N x K) row-major, as the
// loops' per-step product (M = batch rows, N = the member's gate columns, K = H or I).
//
//   TL=$(.venv/bin/python -c "import torch, os; print(os.path.dirname(torch.__file__))")/lib
//   g++ -O3 -std=c++17 -mavx2 -mfma bench/gemm_kernels.cpp csrc/cpu/panel_gemm*.cpp \
//       -o /tmp/gemm_kernels -L$TL -ltorch_cpu -lc10 -Wl,-rpath,$TL
//   taskset -c 0 /tmp/gemm_kernels M N K [reps]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <algorithm>
#include "../csrc/cpu/panel_gemm.h"
using namespace torchlstm::cpu;
extern "C" {
size_t cblas_sgemm_pack_get_size(int, int, int, int, int);
void cblas_sgemm_pack(int, int, int, int, int, int, float, const float*, int, float*);
void cblas_sgemm_compute(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int);
}
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
int main(int argc, char** argv) {
  int M = atoi(argv[1]), N = atoi(argv[2]), K = atoi(argv[3]); int reps = argc > 4 ? atoi(argv[4]) : 200;
  std::vector<float> a(M * K), w(N * K), c(M * N), c2(M * N);
  for (auto& x : a) x = rand() / (float)RAND_MAX - 0.5f;
  for (auto& x : w) x = rand() / (float)RAND_MAX - 0.5f;
  // W row-major N x K (as W_hh rows); C[m,n] = sum_k a[m,k] w[n,k]
  double flop = 2.0 * M * N * K;
  for (PanelIsa isa : {PanelIsa::AVX2, PanelIsa::AVX512}) {
    if (!panel_isa_supported(isa)) continue;
    std::vector<float> p(packed_floats(isa, K, N));
    pack_panels(isa, w.data(), K, N, 1, K, p.data());
    double best = 1e9;
    for (int r = 0; r < 5; ++r) {
      double t = now();
      for (int i = 0; i < reps; ++i) panel_gemm(isa, M, N, K, a.data(), K, p.data(), c.data(), N, false);
      best = std::min(best, (now() - t) / reps);
    }
    printf("%s %dx%dx%d: %.1f us %.1f GFLOP/s\n", isa == PanelIsa::AVX2 ? "own-avx2  " : "own-avx512", M, N, K, best * 1e6, flop / best / 1e9);
  }
  // MKL packed: column-major C(N x M) = W^T? C^T (N x M) = W (N x K) . a^T (K x M): A = W, trans: W row-major N x K = col-major K x N, op T
  size_t bytes = cblas_sgemm_pack_get_size(161, 112, N, M, K);
  std::vector<float> pk(bytes / 4 + 16);
  cblas_sgemm_pack(102, 161, 112, N, M, K, 1.f, w.data(), K, pk.data());
  double best = 1e9;
  for (int r = 0; r < 5; ++r) {
    double t = now();
    for (int i = 0; i < reps; ++i) cblas_sgemm_compute(102, 151, 111, N, M, K, pk.data(), K, a.data(), K, 0.f, c2.data(), N);
    best = std::min(best, (now() - t) / reps);
  }
  printf("mkl-packed %dx%dx%d: %.1f us %.1f GFLOP/s\n", M, N, K, best * 1e6, flop / best / 1e9);
  double err = 0; for (int i = 0; i < M * N; ++i) err = std::max(err, (double)std::fabs(c[i] - c2[i]));
  printf("max diff %.2e\n", err);
}
