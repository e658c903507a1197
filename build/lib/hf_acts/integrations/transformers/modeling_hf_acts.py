"""The hf-acts causal-LM family: Llama, Mistral, Qwen2 and Qwen3 with a configurable gated MLP.

Each family is its transformers base model with the MLPs of ``config.mlp_layers`` turned into
``DynActGLU`` (same projection keys, plus the dynActivation ``alpha``/``beta``). This file is saved
beside checkpoints for ``trust_remote_code``: it imports torch, transformers and the files beside it.
"""

from __future__ import annotations

from torch import nn
from transformers import (
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    MistralForCausalLM,
    MistralModel,
    MistralPreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen3ForCausalLM,
    Qwen3Model,
    Qwen3PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN

try:  # one class identity with the rest of hf-acts when it is installed
    from hf_acts.activations.dynactglu import DynActGLU
    from hf_acts.activations.dynactivation import DYN_BASES, DynActivation
    from hf_acts.activations.swish_beta import SwishBeta
except ImportError:  # remote code on a machine without hf-acts: the files saved beside this one
    from .dynactglu import DynActGLU
    from .dynactivation import DYN_BASES, DynActivation
    from .swish_beta import SwishBeta
from .configuration_hf_acts import HfActsLlamaConfig, HfActsMistralConfig, HfActsQwen2Config, HfActsQwen3Config


def register_act2fn_names() -> list[str]:
    """Add ``dynact_<base>`` and ``swish_beta`` to ``ACT2FN`` (usable as ``hidden_act``); never
    overwrites a transformers name. Returns the names added."""
    names = {f"dynact_{b}": (DynActivation, {"base": b}) for b in DYN_BASES}
    names["swish_beta"] = SwishBeta
    added = [n for n in names if n not in ACT2FN]
    for n in added:
        ACT2FN[n] = names[n]
    return added


register_act2fn_names()


def convert_mlps(model: nn.Module, config) -> None:
    """Turn the gated MLPs of ``model.layers`` selected by ``config.mlp_layers`` into DynActGLU."""
    if config.mlp_variant != "dynactglu":
        return
    layers = range(len(model.layers)) if config.mlp_layers is None else config.mlp_layers
    for i in layers:
        layer = model.layers[i]
        if not isinstance(layer.mlp, DynActGLU):
            layer.mlp = DynActGLU.from_gated_mlp(layer.mlp, config.dynact_base, config.mlp_mode,
                                                 config.dynact_alpha_init, config.dynact_beta_init)


class InitActivationsMixin:
    """``_init_weights`` for the activation parameters transformers does not know (meta-device loads)."""

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DynActivation):
            init.constant_(module.alpha, module.alpha_init)
            init.constant_(module.beta, module.beta_init)
        elif isinstance(module, SwishBeta):
            init.constant_(module.beta, module.beta_init)


def _family(name: str, config_class: type, pretrained: type, base_model: type, causal_lm: type):
    """The (PreTrainedModel, Model, ForCausalLM) classes of one family."""
    pre = type(f"HfActs{name}PreTrainedModel", (InitActivationsMixin, pretrained),
               {"config_class": config_class, "__module__": __name__})

    def model_init(self, config) -> None:
        base_model.__init__(self, config)
        convert_mlps(self, config)

    def causal_init(self, config) -> None:
        causal_lm.__init__(self, config)
        self.model.__class__ = model
        convert_mlps(self.model, config)

    model = type(f"HfActs{name}Model", (pre, base_model), {"__init__": model_init, "__module__": __name__})
    causal = type(f"HfActs{name}ForCausalLM", (pre, causal_lm), {"__init__": causal_init, "__module__": __name__})
    return pre, model, causal


HfActsLlamaPreTrainedModel, HfActsLlamaModel, HfActsLlamaForCausalLM = _family(
    "Llama", HfActsLlamaConfig, LlamaPreTrainedModel, LlamaModel, LlamaForCausalLM)
HfActsMistralPreTrainedModel, HfActsMistralModel, HfActsMistralForCausalLM = _family(
    "Mistral", HfActsMistralConfig, MistralPreTrainedModel, MistralModel, MistralForCausalLM)
HfActsQwen2PreTrainedModel, HfActsQwen2Model, HfActsQwen2ForCausalLM = _family(
    "Qwen2", HfActsQwen2Config, Qwen2PreTrainedModel, Qwen2Model, Qwen2ForCausalLM)
HfActsQwen3PreTrainedModel, HfActsQwen3Model, HfActsQwen3ForCausalLM = _family(
    "Qwen3", HfActsQwen3Config, Qwen3PreTrainedModel, Qwen3Model, Qwen3ForCausalLM)

def register_0d_coefficient_conversion() -> bool:
    """Load the 0-d dynActivation coefficients of checkpoints written by hf-acts 0.1 as the shape-(1,) parameters
    they are now (FSDP2 and DeepSpeed ZeRO-3 refuse 0-d parameters): a transformers checkpoint conversion per model
    type, so that ``from_pretrained`` reshapes them instead of re-initialising them for a shape mismatch. False
    where this transformers has no conversion API."""
    try:
        from transformers.conversion_mapping import register_checkpoint_conversion_mapping
        from transformers.core_model_loading import ConversionOps, WeightConverter
    except ImportError:
        return False

    class AtLeast1d(ConversionOps):
        @property
        def reverse_op(self) -> ConversionOps:
            return self  # saving writes the (1,) shape as it is

        def convert(self, input_dict, source_patterns, target_patterns, **kwargs):  # noqa: ANN001, ANN003, ANN201
            tensors = next(iter(input_dict.values()))
            tensor = tensors[0] if isinstance(tensors, list) else tensors
            return {target_patterns[0]: tensor.reshape(1) if tensor.ndim == 0 else tensor}

    for config_class in MODELS:
        converters = [WeightConverter(f"{act}.{name}", f"{act}.{name}", [AtLeast1d()])
                      for act in ("act_fn", "up_act") for name in ("alpha", "beta")]
        register_checkpoint_conversion_mapping(config_class.model_type, converters, overwrite=True)
    return True


# config class -> (Model, ForCausalLM)
MODELS = {
    HfActsLlamaConfig: (HfActsLlamaModel, HfActsLlamaForCausalLM),
    HfActsMistralConfig: (HfActsMistralModel, HfActsMistralForCausalLM),
    HfActsQwen2Config: (HfActsQwen2Model, HfActsQwen2ForCausalLM),
    HfActsQwen3Config: (HfActsQwen3Model, HfActsQwen3ForCausalLM),
}

for _config_class, (_model, _causal) in MODELS.items():
    _config_class.register_for_auto_class()
    _model.register_for_auto_class("AutoModel")
    _causal.register_for_auto_class("AutoModelForCausalLM")

register_0d_coefficient_conversion()
__all__ = [cls.__name__ for pair in MODELS.values() for cls in pair]
