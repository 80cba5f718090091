"""torchlstm.RNN: Keras' RNN(LSTMCell(n)), fused.

It runs a torchlstm LSTMCell over a batch-major sequence with the same fused layer op
that LSTM uses (not a Python loop over time), so with the same weights
``RNN(cell, ...)`` returns exactly what ``LSTM(..., batch_first=True)`` with the same
Keras options returns.
"""
from __future__ import annotations

from torch import Tensor, nn

from . import _keras_contract
from ._options import KerasOptionAttributes, KerasOptions
from ._stack import run_stack
from .cell import LSTMCell


class RNN(KerasOptionAttributes, nn.Module):
    r"""Run ``cell`` (a :class:`torchlstm.LSTMCell`) over a sequence, Keras-style.

    ``forward(inputs, initial_state=None, mask=None)``: ``inputs`` (B, T, I), or (T, I)
    unbatched; ``initial_state`` an optional ``(h, c)`` of (B, H) each ((H,) unbatched);
    ``mask`` an optional bool (B, T) ((T,) unbatched), True = a valid step (Keras).
    ``go_backwards`` processes the sequence reversed and returns outputs in processing
    order; ``zero_output_for_mask`` gives zeros instead of the previous output at masked
    steps, as Keras' RNN.
    Returns the last output (B, H), or the whole sequence (B, T, H) with
    ``return_sequences=True``; with ``return_state=True``, ``(output, h, c)``.
    The cell's ``input_dropout``, ``recurrent_dropout``, ``zoneout`` and ``seed`` apply
    over the sequence as in :class:`torchlstm.LSTM` (masks drawn once per call, from the
    cell's generator, in the cell's training mode): with the same weights and seed,
    ``RNN(LSTMCell(n, ...))`` and ``LSTM(n, batch_first=True, ...)`` compute the same.
    """

    def __init__(self, cell: LSTMCell, *, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False,
                 zero_output_for_mask: bool = False, stateful: bool = False) -> None:
        super().__init__()
        if not isinstance(cell, LSTMCell):
            raise TypeError(f"cell must be a torchlstm.LSTMCell, got {type(cell).__name__}")
        self.keras = KerasOptions.make(return_sequences, return_state, go_backwards,
                                       zero_output_for_mask, stateful)
        self.cell = cell
        self._state = None  # (h, c), each (1, B, H), carried by stateful=True


    def extra_repr(self) -> str:
        return (f"return_sequences={self.return_sequences}, return_state={self.return_state}"
                + self.keras.repr())

    def reset_states(self) -> None:
        """Forget the state a stateful RNN carries between calls (Keras' reset_states)."""
        self._state = None

    def forward(self, inputs: Tensor, initial_state=None, mask=None):
        if not isinstance(inputs, Tensor) or inputs.dim() not in (2, 3):
            got = f"{inputs.dim()}D" if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"RNN: Expected inputs to be 3D (batch, time, features) or 2D "
                             f"(time, features), got {got}")
        cell = self.cell
        batched = inputs.dim() == 3
        if not batched:
            inputs = inputs.unsqueeze(0)
        cell.check_input(inputs)
        x = inputs.transpose(0, 1)  # time-major for the op
        keras_mask = (_keras_contract.check_mask(mask, x, True, batched)
                      if mask is not None else None)
        if self.go_backwards:
            x = x.flip(0)
            keras_mask = keras_mask.flip(0) if keras_mask is not None else None
        B = x.shape[1]
        if initial_state is None and self.stateful and self._state is not None:
            h0, c0 = self._state
            if h0.shape[1] != B:
                raise ValueError(f"stateful RNN: the state carried from the last call is for "
                                 f"batch {h0.shape[1]}, this batch has {B}; call "
                                 "reset_states() to start new sequences")
        elif initial_state is None:
            h0 = c0 = x.new_zeros(1, B, cell.hidden_size)
        else:
            if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
                raise TypeError("initial_state must be a tuple (h, c) of two tensors")
            states = []
            for i, s in enumerate(initial_state):
                if not isinstance(s, Tensor) or s.dim() != (2 if batched else 1):
                    raise ValueError(f"initial_state[{i}] must be {'2' if batched else '1'}D "
                                     f"(batch, hidden_size) like inputs")
                s = s if batched else s.unsqueeze(0)
                cell.check_state(s, i, B, x)
                states.append(s.unsqueeze(0))
            h0, c0 = states
        out, h_n, c_n = run_stack(x, h0, c0, cell.layer_weights(), 1, 1, keras_mask,
                                  cell.options, 0.0, cell.training, cell.generator(x.device))
        if self.stateful:
            self._state = (h_n.detach(), c_n.detach())
        last = None
        if keras_mask is not None:
            out, last = _keras_contract.masked_and_last(out, keras_mask, 1,
                                                        self.zero_output_for_mask)
            if not batched:
                last = last.squeeze(0)
        output = out.transpose(0, 1)
        if not batched:
            output = output.squeeze(0)
        return _keras_contract.keras_result(output, h_n, c_n, 1, bool(self.return_sequences),
                                            bool(self.return_state), None if batched else 0, last)
