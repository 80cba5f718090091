// layer_norm_args.h — what the layer-norm row passes (layer_norm_rows.h) read and write
// besides their rows: plain structs, so the AVX2 build and the AVX-512 copy of the passes
// (gates_avx512.cpp) share them across the call between the two.
#pragma once

#include <cstdint>

namespace torchlstm {
namespace cpu {

// The layer's parameters (null: absent) and the saved row's layout (layer_call.h's
// SavedLayout, as offsets).
template <typename S>
struct LnArgs {
  const S *g_ih, *g_hh, *g_c, *b_c;  // LN scales (4H, 4H, H) and the shift of LN(c~) (H)
  const S *b1, *b2, *pc;             // b_ih, b_hh (4H), peephole weights (3H)
  S eps;
  int64_t H;
  int64_t xhat_ih, xhat_hh, xhat_c, rstd_ih, rstd_hh, rstd_c;
};

// One team member's share of the parameters' gradients, summed over its rows of all steps.
template <typename S>
struct LnAcc {
  S *g_ih, *g_hh, *g_c, *b_c;  // LN parameters (4H, 4H, H, H): BackwardResult::d_ln's order
  S *bias, *pc;                // b_ih / b_hh (4H), peephole weights (3H)
};
constexpr int64_t kLnAccWidth = 17;        // x H: one member's LnAcc, contiguous
constexpr int64_t kLnForwardScratch = 2;  // x H per member
constexpr int64_t kLnBackwardScratch = 6;

}  // namespace cpu
}  // namespace torchlstm
