"""What a module is, beyond its weights: one validated, immutable description of the cell
(activations, Keras dropout, zoneout, seed, initialisation) and of the Keras sequence
contract, made by the constructors and read by the layer stack and by RNN(cell).

A new option of the cell is a field of CellOptions, checked in ``CellOptions.make``; the
layer stack passes it on to the op bindings (``_ops.py``).
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Callable, Optional, Union

import torch

from . import activations

INITS = ("torch", "keras")

# torch.Generator.manual_seed takes [-2^63, 2^64)
_SEED_MIN, _SEED_END = -(1 << 63), 1 << 64


def _rate(name: str, value) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not 0 <= value < 1):
        raise ValueError(f"{name} should be a number in range [0, 1) representing the "
                         f"probability of an element being {'kept' if 'zoneout' in name else 'zeroed'}"
                         f", got {value!r}")
    return float(value)


def check_bool(**flags) -> None:
    """Boolean Keras options, with nn.LSTM's message for a non-bool."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class CellOptions:
    """The cell of an LSTM, LSTMCell or RNN(cell): everything but sizes and weights."""
    activation: activations.ActivationLike = "tanh"  # as the user gave them
    recurrent_activation: activations.ActivationLike = "sigmoid"
    activation_id: Union[int, Callable] = 0  # kernel ids, or callables (the unfused path)
    recurrent_activation_id: Union[int, Callable] = 0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: Union[float, tuple] = 0.0  # as given: a rate or (h_rate, c_rate)
    zoneout_h: float = 0.0
    zoneout_c: float = 0.0
    seed: Optional[int] = None
    init: str = "torch"
    unit_forget_bias: bool = False
    peephole: bool = False  # peephole connections (a weight_ch parameter per layer)
    layer_norm: bool = False  # layer-normalised LSTM (ln_* parameters per layer)
    layer_norm_eps: float = 1e-5

    @classmethod
    def make(cls, owner: str, activation="tanh", recurrent_activation="sigmoid",
             input_dropout=0.0, recurrent_dropout=0.0, zoneout=0.0, seed=None,
             init="torch", unit_forget_bias=False, peephole=False, layer_norm=False,
             layer_norm_eps=1e-5) -> "CellOptions":
        """Checks every option (a clear error naming it) and resolves the activations.
        ``owner`` names the module in the warning for a callable activation."""
        act_id = activations.resolve_or_callable(activation, "activation")
        ract_id = activations.resolve_or_callable(recurrent_activation, "recurrent_activation")
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise ValueError("zoneout should be a rate or a pair (h_rate, c_rate), got "
                                 f"{len(zoneout)} values")
            zh = _rate("zoneout[0] (the h rate)", zoneout[0])
            zc = _rate("zoneout[1] (the c rate)", zoneout[1])
            zoneout = (zh, zc)
        else:
            zh = zc = zoneout = _rate("zoneout", zoneout)
        if seed is not None:
            if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
                raise TypeError(f"seed should be None or an int, got: {type(seed).__name__}")
            if not _SEED_MIN <= int(seed) < _SEED_END:
                raise ValueError(f"seed should be an int in [-2**63, 2**64) (what "
                                 f"torch.Generator.manual_seed takes), got {seed}")
            seed = int(seed)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        check_bool(unit_forget_bias=unit_forget_bias, peephole=peephole, layer_norm=layer_norm)
        if (not isinstance(layer_norm_eps, numbers.Real) or isinstance(layer_norm_eps, bool)
                or not 0 < layer_norm_eps < float("inf")):
            raise ValueError(f"layer_norm_eps should be a positive finite number, got "
                             f"{layer_norm_eps!r}")
        options = cls(activation, recurrent_activation, act_id, ract_id,
                      _rate("input_dropout", input_dropout),
                      _rate("recurrent_dropout", recurrent_dropout), zoneout, zh, zc, seed, init,
                      unit_forget_bias, peephole, layer_norm, float(layer_norm_eps))
        unfused = [n for n, v in (("activation", act_id), ("recurrent_activation", ract_id))
                   if callable(v)]
        if unfused:
            warnings.warn(
                f"torchlstm: {' and '.join(unfused)} is a Python callable, not one of the fused "
                f"activations ({', '.join(activations.names())}): this {owner} runs an unfused "
                "per-step PyTorch path — correct, with autograd, but much slower. Pass a "
                "registered name for the fused kernels.", UserWarning, stacklevel=4)
        return options

    @property
    def fused(self) -> bool:
        """Whether the fused kernels run this cell (else the unfused reference path)."""
        return not (callable(self.activation_id) or callable(self.recurrent_activation_id))

    def regularized(self, training: bool) -> bool:
        """Whether a forward call in this mode passes regularisers to the op."""
        return (self.zoneout_h > 0 or self.zoneout_c > 0
                or (training and (self.input_dropout > 0 or self.recurrent_dropout > 0)))

    def draws(self, training: bool) -> bool:
        """Whether a forward call in this mode draws random numbers (training only)."""
        return training and any(r > 0 for r in (self.input_dropout, self.recurrent_dropout,
                                                self.zoneout_h, self.zoneout_c))

    def repr_activations(self) -> str:
        """The activations away from their defaults, for extra_repr."""
        s = ""
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        if self.recurrent_activation != "sigmoid":
            s += f", recurrent_activation={self.recurrent_activation!r}"
        return s

    def repr_rest(self) -> str:
        """The other options away from their defaults, for extra_repr."""
        s = ""
        if self.init != "torch":
            s += f", init={self.init!r}"
        if self.unit_forget_bias:
            s += ", unit_forget_bias=True"
        if self.peephole:
            s += ", peephole=True"
        if self.layer_norm:
            s += ", layer_norm=True"
        if self.layer_norm_eps != 1e-5:
            s += f", layer_norm_eps={self.layer_norm_eps}"
        for name in ("input_dropout", "recurrent_dropout", "zoneout"):
            if getattr(self, name) != 0:
                s += f", {name}={getattr(self, name)}"
        if self.seed is not None:
            s += f", seed={self.seed}"
        return s


class CellOptionAttributes:
    """A module's CellOptions (``self.options``) as read-only attributes of the module
    (build a new module to change them)."""
    activation = property(lambda self: self.options.activation)
    recurrent_activation = property(lambda self: self.options.recurrent_activation)
    input_dropout = property(lambda self: self.options.input_dropout)
    recurrent_dropout = property(lambda self: self.options.recurrent_dropout)
    zoneout = property(lambda self: self.options.zoneout)
    seed = property(lambda self: self.options.seed)
    init = property(lambda self: self.options.init)
    unit_forget_bias = property(lambda self: self.options.unit_forget_bias)
    peephole = property(lambda self: self.options.peephole)
    layer_norm = property(lambda self: self.options.layer_norm)
    layer_norm_eps = property(lambda self: self.options.layer_norm_eps)


class KerasOptionAttributes:
    """A module's KerasOptions (``self.keras``) as read-only attributes of the module."""
    return_sequences = property(lambda self: self.keras.return_sequences)
    return_state = property(lambda self: self.keras.return_state)
    go_backwards = property(lambda self: self.keras.go_backwards)
    zero_output_for_mask = property(lambda self: self.keras.zero_output_for_mask)
    stateful = property(lambda self: self.keras.stateful)


@dataclasses.dataclass(frozen=True)
class KerasOptions:
    """The Keras sequence contract of an LSTM or RNN: leaving return_sequences and
    return_state None (LSTM only) keeps nn.LSTM's return value."""
    return_sequences: Optional[bool] = None
    return_state: Optional[bool] = None
    go_backwards: bool = False
    zero_output_for_mask: bool = False
    stateful: bool = False

    @classmethod
    def make(cls, return_sequences=None, return_state=None, go_backwards=False,
             zero_output_for_mask=False, stateful=False) -> "KerasOptions":
        for name, value in (("return_sequences", return_sequences),
                            ("return_state", return_state)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} should be None or a bool, got: {type(value).__name__}")
        check_bool(go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask,
                   stateful=stateful)
        return cls(return_sequences, return_state, go_backwards, zero_output_for_mask, stateful)

    @property
    def keras_result(self) -> bool:
        """Whether the module returns the Keras contract (else nn.LSTM's)."""
        return self.return_sequences is not None or self.return_state is not None

    def repr(self) -> str:
        s = ""
        for name in ("go_backwards", "zero_output_for_mask", "stateful"):
            if getattr(self, name):
                s += f", {name}=True"
        return s


class SeededGenerator:
    """A module's own torch.Generator for its dropout and zoneout masks: None without a
    seed (the global RNG), else made from the seed when first needed on a device, and made
    again, from the seed, when the inputs move to another device. (Dynamo cannot trace a
    torch.Generator: with a seed, torch.compile(fullgraph=True) works in eval mode only.)"""

    def __init__(self, seed: Optional[int]):
        self.seed = seed
        self.generator: Optional[torch.Generator] = None

    def get(self, device: torch.device, drawing: bool) -> Optional[torch.Generator]:
        """The generator for a call on ``device`` (None when the call draws nothing)."""
        if self.seed is None or not drawing:
            return None
        g = self.generator
        if g is None or g.device != device:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self.generator = g
        return g


def check_rnn_args(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                   proj_size) -> None:
    """torch.nn.RNNBase's constructor checks, in its order, with its messages (and nothing
    it accepts refused: bidirectional takes any truthy value, as there)."""
    if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
            or not 0 <= dropout <= 1):
        raise ValueError("dropout should be a number in range [0, 1] representing the "
                         "probability of an element being zeroed")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                      "non-zero dropout expects num_layers greater than 1, but got "
                      f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
    check_bool(bias=bias, batch_first=batch_first)
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("proj_size", proj_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


def check_cell_sizes(input_size, hidden_size) -> None:
    """torch.nn.LSTMCell's sizes: ints (what torch.empty takes), not negative (nn accepts 0)."""
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
