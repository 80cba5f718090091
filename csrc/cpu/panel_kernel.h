// panel_kernel.h — the register-blocked float32 GEMM micro-kernel, written once over a
// vector type and included by panel_gemm_avx2.cpp and panel_gemm_avx512.cpp, each under
// its own `#pragma GCC target` and inside a namespace of its own (so no inline function
// compiled for one ISA can be handed by the linker to code built for another; the
// pattern of gates_avx512.cpp). Only intrinsics and the traits type V are used here.
//
// The GEMM: C (M x N, row-major, ldc) = [C +] A (M x K, row-major, lda) . P, where P is
// a K x N matrix packed once into panels of NR = NV * V::kLanes columns (pack_panels):
// panel p holds columns [p NR, p NR + NR), k-major, NR contiguous floats per k, zeros
// past N. A tile of MR rows x NR columns lives in MR * NV vector registers for the
// whole K loop: per k, NV panel loads and MR broadcasts feed MR * NV FMAs, so the FMA
// units, not the loads, set the pace (the blocking of BLIS / oneDNN's brgemm).
//
// (no include guard on purpose: included once per ISA file, inside its namespace)

// One MR x NR tile over the whole K. `cols` (<= NR) columns are stored.
template <int MR>
static inline void panel_tile(int64_t K, const float* a, int64_t lda, const float* p,
                              float* c, int64_t ldc, int64_t cols, bool accumulate) {
  typename V::reg acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  for (int64_t k = 0; k < K; ++k) {
    typename V::reg w[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) w[v] = V::load(p + k * NR + v * V::kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const typename V::reg x = V::broadcast(a + i * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(x, w[v], acc[i][v]);
    }
  }
  if (cols == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* dst = c + i * ldc + v * V::kLanes;
        V::storeu(dst, accumulate ? V::add(V::loadu(dst), acc[i][v]) : acc[i][v]);
      }
    return;
  }
  // the last panel's columns (indices known at compile time, so acc stays in registers)
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int64_t n = std::min<int64_t>(V::kLanes, cols - v * V::kLanes);
      if (n <= 0) continue;
      float* dst = c + i * ldc + v * V::kLanes;
      V::store_first(dst, n, accumulate ? V::add(V::load_first(dst, n), acc[i][v]) : acc[i][v]);
    }
}

// A tile of `rows` (1..MR) rows: the kernel of that height.
static inline void panel_tile_rows(int64_t rows, int64_t K, const float* a, int64_t lda,
                                   const float* p, float* c, int64_t ldc, int64_t cols,
                                   bool accumulate) {
  static_assert(MR >= 1 && MR <= 16, "tile heights 1..16");
  switch (rows) {
#define TORCHLSTM_TILE_CASE(r)                                                     \
  case r:                                                                          \
    panel_tile<(r <= MR ? r : MR)>(K, a, lda, p, c, ldc, cols, accumulate);        \
    break;
    TORCHLSTM_TILE_CASE(1) TORCHLSTM_TILE_CASE(2) TORCHLSTM_TILE_CASE(3)
    TORCHLSTM_TILE_CASE(4) TORCHLSTM_TILE_CASE(5) TORCHLSTM_TILE_CASE(6)
    TORCHLSTM_TILE_CASE(7) TORCHLSTM_TILE_CASE(8) TORCHLSTM_TILE_CASE(9)
    TORCHLSTM_TILE_CASE(10) TORCHLSTM_TILE_CASE(11) TORCHLSTM_TILE_CASE(12)
    TORCHLSTM_TILE_CASE(13) TORCHLSTM_TILE_CASE(14) TORCHLSTM_TILE_CASE(15)
    TORCHLSTM_TILE_CASE(16)
#undef TORCHLSTM_TILE_CASE
    default:
      break;
  }
}

// Rows [0, M) in ceil(M / MR) tiles of balanced heights (M = 32 with MR = 12 runs
// 11 + 11 + 10, not 12 + 12 + 8: a short last tile has too few accumulators to hide
// the FMA latency), panel by panel, so a panel (K x NR floats) is read from cache by
// every row tile while it is hot.
static void panel_gemm_impl(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                            const float* packed, float* c, int64_t ldc, bool accumulate) {
  const int64_t panels = (N + NR - 1) / NR, tiles = (M + MR - 1) / MR;
  for (int64_t pn = 0; pn < panels; ++pn) {
    const float* p = packed + pn * K * NR;
    const int64_t col0 = pn * NR, cols = std::min<int64_t>(NR, N - col0);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = M * t / tiles, r1 = M * (t + 1) / tiles;
      panel_tile_rows(r1 - r0, K, a + r0 * lda, lda, p, c + r0 * ldc + col0, ldc, cols,
                      accumulate);
    }
  }
}
