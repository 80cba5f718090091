// shared_memory.cpp (EMULATION) — the kernels' dynamic shared arrays (`extern __shared__`
// in csrc/cuda), as thread_local storage the emulated launches map per block. One line
// per array name the kernels use; a new name is a link error until added here. Kept out
// of the kernels' translation unit (see lstm_cuda_emu.cpp).
#include "runtime.h"

TORCHLSTM_EMU_DYNAMIC_SHARED(torchlstm::cuda, smem_raw)  // persistent_kernel.cuh
