"""The one table of hf-acts activations: name -> class."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from torch import nn

from .activations import AIEC, ADReLU, DynActGLU, DynActivation, DyReLU, FleS, SwishBeta

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "adrelu": ADReLU,
    "fles": FleS,
    "dynactivation": DynActivation,
    "dynactglu": DynActGLU,
    "swish_beta": SwishBeta,
    "dyrelu": DyReLU,
    "aiec": AIEC,
}
ALIASES = {"dynact": "dynactivation"}


def canonical_name(name: str) -> str:
    """The registry name for ``name`` (resolves aliases); ``ValueError`` if unknown."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(list_activations())}")
    return key


def list_activations() -> list[str]:
    """Registered activation names (aliases not included)."""
    return sorted(ACTIVATIONS)


def get_activation(name: str | type[nn.Module]) -> type[nn.Module]:
    """The class registered as ``name`` (classes pass through, like timm's ``get_act_layer``)."""
    if isinstance(name, type):
        return name
    return ACTIVATIONS[canonical_name(name)]


def activation_name(cls: type[nn.Module]) -> str | None:
    """The registry name of an activation class, or None."""
    return next((k for k, v in ACTIVATIONS.items() if v is cls), None)


def create_activation(name: str | type[nn.Module], channels: int | None = None, **kwargs) -> nn.Module:
    """Build activation ``name``; ``channels`` is passed to classes that take it (``hidden_size`` for
    ``dynactglu``) and dropped for channel-free ones, so callers need not know which is which."""
    cls = get_activation(name)
    params = inspect.signature(cls).parameters
    if channels is not None:
        if "channels" in params:
            kwargs.setdefault("channels", channels)
        elif "hidden_size" in params:
            kwargs.setdefault("hidden_size", channels)
    return cls(**kwargs)


def is_activation(module: nn.Module) -> bool:
    """True for hf-acts activation modules (not the DynActGLU block, whose projections are MLP weights)."""
    return isinstance(module, tuple(ACTIVATIONS.values())) and not isinstance(module, DynActGLU)


def named_activations(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(prefix, module)`` for every hf-acts activation of ``model``; ``prefix`` ends with ``.`` (or is empty)."""
    for name, module in model.named_modules():
        if is_activation(module):
            yield (f"{name}." if name else ""), module
