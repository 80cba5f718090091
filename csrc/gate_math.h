// gate_math.h — the LSTM's element-wise maths, shared by the CPU and CUDA kernels.
//
// Everything here is an inline function usable on the host and on the device, so the
// CPU loop and the CUDA kernels compute a gate, its derivative and the cell update with
// the same code. Nothing in this file knows about tensors, threads or memory layout.
//
// Gate order is PyTorch's (and Keras'): i, f, g (the candidate, Keras' "c"), o.
//   i = ract(a_i)   f = ract(a_f)   g = act(a_g)   o = ract(a_o)
//   c = f * c_prev + i * g
//   r = o * act(c)            (h = r, or h = W_hr r with a projection)
// where act is `activation` (default tanh) and ract is `recurrent_activation`
// (default sigmoid), exactly as in Keras.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TL_HD __host__ __device__ __forceinline__
#else
#define TL_HD inline
#endif

namespace torchlstm {

// The activation table. One X-macro so the enum, the names exported to Python
// (torchlstm.activations builds its registry from them) and the dispatch switch can
// never disagree. The number is the id passed through the op schema: never renumber.
#define TORCHLSTM_FOR_EACH_ACTIVATION(_) \
  _(TANH, "tanh", 0)                     \
  _(SIGMOID, "sigmoid", 1)               \
  _(HARD_SIGMOID, "hard_sigmoid", 2)     \
  _(RELU, "relu", 3)                     \
  _(LINEAR, "linear", 4)

enum class Activation : int {
#define TL_ENUM_ENTRY(name, str, id) name = id,
  TORCHLSTM_FOR_EACH_ACTIVATION(TL_ENUM_ENTRY)
#undef TL_ENUM_ENTRY
};

inline bool is_valid_activation(long long id) {
  switch (id) {
#define TL_VALID_ENTRY(name, str, idv) case idv:
    TORCHLSTM_FOR_EACH_ACTIVATION(TL_VALID_ENTRY)
#undef TL_VALID_ENTRY
    return true;
    default:
      return false;
  }
}

// The few primitives the gate maths needs. Every function below is written against
// GateOps<T>, so the same source serves scalars (here: host and CUDA device) and, through
// a specialisation in cpu/vec_math.h, the CPU's SIMD vectors.
template <typename T>
struct GateOps {
  static TL_HD T exp(T x) {
    using std::exp;
    return exp(x);
  }
  static TL_HD T tanh(T x) {
    using std::tanh;
    return tanh(x);
  }
  // NaN-propagating, like torch.maximum / torch.minimum
  static TL_HD T max(T a, T b) { return (a != a || a > b) ? a : b; }
  static TL_HD T min(T a, T b) { return (a != a || a < b) ? a : b; }
  // Heaviside step, right-open: 1 where x > 0, else 0
  static TL_HD T step(T x) { return x > T(0) ? T(1) : T(0); }
};

// y = act(x)
template <typename T>
TL_HD T activate(Activation a, T x) {
  using M = GateOps<T>;
  switch (a) {
    case Activation::TANH:
      return M::tanh(x);
    case Activation::SIGMOID:
      return T(1) / (T(1) + M::exp(T(0) - x));
    case Activation::HARD_SIGMOID:
      // Keras 3: relu6(x + 3) / 6 (Keras 2 used 0.2x + 0.5; we follow Keras 3).
      return M::min(M::max((x + T(3)) / T(6), T(0)), T(1));
    case Activation::RELU:
      return M::max(x, T(0));
    case Activation::LINEAR:
    default:
      return x;
  }
}

// dy/dx, given the pre-activation x and y = act(x) (each derivative uses whichever is
// cheaper; kernels always have both). Kinks take the derivative of the right-open
// branch used by PyTorch's autograd (relu'(0) = 0, hardsigmoid'(±3) = 0).
template <typename T>
TL_HD T activate_grad(Activation a, T x, T y) {
  using M = GateOps<T>;
  switch (a) {
    case Activation::TANH:
      return T(1) - y * y;
    case Activation::SIGMOID:
      return y * (T(1) - y);
    case Activation::HARD_SIGMOID:
      return M::step(x + T(3)) * M::step(T(3) - x) * T(1.0 / 6.0);
    case Activation::RELU:
      return M::step(x);
    case Activation::LINEAR:
    default:
      return T(1);
  }
}

// Forward of one hidden unit of one batch row: from the four gate pre-activations
// and c_prev, the new cell state and r = o * act(c) (which is h without projection).
template <typename T>
struct CellForward {
  T c;
  T r;
};

template <typename T>
TL_HD CellForward<T> cell_forward(Activation act, Activation ract, T a_i, T a_f,
                                  T a_g, T a_o, T c_prev) {
  const T i = activate(ract, a_i);
  const T f = activate(ract, a_f);
  const T g = activate(act, a_g);
  const T o = activate(ract, a_o);
  const T c = f * c_prev + i * g;
  return {c, o * activate(act, c)};
}

// Backward of the same unit. Inputs: the saved pre-activations, c_prev, c, the
// gradient reaching r (dr) and the gradient reaching c from the next step (dc_next).
// Outputs: the gradients of the four pre-activations and of c_prev.
template <typename T>
struct CellBackward {
  T d_i, d_f, d_g, d_o;
  T dc_prev;
  T r;  // o * act(c), recomputed: the projection's weight gradient needs it
};

template <typename T>
TL_HD CellBackward<T> cell_backward(Activation act, Activation ract, T a_i, T a_f,
                                    T a_g, T a_o, T c_prev, T c, T dr, T dc_next) {
  const T i = activate(ract, a_i);
  const T f = activate(ract, a_f);
  const T g = activate(act, a_g);
  const T o = activate(ract, a_o);
  const T tc = activate(act, c);
  const T dc = dc_next + dr * o * activate_grad(act, c, tc);
  CellBackward<T> out;
  out.d_i = dc * g * activate_grad(ract, a_i, i);
  out.d_f = dc * c_prev * activate_grad(ract, a_f, f);
  out.d_g = dc * i * activate_grad(act, a_g, g);
  out.d_o = dr * tc * activate_grad(ract, a_o, o);
  out.dc_prev = dc * f;
  out.r = o * tc;
  return out;
}

}  // namespace torchlstm
