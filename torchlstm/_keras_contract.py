"""The Keras sequence contract: masks (True = a valid step), the output at masked steps,
the last output, and what a module returns with return_sequences / return_state."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def check_mask(mask, x: Tensor, batch_first: bool, batched: bool) -> Tensor:
    """A Keras mask (True = a valid step) as a (T, B) bool tensor on x's device; x is the
    time-major (T, B, I) input. The mask's layout follows the input's: (B, T) with
    batch_first, (T, B) without, (T,) for unbatched input."""
    T, B = x.shape[0], x.shape[1]
    expected = ((B, T) if batch_first else (T, B)) if batched else (T,)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool tensor of shape {expected}, got "
                        f"{type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid step), got {mask.dtype}")
    if tuple(mask.shape) != expected:
        layout = ("(batch, seq_len)" if batch_first else "(seq_len, batch)") if batched \
            else "(seq_len,)"
        raise ValueError(f"mask must have shape {layout} = {expected}, got {tuple(mask.shape)}")
    if mask.device.type == "meta" and x.device.type != "meta":
        raise RuntimeError(f"mask is a meta tensor (no data) but the input is on {x.device}")
    mask = mask.to(x.device)
    if not batched:
        return mask.unsqueeze(1)
    return (mask.t() if batch_first else mask).contiguous()


def keras_masked_output(out: Tensor, mask: Tensor, num_directions: int,
                        zero_output_for_mask: bool) -> Tensor:
    """Keras' output at masked steps. The kernel leaves the carried h there; Keras gives
    the previous output (zeros before a sequence's first valid step), or zeros with
    zero_output_for_mask. Each direction in its own processing order."""
    T, B, F = out.shape
    m = mask.to(out.dtype)
    if zero_output_for_mask:
        keep = [m] * num_directions
    else:
        seen = torch.cummax(m, dim=0).values  # a valid step has been seen
        keep = [seen]
        if num_directions == 2:
            keep.append(torch.cummax(m.flip(0), dim=0).values.flip(0))
    factor = torch.stack(keep, dim=2).unsqueeze(3)  # (T, B, D, 1)
    return (out.view(T, B, num_directions, F // num_directions) * factor).view(T, B, F)


def last_output(out: Tensor, num_directions: int) -> Tensor:
    """Each direction's output at its last processed step, (B, D*Hout), from a time-major
    output: step T-1 forward, step 0 backward (Keras' Bidirectional does the same)."""
    if num_directions == 1:
        return out[-1]
    half = out.shape[-1] // 2
    return torch.cat([out[-1, :, :half], out[0, :, half:]], dim=-1)


def keras_result(output, h_n: Tensor, c_n: Tensor, num_directions: int,
                 return_sequences: bool, return_state: bool, batch_dim: Optional[int],
                 last: Optional[Tensor] = None):
    """The Keras contract.

    output: the whole sequence (return_sequences) or the last step, (B, D*Hout): the final
    h of each direction of the last layer, concatenated (what Keras' Bidirectional gives).
    states: for one layer and one direction h (B,Hout) and c (B,H) as Keras; otherwise
    nn.LSTM's stacked (L*D, B, ·) tensors. batch_dim: None for batched input, else the
    batch axis to squeeze away (unbatched input). last: the last output when it is not the
    final state (with a Keras mask: see last_output).
    """
    if not return_sequences:
        output = last if last is not None else torch.cat(list(h_n[-num_directions:]), dim=-1)
        if batch_dim is not None:
            output = output.squeeze(0)
    if not return_state:
        return output
    if h_n.shape[0] == 1:
        h, c = h_n[0], c_n[0]
        if batch_dim is not None:
            h, c = h.squeeze(0), c.squeeze(0)
    else:
        h, c = h_n, c_n
        if batch_dim is not None:
            h, c = h.squeeze(1), c.squeeze(1)
    return output, h, c


def masked_and_last(out: Tensor, mask: Tensor, num_directions: int, zero_output_for_mask: bool):
    """(Keras' output at every step, Keras' last output (B, D*Hout)) of a masked call."""
    out = keras_masked_output(out, mask, num_directions, zero_output_for_mask)
    return out, last_output(out, num_directions)
