"""Swapped transformers models that reload as they were saved, and the named vision/encoder variants.

:func:`hf_acts.replace_activations` on a transformers model ends in :func:`record_swap`: the model becomes its
``HfActsSwapped<Model>`` class (:func:`~.modeling_hf_acts.swapped_model_class`) with an ``HfActsSwapped<Config>`` that
records every replaced activation, so ``save_pretrained`` writes a folder that ``AutoModel*.from_pretrained`` rebuilds
(with hf-acts installed: :func:`register_family` registered the model type; without it: ``trust_remote_code``, the
folder holds the code). Model type ``hf_acts_swapped_<type>``: plain transformers without either refuses the folder
instead of dropping the activations' parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers
from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto import modeling_auto

from . import rebuild_config
from .configuration_hf_acts import SWAP_FIELD, SWAPPED_PREFIX, swapped_config_class
from .modeling_hf_acts import _SWAPPED_MODELS, swapped_model_class

# model types registered when hf-acts is imported (others: register_family(type), or the first swap of one)
FAMILIES = ("vit", "convnext", "bert")

# name -> (model type, replace_activations arguments): the registered variants of create_transformers_model
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_fles": ("vit", {"new": "fles", "target": "gelu"}),
    "convnext_fles": ("convnext", {"new": "fles", "target": "gelu"}),
    "convnext_adrelu_last_stage": ("convnext", {"new": "adrelu", "target": "gelu", "select": r"encoder\.stages\.3\."}),
    "bert_dynact": ("bert", {"new": "dynactivation", "target": "gelu"}),
}


def _auto_classes() -> list[str]:
    return sorted(n for n in dir(modeling_auto) if n.startswith("AutoModel") and
                  hasattr(getattr(modeling_auto, n), "_model_mapping"))


def _family_models(model_type: str) -> dict[str, type]:
    """``AutoModel*`` class name -> the model class it builds for ``model_type``'s config (transformers' own models and
    registered ones, e.g. the hf-acts LM family)."""
    found = {}
    for auto_name in _auto_classes():
        try:
            base_model = getattr(modeling_auto, auto_name)._model_mapping[CONFIG_MAPPING[model_type]]
        except (KeyError, ValueError, ImportError, AttributeError):
            continue
        if isinstance(base_model, type) and issubclass(base_model, PreTrainedModel):
            found[auto_name] = base_model
    return found


def register_family(model_type: str) -> type:
    """Register ``HfActsSwapped<Config>`` (model type ``hf_acts_swapped_<model_type>``) with ``AutoConfig`` and an
    ``HfActsSwapped<Model>`` class with every ``AutoModel*`` class that maps ``model_type``'s config; returns the
    config class."""
    config_class = swapped_config_class(CONFIG_MAPPING[model_type])
    config_class.register_for_auto_class()
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    for auto_name, base_model in _family_models(model_type).items():
        model_class = swapped_model_class(base_model)
        if model_class._auto_class is None:  # save_pretrained writes this one auto_map entry (see remote_auto_map)
            model_class.register_for_auto_class(auto_name)
        getattr(modeling_auto, auto_name).register(config_class, model_class, exist_ok=True)
    return config_class


def remote_auto_map(model_type: str) -> dict[str, str]:
    """The ``auto_map`` of a swapped folder of ``model_type``: every ``AutoModel*`` class of the family, so that
    ``trust_remote_code`` loads it into any of them (a task model's folder into ``AutoModel``, the bare model) as
    installed hf-acts does. transformers' save writes only the saved class's own entry (``_auto_class``)."""
    module = swapped_model_class.__module__.rpartition(".")[2]
    return {auto_name: f"{module}.{swapped_model_class(base_model).__name__}"
            for auto_name, base_model in _family_models(model_type).items()}


def _site(model: PreTrainedModel, name: str) -> tuple[str, str]:
    """``(root, module)``: a module of the base model named relative to it (so a task model's folder loads into
    the bare model), else a head's module named in the task model."""
    prefix = model.base_model_prefix
    if model.base_model is model:
        return "base", name
    if prefix and name.startswith(prefix + "."):
        return "base", name.removeprefix(prefix + ".")
    return "model", name


def record_swap(model: PreTrainedModel, report: Any) -> None:
    """Make ``model`` (swapped in place by ``replace_activations``) an ``HfActsSwapped<Model>`` whose config records the
    report's sites in ``hf_acts_activations`` (appended to earlier swaps)."""
    base_class = next((b for b, s in _SWAPPED_MODELS.items() if s is type(model)), type(model))
    config = model.config
    base_type = config.model_type.removeprefix(SWAPPED_PREFIX) if base_class is not type(model) else config.model_type
    register_family(base_type)
    records = list(getattr(config, SWAP_FIELD, None) or [])
    for r in report.records:
        root, module = _site(model, r.name)
        records = [x for x in records if (x["root"], x["module"]) != (root, module)]
        records.append({"module": module, "root": root, "activation": report.activation, "kwargs": r.kwargs,
                        "channels_last": r.channels_last, "replaced": r.old})
    rebuild_config(model, swapped_config_class(CONFIG_MAPPING[base_type]), auto_map=remote_auto_map(base_type),
                   **{SWAP_FIELD: records})
    model.__class__ = swapped_model_class(base_class)


def auto_class_for(config: PretrainedConfig) -> str:
    """The ``AutoModel*`` class name that builds ``config``'s architecture (``architectures[0]``): its ``auto_map``
    entry (hf-acts folders), else the Auto class that maps the config class to it, else ``AutoModel``."""
    architecture = (config.architectures or [None])[0]
    for auto_name, target in (getattr(config, "auto_map", None) or {}).items():
        if auto_name.startswith("AutoModel") and target.rpartition(".")[2] == architecture:
            return auto_name
    for auto_name in _auto_classes():
        try:
            if getattr(modeling_auto, auto_name)._model_mapping[type(config)].__name__ == architecture:
                return auto_name
        except (KeyError, ValueError, ImportError, AttributeError):
            continue
    return "AutoModel"


def folder_config(folder: str | Path) -> PretrainedConfig:
    """A saved folder's config; a swapped folder's family is registered first, so that ``AutoConfig`` reads it
    without remote code."""
    model_type = json.loads((Path(folder) / "config.json").read_text())["model_type"]
    if model_type.startswith(SWAPPED_PREFIX):
        register_family(model_type.removeprefix(SWAPPED_PREFIX))
    return AutoConfig.from_pretrained(folder)


def create_transformers_model(variant: str, config: Any = None, pretrained: str | None = None,
                              auto_class: str = "AutoModelForImageClassification", **config_kwargs: Any
                              ) -> PreTrainedModel:
    """A registered variant (:data:`VARIANTS`): the base architecture built from ``config`` (a config object, or
    ``config_kwargs`` for the base config class) or loaded from ``pretrained`` (a Hub id or folder of the base
    model), then swapped (function-preserving where the method allows: FleS and dynActivation over GELU)."""
    from ...swap import replace_activations

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    model_type, swap = VARIANTS[variant]
    auto = getattr(transformers, auto_class)
    if pretrained is not None:
        model = auto.from_pretrained(pretrained, **config_kwargs)
    else:
        config = config if config is not None else CONFIG_MAPPING[model_type](**config_kwargs)
        model = auto.from_config(config)
    if model.config.model_type != model_type:
        raise ValueError(f"variant {variant!r} is for {model_type} models, got model_type {model.config.model_type!r}")
    replace_activations(model, **swap)
    return model


for _model_type in FAMILIES:
    register_family(_model_type)
