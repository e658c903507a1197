"""transformers integration: the hf-acts causal-LM family, Auto registration, ``convert_glu``, and the swapped
models of any architecture (:mod:`.swapped`)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from ...activations import DynActGLU
from .configuration_hf_acts import CONFIGS, HIDDEN_ACT_BASES
from .modeling_hf_acts import MODELS, convert_mlps, register_act2fn_names

for _config_class, (_model, _causal) in MODELS.items():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model, exist_ok=True)
    AutoModelForCausalLM.register(_config_class, _causal, exist_ok=True)

_DROP = ("model_type", "architectures", "transformers_version", "auto_map")


def rebuild_config(model: PreTrainedModel, config_class: type, **fields) -> PretrainedConfig:
    """A ``config_class`` copy of ``model.config`` with ``fields`` set, put in place of the old one on ``model`` and
    every submodule holding it (the model's class is the caller's to change)."""
    old = model.config
    config = config_class(**{**{k: v for k, v in old.to_dict().items() if k not in _DROP}, **fields})
    config._attn_implementation = old._attn_implementation
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = config
    return config


def is_gated_mlp(module: nn.Module) -> bool:
    """LlamaMLP-style: ``down(act(gate(x)) * up(x))`` with three nn.Linear projections."""
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj"))


def _same_setting(converted: dict[int, DynActGLU], variant: str, mode: str | None, base: str | None,
                  hidden_act: str) -> tuple[str, str | None]:
    """``(mlp_mode, mlp_base)`` to record for a model whose layers ``converted`` are DynActGLU already: theirs, if
    the requested ``mode`` and ``base`` match them or are ``None``; else a ValueError."""
    layers = sorted(converted)
    if variant != "dynactglu":
        raise ValueError(f"layers {layers} are DynActGLU already; convert_glu does not turn them back into a "
                         f"{variant!r} MLP")
    settings = {(m.mode, m.act_fn.base) for m in converted.values()}
    if len(settings) > 1:
        raise ValueError(f"layers {layers} are DynActGLU with different (mode, base) settings {sorted(settings)}; "
                         "the config records one setting for all layers")
    ((had_mode, had_base),) = settings
    if (mode or had_mode, base or had_base) != (had_mode, had_base):
        raise ValueError(f"layers {layers} are DynActGLU(mode={had_mode!r}, base={had_base!r}) already and the "
                         f"config records one setting for all layers; got mode={mode!r}, base={base!r}")
    return had_mode, None if HIDDEN_ACT_BASES.get(hidden_act) == had_base else had_base


def convert_glu(
    model: PreTrainedModel,
    variant: str = "dynactglu",
    layers: Iterable[int] | int | None = None,
    mode: str | None = None,
    base: str | None = None,
    alpha_init: float | None = None,
    beta_init: float | None = None,
) -> PreTrainedModel:
    """Convert a loaded Llama / Mistral / Qwen2 / Qwen3 causal LM (or base model) to the hf-acts family.

    In place, Liger-style: the gated MLPs of ``layers`` (``None`` = all; an int or list of indices,
    PEFT's ``layers_to_transform``) share their projection weights with a ``DynActGLU`` whose
    dynActivation takes the model's ``hidden_act`` as base, so the state-dict keys are unchanged
    (plus ``alpha``/``beta``) and the logits are identical before fine-tuning. Returns the model.

    ``mode`` (default ``"gate"``), ``alpha_init`` / ``beta_init`` (1, 0) and ``base`` (the ``hidden_act``'s) left
    ``None`` keep the settings of an earlier conversion of the same model. A second call adds its layers to the
    converted ones (the config records their union, so a reload rebuilds every one); as the config records one
    ``mode`` and ``base`` for all layers, a second call that asks for other ones is refused.
    """
    family = model.config.model_type.removeprefix("hf_acts_")
    if family.startswith("swapped_"):
        raise ValueError(f"{type(model).__name__} had activations swapped by replace_activations, whose record names "
                         "modules that convert_glu would replace: call convert_glu first, then replace_activations")
    if family not in CONFIGS:
        raise ValueError(f"convert_glu supports {sorted(CONFIGS)} models; got model_type "
                         f"{model.config.model_type!r} ({type(model).__name__})")
    config_class = CONFIGS[family]
    layer_list = [layers] if isinstance(layers, int) else (None if layers is None else sorted(set(layers)))
    core_class, causal_class = MODELS[config_class]
    core = getattr(model, "model", model)
    if not hasattr(core, "layers"):
        raise ValueError(f"{type(model).__name__} has no decoder layers at .model.layers")
    n = len(core.layers)
    selected = range(n) if layer_list is None else layer_list
    if not all(0 <= i < n for i in selected):
        raise ValueError(f"layers {layer_list} out of range for {n} decoder layers")
    for i in selected:  # check everything before changing anything
        if not isinstance(core.layers[i].mlp, DynActGLU) and not is_gated_mlp(core.layers[i].mlp):
            raise ValueError(f"layer {i}: expected a gated MLP with gate_proj/up_proj/down_proj (LlamaMLP-style), "
                             f"got {type(core.layers[i].mlp).__name__}")
    converted = {i: layer.mlp for i, layer in enumerate(core.layers) if isinstance(layer.mlp, DynActGLU)}
    old = model.config if model.config.model_type == config_class.model_type else None
    if converted:
        mode, base = _same_setting(converted, variant, mode, base, model.config.hidden_act)
        if layer_list is not None:
            layer_list = sorted(set(layer_list) | set(converted))
    elif base is None and model.config.hidden_act not in HIDDEN_ACT_BASES:
        raise ValueError(f"hidden_act={model.config.hidden_act!r} has no dynActivation base: pass base=...")
    config = rebuild_config(
        model, config_class, mlp_variant=variant, mlp_mode=mode or "gate", mlp_base=base, mlp_layers=layer_list,
        dynact_alpha_init=getattr(old, "dynact_alpha_init", 1.0) if alpha_init is None else alpha_init,
        dynact_beta_init=getattr(old, "dynact_beta_init", 0.0) if beta_init is None else beta_init)
    core.__class__ = core_class
    if core is not model:
        model.__class__ = causal_class
    convert_mlps(core, config)
    return model


from .swapped import create_transformers_model, register_family  # noqa: E402  (registers vit, convnext, bert)

__all__ = ["convert_glu", "create_transformers_model", "register_act2fn_names", "register_family"]
