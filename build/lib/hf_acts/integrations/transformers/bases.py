"""Base (fixed) activations the trainable methods wrap, by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.01)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


BASE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "leaky_relu": _leaky_relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "mish": F.mish,
}


def get_base(name: str, allowed: tuple[str, ...] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The base activation function called ``name``; ``ValueError`` if unknown or not allowed."""
    allowed = allowed or tuple(BASE_ACTIVATIONS)
    if name not in allowed:
        raise ValueError(f"base must be one of {allowed}, got {name!r}")
    return BASE_ACTIVATIONS[name]
