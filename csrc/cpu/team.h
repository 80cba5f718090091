// team.h — one team of threads for a whole time loop.
//
// A time step is too small to fork and join threads for (at B=1, H=128 a step is a few
// microseconds). So the CPU loops open ONE OpenMP parallel region per sequence: thread k
// owns a contiguous slice of hidden units (its rows of W_hh, packed once), computes its
// slice of the recurrent GEMM and the fused gate pass for it, and the team meets at a
// barrier where a step needs the others' results (or, split by batch rows, each thread
// owns rows and never waits: TeamSplit below). BLAS called inside runs single-threaded.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>

#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace torchlstm {
namespace cpu {

// [begin, begin + len) of n units for member k of a team of nt, in whole SIMD blocks.
struct Slice {
  int64_t begin, len;
};

inline Slice slice_of(int64_t n, int nt, int k, int64_t align) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t b0 = blocks * k / nt, b1 = blocks * (k + 1) / nt;
  const int64_t begin = std::min(n, b0 * align), end = std::min(n, b1 * align);
  return {begin, end - begin};
}

// Team size for a loop over `units` hidden units: ATen's thread count, at most one
// thread per `min_units` units, and 1 inside an enclosing parallel region.
inline int team_size(int64_t units, int64_t min_units) {
#ifdef _OPENMP
  if (at::in_parallel_region() || omp_in_parallel()) return 1;
  const int64_t by_work = std::max<int64_t>(1, units / std::max<int64_t>(1, min_units));
  return static_cast<int>(std::min<int64_t>(at::get_num_threads(), by_work));
#else
  (void)units;
  (void)min_units;
  return 1;
#endif
}

// How a team splits each step's work (torchlstm._C.set_cpu_split; TORCHLSTM_CPU_SPLIT
// sets the start value; the tests run both on any machine):
//   UNITS: member k owns a slice of the outputs of every product (hidden units, gate
//          columns) for all batch rows; the team meets at a barrier where a step needs
//          the others' slices (once or twice a step).
//   ROWS:  member k owns a slice of the batch rows for the whole sequence and computes
//          every product of its rows with the whole weight matrices: the members never
//          wait for each other (no barrier at all), each reads all of W_hh every step.
//   AUTO:  ROWS where each member has enough rows and W_hh fits half of a core's L2
//          (time_loops.h's split_by_rows, measured there).
enum class TeamSplit : int { AUTO = 0, UNITS = 1, ROWS = 2 };
TeamSplit team_split_from_env();  // bindings_cpu.cpp (a bad value is reported there)
inline std::atomic<int>& team_split_choice() {
  static std::atomic<int> choice{static_cast<int>(team_split_from_env())};
  return choice;
}
inline TeamSplit team_split() {
  return static_cast<TeamSplit>(team_split_choice().load(std::memory_order_relaxed));
}

// How the CPU runs the two directions of a bidirectional layer's pair ops
// (torchlstm._C.set_cpu_directions; TORCHLSTM_CPU_DIRECTIONS sets the start value):
//   SEQUENTIAL: one after the other, each with the whole team.
//   CONCURRENT: at once, one thread each (a team of two whose members each run one
//               direction's time loop alone: no barrier at all between them).
//   AUTO:       CONCURRENT where that uses the threads as well: two threads, or layers
//               too small for a team of their own (ops_cpu.cpp, measured there).
enum class DirectionRun : int { AUTO = 0, SEQUENTIAL = 1, CONCURRENT = 2 };
DirectionRun direction_run_from_env();  // bindings_cpu.cpp
inline std::atomic<int>& direction_run_choice() {
  static std::atomic<int> choice{static_cast<int>(direction_run_from_env())};
  return choice;
}

// One core's L2 cache in bytes, as the C library reports it (1 MiB where it does not).
inline int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? int64_t(v) : int64_t(1) << 20;
  }();
  return bytes;
}

// The part of a step's product (B batch rows x n outputs) member k of nt computes:
// all rows and its slice of the outputs (UNITS), or its rows and all outputs (ROWS).
struct StepPart {
  Slice rows, cols;
};
inline StepPart step_part(bool by_rows, int64_t B, int64_t n, int nt, int k, int64_t align) {
  if (by_rows) return {slice_of(B, nt, k, 1), {0, n}};
  return {{0, B}, slice_of(n, nt, k, align)};
}

// The team's barrier: a counter and a phase the members spin on (pause, then yield
// after a while, so a team sharing its cores with other work still moves). A step of a
// small layer is a few microseconds of work per member (B=1, H=128: about 1.5), so the
// barrier's own cost is a large part of it; OpenMP's measured about 27% of such a loop.
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait() {
    const int phase = phase_.load(std::memory_order_acquire);  // before arriving
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
      if (spins < kSpinsBeforeYield) pause();
      else std::this_thread::yield();
    }
  }

 private:
  static constexpr int kSpinsBeforeYield = 1 << 14;
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<int> phase_{0};
  int n_;
};

// The barrier of the team this thread belongs to (set by run_team; null outside one).
inline SpinBarrier*& team_barrier() {
  static thread_local SpinBarrier* b = nullptr;
  return b;
}

// Waits for the rest of the team (a team of one, outside run_team's region: nothing).
inline void barrier() {
  if (SpinBarrier* b = team_barrier()) b->wait();
}

// The barrier of a step split by units; a step split by rows needs none (TeamSplit).
inline void split_barrier(bool by_rows) {
  if (!by_rows) barrier();
}

// Runs body(k) on member k of a team of nt threads. Returns false, having run nothing,
// if the runtime gave a team of another size (then the caller retries with nt = 1).
template <typename F>
bool run_team(int nt, const F& body) {
#ifdef _OPENMP
  if (nt > 1) {
    std::atomic<bool> ok{true};  // written by every member when the team is short
    SpinBarrier team(nt);
#pragma omp parallel num_threads(nt)
    {
      if (omp_get_num_threads() == nt) {
        team_barrier() = &team;
        body(omp_get_thread_num());
        team_barrier() = nullptr;
      } else {
        ok.store(false, std::memory_order_relaxed);
      }
    }
    return ok.load();
  }
#endif
  body(0);
  return true;
}

// Runs one(0) and one(1), the two directions of a layer: at once on a team of two
// (`concurrent`, and outside any parallel region), else one after the other. Each
// member runs with the caller's thread-local state (grad mode, dispatch keys: what
// ATen's parallel_for passes on), and an exception thrown by either is rethrown here,
// after both finished (none may leave an OpenMP region).
template <typename F>
void run_directions(bool concurrent, const F& one) {
  if (concurrent && at::get_num_threads() >= 2 && !at::in_parallel_region()) {
    const at::ThreadLocalState state;
    std::exception_ptr error[2];
    const bool ran = run_team(2, [&](int d) {
      team_barrier() = nullptr;  // the member's own loop opens no team: no one to wait for
      try {
        const at::ThreadLocalStateGuard guard(state);
        one(d);
      } catch (...) {
        error[d] = std::current_exception();
      }
    });
    if (ran) {
      for (const auto& e : error)
        if (e) std::rethrow_exception(e);
      return;
    }
  }
  one(0);
  one(1);
}

}  // namespace cpu
}  // namespace torchlstm
