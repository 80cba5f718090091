// fma_peak.cpp — the physical floating-point peak of this machine's cores, measured: a
// tight loop of independent vector FMAs (more chains than the FMA latency times the FMA
// ports, so the units never wait), run by `threads` OpenMP threads at once. The
// benchmark's roofline divides by this, not by a library's GEMM (which reaches a
// fraction of it, different on every CPU). float32; AVX2+FMA (8 lanes) and AVX-512 (16
// lanes) each in a function compiled for that ISA alone, chosen by name at run time.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace torchlstm {
namespace cpu {
namespace {

// Independent accumulators per thread: at least FMA latency x FMA ports (4 x 2 on current
// x86 cores) and, with the two constants, no more than the ISA's vector registers (16
// ymm for AVX2, 32 zmm for AVX-512), so nothing spills.
constexpr int kChains2 = 12, kChains512 = 16;

// One thread's loop: returns a value that depends on every FMA (so none is dropped).
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters) {
  __m256 acc[kChains2];
  for (int c = 0; c < kChains2; ++c) acc[c] = _mm256_set1_ps(0.001f * c);
  const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 16
    for (int c = 0; c < kChains2; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  __m256 s = acc[0];
  for (int c = 1; c < kChains2; ++c) s = _mm256_add_ps(s, acc[c]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[kChains512];
  for (int c = 0; c < kChains512; ++c) acc[c] = _mm512_set1_ps(0.001f * c);
  const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 16
    for (int c = 0; c < kChains512; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  __m512 s = acc[0];
  for (int c = 1; c < kChains512; ++c) s = _mm512_add_ps(s, acc[c]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace

// GFLOP/s of `threads` threads running the `isa` ("avx2" or "avx512") FMA loop together
// for about `seconds` (the best of three timings).
double fma_peak_gflops(const std::string& isa, int threads, double seconds) {
  int lanes, chains;
  float (*loop)(int64_t);
  if (isa == "avx2") {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
      throw std::invalid_argument("this CPU has no AVX2+FMA");
    lanes = 8;
    chains = kChains2;
    loop = fma_loop_avx2;
  } else if (isa == "avx512") {
    if (!__builtin_cpu_supports("avx512f")) throw std::invalid_argument("this CPU has no AVX-512");
    lanes = 16;
    chains = kChains512;
    loop = fma_loop_avx512;
  } else {
    throw std::invalid_argument("isa must be 'avx2' or 'avx512', got '" + isa + "'");
  }
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  using clock = std::chrono::steady_clock;
  auto run = [&](int64_t iters) {
    const auto t0 = clock::now();
    volatile float sink = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
      const float v = loop(iters);
      if (v == 12345.f) sink = v;  // never true; keeps the result alive
    }
    (void)sink;
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  int64_t iters = 1 << 16;
  while (run(iters) < seconds / 3) iters *= 2;  // size one timing to a third of the budget
  double best = 1e300;
  for (int k = 0; k < 3; ++k) best = std::min(best, run(iters));
  const double flops = 2.0 * lanes * chains * static_cast<double>(iters) * threads;
  return flops / best / 1e9;
}

}  // namespace cpu
}  // namespace torchlstm
