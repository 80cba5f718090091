// vec_math.h — GateOps for ATen's SIMD vectors, so the CPU kernels run the gate maths of
// gate_math.h on Vectorized<float> / Vectorized<double> (8 / 4 lanes with AVX2) with no
// second copy of any formula. exp and tanh are SLEEF's (1-ulp), through ATen.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "../gate_math.h"

namespace torchlstm {

template <typename S>
struct GateOps<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  static V exp(V x) { return x.exp(); }
  static V tanh(V x) { return x.tanh(); }
  static V max(V a, V b) { return at::vec::maximum(a, b); }
  static V min(V a, V b) { return at::vec::minimum(a, b); }
  static V step(V x) { return x.gt(V(S(0))); }  // 1.0 where x > 0, else 0.0
};

}  // namespace torchlstm
