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

#: name -> kernel id, straight from the C++ table.
FUSED: dict[str, int] = dict(_C.activation_table())

# torch callables that are exactly a fused activation; passing one picks the fused kernel.
_CALLABLES: dict[Callable, str] = {
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.relu: "relu",
    F.relu: "relu",
}

_ID_TO_NAME = {v: k for k, v in FUSED.items()}


def names() -> list[str]:
    """Every name accepted as ``activation`` / ``recurrent_activation``."""
    return sorted(FUSED)


def resolve(activation: ActivationLike, argument: str = "activation") -> int:
    """The kernel id of ``activation`` (a name, None, or a known torch callable)."""
    if activation is None:
        return FUSED["linear"]
    if isinstance(activation, str):
        if activation in FUSED:
            return FUSED[activation]
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
            f"{argument}={activation!r}: only the fused activations can be used: pass one "
            f"of the names {', '.join(names())} (or torch.tanh / torch.sigmoid / torch.relu)"
        )
    raise TypeError(
        f"{argument} must be a name (str), a callable or None, got {type(activation).__name__}"
    )


def configure(module, activation: ActivationLike, recurrent_activation: ActivationLike) -> None:
    """Sets a module's activation options: what the user gave (``activation``,
    ``recurrent_activation``) and the resolved kernel ids the ops take."""
    module.activation = activation
    module.recurrent_activation = recurrent_activation
    module._activation_id = resolve(activation, "activation")
    module._recurrent_activation_id = resolve(recurrent_activation, "recurrent_activation")


def name_of(activation_id: int) -> str:
    """The canonical name of a kernel id."""
    return _ID_TO_NAME[activation_id]


def reference(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain-torch version of a fused activation, for tests and the unfused paths."""
    table = {
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "hard_sigmoid": lambda x: F.relu6(x + 3.0) / 6.0,
        "relu": torch.relu,
        "linear": lambda x: x,
    }
    return table[name]
