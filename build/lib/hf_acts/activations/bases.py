"""Base (fixed) activations the trainable methods wrap, by name."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F


def apply_base(x: torch.Tensor, name: str) -> torch.Tensor:
    """The base activation ``name`` applied to ``x``, written so that TorchScript compiles it (the modules'
    scripted path); :data:`BASE_ACTIVATIONS` holds the same functions by name."""
    if name == "relu":
        return F.relu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "mish":
        return F.mish(x)
    raise ValueError("unknown base activation " + name)


BASE_NAMES = ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")
BASE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    name: functools.partial(apply_base, name=name) for name in BASE_NAMES
}


def get_base(name: str, allowed: tuple[str, ...] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The base activation function called ``name``; ``ValueError`` if unknown or not allowed."""
    allowed = allowed or tuple(BASE_ACTIVATIONS)
    if name not in allowed:
        raise ValueError(f"base must be one of {allowed}, got {name!r}")
    return BASE_ACTIVATIONS[name]
