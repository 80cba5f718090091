// vec_math.h — GateOps for ATen's SIMD vectors, so the CPU kernels run the gate maths of
// gate_math.h on Vectorized<float> / Vectorized<double> (8 / 4 lanes with AVX2) with no
// second copy of any formula. exp and tanh are SLEEF's (1-ulp), through ATen.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "../gate_math.h"

namespace torchlstm {

template <typename S>
struct VecGateOps {
  using V = at::vec::Vectorized<S>;
  static V exp(V x) { return x.exp(); }
  static V tanh(V x) { return x.tanh(); }
  static V log1p(V x) { return x.log1p(); }
  static V erf(V x) { return x.erf(); }
  static V sqrt(V x) { return x.sqrt(); }
  static V abs(V x) { return x.abs(); }
  static V max(V a, V b) { return at::vec::maximum(a, b); }
  static V min(V a, V b) { return at::vec::minimum(a, b); }
  static V step(V x) { return x.gt(V(S(0))); }  // 1.0 where x > 0, else 0.0
};

template <typename S>
struct GateOps<at::vec::Vectorized<S>> : VecGateOps<S> {};

// float32: exp is ATen's inline exp_u20 (a polynomial, ~20 ulp, no SLEEF call), and tanh
// is built on it as 2 / (1 + exp(-2x)) - 1, exact at the ends (+-1, no overflow to NaN).
// The gate pass is dominated by these (five per hidden unit), and float32 LSTM outputs
// need absolute, not last-ulp, accuracy: errors stay ~1e-6 (tests compare with nn.LSTM).
// float64 keeps SLEEF's 1-ulp functions (VecGateOps above); the rest is shared.
template <>
struct GateOps<at::vec::Vectorized<float>> : VecGateOps<float> {
  // exp_u20 clamps its argument, which would turn a NaN into a finite number: NaN lanes
  // are passed through, so a NaN in the input still shows in the output (as nn.LSTM).
  static V exp(V x) { return V::blendv(x.exp_u20(), x, x.isnan()); }
  static V tanh(V x) { return V(2.0f) / (V(1.0f) + exp(V(-2.0f) * x)) - V(1.0f); }
};

}  // namespace torchlstm
