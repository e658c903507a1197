"""Bridge hf-acts into timm: swapped architectures as registered models, warm starts, act names.

A swapped model is a timm architecture plus a list of swaps (``replace_activations`` arguments), all
JSON-serialisable, so ``save_for_hf`` writes a ``config.json`` that rebuilds it. Weights load through
timm's normal ``load_pretrained``: a checkpoint of the swapped model loads as is; a checkpoint of the
*base* model (warm start) loads with the new activation parameters taken from their init.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from timm.layers import create_act, register_notrace_module
from timm.models import build_model_with_cfg, get_pretrained_cfg, register_model
from timm.models._builder import pretrained_cfg_for_features
from timm.models._factory import parse_model_name
from timm.models._features import FeatureGetterNet
from timm.models._hub import load_model_config_from_hf, load_model_config_from_path, save_config_for_hf
from torch import nn

from ..registry import ACTIVATIONS, canonical_name, get_activation
from ..swap import SwapReport, activation_state_keys, replace_activations, timm_input_size

SWAP_KEYS = ("act", "target", "select", "exclude", "last", "kwargs")

for _cls in ACTIVATIONS.values():  # FX (torchvision feature extraction, timm's FX tests) keeps them as leaf modules
    register_notrace_module(_cls)


def example_input(model: nn.Module, max_size: int = 64) -> torch.Tensor:
    """A one-image input for tracing sites: the model's input size (with its ``in_chans``), capped at ``max_size``
    px unless fixed."""
    cfg = model.pretrained_cfg
    c, h, w = timm_input_size(model, {"input_size": (3, 224, 224), **cfg})
    if not cfg.get("fixed_input_size", False):
        h, w = min(h, max_size), min(w, max_size)
    return torch.randn(1, c, h, w)


def apply_swaps(model: nn.Module, swaps: Sequence[Mapping[str, Any]], preserve: bool = False) -> list[SwapReport]:
    """Apply swap specs ``{"act", "target", "select", "exclude", "last", "kwargs"}`` to a timm model."""
    reports = []
    x = example_input(model)
    for spec in swaps:
        unknown = set(spec) - set(SWAP_KEYS)
        if unknown or "act" not in spec:
            raise ValueError(f"a swap needs 'act' and only the keys {SWAP_KEYS}; got {dict(spec)}")
        kwargs = dict(spec.get("kwargs") or {})
        if canonical_name(spec["act"]) == "aiec":
            kwargs.setdefault("num_classes", model.num_classes)
        where = {k: spec[k] for k in ("target", "select", "exclude", "last") if spec.get(k) is not None}
        reports.append(replace_activations(model, spec["act"], example_inputs=x, preserve=preserve, **where, **kwargs))
    return reports


def _build_swapped(base_model: str, swaps: Sequence[Mapping[str, Any]], preserve: bool, **kwargs: Any) -> nn.Module:
    model = timm.create_model(base_model, pretrained=False, **kwargs)
    model.hf_acts_reports = apply_swaps(model, swaps, preserve=preserve)
    return model


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Run the base architecture's own checkpoint filter, then give activation parameters a base
    checkpoint lacks their init values (so a base checkpoint is a warm start, loaded strictly)."""
    base_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if base_filter is not None:
        state_dict = base_filter(state_dict, model)
    own = model.state_dict()
    for key in activation_state_keys(model):
        state_dict.setdefault(key, own[key])
    return state_dict


def base_pretrained_cfg(base_model: str, architecture: str) -> dict[str, Any]:
    """The base model's pretrained cfg (data config, weights for a warm start), renamed."""
    cfg = get_pretrained_cfg(base_model)
    if cfg is None:
        raise ValueError(f"unknown timm model {base_model!r}")
    return {**cfg.to_dict(), "architecture": architecture}


def create_swapped(
    variant: str,
    base_model: str,
    swaps: Sequence[Mapping[str, Any]],
    pretrained: bool = False,
    pretrained_cfg: Mapping[str, Any] | str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Entrypoint body shared by the zoo and ``hf_acts_swapped``: build base, swap, load weights.

    ``pretrained=True`` with the variant's own cfg warm-starts from the base's weights and builds
    new activations with their function-preserving init where the method has one; with a cfg that
    points at a saved swapped checkpoint (``local-dir:``, ``hf-hub:``) it loads that checkpoint.
    """
    base_model, base_args, saved_cfg = resolve_base(base_model, variant)
    kwargs = {**base_args, **kwargs}
    if pretrained_cfg is None:
        pretrained_cfg = saved_cfg or get_pretrained_cfg(variant) or base_pretrained_cfg(base_model, variant)
    builder = functools.partial(_build_swapped, base_model, [dict(s) for s in swaps], pretrained)
    features = kwargs.get("features_only") and kwargs.get("feature_cls", "getter") == "getter"
    feature_kwargs = {}
    if features:  # other feature_cls values go to timm's own wrapping in build_model_with_cfg
        kwargs.pop("features_only")
        kwargs.pop("feature_cls", None)
        feature_kwargs = {k: kwargs.pop(k) for k in ("out_indices", "output_fmt", "norm") if k in kwargs}
    model = build_model_with_cfg(
        builder, variant, pretrained, pretrained_cfg=pretrained_cfg, pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )
    if saved_cfg is not None:  # saved folders record the architecture, not the path it was read from
        model.hf_acts_model_args = {**base_args, "base_model": base_model}
    return features_model(model, **feature_kwargs) if features else model


def resolve_base(base_model: str, variant: str) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """``(architecture, model arguments, pretrained cfg)`` of a swap's base: a timm name as is (no arguments, no
    cfg); a saved model (``local-dir:`` folder, ``hf-hub:`` repo) as its architecture, its saved arguments (e.g.
    ``act_layer``) and a cfg that points at its weights, so ``pretrained=True`` starts from them."""
    source, model_id = parse_model_name(base_model)
    if source is None:
        return base_model, {}, None
    load = load_model_config_from_hf if source == "hf-hub" else load_model_config_from_path
    cfg, architecture, model_args = load(model_id)
    return architecture, dict(model_args), {**cfg, "architecture": variant}


def features_model(model: nn.Module, out_indices: int | Sequence[int] | None = None, output_fmt: str = "NCHW",
                   norm: bool = False) -> nn.Module:
    """``features_only=True`` for a swapped model: timm's ``FeatureGetterNet`` over the base architecture's own
    ``forward_intermediates`` (a swap changes activations, not where the features are), so every base family
    with timm's intermediates API works, whatever feature wrapper its own builder uses. Default: the last
    ``min(5, len(feature_info))`` features."""
    out_indices = min(5, len(model.feature_info)) if out_indices is None else out_indices
    net = FeatureGetterNet(model, out_indices=out_indices, output_fmt=output_fmt, norm=norm)
    net.pretrained_cfg = net.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return net


@register_model
def hf_acts_swapped(
    pretrained: bool = False, base_model: str = "resnet18", swaps: Sequence[Mapping[str, Any]] = (), **kwargs: Any
) -> nn.Module:
    """Any timm architecture plus activation swaps, e.g.
    ``timm.create_model("hf_acts_swapped", base_model="resnet34",
    swaps=[{"act": "fles", "target": "relu", "select": r"^layer4\\."}])``."""
    if not swaps:
        raise ValueError("hf_acts_swapped needs swaps=[{'act': ..., 'target': ..., ...}]")
    return create_swapped("hf_acts_swapped", base_model, swaps, pretrained, **kwargs)


TIMM_NAMES = {name: name for name in ACTIVATIONS if name != "dynactglu"}
TIMM_NAMES.update({"dynact": "dynactivation"})


def register_names() -> dict[str, type[nn.Module]]:
    """Make ``act_layer="fles"`` (and every channel-aware registry name) work in timm builders.

    Writes into timm's private activation table (``timm.layers.create_act._ACT_LAYER_DEFAULT``);
    raises ``RuntimeError`` if that table is gone or an hf-acts name would shadow a timm name.
    """
    table = getattr(create_act, "_ACT_LAYER_DEFAULT", None)
    if not isinstance(table, dict):
        raise RuntimeError("timm.layers.create_act._ACT_LAYER_DEFAULT changed: cannot register act_layer names")
    added = {}
    for timm_name, name in TIMM_NAMES.items():
        cls = get_activation(name)
        if table.get(timm_name, cls) is not cls:
            raise RuntimeError(f"timm already defines act_layer {timm_name!r}; hf-acts will not shadow it")
        table[timm_name] = added[timm_name] = cls
    return added


def save_timm_model(
    model: nn.Module, save_directory: str | Path, label_names: Sequence[str] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """``timm.models.save_for_hf`` with safetensors, and a ``config.json`` that both
    ``timm.create_model("local-dir:...")`` and transformers' ``TimmWrapper`` load. ``state_dict`` (e.g. the
    gathered weights of a sharded model) replaces ``model.state_dict()`` in the weights file.

    timm 1.0.31 repeats ``num_classes`` in ``model_args``, which TimmWrapper passes twice
    (``TypeError``); it is already a top-level field, so it is dropped from ``model_args``.
    Writes ``hf_acts_swaps.json`` (the swap reports) when the model came from a swap.
    """
    save_directory = Path(save_directory)
    model_config = {"label_names": list(label_names)} if label_names else None
    config_path = save_directory / "config.json"
    model_args = getattr(model, "hf_acts_model_args", None)  # a swap on a saved base: its architecture
    if state_dict is None:
        timm.models.save_for_hf(model, save_directory, model_config=model_config, model_args=model_args,
                                safe_serialization=True)
    else:  # the model's own tensors may be shards (FSDP2 DTensors, ZeRO-3 placeholders): only its config is read
        save_directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()},
                  save_directory / "model.safetensors", metadata={"format": "pt"})
        save_config_for_hf(model, str(config_path), model_config=model_config, model_args=model_args)
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_path.write_text(json.dumps(config, indent=2))
    reports = getattr(model, "hf_acts_reports", None)
    if reports:
        (save_directory / "hf_acts_swaps.json").write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    return save_directory
