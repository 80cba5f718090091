// host_cache.h — the CPU kernels' large buffers, kept for reuse instead of handed back
// to the operating system.
//
// Why: a training step allocates and frees the same tens of megabytes every iteration
// (the saved gates and cell states, the output, the gate gradients). glibc returns freed
// memory at the top of its heap to the OS and maps large blocks afresh, so the next
// iteration takes a page fault on every 4 KiB page it writes, and the kernel zeroes each
// one. Measured at the benchmark's headline size (T=100, B=32, I=128, H=256, 2 threads):
// 2 000-6 600 page faults and 2-8 ms of kernel time per forward+backward step, varying
// with the heap's layout from run to run (torch.nn.LSTM's oneDNN path takes ~8 000 and
// ~8 ms; with glibc's trimming off, both take none).
//
// So the ops allocate every buffer of at least 1 MiB here. A freed block returns to this
// cache (any thread may free it) and the next request of that size (or up to a quarter
// smaller) takes it back, with its pages already mapped. Blocks of 2 MiB and more are
// 2 MiB-aligned and advised as transparent huge pages (fewer faults the first time,
// fewer TLB misses after). The cache keeps at most TORCHLSTM_CPU_CACHE_MB MiB of free
// blocks (default 1024; 0 turns it off: every buffer then comes from PyTorch's CPU
// allocator), evicting those returned longest ago first; torchlstm.empty_cache() frees
// them all, as torch.cuda.empty_cache() does on CUDA.
// Tensors made here are ordinary CPU tensors for everything else (views, autograd,
// serialisation, resize_).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace torchlstm {
namespace cpu {

// An uninitialised contiguous CPU tensor: large ones from the cache, small ones from
// PyTorch's CPU allocator.
at::Tensor empty_cached(at::IntArrayRef sizes, at::ScalarType dtype);

// The cache's state and control (exported to Python by ops.cpp).
struct HostCacheStats {
  int64_t cached_bytes;  // free blocks held for reuse
  int64_t cached_blocks;
  int64_t limit_bytes;   // the most free bytes kept
  int64_t hits;          // requests served from the cache since start
  int64_t misses;        // requests that allocated a new block
};
HostCacheStats host_cache_stats();
int64_t empty_host_cache();  // frees every cached block; returns the bytes freed

}  // namespace cpu
}  // namespace torchlstm
