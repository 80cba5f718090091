"""TorchScript: what ``torch.jit.script(torchlstm.LSTM(...))`` and ``torch.jit.script(
torchlstm.LSTMCell(...))`` compile.

torch.jit.script calls a module's ``__prepare_scriptable__()`` and scripts what it returns
(for a submodule too: it then replaces the submodule in its parent). LSTM and LSTMCell
return a ScriptLSTM / ScriptLSTMCell built here from them: the SAME Parameter objects
under the same names (the scripted state_dict is nn.LSTM's), the activations as kernel
ids, and a forward TorchScript compiles, nn.LSTM's contract, that calls the layer ops
(torch.ops.torchlstm.layer_forward / layer_inference) per layer and direction, as the
eager modules do. Autograd works in the scripted module because the ops' autograd is
registered with the dispatcher (_ops.py); a module loaded with torch.jit.load needs
``import torchlstm`` first (the ops and their autograd are registered on import).

The options TorchScript cannot express are refused at script time with an error naming
them: a Python callable activation, the Keras return contract (return_sequences,
return_state), go_backwards, stateful, and Keras dropout or zoneout in use. The scripted
forward takes a Tensor (a PackedSequence is TorchScript's own type error) and no mask.
Not done in the scripted forward: autocast (the eager module casts under CUDA autocast).

Like scripted nn.LSTM, the forward reads the weights from a list holding the parameter
tensors (``_flat_weights``): in-place updates (optimizers, load_state_dict, .to(),
.double()) reach it; a parameter REPLACED on the scripted module does not.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _ops  # noqa: F401  (loads the library: torch.ops.torchlstm.*)


def _refuse(module: nn.Module, option: str, value, why: str) -> None:
    raise RuntimeError(
        f"torch.jit.script({type(module).__name__}): {option}={value!r} cannot be scripted "
        f"({why}); build the module without it to script it")


def _check_cell_options(module: nn.Module) -> None:
    o = module.options
    for name in ("activation", "recurrent_activation"):
        if callable(getattr(o, name + "_id")):
            _refuse(module, name, getattr(o, name), "a Python callable runs the unfused "
                    "Python path, which TorchScript cannot compile; use a fused activation "
                    "name from torchlstm.activations")
    for name in ("input_dropout", "recurrent_dropout", "zoneout"):
        if getattr(o, name) != 0:
            _refuse(module, name, getattr(o, name), "Keras dropout and zoneout are not "
                    "supported in TorchScript")


def scriptable_lstm(module: nn.Module) -> "ScriptLSTM":
    """The TorchScript-compatible twin of a torchlstm.LSTM (sharing its parameters)."""
    _check_cell_options(module)
    k = module.keras
    if k.return_sequences is not None:
        _refuse(module, "return_sequences", k.return_sequences, "the scripted module "
                "returns nn.LSTM's (output, (h_n, c_n))")
    if k.return_state is not None:
        _refuse(module, "return_state", k.return_state, "the scripted module returns "
                "nn.LSTM's (output, (h_n, c_n))")
    if k.go_backwards:
        _refuse(module, "go_backwards", True, "not supported in TorchScript")
    if k.stateful:
        _refuse(module, "stateful", True, "a state carried between calls is not supported "
                "in TorchScript")
    return ScriptLSTM(module)


def scriptable_cell(module: nn.Module) -> "ScriptLSTMCell":
    """The TorchScript-compatible twin of a torchlstm.LSTMCell (sharing its parameters)."""
    _check_cell_options(module)
    return ScriptLSTMCell(module)


class ScriptLSTM(nn.Module):
    """torchlstm.LSTM's nn.LSTM contract, in TorchScript (see the module docstring)."""

    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        self.mode = "LSTM"
        self.input_size: int = lstm.input_size
        self.hidden_size: int = lstm.hidden_size
        self.num_layers: int = lstm.num_layers
        self.bias: bool = lstm.bias
        self.batch_first: bool = lstm.batch_first
        self.dropout: float = float(lstm.dropout)
        self.bidirectional: bool = bool(lstm.bidirectional)
        self.proj_size: int = lstm.proj_size
        self.num_directions: int = 2 if lstm.bidirectional else 1
        self.activation_id: int = int(lstm.options.activation_id)
        self.recurrent_activation_id: int = int(lstm.options.recurrent_activation_id)
        self._repr = lstm.extra_repr()
        # The same Parameter objects, registered in the same order under the same names.
        for name in lstm._flat_weights_names:
            setattr(self, name, getattr(lstm, name))
        self._flat_weights_names: List[str] = list(lstm._flat_weights_names)
        self._flat_weights: List[Tensor] = [getattr(self, n) for n in self._flat_weights_names]
        # per (layer, direction) k: where each of its weights sits in _flat_weights (-1:
        # absent), in the order of LayerWeights: w_ih, w_hh, b_ih, b_hh, w_hr, w_ch, ln_ih,
        # ln_hh, ln_c, ln_bc
        self._index: List[List[int]] = [
            [self._flat_weights_names.index(n) if n is not None else -1 for n in names]
            for names in lstm._weight_names]
        self.layer_norm_eps: float = float(lstm.options.layer_norm_eps)

    def extra_repr(self) -> str:
        return self._repr

    def flatten_parameters(self) -> None:
        """No-op, as torchlstm.LSTM's."""

    def _weight(self, k: int, role: int) -> Optional[Tensor]:
        i = self._index[k][role]
        if i < 0:
            return None
        return self._flat_weights[i]

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError("LSTM: Expected input to be 2D or 3D, got {}D instead".format(
                input.dim()))
        if input.dtype != self._flat_weights[0].dtype:
            raise ValueError("RNN input dtype does not match weight dtype: convert the input "
                             "or the model")
        if input.size(-1) != self.input_size:
            raise RuntimeError("input.size(-1) must be equal to input_size. Expected {}, got "
                               "{}".format(self.input_size, input.size(-1)))
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
        x = input.transpose(0, 1) if self.batch_first else input
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        D = self.num_directions
        B = x.size(1)
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        if hx is None:
            h0 = x.new_zeros(self.num_layers * D, B, real_hidden)
            c0 = x.new_zeros(self.num_layers * D, B, self.hidden_size)
        else:
            h0, c0 = hx
            if batched:
                if h0.dim() != 3 or c0.dim() != 3:
                    raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D "
                                       "but got ({}-D, {}-D) tensors".format(h0.dim(), c0.dim()))
            else:
                if h0.dim() != 2 or c0.dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D "
                                       "but got ({}-D, {}-D) tensors".format(h0.dim(), c0.dim()))
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            h_shape = [self.num_layers * D, B, real_hidden]
            c_shape = [self.num_layers * D, B, self.hidden_size]
            if list(h0.size()) != h_shape:
                raise RuntimeError("Expected hidden[0] size {}, got {}".format(
                    h_shape, h0.size()))
            if list(c0.size()) != c_shape:
                raise RuntimeError("Expected hidden[1] size {}, got {}".format(
                    c_shape, c0.size()))
            if h0.dtype != x.dtype or c0.dtype != x.dtype:
                raise RuntimeError("hx must have the dtype of input")
        # Without autograd the inference op runs: it saves nothing for backward.
        need_grad = x.requires_grad or h0.requires_grad or c0.requires_grad
        for w in self._flat_weights:
            need_grad = need_grad or w.requires_grad
        need_grad = need_grad and torch.is_grad_enabled()
        h_n: List[Tensor] = []
        c_n: List[Tensor] = []
        for layer in range(self.num_layers):
            outs: List[Tensor] = []
            for d in range(D):
                k = layer * D + d
                w_ih = self._flat_weights[self._index[k][0]]
                w_hh = self._flat_weights[self._index[k][1]]
                b_ih, b_hh, w_hr = self._weight(k, 2), self._weight(k, 3), self._weight(k, 4)
                w_ch = self._weight(k, 5)
                ln_ih, ln_hh = self._weight(k, 6), self._weight(k, 7)
                ln_c, ln_bc = self._weight(k, 8), self._weight(k, 9)
                if need_grad:
                    out, h, c, _, _ = torch.ops.torchlstm.layer_forward(
                        x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr, None, d == 1,
                        self.activation_id, self.recurrent_activation_id, None, None, None,
                        None, w_ch, ln_ih, ln_hh, ln_c, ln_bc, self.layer_norm_eps)
                else:
                    out, h, c = torch.ops.torchlstm.layer_inference(
                        x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr, None, d == 1,
                        self.activation_id, self.recurrent_activation_id, None, None, None,
                        None, w_ch, ln_ih, ln_hh, ln_c, ln_bc, self.layer_norm_eps)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if D == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        if len(h_n) == 1:
            hn, cn = h_n[0].unsqueeze(0), c_n[0].unsqueeze(0)
        else:
            hn, cn = torch.stack(h_n), torch.stack(c_n)
        output = x.transpose(0, 1) if self.batch_first else x
        if not batched:
            output = output.squeeze(batch_dim)
            hn, cn = hn.squeeze(1), cn.squeeze(1)
        return output, (hn, cn)


class ScriptLSTMCell(nn.Module):
    """torchlstm.LSTMCell's nn.LSTMCell contract, in TorchScript: one step of the layer op."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.input_size: int = cell.input_size
        self.hidden_size: int = cell.hidden_size
        self.bias: bool = cell.bias
        self.activation_id: int = int(cell.options.activation_id)
        self.recurrent_activation_id: int = int(cell.options.recurrent_activation_id)
        self._repr = cell.extra_repr()
        # The same Parameter objects (None biases registered as None, as nn.LSTMCell's).
        self.weight_ih = cell.weight_ih
        self.weight_hh = cell.weight_hh
        if cell.bias:
            self.bias_ih = cell.bias_ih
            self.bias_hh = cell.bias_hh
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if cell.options.peephole:
            self.weight_ch = cell.weight_ch
        else:
            self.register_parameter("weight_ch", None)
        for name in ("ln_weight_ih", "ln_weight_hh", "ln_weight_c", "ln_bias_c"):
            if cell.options.layer_norm:
                setattr(self, name, getattr(cell, name))
            else:
                self.register_parameter(name, None)
        self.layer_norm_eps: float = float(cell.options.layer_norm_eps)

    def extra_repr(self) -> str:
        return self._repr

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        if input.dim() != 1 and input.dim() != 2:
            raise ValueError("LSTMCell: Expected input to be 1D or 2D, got {}D instead".format(
                input.dim()))
        if hx is not None:
            for idx, value in enumerate([hx[0], hx[1]]):
                if value.dim() != input.dim():
                    raise ValueError("LSTMCell: Expected hx[{}] to be {}D like input, got {}D "
                                     "instead".format(idx, input.dim(), value.dim()))
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if input.dtype != self.weight_ih.dtype:
            raise ValueError("LSTMCell input dtype does not match weight dtype")
        if input.size(-1) != self.input_size:
            raise RuntimeError("input has inconsistent input_size: got {} expected {}".format(
                input.size(-1), self.input_size))
        B = input.size(0)
        if hx is None:
            h0 = input.new_zeros(B, self.hidden_size)
            c0 = input.new_zeros(B, self.hidden_size)
        else:
            h0, c0 = hx
            if not batched:
                h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
            for index, t in enumerate([h0, c0]):
                if t.size(0) != B:
                    raise RuntimeError("Input batch size {} doesn't match hidden{} batch size "
                                       "{}".format(B, index, t.size(0)))
                if t.size(1) != self.hidden_size:
                    raise RuntimeError("hidden{} has inconsistent hidden_size: got {}, "
                                       "expected {}".format(index, t.size(1), self.hidden_size))
                if t.dtype != input.dtype:
                    raise RuntimeError("hx[{}] must have the dtype of input".format(index))
        if self.hidden_size == 0:  # nn.LSTMCell's empty state
            h, c = h0 + 0, c0 + 0
        else:
            b_ih = self.bias_ih
            b_hh = self.bias_hh
            need_grad = (input.requires_grad or h0.requires_grad or c0.requires_grad
                         or self.weight_ih.requires_grad or self.weight_hh.requires_grad)
            if b_ih is not None:
                need_grad = need_grad or b_ih.requires_grad
            if b_hh is not None:
                need_grad = need_grad or b_hh.requires_grad
            w_ch = self.weight_ch
            if w_ch is not None:
                need_grad = need_grad or w_ch.requires_grad
            ln_ih, ln_hh = self.ln_weight_ih, self.ln_weight_hh
            ln_c, ln_bc = self.ln_weight_c, self.ln_bias_c
            if ln_ih is not None:
                need_grad = need_grad or ln_ih.requires_grad
            need_grad = need_grad and torch.is_grad_enabled()
            if need_grad:
                _, h, c, _, _ = torch.ops.torchlstm.layer_forward(
                    input.unsqueeze(0), h0, c0, self.weight_ih, self.weight_hh, b_ih, b_hh,
                    None, None, False, self.activation_id,
                    self.recurrent_activation_id, None, None, None, None, w_ch, ln_ih, ln_hh,
                    ln_c, ln_bc, self.layer_norm_eps)
            else:
                _, h, c = torch.ops.torchlstm.layer_inference(
                    input.unsqueeze(0), h0, c0, self.weight_ih, self.weight_hh, b_ih, b_hh,
                    None, None, False, self.activation_id,
                    self.recurrent_activation_id, None, None, None, None, w_ch, ln_ih, ln_hh,
                    ln_c, ln_bc, self.layer_norm_eps)
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
