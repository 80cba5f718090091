// cooperative_groups.h (EMULATION) — this_grid().sync() and this_thread_block().sync().
#pragma once

#include <cuda_runtime.h>

namespace cooperative_groups {

class grid_group {
 public:
  void sync() const { ::torchlstm_emu::grid_sync(); }
  bool is_valid() const { return ::torchlstm_emu::in_cooperative_launch(); }
  unsigned long long size() const {
    return 1ull * gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y * blockDim.z;
  }
};
inline grid_group this_grid() { return grid_group(); }

class thread_block {
 public:
  void sync() const { ::torchlstm_emu::syncthreads(); }
  unsigned size() const { return blockDim.x * blockDim.y * blockDim.z; }
};
inline thread_block this_thread_block() { return thread_block(); }

}  // namespace cooperative_groups
