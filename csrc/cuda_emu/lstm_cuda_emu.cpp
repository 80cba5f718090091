// lstm_cuda_emu.cpp (EMULATION) — the REAL CUDA host code and kernels (csrc/cuda/ops_cuda.cu
// and what it includes: forward_paths.cuh, backward_path.cuh, the kernels), not a
// copy, compiled by the host compiler against the emulated device (include/ first on the
// include path; build.py). The ops register as torchlstm_emu::* for CPU tensors.
#ifndef TORCHLSTM_CUDA_EMULATION
#error "build with -DTORCHLSTM_CUDA_EMULATION (csrc/cuda_emu/build.py)"
#endif

#include "../cuda/ops_cuda.cu"

// The kernels' dynamic shared array is defined in shared_memory.cpp: defined in this
// translation unit, after the kernel's block-scope `extern thread_local` declaration,
// GCC would call a TLS-init function it never emits (a null call).
