// host_cache.cpp — see host_cache.h for why.
#include "host_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <pthread.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

namespace torchlstm {
namespace cpu {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;  // smaller requests: PyTorch's CPU allocator
constexpr size_t kHugePage = size_t(2) << 20;   // x86-64 transparent huge page
constexpr size_t kSmallRound = size_t(64) << 10;

size_t limit_from_env() {
  const char* v = std::getenv("TORCHLSTM_CPU_CACHE_MB");
  if (v == nullptr || *v == '\0') return size_t(1024) << 20;
  char* end = nullptr;
  errno = 0;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK_VALUE(end != v && *end == '\0' && mb >= 0,
                    "TORCHLSTM_CPU_CACHE_MB must be a whole number of MiB (0 turns the "
                    "torchlstm CPU buffer cache off), got '", v, "'");
  // a limit beyond the address space would wrap to 0 when turned into bytes (off)
  constexpr long long kMaxMiB = 1LL << 40;
  TORCH_CHECK_VALUE(errno != ERANGE && mb <= kMaxMiB, "TORCHLSTM_CPU_CACHE_MB must be at most ",
                    kMaxMiB, " MiB (2^40), got '", v, "'");
  return static_cast<size_t>(mb) << 20;
}

// Requests are rounded up (to 2 MiB from 2 MiB on, else to 64 KiB), so the same shapes
// ask for the same block sizes.
size_t rounded(size_t n) {
  const size_t unit = n >= kHugePage ? kHugePage : kSmallRound;
  return (n + unit - 1) / unit * unit;
}

struct Block {
  void* ptr;
  size_t bytes;
  uint64_t returned = 0;  // when it last came back to the cache (a counter)
};

class HostCache final : public c10::Allocator {
 public:
  // Never destroyed: tensors holding blocks may be freed during interpreter shutdown.
  static HostCache& get() {
    static HostCache* cache = new HostCache(limit_from_env());
    return *cache;
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes || limit_ == 0) return c10::GetCPUAllocator()->allocate(n);
    const size_t bytes = rounded(n);
    Block* b = take(bytes);
    if (b == nullptr) b = fresh(bytes);
    return {b->ptr, b, &HostCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Our blocks' context is their Block, not the data pointer; they are "simple" all the
  // same (nothing else hangs off them), which copy-on-write clones (torch._lazy_clone)
  // require. Small requests carry the CPU allocator's own DataPtr.
  bool is_simple_data_ptr(const c10::DataPtr& p) const override {
    return p.get_deleter() == &HostCache::give_back || p.get() == p.get_context();
  }

  HostCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {static_cast<int64_t>(free_bytes_), static_cast<int64_t>(free_.size()),
            static_cast<int64_t>(limit_), hits_, misses_};
  }

  int64_t release_all() {
    std::lock_guard<std::mutex> lock(mu_);
    const auto freed = static_cast<int64_t>(free_bytes_);
    for (auto& kv : free_) destroy(kv.second);
    free_.clear();
    free_bytes_ = 0;
    return freed;
  }

 private:
  explicit HostCache(size_t limit) : limit_(limit) {
    // A child forked while another thread held the lock would wait on it forever.
    pthread_atfork(nullptr, nullptr, [] { new (&get().mu_) std::mutex(); });
  }

  // The smallest free block that fits, if it is at most a quarter larger than asked
  // for (a somewhat shorter sequence reuses a longer one's buffers; a small request
  // never ties up a big block).
  Block* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 4) {
      ++misses_;
      return nullptr;
    }
    Block* b = it->second;
    free_.erase(it);
    free_bytes_ -= b->bytes;
    ++hits_;
    return b;
  }

  static Block* fresh(size_t bytes) {
    void* p = nullptr;
    const size_t align = bytes >= kHugePage ? kHugePage : size_t(64);
    if (posix_memalign(&p, align, bytes) != 0 || p == nullptr)
      TORCH_CHECK_WITH(OutOfMemoryError, false, "torchlstm: out of CPU memory allocating ",
                       bytes, " bytes");
#ifdef MADV_HUGEPAGE
    if (bytes >= kHugePage) (void)madvise(p, bytes, MADV_HUGEPAGE);  // a hint; may be refused
#endif
    return new Block{p, bytes};
  }

  static void destroy(Block* b) {
    std::free(b->ptr);
    delete b;
  }

  // The deleter of every cached block's DataPtr: back into the cache, then, while over
  // the limit, the blocks that came back longest ago out (a shape no longer in use must
  // not crowd out the ones the current loop reuses; a scan: the cache holds few blocks).
  static void give_back(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    HostCache& c = get();
    std::lock_guard<std::mutex> lock(c.mu_);
    b->returned = ++c.clock_;
    c.free_.emplace(b->bytes, b);
    c.free_bytes_ += b->bytes;
    while (c.free_bytes_ > c.limit_ && !c.free_.empty()) {
      auto oldest = c.free_.begin();
      for (auto it = c.free_.begin(); it != c.free_.end(); ++it)
        if (it->second->returned < oldest->second->returned) oldest = it;
      c.free_bytes_ -= oldest->second->bytes;
      destroy(oldest->second);
      c.free_.erase(oldest);
    }
  }

  const size_t limit_;
  std::mutex mu_;
  std::multimap<size_t, Block*> free_;  // free blocks by size
  size_t free_bytes_ = 0;
  uint64_t clock_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace

at::Tensor empty_cached(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::Tensor(at::detail::empty_generic(sizes, &HostCache::get(),
                                              c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              dtype, c10::nullopt));
}

HostCacheStats host_cache_stats() { return HostCache::get().stats(); }

int64_t empty_host_cache() {
  const int64_t freed = HostCache::get().release_all();
#ifdef __GLIBC__
  // glibc keeps freed blocks below its (adaptive) mmap threshold in its heap; hand them
  // back to the OS, as the caller asked for memory back
  if (freed > 0) malloc_trim(0);
#endif
  return freed;
}

}  // namespace cpu
}  // namespace torchlstm
