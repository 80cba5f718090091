// runtime.cpp (EMULATION) — CUDA threads as fibers, blocks, barriers, shuffles, the
// cooperative grid barrier, launch validation, occupancy, device properties, errors.
//
// Execution model. A block's CUDA threads are fibers (own stacks, hand-written context
// switch on x86-64, ucontext elsewhere) run by a scheduler on one OS thread; a fiber
// runs until it waits at a barrier (__syncthreads, a warp shuffle, grid.sync) or ends.
//   default mode: every block on the calling OS thread. Ordinary launches run block after
//     block; a cooperative launch keeps every block resident (all fibers exist at once),
//     runs one block until all its threads wait at grid.sync, then the next, swapping the
//     dynamic shared array (thread_local storage) between blocks.
//   block-threads mode (set_block_threads; the ThreadSanitizer build): one OS thread per
//     block, its fibers on it; grid.sync meets across the OS threads.
// Misuse is an error of the launch (cudaErrorLaunchFailure, with a message), as far as
// the emulation can see it: a barrier some threads never reach (deadlock), grid.sync
// outside a cooperative launch, a shuffle whose mask lacks the caller or names missing
// or exited lanes, lanes of one warp shuffling with different masks.
#include "runtime.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#if !defined(__x86_64__) || defined(TORCHLSTM_EMU_UCONTEXT)
#define TL_EMU_UCONTEXT 1
#include <ucontext.h>
#endif

// The ThreadSanitizer build compiles this file WITHOUT instrumentation (build.py, with
// -DTORCHLSTM_EMU_TSAN): the scheduler's own bookkeeping crosses fibers by design; the
// kernels' accesses are instrumented, ordered by the barrier annotations below.
#if defined(__SANITIZE_THREAD__) || defined(TORCHLSTM_EMU_TSAN)
#define TL_EMU_TSAN 1
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#define TL_TSAN_ACQUIRE(p) __tsan_acquire((void*)(p))
#define TL_TSAN_RELEASE(p) __tsan_release((void*)(p))
#else
#define TL_TSAN_ACQUIRE(p) ((void)0)
#define TL_TSAN_RELEASE(p) ((void)0)
#endif

namespace torchlstm_emu {

__thread ThreadCtx* tl_ctx = nullptr;

// ---- errors ----------------------------------------------------------------------------
namespace {
thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local std::string tl_last_message;
}  // namespace

void set_last_error(cudaError_t e, const char* message) {
  if (e == cudaSuccess) return;
  tl_last_error = e;
  tl_last_message = message ? message : "";
}
std::string last_error_message() { return tl_last_message; }

Stats& stats() {
  static Stats s;
  return s;
}

// ---- devices ---------------------------------------------------------------------------
namespace {
cudaDeviceProp make_h100(const char* name) {
  cudaDeviceProp p{};
  std::snprintf(p.name, sizeof p.name, "%s", name);
  p.totalGlobalMem = size_t(80) << 30;
  p.sharedMemPerBlock = 48 * 1024;
  p.sharedMemPerBlockOptin = 227 * 1024;
  p.sharedMemPerMultiprocessor = 228 * 1024;
  p.reservedSharedMemPerBlock = 1024;
  p.regsPerBlock = 65536;
  p.regsPerMultiprocessor = 65536;
  p.warpSize = 32;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.maxThreadsPerMultiProcessor = 2048;
  p.maxBlocksPerMultiProcessor = 32;
  p.multiProcessorCount = 132;
  p.cooperativeLaunch = 1;
  p.major = 9;
  p.minor = 0;
  return p;
}
cudaDeviceProp make_small() {
  cudaDeviceProp p = make_h100("emulated small GPU (16 SMs, 48 KiB shared memory)");
  p.totalGlobalMem = size_t(4) << 30;
  p.sharedMemPerBlockOptin = 48 * 1024;
  p.sharedMemPerMultiprocessor = 64 * 1024;
  p.maxThreadsPerMultiProcessor = 1024;
  p.maxBlocksPerMultiProcessor = 16;
  p.multiProcessorCount = 16;
  p.major = 7;
  p.minor = 5;
  return p;
}
cudaDeviceProp& props() {
  static cudaDeviceProp p = make_h100("NVIDIA H100 80GB HBM3 (emulated)");
  return p;
}
std::atomic<int> g_capture{cudaStreamCaptureStatusNone};
std::atomic<bool> g_block_threads{
#if defined(TL_EMU_TSAN)
    true
#else
    false
#endif
};

// Per kernel: the MaxDynamicSharedMemorySize attribute (48 KiB until raised).
std::mutex g_attr_mutex;
std::map<const void*, int>& max_dyn_smem() {
  static std::map<const void*, int> m;
  return m;
}
int func_max_dyn_smem(const void* f) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  auto it = max_dyn_smem().find(f);
  return it == max_dyn_smem().end() ? static_cast<int>(props().sharedMemPerBlock) : it->second;
}

std::vector<unsigned char* (*)()>& smem_arrays() {
  static std::vector<unsigned char* (*)()> v;
  return v;
}
}  // namespace

unsigned char tls_init_byte() { return 0xff; }

DynamicSharedRegistrar::DynamicSharedRegistrar(unsigned char* (*addr)()) {
  smem_arrays().push_back(addr);
}

bool set_device_preset(const std::string& name) {
  if (name == "h100") props() = make_h100("NVIDIA H100 80GB HBM3 (emulated)");
  else if (name == "h200") props() = make_h100("NVIDIA H200 (emulated)");
  else if (name == "small") props() = make_small();
  else return false;
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  max_dyn_smem().clear();  // a new device: every kernel's attributes start afresh
  return true;
}
cudaDeviceProp& mutable_properties() { return props(); }
const cudaDeviceProp& properties() { return props(); }
void set_capture_status(cudaStreamCaptureStatus s) { g_capture.store(s); }
cudaStreamCaptureStatus capture_status() {
  return static_cast<cudaStreamCaptureStatus>(g_capture.load());
}
void set_block_threads(bool on) { g_block_threads.store(on); }
bool block_threads() { return g_block_threads.load(); }

cudaError_t set_func_max_dynamic_smem(const void* func, int value) {
  // CUDA: at most sharedMemPerBlockOptin minus the kernel's static shared memory (not
  // known here; the kernels of this project have none besides the dynamic array).
  if (value < 0 || static_cast<size_t>(value) > props().sharedMemPerBlockOptin) {
    set_last_error(cudaErrorInvalidValue,
                   "cudaFuncSetAttribute(MaxDynamicSharedMemorySize): above the device's opt-in limit");
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  max_dyn_smem()[func] = value;
  return cudaSuccess;
}

cudaError_t occupancy(int* blocks, const void* func, int block_size, size_t dyn_smem) {
  const cudaDeviceProp& p = props();
  if (!blocks || block_size <= 0) {
    set_last_error(cudaErrorInvalidValue, "cudaOccupancyMaxActiveBlocksPerMultiprocessor: invalid argument");
    return cudaErrorInvalidValue;
  }
  // As the occupancy calculator: 0 where one block cannot launch at all, else the
  // tightest of the threads, blocks and shared memory of one multiprocessor (registers
  // are not modelled: the emulation cannot know a kernel's register count).
  if (block_size > p.maxThreadsPerBlock || dyn_smem > static_cast<size_t>(func_max_dyn_smem(func))) {
    *blocks = 0;
    return cudaSuccess;
  }
  const int warps = (block_size + p.warpSize - 1) / p.warpSize;
  int n = p.maxThreadsPerMultiProcessor / (warps * p.warpSize);
  n = std::min(n, p.maxBlocksPerMultiProcessor);
  const size_t per_block = dyn_smem + p.reservedSharedMemPerBlock;
  n = std::min<int64_t>(n, static_cast<int64_t>(p.sharedMemPerMultiprocessor / per_block));
  *blocks = std::max(n, 0);
  return cudaSuccess;
}

// ---- fibers ----------------------------------------------------------------------------
namespace {

#if defined(TL_EMU_TSAN)
constexpr size_t kStack = 256 * 1024;
#else
constexpr size_t kStack = 64 * 1024;
#endif

#if !defined(TL_EMU_UCONTEXT)
extern "C" void torchlstm_emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.globl torchlstm_emu_switch
.hidden torchlstm_emu_switch
.type torchlstm_emu_switch,@function
torchlstm_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size torchlstm_emu_switch,.-torchlstm_emu_switch
)");
#endif

// Stacks (with a guard page below each), reused across launches by the OS thread.
struct StackPool {
  std::vector<char*> free_;
  ~StackPool() {
    for (char* s : free_) munmap(s, kStack + 4096);
  }
  char* get() {
    if (!free_.empty()) {
      char* s = free_.back();
      free_.pop_back();
      return s;
    }
    void* m = mmap(nullptr, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("torchlstm emulation: out of memory for fiber stacks");
    mprotect(m, 4096, PROT_NONE);
    return static_cast<char*>(m);
  }
  void put(char* s) { free_.push_back(s); }
};
thread_local StackPool tl_stacks;

enum State : int { READY, WAITING, DONE };
enum WaitKind : int { W_NONE, W_BLOCK, W_WARP, W_GRID };

// A barrier of a fixed set of fibers (all of them scheduled by one OS thread).
struct Barrier {
  std::atomic<uint64_t> gen{0};
  std::atomic<int> arrived{0};
  unsigned char sync[2];  // ThreadSanitizer sync objects, one per parity of gen
};

struct Block;
struct Grid;

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;
#if defined(TL_EMU_UCONTEXT)
  ucontext_t uc;
#endif
#if defined(TL_EMU_TSAN)
  void* tsan = nullptr;
#endif
  ThreadCtx ctx;
  Block* block = nullptr;
  int lane = 0, warp = 0, linear = 0;
  std::atomic<int> state{READY};
  int wait_kind = W_NONE;
  const std::atomic<uint64_t>* wait_gen_ptr = nullptr;
  uint64_t wait_gen = 0;
};

struct Warp {
  Barrier bar;
  std::atomic<unsigned> mask{0};
  unsigned present = 0;  // lanes that exist (a partial last warp has fewer)
  uint64_t slots[2][32];
};

struct Block {
  Grid* grid = nullptr;
  uint3 idx{0, 0, 0};
  std::vector<Fiber*> fibers;
  std::vector<Warp> warps;
  Barrier bar;               // __syncthreads
  int live = 0;              // fibers not yet ended
  int at_grid = 0;           // fibers waiting at grid.sync
  std::atomic<uint64_t> grid_gen{0};
  unsigned char grid_sync[2];
  std::vector<unsigned char> smem_copy;  // default mode, cooperative: the block's dynamic shared memory
  bool started = false;
  unsigned char start_sync;  // ThreadSanitizer: the block's shared memory poisoned before its threads run
};

// Cross-OS-thread meeting of the blocks at grid.sync (block-threads mode).
struct OsGridBarrier {
  std::mutex m;
  std::condition_variable cv;
  int waiting = 0, done = 0, total = 0;
  uint64_t gen = 0;
  bool failed = false;
};

struct Grid {
  LaunchConfig cfg;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  std::deque<Block> blocks;  // (a deque: Block holds atomics, never moved)
  std::atomic<bool> error{false};
  std::mutex msg_mutex;
  std::string msg;
  unsigned char start_sync, end_sync;
  OsGridBarrier os;
  int64_t threads_per_block = 0;
};

// What the running OS thread's scheduler needs.
struct Sched {
  Grid* grid = nullptr;
  Fiber* cur = nullptr;
  void* sp = nullptr;
#if defined(TL_EMU_UCONTEXT)
  ucontext_t uc;
#endif
#if defined(TL_EMU_TSAN)
  void* tsan = nullptr;
#endif
  int64_t switches = 0;
};
thread_local Sched* tl_sched = nullptr;

void fail(Grid& g, const std::string& what) {
  std::lock_guard<std::mutex> lock(g.msg_mutex);
  if (!g.error.exchange(true)) g.msg = what;
}

std::string where(const Fiber* f) {
  char buf[160];
  std::snprintf(buf, sizeof buf, " (block (%u,%u,%u), thread (%u,%u,%u))", f->ctx.block_idx.x,
                f->ctx.block_idx.y, f->ctx.block_idx.z, f->ctx.thread_idx.x, f->ctx.thread_idx.y,
                f->ctx.thread_idx.z);
  return buf;
}

// From the running fiber back to its scheduler.
void yield_to_scheduler() {
  Sched* s = tl_sched;
  Fiber* f = s->cur;
#if defined(TL_EMU_TSAN)
  __tsan_switch_to_fiber(s->tsan, 1 /* no sync: barriers annotate their own */);
#endif
#if defined(TL_EMU_UCONTEXT)
  swapcontext(&f->uc, &s->uc);
#else
  torchlstm_emu_switch(&f->sp, s->sp);
#endif
  tl_ctx = &s->cur->ctx;  // resumed (by the same OS thread: fibers never migrate)
}

void switch_to(Sched& s, Fiber* f) {
  s.cur = f;
  tl_ctx = &f->ctx;
  ++s.switches;
#if defined(TL_EMU_TSAN)
  __tsan_switch_to_fiber(f->tsan, 1);
#endif
#if defined(TL_EMU_UCONTEXT)
  swapcontext(&s.uc, &f->uc);
#else
  torchlstm_emu_switch(&s.sp, f->sp);
#endif
  s.cur = nullptr;
  tl_ctx = nullptr;
}

[[noreturn]] void end_fiber() {
  Fiber* f = tl_sched->cur;
  TL_TSAN_RELEASE(&f->block->grid->end_sync);
  f->state.store(DONE);
  f->block->live--;
  yield_to_scheduler();
  std::abort();  // never resumed
}

void fiber_main() {
  Fiber* f = tl_sched->cur;
  Grid& g = *f->block->grid;
  TL_TSAN_ACQUIRE(&g.start_sync);
  TL_TSAN_ACQUIRE(&f->block->start_sync);
  try {
    g.body(g.ctx);
  } catch (const std::exception& e) {
    fail(g, std::string("exception in device code: ") + e.what() + where(f));
  } catch (...) {
    fail(g, "exception in device code" + where(f));
  }
  end_fiber();
}

#if defined(TL_EMU_UCONTEXT)
void fiber_trampoline() { fiber_main(); }
#else
extern "C" void torchlstm_emu_fiber_entry() { fiber_main(); }
#endif

void init_fiber(Sched& s, Fiber* f) {
  f->stack = tl_stacks.get();
  char* top = f->stack + 4096 + kStack;
#if defined(TL_EMU_UCONTEXT)
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack + 4096;
  f->uc.uc_stack.ss_size = kStack;
  f->uc.uc_link = nullptr;
  makecontext(&f->uc, fiber_trampoline, 0);
#else
  (void)s;
  uint64_t* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
  *--sp = 0;                                                           // fake return address
  *--sp = reinterpret_cast<uint64_t>(&torchlstm_emu_fiber_entry);     // ret target
  for (int i = 0; i < 6; ++i) *--sp = 0;                               // rbp rbx r12-r15
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  *--sp = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpcw) << 32);
  f->sp = sp;
#endif
#if defined(TL_EMU_TSAN)
  f->tsan = __tsan_create_fiber(0);
#endif
  stats().fibers++;
}

void release_fiber(Fiber* f) {
  if (f->stack) tl_stacks.put(f->stack);
  f->stack = nullptr;
#if defined(TL_EMU_TSAN)
  if (f->tsan) __tsan_destroy_fiber(f->tsan);
  f->tsan = nullptr;
#endif
}

bool runnable(Fiber* f) {
  const int st = f->state.load(std::memory_order_relaxed);
  if (st == READY) return true;
  if (st == DONE) return false;
  if (f->wait_gen_ptr->load(std::memory_order_relaxed) != f->wait_gen) {
    f->state.store(READY, std::memory_order_relaxed);
    f->wait_kind = W_NONE;
    return true;
  }
  return false;
}

// The calling fiber arrives at barrier b of `expected` fibers and waits for the rest.
void arrive_and_wait(Barrier& b, int expected, int kind) {
  Fiber* f = tl_sched->cur;
  const uint64_t g = b.gen.load(std::memory_order_relaxed);
  TL_TSAN_RELEASE(&b.sync[g & 1]);
  if (b.arrived.fetch_add(1, std::memory_order_relaxed) + 1 == expected) {
    b.arrived.store(0, std::memory_order_relaxed);
    b.gen.store(g + 1, std::memory_order_relaxed);
  } else {
    f->state.store(WAITING, std::memory_order_relaxed);
    f->wait_kind = kind;
    f->wait_gen_ptr = &b.gen;
    f->wait_gen = g;
    yield_to_scheduler();
  }
  TL_TSAN_ACQUIRE(&b.sync[g & 1]);
}

Fiber* current_fiber(const char* what) {
  if (!tl_sched || !tl_sched->cur) {
    std::fprintf(stderr, "torchlstm emulation: %s called outside device code\n", what);
    std::abort();
  }
  return tl_sched->cur;
}

}  // namespace

[[noreturn]] void device_error(const char* what) {
  Fiber* f = current_fiber(what);
  fail(*f->block->grid, std::string(what) + where(f));
  // The launch is abandoned: this fiber (and every other) is never resumed.
  f->state.store(DONE);
  f->block->live--;
  yield_to_scheduler();
  std::abort();
}

void syncthreads() {
  Fiber* f = current_fiber("__syncthreads");
  arrive_and_wait(f->block->bar, static_cast<int>(f->block->fibers.size()), W_BLOCK);
}

bool in_cooperative_launch() {
  return tl_sched && tl_sched->grid && tl_sched->grid->cfg.cooperative;
}

void grid_sync() {
  Fiber* f = current_fiber("grid.sync");
  Block& b = *f->block;
  if (!b.grid->cfg.cooperative)
    device_error("grid.sync() in a kernel not launched with cudaLaunchCooperativeKernel");
  const uint64_t g = b.grid_gen.load(std::memory_order_relaxed);
  TL_TSAN_RELEASE(&b.grid->blocks[0].grid_sync[g & 1]);  // one sync object per parity, grid-wide
  b.at_grid++;
  f->state.store(WAITING, std::memory_order_relaxed);
  f->wait_kind = W_GRID;
  f->wait_gen_ptr = &b.grid_gen;
  f->wait_gen = g;
  yield_to_scheduler();
  TL_TSAN_ACQUIRE(&b.grid->blocks[0].grid_sync[g & 1]);
}

int lane_id() { return current_fiber("lane_id")->lane; }

void syncwarp(unsigned mask) { (void)shfl_exchange(mask, 0, -1, 0, 32); }

uint64_t shfl_exchange(unsigned mask, uint64_t value, int mode, int arg, int width) {
  Fiber* f = current_fiber("a warp shuffle");
  Warp& w = f->block->warps[f->warp];
  const int lane = f->lane;
  if (!(mask >> lane & 1u)) device_error("warp shuffle/sync: the mask lacks the calling lane");
  if (mask & ~w.present) device_error("warp shuffle/sync: the mask names lanes that do not exist");
  if (width < 1 || width > 32 || (width & (width - 1)))
    device_error("warp shuffle: width must be a power of two up to 32");
  if (w.bar.arrived.load(std::memory_order_relaxed) == 0) {
    w.mask.store(mask, std::memory_order_relaxed);
  } else if (w.mask.load(std::memory_order_relaxed) != mask) {
    device_error("warp shuffle/sync: lanes of one warp met with different masks");
  }
  const uint64_t g = w.bar.gen.load(std::memory_order_relaxed);
  w.slots[g & 1][lane] = value;
  arrive_and_wait(w.bar, __builtin_popcount(mask), W_WARP);
  if (mode < 0) return 0;
  const int seg = lane & ~(width - 1), sub = lane & (width - 1);
  int src = lane;
  switch (mode) {
    case 0: src = seg + (arg & (width - 1)); break;
    case 1: src = lane ^ arg; if (src < seg || src >= seg + width) src = lane; break;
    case 2: src = sub + arg < width ? lane + arg : lane; break;
    case 3: src = sub - arg >= 0 ? lane - arg : lane; break;
  }
  if (src < 0 || src > 31 || !(mask >> src & 1u))
    device_error("warp shuffle: the source lane is not in the mask (undefined value)");
  return w.slots[g & 1][src];
}

// ---- the scheduler -----------------------------------------------------------------------
namespace {

void swap_smem(Block* out, Block* in, size_t bytes) {
  if (bytes == 0) return;
  for (auto addr : smem_arrays()) {
    unsigned char* s = addr();
    if (out) std::memcpy(out->smem_copy.data(), s, bytes);
    if (in) std::memcpy(s, in->smem_copy.data(), bytes);
  }
}

void poison_smem(size_t bytes) {
  // Uninitialised shared memory reads as NaN (0xff bytes), like a poisoned allocation.
  for (auto addr : smem_arrays()) std::memset(addr(), 0xff, bytes);
}

void start_block(Sched& s, Block& b) {
  for (Fiber* f : b.fibers) init_fiber(s, f);
  b.live = static_cast<int>(b.fibers.size());
  b.started = true;
}

// Runs block b's fibers until none can run; returns whether any ran.
bool run_block(Sched& s, Block& b) {
  bool any = false;
  for (;;) {
    bool ran = false;
    for (Fiber* f : b.fibers) {
      if (s.grid->error.load(std::memory_order_relaxed)) return any;
      if (runnable(f)) {
        switch_to(s, f);
        ran = any = true;
      }
    }
    if (!ran) return any;
  }
}

std::string wait_description(Block& b) {
  int at_block = 0, at_warp = 0, at_grid = 0;
  for (Fiber* f : b.fibers) {
    if (f->state.load() != WAITING) continue;
    at_block += f->wait_kind == W_BLOCK;
    at_warp += f->wait_kind == W_WARP;
    at_grid += f->wait_kind == W_GRID;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "deadlock in block (%u,%u,%u): %d of %zu threads ended, %d wait at __syncthreads, "
                "%d at a warp shuffle/sync, %d at grid.sync",
                b.idx.x, b.idx.y, b.idx.z, static_cast<int>(b.fibers.size()) - b.live,
                b.fibers.size(), at_block, at_warp, at_grid);
  return buf;
}

// After run_block found nothing runnable: the block ended, waits at grid.sync (every
// live thread there), or is stuck (a barrier not every thread reaches).
enum BlockStatus { B_DONE, B_AT_GRID, B_STUCK };
BlockStatus block_status(Block& b) {
  if (b.live == 0) return B_DONE;
  if (b.at_grid == static_cast<int>(b.fibers.size())) return B_AT_GRID;
  return B_STUCK;
}

void release_grid(Block& b) {
  b.at_grid = 0;
  b.grid_gen.fetch_add(1, std::memory_order_relaxed);
}

struct SchedScope {
  Sched s;
  SchedScope(Grid* g) {
    s.grid = g;
#if defined(TL_EMU_TSAN)
    s.tsan = __tsan_get_current_fiber();
#endif
    tl_sched = &s;
  }
  ~SchedScope() {
    tl_sched = nullptr;
    stats().switches += s.switches;
  }
};

// Default mode: every block on this OS thread.
void run_here(Grid& g) {
  SchedScope scope(&g);
  Sched& s = scope.s;
  const size_t smem = g.cfg.smem;
  if (!g.cfg.cooperative) {
    for (Block& b : g.blocks) {
      start_block(s, b);
      poison_smem(smem);
      run_block(s, b);
      if (!g.error && block_status(b) != B_DONE)
        fail(g, block_status(b) == B_AT_GRID ? "grid.sync() outside a cooperative launch"
                                             : wait_description(b));
      for (Fiber* f : b.fibers) release_fiber(f);
      if (g.error) return;
    }
    return;
  }
  // Cooperative: all blocks resident; block after block up to grid.sync.
  for (Block& b : g.blocks) {
    start_block(s, b);
    b.smem_copy.assign(smem, 0xff);
  }
  Block* loaded = nullptr;
  for (;;) {
    int done = 0, at_grid = 0;
    for (Block& b : g.blocks) {
      if (b.live == 0) { ++done; continue; }
      if (g.blocks.size() > 1 || !loaded) {
        swap_smem(loaded, &b, smem);
        loaded = &b;
      }
      run_block(s, b);
      if (g.error) break;
      const BlockStatus st = block_status(b);
      if (st == B_STUCK) { fail(g, wait_description(b)); break; }
      done += st == B_DONE;
      at_grid += st == B_AT_GRID;
    }
    if (g.error) break;
    if (done == static_cast<int>(g.blocks.size())) break;
    if (done > 0)
      { fail(g, "deadlock: some blocks ended while others wait at grid.sync()"); break; }
    for (Block& b : g.blocks) release_grid(b);
  }
  for (Block& b : g.blocks)
    for (Fiber* f : b.fibers) release_fiber(f);
}

// Block-threads mode: this OS thread runs one block.
void run_block_thread(Grid& g, Block& b) {
  SchedScope scope(&g);
  Sched& s = scope.s;
  OsGridBarrier& os = g.os;
  start_block(s, b);
  poison_smem(g.cfg.smem);
  TL_TSAN_RELEASE(&b.start_sync);
  for (;;) {
    run_block(s, b);
    if (g.error) break;
    const BlockStatus st = block_status(b);
    if (st == B_STUCK) { fail(g, wait_description(b)); break; }
    if (st == B_DONE) break;
    // every thread of the block waits at grid.sync: meet the other blocks
    std::unique_lock<std::mutex> lock(os.m);
    if (os.done > 0) { lock.unlock(); fail(g, "deadlock: some blocks ended while others wait at grid.sync()"); break; }
    const uint64_t gen = os.gen;
    if (++os.waiting == os.total) {
      os.waiting = 0;
      ++os.gen;
      os.cv.notify_all();
    } else {
      os.cv.wait(lock, [&] { return os.gen != gen || os.failed; });
    }
    if (os.failed) break;
    lock.unlock();
    release_grid(b);
  }
  {
    std::lock_guard<std::mutex> lock(os.m);
    if (g.error || os.waiting > 0) os.failed = true;  // wake (and fail) blocks waiting for this one
    ++os.done;
    if (os.waiting > 0) fail(g, "deadlock: some blocks ended while others wait at grid.sync()");
    os.cv.notify_all();
  }
  for (Fiber* f : b.fibers) release_fiber(f);
}

}  // namespace

cudaError_t run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx) {
  const cudaDeviceProp& p = props();
  auto reject = [](cudaError_t e, const std::string& m) {
    stats().failed_launches++;
    set_last_error(e, m.c_str());
    return e;
  };
  stats().launches++;
  if (cfg.cooperative) stats().cooperative_launches++;
  const int64_t nthreads = int64_t(cfg.block.x) * cfg.block.y * cfg.block.z;
  const int64_t nblocks = int64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  if (nthreads == 0 || nblocks == 0)
    return reject(cudaErrorInvalidConfiguration, "launch with an empty grid or block");
  if (nthreads > p.maxThreadsPerBlock || cfg.block.x > unsigned(p.maxThreadsDim[0]) ||
      cfg.block.y > unsigned(p.maxThreadsDim[1]) || cfg.block.z > unsigned(p.maxThreadsDim[2]))
    return reject(cudaErrorInvalidConfiguration, "launch with too many threads per block");
  if (cfg.grid.x > unsigned(p.maxGridSize[0]) || cfg.grid.y > unsigned(p.maxGridSize[1]) ||
      cfg.grid.z > unsigned(p.maxGridSize[2]))
    return reject(cudaErrorInvalidConfiguration, "launch with a grid dimension above the device's limit");
  if (cfg.smem > static_cast<size_t>(func_max_dyn_smem(cfg.func)))
    return reject(cudaErrorInvalidValue,
                  "launch with more dynamic shared memory than the kernel's "
                  "MaxDynamicSharedMemorySize (48 KiB unless raised with cudaFuncSetAttribute)");
  if (cfg.smem > kMaxDynamicSmem) return reject(cudaErrorInvalidValue, "dynamic shared memory above the emulation's limit");
  if (cfg.cooperative) {
    if (!p.cooperativeLaunch) return reject(cudaErrorNotSupported, "cooperative launch: the device does not support it");
    if (capture_status() != cudaStreamCaptureStatusNone)
      return reject(cudaErrorStreamCaptureUnsupported,
                    "cooperative launch on a stream that is capturing a graph (emulated as unsupported)");
    int per_sm = 0;
    occupancy(&per_sm, cfg.func, static_cast<int>(nthreads), cfg.smem);
    if (nblocks > int64_t(per_sm) * p.multiProcessorCount)
      return reject(cudaErrorCooperativeLaunchTooLarge,
                    "cooperative launch: more blocks than can be resident at once");
  }
  // Build the grid.
  Grid g;
  g.cfg = cfg;
  g.body = body;
  g.ctx = ctx;
  g.threads_per_block = nthreads;
  for (int64_t bi = 0; bi < nblocks; ++bi) g.blocks.emplace_back();
  std::vector<Fiber> fibers(static_cast<size_t>(nblocks * nthreads));
  const int nwarps = static_cast<int>((nthreads + 31) / 32);
  int64_t fi = 0;
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    Block& b = g.blocks[static_cast<size_t>(bi)];
    b.grid = &g;
    b.idx = {static_cast<unsigned>(bi % cfg.grid.x), static_cast<unsigned>(bi / cfg.grid.x % cfg.grid.y),
             static_cast<unsigned>(bi / (int64_t(cfg.grid.x) * cfg.grid.y))};
    b.warps = std::vector<Warp>(static_cast<size_t>(nwarps));
    for (int w = 0; w < nwarps; ++w) {
      const int64_t n = std::min<int64_t>(32, nthreads - 32 * w);
      b.warps[w].present = n == 32 ? 0xffffffffu : ((1u << n) - 1u);
    }
    b.fibers.reserve(static_cast<size_t>(nthreads));
    for (int64_t t = 0; t < nthreads; ++t, ++fi) {
      Fiber* f = &fibers[static_cast<size_t>(fi)];
      f->block = &b;
      f->linear = static_cast<int>(t);
      f->lane = static_cast<int>(t % 32);
      f->warp = static_cast<int>(t / 32);
      f->ctx.thread_idx = {static_cast<unsigned>(t % cfg.block.x), static_cast<unsigned>(t / cfg.block.x % cfg.block.y),
                           static_cast<unsigned>(t / (int64_t(cfg.block.x) * cfg.block.y))};
      f->ctx.block_idx = b.idx;
      f->ctx.block_dim = cfg.block;
      f->ctx.grid_dim = cfg.grid;
      b.fibers.push_back(f);
    }
  }
  TL_TSAN_RELEASE(&g.start_sync);
  if (tl_sched) return reject(cudaErrorLaunchFailure, "a kernel launch from device code (not emulated)");
  try {
    if (!block_threads() || nblocks == 1) {
      run_here(g);
    } else {
      g.os.total = static_cast<int>(nblocks);
      std::vector<std::thread> threads;
      threads.reserve(static_cast<size_t>(nblocks));
      for (Block& b : g.blocks) threads.emplace_back([&g, &b] { run_block_thread(g, b); });
      for (auto& t : threads) t.join();
    }
  } catch (const std::exception& e) {
    fail(g, e.what());
  }
  TL_TSAN_ACQUIRE(&g.end_sync);
  if (g.error) {
    std::string msg;
    {
      std::lock_guard<std::mutex> lock(g.msg_mutex);  // (written by a failing fiber)
      msg = g.msg;
    }
    return reject(cudaErrorLaunchFailure, "emulated kernel failed: " + msg);
  }
  return cudaSuccess;
}

}  // namespace torchlstm_emu

// ---- runtime API -------------------------------------------------------------------------
using torchlstm_emu::props;

cudaError_t cudaGetLastError() {
  const cudaError_t e = torchlstm_emu::tl_last_error;
  torchlstm_emu::tl_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return torchlstm_emu::tl_last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaError (emulated)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  // The emulation's own account of the last failure, where it has one.
  thread_local std::string s;
  s = std::string(cudaGetErrorName(e));
  if (!torchlstm_emu::tl_last_message.empty()) s += ": " + torchlstm_emu::tl_last_message;
  return s.c_str();
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device > 0) return cudaErrorInvalidDevice;
  *prop = props();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  if (!status) return cudaErrorInvalidValue;
  *status = torchlstm_emu::capture_status();
  return cudaSuccess;
}

namespace torchlstm_emu {
cudaDeviceProp& mutable_properties_for_aten() { return props(); }
cudaStream_t emulated_stream() { return nullptr; }  // the default stream
}  // namespace torchlstm_emu
