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
// (default sigmoid), exactly as in Keras. With zoneout (the *_zoneout variants at the end)
// c above is the candidate c~ and the state carried on is z c_prev + (1 - z) c~.
// Peephole connections: cell_forward_peephole / cell_backward_peephole at the end.
// Layer normalisation (layer_norm=True): the ln_* functions at the very end.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TL_HD __host__ __device__ __forceinline__
#else
#define TL_HD inline
#endif

namespace torchlstm {

// The activation table. One X-macro so the enum, the names exported to Python
// (torchlstm.activations builds its registry from them) and the dispatch switch can
// never disagree. The number is the id passed through the op schema: never renumber.
// Names and definitions are Keras 3's (keras.activations), with Keras' default
// parameters.
#define TORCHLSTM_FOR_EACH_ACTIVATION(_)   \
  _(TANH, "tanh", 0)                       \
  _(SIGMOID, "sigmoid", 1)                 \
  _(HARD_SIGMOID, "hard_sigmoid", 2)       \
  _(RELU, "relu", 3)                       \
  _(LINEAR, "linear", 4)                   \
  _(RELU6, "relu6", 5)                     \
  _(ELU, "elu", 6)                         \
  _(SELU, "selu", 7)                       \
  _(CELU, "celu", 8)                       \
  _(GELU, "gelu", 9)                       \
  _(SILU, "silu", 10)                      \
  _(HARD_SILU, "hard_silu", 11)            \
  _(SOFTPLUS, "softplus", 12)              \
  _(SOFTSIGN, "softsign", 13)              \
  _(EXPONENTIAL, "exponential", 14)        \
  _(LEAKY_RELU, "leaky_relu", 15)          \
  _(MISH, "mish", 16)                      \
  _(LOG_SIGMOID, "log_sigmoid", 17)        \
  _(HARD_TANH, "hard_tanh", 18)            \
  _(SPARSE_PLUS, "sparse_plus", 19)        \
  _(SPARSE_SIGMOID, "sparse_sigmoid", 20)  \
  _(SQUAREPLUS, "squareplus", 21)          \
  _(TANH_SHRINK, "tanh_shrink", 22)        \
  _(SOFT_SHRINK, "soft_shrink", 23)        \
  _(HARD_SHRINK, "hard_shrink", 24)

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
  static TL_HD T log1p(T x) {
    using std::log1p;
    return log1p(x);
  }
  static TL_HD T erf(T x) {
    using std::erf;
    return erf(x);
  }
  static TL_HD T sqrt(T x) {
    using std::sqrt;
    return sqrt(x);
  }
  static TL_HD T abs(T x) { return x < T(0) ? T(0) - x : x; }
  // NaN-propagating, like torch.maximum / torch.minimum
  static TL_HD T max(T a, T b) { return (a != a || a > b) ? a : b; }
  static TL_HD T min(T a, T b) { return (a != a || a < b) ? a : b; }
  // Heaviside step, right-open: 1 where x > 0, else 0
  static TL_HD T step(T x) { return x > T(0) ? T(1) : T(0); }
};

// Building blocks, branch-free (min/max/step) so that SIMD lanes need no select.
template <typename T>
TL_HD T sigmoid_of(T x) {
  return T(1) / (T(1) + GateOps<T>::exp(T(0) - x));
}
template <typename T>
TL_HD T softplus_of(T x) {  // log(1 + e^x) without overflow
  using M = GateOps<T>;
  return M::max(x, T(0)) + M::log1p(M::exp(T(0) - M::abs(x)));
}
template <typename T>
TL_HD T clip(T x, T lo, T hi) {
  return GateOps<T>::min(GateOps<T>::max(x, lo), hi);
}
template <typename T>
TL_HD T inside(T x, T lo, T hi) {  // 1 on the open interval (lo, hi), else 0
  return GateOps<T>::step(x - lo) * GateOps<T>::step(hi - x);
}
template <typename T>
TL_HD T elu_of(T x, T alpha) {  // x > 0 ? x : alpha (e^x - 1)
  using M = GateOps<T>;
  return M::max(x, T(0)) + alpha * (M::exp(M::min(x, T(0))) - T(1));
}
template <typename T>
TL_HD T elu_grad(T x, T alpha) {  // x > 0 ? 1 : alpha e^x
  using M = GateOps<T>;
  const T pos = M::step(x);
  return pos + (T(1) - pos) * alpha * M::exp(M::min(x, T(0)));
}

// Keras' default parameters
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kLeakySlope = 0.2;       // keras.activations.leaky_relu
constexpr double kShrink = 0.5;           // soft_shrink / hard_shrink threshold
constexpr double kSquareplusB = 4.0;      // squareplus b
constexpr double kSqrtHalf = 0.70710678118654752440;       // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;     // 1/sqrt(2 pi)

// y = act(x)
template <typename T>
TL_HD T activate(Activation a, T x) {
  using M = GateOps<T>;
  switch (a) {
    case Activation::TANH:
      return M::tanh(x);
    case Activation::SIGMOID:
      return sigmoid_of(x);
    case Activation::HARD_SIGMOID:  // relu6(x + 3) / 6 (Keras 2's 0.2x + 0.5 is gone)
      return clip((x + T(3)) / T(6), T(0), T(1));
    case Activation::RELU:
      return M::max(x, T(0));
    case Activation::RELU6:
      return clip(x, T(0), T(6));
    case Activation::ELU:
    case Activation::CELU:  // celu with alpha = 1 is elu with alpha = 1
      return elu_of(x, T(1));
    case Activation::SELU:
      return T(kSeluScale) * elu_of(x, T(kSeluAlpha));
    case Activation::GELU:  // Keras' default: exact, approximate=False
      return T(0.5) * x * (T(1) + M::erf(x * T(kSqrtHalf)));
    case Activation::SILU:
      return x * sigmoid_of(x);
    case Activation::HARD_SILU:
      return x * clip((x + T(3)) / T(6), T(0), T(1));
    case Activation::SOFTPLUS:
      return softplus_of(x);
    case Activation::SOFTSIGN:
      return x / (T(1) + M::abs(x));
    case Activation::EXPONENTIAL:
      return M::exp(x);
    case Activation::LEAKY_RELU:
      return M::max(x, T(0)) + T(kLeakySlope) * M::min(x, T(0));
    case Activation::MISH:
      return x * M::tanh(softplus_of(x));
    case Activation::LOG_SIGMOID:
      return T(0) - softplus_of(T(0) - x);
    case Activation::HARD_TANH:
      return clip(x, T(-1), T(1));
    case Activation::SPARSE_PLUS: {  // 0 | (x+1)^2/4 | x, at -1 and 1
      const T u = clip(x, T(-1), T(1)) + T(1);
      return u * u / T(4) + M::max(x - T(1), T(0));
    }
    case Activation::SPARSE_SIGMOID:
      return clip(T(0.5) * (x + T(1)), T(0), T(1));
    case Activation::SQUAREPLUS:
      return T(0.5) * (x + M::sqrt(x * x + T(kSquareplusB)));
    case Activation::TANH_SHRINK:
      return x - M::tanh(x);
    case Activation::SOFT_SHRINK:
      return x - clip(x, T(-kShrink), T(kShrink));
    case Activation::HARD_SHRINK:
      return x * (M::step(x - T(kShrink)) + M::step(T(-kShrink) - x));
    case Activation::LINEAR:
    default:
      return x;
  }
}

// dy/dx, given the pre-activation x and y = act(x) (each derivative uses whichever is
// cheaper; kernels always have both). At a kink it is the one-sided derivative PyTorch's
// autograd gives (relu'(0) = 0, hardsigmoid'(±3) = 0, elu'(0) = alpha, ...).
template <typename T>
TL_HD T activate_grad(Activation a, T x, T y) {
  using M = GateOps<T>;
  switch (a) {
    case Activation::TANH:
      return T(1) - y * y;
    case Activation::SIGMOID:
      return y * (T(1) - y);
    case Activation::HARD_SIGMOID:
      return inside(x, T(-3), T(3)) / T(6);
    case Activation::RELU:
      return M::step(x);
    case Activation::RELU6:
      return inside(x, T(0), T(6));
    case Activation::ELU:
    case Activation::CELU:
      return elu_grad(x, T(1));
    case Activation::SELU:
      return T(kSeluScale) * elu_grad(x, T(kSeluAlpha));
    case Activation::GELU:
      return T(0.5) * (T(1) + M::erf(x * T(kSqrtHalf))) +
             x * T(kInvSqrt2Pi) * M::exp(T(-0.5) * x * x);
    case Activation::SILU: {
      const T s = sigmoid_of(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case Activation::HARD_SILU:
      return clip((x + T(3)) / T(6), T(0), T(1)) + x * inside(x, T(-3), T(3)) / T(6);
    case Activation::SOFTPLUS:
      return sigmoid_of(x);
    case Activation::SOFTSIGN: {
      const T d = T(1) + M::abs(x);
      return T(1) / (d * d);
    }
    case Activation::EXPONENTIAL:
      return y;
    case Activation::LEAKY_RELU: {
      const T pos = M::step(x);
      return pos + (T(1) - pos) * T(kLeakySlope);
    }
    case Activation::MISH: {
      const T t = M::tanh(softplus_of(x));
      return t + x * (T(1) - t * t) * sigmoid_of(x);
    }
    case Activation::LOG_SIGMOID:
      return sigmoid_of(T(0) - x);
    case Activation::HARD_TANH:
      return inside(x, T(-1), T(1));
    case Activation::SPARSE_PLUS:
      return clip(T(0.5) * (x + T(1)), T(0), T(1));
    case Activation::SPARSE_SIGMOID:
      return T(0.5) * inside(x, T(-1), T(1));
    case Activation::SQUAREPLUS:
      return T(0.5) * (T(1) + x / M::sqrt(x * x + T(kSquareplusB)));
    case Activation::TANH_SHRINK: {
      const T t = M::tanh(x);
      return t * t;
    }
    case Activation::SOFT_SHRINK:
    case Activation::HARD_SHRINK:
      return M::step(x - T(kShrink)) + M::step(T(-kShrink) - x);
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

// The four activated gates of a unit.
template <typename T>
struct Gates {
  T i, f, g, o;
};

template <typename T>
TL_HD Gates<T> activate_gates(Activation act, Activation ract, T a_i, T a_f, T a_g, T a_o) {
  return {activate(ract, a_i), activate(ract, a_f), activate(act, a_g), activate(ract, a_o)};
}

template <typename T>
TL_HD CellForward<T> cell_forward(Activation act, Activation ract, T a_i, T a_f,
                                  T a_g, T a_o, T c_prev) {
  const Gates<T> s = activate_gates(act, ract, a_i, a_f, a_g, a_o);
  const T c = s.f * c_prev + s.i * s.g;
  return {c, s.o * activate(act, c)};
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

// What both backward variants share: from the activated gates s, tc = act(c) and the
// total gradient dc reaching c (the one r = o * tc was computed from), the gradients of
// the pre-activations, f * dc toward c_prev, and r.
template <typename T>
TL_HD CellBackward<T> gate_gradients(Activation act, Activation ract, T a_i, T a_f, T a_g,
                                     T a_o, const Gates<T>& s, T c_prev, T tc, T dc, T dr) {
  CellBackward<T> out;
  out.d_i = dc * s.g * activate_grad(ract, a_i, s.i);
  out.d_f = dc * c_prev * activate_grad(ract, a_f, s.f);
  out.d_g = dc * s.i * activate_grad(act, a_g, s.g);
  out.d_o = dr * tc * activate_grad(ract, a_o, s.o);
  out.dc_prev = dc * s.f;
  out.r = s.o * tc;
  return out;
}

template <typename T>
TL_HD CellBackward<T> cell_backward(Activation act, Activation ract, T a_i, T a_f,
                                    T a_g, T a_o, T c_prev, T c, T dr, T dc_next) {
  const Gates<T> s = activate_gates(act, ract, a_i, a_f, a_g, a_o);
  const T tc = activate(act, c);
  const T dc = dc_next + dr * s.o * activate_grad(act, c, tc);
  return gate_gradients(act, ract, a_i, a_f, a_g, a_o, s, c_prev, tc, dc, dr);
}

// Zoneout (Krueger et al. 2016): z * old + (1 - z) * fresh. z is 0 or 1 per element in
// training (1 keeps the old value, exactly: old + 0 * fresh) and the rate in eval.
template <typename T>
TL_HD T zoneout_blend(T z, T old, T fresh) {
  return z * old + (T(1) - z) * fresh;
}

// cell_forward with zoneout on c: the candidate state c~ = f * c_prev + i * g gives
// r = o * act(c~) (h~, before any projection and before h's own zoneout), and the state
// carried on is c = z_c * c_prev + (1 - z_c) * c~.
template <typename T>
TL_HD CellForward<T> cell_forward_zoneout(Activation act, Activation ract, T a_i, T a_f,
                                          T a_g, T a_o, T c_prev, T z_c) {
  CellForward<T> out = cell_forward(act, ract, a_i, a_f, a_g, a_o, c_prev);
  out.c = zoneout_blend(z_c, c_prev, out.c);
  return out;
}

// cell_backward with zoneout on c. The saved state c is the blended one, so c~ is
// recomputed from the gates and c_prev (exactly as the forward computed it). dr is the
// gradient reaching r = o * act(c~) (h's zoneout already applied by the caller) and
// dc_next the gradient reaching the carried c. Then
//   dc~ = (1 - z_c) dc_next + dr o act'(c~),   dc_prev = z_c dc_next + f dc~.
template <typename T>
TL_HD CellBackward<T> cell_backward_zoneout(Activation act, Activation ract, T a_i, T a_f,
                                            T a_g, T a_o, T c_prev, T dr, T dc_next, T z_c) {
  const Gates<T> s = activate_gates(act, ract, a_i, a_f, a_g, a_o);
  const T c = s.f * c_prev + s.i * s.g;  // c~
  const T tc = activate(act, c);
  const T dc = (T(1) - z_c) * dc_next + dr * s.o * activate_grad(act, c, tc);
  CellBackward<T> out = gate_gradients(act, ract, a_i, a_f, a_g, a_o, s, c_prev, tc, dc, dr);
  out.dc_prev = out.dc_prev + z_c * dc_next;
  return out;
}

// Peephole connections (Gers & Schmidhuber 2000; the P input of ONNX's LSTM): the input
// and forget gates look at c_prev, the output gate at the new state c (the carried one:
// with zoneout the blended z c_prev + (1 - z) c~, without it c~ itself):
//   a_i += p_i c_prev,  a_f += p_f c_prev,  c~ = f c_prev + i g,  a_o += p_o c,
//   r = o act(c~).
// The pre-activations are updated in place (the kernels save them with the peephole
// terms in), so backward's gate derivatives are the plain cell's; only the flow to the
// cell states changes (cell_backward_peephole). kZone: zoneout on c (z_c), else z_c unused.
template <bool kZone, typename T>
TL_HD CellForward<T> cell_forward_peephole(Activation act, Activation ract, T& a_i, T& a_f,
                                           T a_g, T& a_o, T c_prev, T p_i, T p_f, T p_o,
                                           T z_c) {
  a_i = a_i + p_i * c_prev;
  a_f = a_f + p_f * c_prev;
  const T i = activate(ract, a_i), f = activate(ract, a_f), g = activate(act, a_g);
  const T ct = f * c_prev + i * g;  // c~
  const T c = kZone ? zoneout_blend(z_c, c_prev, ct) : ct;
  a_o = a_o + p_o * c;
  return {c, activate(ract, a_o) * activate(act, ct)};
}

// Backward of cell_forward_peephole, from the saved pre-activations (peephole terms in),
// c_prev and the saved (carried) c. The gradient reaching the carried c is dc_next plus
// p_o d_o; c_prev further gets p_i d_i + p_f d_f:
//   dcc = dc_next + p_o d_o,   dc~ = (1 - z) dcc + dr o act'(c~),
//   dc_prev = f dc~ + z dcc + p_i d_i + p_f d_f           (z = 0 without zoneout).
// The peephole weights' own gradients (sums of d_i c_prev, d_f c_prev, d_o c over the
// steps and rows) are reductions over the saved tensors after the loop (layer_grads.h).
template <bool kZone, typename T>
TL_HD CellBackward<T> cell_backward_peephole(Activation act, Activation ract, T a_i, T a_f,
                                             T a_g, T a_o, T c_prev, T c, T dr, T dc_next,
                                             T p_i, T p_f, T p_o, T z_c) {
  const Gates<T> s = activate_gates(act, ract, a_i, a_f, a_g, a_o);
  const T ct = kZone ? s.f * c_prev + s.i * s.g : c;  // c~
  const T tc = activate(act, ct);
  const T d_o = dr * tc * activate_grad(ract, a_o, s.o);
  const T dcc = dc_next + p_o * d_o;
  const T dc = (kZone ? (T(1) - z_c) * dcc : dcc) + dr * s.o * activate_grad(act, ct, tc);
  CellBackward<T> out = gate_gradients(act, ract, a_i, a_f, a_g, a_o, s, c_prev, tc, dc, dr);
  out.dc_prev = out.dc_prev + p_i * out.d_i + p_f * out.d_f;
  if (kZone) out.dc_prev = out.dc_prev + z_c * dcc;
  return out;
}

// The scalar kernels' (CUDA's) run-time choice among the cell variants: zoneout on c
// (zone, z_c) and peepholes (pc: p_i, p_f, p_o at pc[0], pc[stride], pc[2 stride], or
// null). v holds the four pre-activations, updated in place (peephole terms added).
template <typename T, typename P>
TL_HD CellForward<T> cell_forward_any(Activation act, Activation ract, T (&v)[4], T c_prev,
                                      bool zone, T z_c, const P* pc, int64_t stride) {
  if (pc) {
    const T p_i = static_cast<T>(pc[0]), p_f = static_cast<T>(pc[stride]),
            p_o = static_cast<T>(pc[2 * stride]);
    return zone ? cell_forward_peephole<true, T>(act, ract, v[0], v[1], v[2], v[3], c_prev, p_i,
                                                 p_f, p_o, z_c)
                : cell_forward_peephole<false, T>(act, ract, v[0], v[1], v[2], v[3], c_prev,
                                                  p_i, p_f, p_o, z_c);
  }
  return zone ? cell_forward_zoneout<T>(act, ract, v[0], v[1], v[2], v[3], c_prev, z_c)
              : cell_forward<T>(act, ract, v[0], v[1], v[2], v[3], c_prev);
}

// Backward of cell_forward_any (c: the saved, carried state).
template <typename T, typename P>
TL_HD CellBackward<T> cell_backward_any(Activation act, Activation ract, T a_i, T a_f, T a_g,
                                        T a_o, T c_prev, T c, T dr, T dc_next, bool zone,
                                        T z_c, const P* pc, int64_t stride) {
  if (pc) {
    const T p_i = static_cast<T>(pc[0]), p_f = static_cast<T>(pc[stride]),
            p_o = static_cast<T>(pc[2 * stride]);
    return zone ? cell_backward_peephole<true, T>(act, ract, a_i, a_f, a_g, a_o, c_prev, c, dr,
                                                  dc_next, p_i, p_f, p_o, z_c)
                : cell_backward_peephole<false, T>(act, ract, a_i, a_f, a_g, a_o, c_prev, c, dr,
                                                   dc_next, p_i, p_f, p_o, z_c);
  }
  return zone ? cell_backward_zoneout<T>(act, ract, a_i, a_f, a_g, a_o, c_prev, dr, dc_next, z_c)
              : cell_backward<T>(act, ract, a_i, a_f, a_g, a_o, c_prev, c, dr, dc_next);
}

// Layer normalisation (layer_norm=True; Ba et al. 2016, haste's LayerNormLSTM):
//   a = LN(x W_ih^T; g_ih) + LN(h_prev W_hh^T; g_hh) + b_ih + b_hh   (each over the 4H row)
//   c~ = f c_prev + i g as usual (peepholes and zoneout as above: c is carried
//   un-normalised), r = o act(y), y = g_c x^_c + b_c, x^_c = LN(c~) over the H row.
// LN(v) = (v - mean) * rstd, rstd = 1 / sqrt(var + eps) (biased variance). The row
// statistics are reductions over a whole row, which each backend does its own way (a
// thread's row on the CPU, a block's on CUDA); these are the per-element parts around them.

// rstd from a row's variance.
template <typename T>
TL_HD T ln_rstd(T var, T eps) {
  return T(1) / GateOps<T>::sqrt(var + eps);
}

// The gradient reaching v = the row LN normalises, from dxh = the gradient reaching x^
// (already times the scale), x^ itself, the row's rstd, m1 = mean(dxh), m2 = mean(dxh x^).
template <typename T>
TL_HD T ln_input_grad(T dxh, T xhat, T rstd, T m1, T m2) {
  return rstd * (dxh - m1 - xhat * m2);
}

// Forward, before LN(c~): the peephole terms of i and f added to the pre-activations (in
// place), c~, the carried c, and o's peephole term (on the carried c). Returns {c, c~}.
template <typename T>
struct LnCellState {
  T c, ct;
};
template <bool kZone, bool kPeep, typename T>
TL_HD LnCellState<T> ln_cell_state(Activation act, Activation ract, T& a_i, T& a_f, T a_g,
                                   T& a_o, T c_prev, T p_i, T p_f, T p_o, T z_c) {
  if (kPeep) {
    a_i = a_i + p_i * c_prev;
    a_f = a_f + p_f * c_prev;
  }
  const T ct = activate(ract, a_f) * c_prev + activate(ract, a_i) * activate(act, a_g);
  const T c = kZone ? zoneout_blend(z_c, c_prev, ct) : ct;
  if (kPeep) a_o = a_o + p_o * c;
  return {c, ct};
}

// Forward, after LN(c~): r = o act(g_c x^_c + b_c).
template <typename T>
TL_HD T ln_cell_output(Activation act, Activation ract, T a_o, T xhat_c, T g_c, T b_c) {
  return activate(ract, a_o) * activate(act, g_c * xhat_c + b_c);
}

// Backward, before the row reduction over H: from dr (the gradient reaching r) the
// gradient of a_o, of y (dy: g_c's and b_c's gradients are sums of dy x^_c and dy) and of
// x^_c (dxh = g_c dy), and r itself (the projection's weight gradient needs it).
template <typename T>
struct LnCellOutputGrad {
  T d_o, dy, dxh, r;
};
template <typename T>
TL_HD LnCellOutputGrad<T> ln_cell_output_grad(Activation act, Activation ract, T a_o,
                                              T xhat_c, T g_c, T b_c, T dr) {
  const T o = activate(ract, a_o), y = g_c * xhat_c + b_c, ty = activate(act, y);
  const T dy = dr * o * activate_grad(act, y, ty);
  return {dr * ty * activate_grad(ract, a_o, o), dy, g_c * dy, o * ty};
}

// Backward, after it: dct_ln = the gradient reaching c~ through LN(c~) (ln_input_grad),
// dc_next = the gradient reaching the carried c from the next step, d_o from
// ln_cell_output_grad. The gradients of a_i, a_f, a_g and of c_prev (d_o passed through):
//   dcc = dc_next + p_o d_o,  dc~ = (1 - z) dcc + dct_ln,
//   dc_prev = f dc~ + z dcc + p_i d_i + p_f d_f            (z = 0, p = 0 when off).
template <bool kZone, bool kPeep, typename T>
TL_HD CellBackward<T> ln_cell_backward(Activation act, Activation ract, T a_i, T a_f, T a_g,
                                       T c_prev, T dct_ln, T dc_next, T d_o, T p_i, T p_f,
                                       T p_o, T z_c) {
  const T i = activate(ract, a_i), f = activate(ract, a_f), g = activate(act, a_g);
  const T dcc = kPeep ? dc_next + p_o * d_o : dc_next;
  const T dct = (kZone ? (T(1) - z_c) * dcc : dcc) + dct_ln;
  CellBackward<T> out;
  out.d_i = dct * g * activate_grad(ract, a_i, i);
  out.d_f = dct * c_prev * activate_grad(ract, a_f, f);
  out.d_g = dct * i * activate_grad(act, a_g, g);
  out.d_o = d_o;
  out.dc_prev = f * dct;
  if (kZone) out.dc_prev = out.dc_prev + z_c * dcc;
  if (kPeep) out.dc_prev = out.dc_prev + p_i * out.d_i + p_f * out.d_f;
  out.r = T(0);
  return out;
}

}  // namespace torchlstm
