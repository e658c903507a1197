"""Shared plumbing for activation modules: layouts and lazy channel inference.

Every hf-acts activation accepts three layouts:

* images ``(B, C, H, W)`` -- channels on dim 1;
* tokens ``(B, N, C)`` -- channels last, as in timm ViT/Swin MLPs and transformers MLPs;
* vectors ``(B, C)``.

Channels-last maps ``(B, H, W, C)`` (the Linear MLPs of ConvNeXt blocks) go through :class:`ChannelsLast`.

timm builders call ``act_layer(inplace=True)`` without a channel count, so modules that own
per-channel parameters may be built with ``channels=None`` and create them at their first call
(like ``torch.nn.LazyLinear``: run one forward before building the optimizer or compiling).
A state dict loaded into an unbuilt module builds it from the stored shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_building = False  # set by build_lazy: materialising in a distributed run is fine there (before any wrapping)

LAYOUTS = {4: "images (B, C, H, W)", 3: "tokens (B, N, C)", 2: "vectors (B, C)"}


def check_layout(x: torch.Tensor, name: str) -> None:
    """Raise a ValueError unless ``x`` is one of the three supported layouts."""
    if x.ndim not in LAYOUTS:
        raise ValueError(
            f"{name} expects images (B, C, H, W), tokens (B, N, C) or vectors (B, C); "
            f"got a tensor of rank {x.ndim} with shape {tuple(x.shape)}"
        )


def channel_dim(x: torch.Tensor) -> int:
    """The channel axis of a supported layout: 1 for images and vectors, -1 for tokens."""
    return -1 if x.ndim == 3 else 1


def num_channels(x: torch.Tensor) -> int:
    return x.shape[channel_dim(x)]


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """View any supported layout as a 4-D ``(B, C, H, W)`` map (tokens -> ``(B, C, 1, N)``)."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.transpose(1, 2).unsqueeze(2)
    return x[:, :, None, None]


def from_nchw(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_nchw` for a tensor with the layout of ``like``."""
    if like.ndim == 4:
        return y
    if like.ndim == 3:
        return y.squeeze(2).transpose(1, 2)
    return y[:, :, 0, 0]


def check_divisible(channels: int, divisor: int, what: str, arg: str) -> None:
    if channels % divisor:
        raise ValueError(f"channels={channels} must be divisible by {arg}={divisor} ({what})")


class LazyChannels(nn.Module):
    """Base for activations with per-channel state: builds it from ``channels`` or the first input.

    Subclasses implement ``_build(channels)`` (check arguments, create parameters and buffers) and
    set ``_channel_key = (name, dim, multiple)``: the parameter whose ``shape[dim]`` is
    ``multiple * channels``, so that loading a state dict into an unbuilt module builds it first.
    """

    _channel_key: tuple[str, int, int] = ("", 0, 1)
    _per_tensor_keys: tuple[str, ...] = ()  # coefficients stored as shape (1,); older checkpoints hold them 0-d

    def __init__(self, channels: int | None) -> None:
        super().__init__()
        self.channels: int | None = None
        if channels is not None:
            self._build_checked(int(channels))

    def _needs_channels(self) -> bool:
        """Whether this instance has per-channel state (False for e.g. scalar-alpha dynActivation)."""
        return True

    def _build(self, channels: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_checked(self, channels: int) -> None:
        self._build(channels)
        self.channels = channels

    def _materialize(self, x: torch.Tensor) -> None:
        """Build per-channel parameters for ``x`` on its device (float32 under autocast). In a multi-process run only
        inside :func:`build_lazy`: parameters created after DDP / FSDP / ZeRO wrapped the model would be neither
        synchronised nor sharded."""
        if not _building and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise RuntimeError(
                f"{type(self).__name__} was built without a channel count and is sized at its first call, which in a "
                "multi-process run may come after DDP / FSDP / DeepSpeed wrapped the model (its parameters would "
                "then be neither synchronised nor sharded). Build it before wrapping: "
                "hf_acts.build_lazy(model, example_batch), or pass channels=...")
        dtype = x.dtype
        autocast = x.device.type != "meta" and torch.is_autocast_enabled(x.device.type)  # meta: no autocast
        if autocast or not dtype.is_floating_point:
            dtype = torch.float32
        self._build_checked(num_channels(x))
        self.to(device=x.device, dtype=dtype)

    def _check_input(self, x: torch.Tensor) -> None:
        check_layout(x, type(self).__name__)
        if self.channels is None:
            self._materialize(x)
        elif num_channels(x) != self.channels:
            raise ValueError(
                f"{type(self).__name__} was built for channels={self.channels}, got "
                f"{num_channels(x)} channels in {LAYOUTS[x.ndim]} input {tuple(x.shape)}"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        for name in self._per_tensor_keys:  # 0-d coefficients of checkpoints written before 0.2 -> (1,)
            if prefix + name in state_dict and state_dict[prefix + name].ndim == 0:
                state_dict[prefix + name] = state_dict[prefix + name].reshape(1)
        key, dim, multiple = self._channel_key
        if self.channels is None and self._needs_channels() and prefix + key in state_dict:
            self._build_checked(state_dict[prefix + key].shape[dim] // multiple)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def unbuilt_activations(model: nn.Module) -> list[LazyChannels]:
    """The activations of ``model`` still waiting for their first call to learn their channel count."""
    return [m for m in model.modules() if isinstance(m, LazyChannels) and m.channels is None and m._needs_channels()]


def probe(model: nn.Module, inputs: Any) -> None:
    """One forward pass of ``model`` on ``inputs`` (a tensor, tuple or dict of model inputs) in eval mode and without
    gradients. Every module's own training flag is restored afterwards, not only the model's: a model training with
    frozen (eval-mode) BatchNorm layers keeps them frozen. Modules built during the pass (lazily sized activations'
    layers) take their parent's flag."""
    modes = {m: m.training for m in model.modules()}

    def restore(module: nn.Module, parent_training: bool) -> None:
        module.training = modes.get(module, parent_training)
        for child in module.children():
            restore(child, module.training)

    try:
        with torch.no_grad():
            model.eval()
            if isinstance(inputs, Mapping):
                model(**inputs)
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        restore(model, model.training)


def build_lazy(model: nn.Module, inputs: Any) -> int:
    """Size every activation of ``model`` that was built without its channel count with one :func:`probe` pass on
    ``inputs``. Call it before ``accelerator.prepare`` / DDP / FSDP / DeepSpeed. Returns how many were built."""
    global _building
    unbuilt = unbuilt_activations(model)
    if unbuilt:
        _building = True
        try:
            probe(model, inputs)
        finally:
            _building = False
    return sum(m.channels is not None for m in unbuilt)


class ChannelsLast(nn.Module):
    """Runs ``act`` on a channels-last map ``(B, H, W, C)`` as the ``(B, C, H, W)`` view it expects and returns a
    channels-last map: for activations between the Linear layers of ConvNeXt-style blocks (transformers' ConvNeXt,
    timm's with ``conv_mlp=False``), where a 4-D input's dim 1 is a spatial axis."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ChannelsLast expects a (B, H, W, C) map, got shape {tuple(x.shape)}")
        return self.act(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
