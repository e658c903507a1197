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


def convert_glu(
    model: PreTrainedModel,
    variant: str = "dynactglu",
    layers: Iterable[int] | int | None = None,
    mode: str = "gate",
    base: str | None = None,
    alpha_init: float = 1.0,
    beta_init: float = 0.0,
) -> PreTrainedModel:
    """Convert a loaded Llama / Mistral / Qwen2 / Qwen3 causal LM (or base model) to the hf-acts family.

    In place, Liger-style: the gated MLPs of ``layers`` (``None`` = all; an int or list of indices,
    PEFT's ``layers_to_transform``) share their projection weights with a ``DynActGLU`` whose
    dynActivation takes the model's ``hidden_act`` as base, so the state-dict keys are unchanged
    (plus ``alpha``/``beta``) and the logits are identical before fine-tuning. Returns the model.
    """
    family = model.config.model_type.removeprefix("hf_acts_")
    if family not in CONFIGS:
        raise ValueError(f"convert_glu supports {sorted(CONFIGS)} models; got model_type "
                         f"{model.config.model_type!r} ({type(model).__name__})")
    if base is None and model.config.hidden_act not in HIDDEN_ACT_BASES:
        raise ValueError(f"hidden_act={model.config.hidden_act!r} has no dynActivation base: pass base=...")
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
    config = rebuild_config(model, config_class, mlp_variant=variant, mlp_mode=mode, mlp_base=base,
                            dynact_alpha_init=alpha_init, dynact_beta_init=beta_init, mlp_layers=layer_list)
    core.__class__ = core_class
    if core is not model:
        model.__class__ = causal_class
    convert_mlps(core, config)
    return model


from .swapped import create_transformers_model, register_family  # noqa: E402  (registers vit, convnext, bert)

__all__ = ["convert_glu", "create_transformers_model", "register_act2fn_names", "register_family"]
