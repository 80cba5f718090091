"""The activation registry: names (and a few torch callables) -> the ids fused in the
kernels.

The table of fused activations comes from the C++ header csrc/gate_math.h (exported by
torchlstm._C.activation_table()), so Python and the kernels cannot disagree. Names follow
Keras 3 (``keras.activations``): lookup is exact, ``None`` means ``"linear"``, and an
unknown name is a ValueError listing the valid ones.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

from . import _C

ActivationLike = Union[str, Callable, None]

#: name -> kernel id, straight from the C++ table: every element-wise Keras 3 activation.
FUSED: dict[str, int] = dict(_C.activation_table())

#: Keras' other spellings of a fused activation
ALIASES: dict[str, str] = {"swish": "silu", "hard_swish": "hard_silu"}

#: Keras activations that are not element-wise: a gate cannot use them
NOT_ELEMENTWISE = ("softmax", "log_softmax", "glu", "sparsemax", "threshold")

# torch callables that are exactly a fused activation; passing one picks the fused kernel.
_CALLABLES: dict[Callable, str] = {
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.relu: "relu",
    F.relu: "relu",
    F.relu6: "relu6",
    F.elu: "elu",
    F.selu: "selu",
    torch.selu: "selu",
    F.silu: "silu",
    F.softplus: "softplus",
    F.softsign: "softsign",
    torch.exp: "exponential",
    F.mish: "mish",
    F.logsigmoid: "log_sigmoid",
    F.hardtanh: "hard_tanh",
    F.tanhshrink: "tanh_shrink",
}

_ID_TO_NAME = {v: k for k, v in FUSED.items()}


def names() -> list[str]:
    """Every name accepted as ``activation`` / ``recurrent_activation``."""
    return sorted(list(FUSED) + list(ALIASES))


def resolve(activation: ActivationLike, argument: str = "activation") -> int:
    """The kernel id of ``activation`` (a name, None, or a known torch callable)."""
    if activation is None:
        return FUSED["linear"]
    if isinstance(activation, str):
        name = ALIASES.get(activation, activation)
        if name in FUSED:
            return FUSED[name]
        if name in NOT_ELEMENTWISE:
            raise ValueError(
                f"{argument}={activation!r} is not element-wise (it mixes units), so it "
                f"cannot drive an LSTM gate; element-wise names: {', '.join(names())}")
        raise ValueError(
            f"Unknown {argument} {activation!r}; valid names are: {', '.join(names())}"
        )
    if callable(activation):
        try:
            name = _CALLABLES.get(activation)
        except TypeError:  # unhashable callable
            name = None
        if name is not None:
            return FUSED[name]
        raise TypeError(
            f"{argument}={activation!r} is not a fused activation: pass one of the names "
            f"{', '.join(names())} (modules also take other callables, unfused)")
    raise TypeError(
        f"{argument} must be a name (str), a callable or None, got {type(activation).__name__}"
    )


def resolve_or_callable(activation: ActivationLike, argument: str = "activation"):
    """The kernel id of a fused activation, or the callable itself for any other callable
    (which the modules run on the unfused path)."""
    try:
        return resolve(activation, argument)
    except TypeError:
        if callable(activation) and not isinstance(activation, str):
            return activation
        raise


def as_function(activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """A kernel id or a callable (as CellOptions holds them) as a torch function."""
    return activation if callable(activation) else reference(name_of(activation))


def name_of(activation_id: int) -> str:
    """The canonical name of a kernel id."""
    return _ID_TO_NAME[activation_id]


_REFERENCE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": lambda x: F.relu6(x + 3.0) / 6.0,
    "relu": torch.relu,
    "linear": lambda x: x,
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "celu": F.celu,
    "gelu": F.gelu,
    "silu": F.silu,
    "hard_silu": lambda x: x * (F.relu6(x + 3.0) / 6.0),
    "softplus": F.softplus,
    "softsign": F.softsign,
    "exponential": torch.exp,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "mish": F.mish,
    "log_sigmoid": F.logsigmoid,
    "hard_tanh": F.hardtanh,
    "sparse_plus": lambda x: torch.where(x <= -1, torch.zeros_like(x),
                                         torch.where(x >= 1, x, 0.25 * (x + 1) ** 2)),
    "sparse_sigmoid": lambda x: torch.clamp(0.5 * (x + 1), 0.0, 1.0),
    "squareplus": lambda x: 0.5 * (x + torch.sqrt(x * x + 4.0)),
    "tanh_shrink": F.tanhshrink,
    "soft_shrink": lambda x: F.softshrink(x, 0.5),
    "hard_shrink": lambda x: F.hardshrink(x, 0.5),
}


def reference(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain-torch version of a fused activation (Keras 3's definition and defaults),
    for tests and the benchmark's eager loop."""
    return _REFERENCE[ALIASES.get(name, name)]
