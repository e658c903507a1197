"""Configs of the hf-acts causal-LM family: Llama, Mistral, Qwen2 and Qwen3 configs plus the MLP variant.

This file is saved beside checkpoints (``trust_remote_code``): it imports only transformers.
Every family config adds the same fields to its base config:

* ``mlp_variant``: ``"swiglu"`` (the base model's gated MLP) or ``"dynactglu"`` (its gate activation
  becomes a dynActivation; equal to the base MLP at init);
* ``mlp_base``: the dynActivation base (``None``: the config's ``hidden_act``, i.e. function-preserving);
* ``mlp_mode``: ``"gate"`` or ``"both"`` (also an identity-initialised dynActivation on the up branch);
* ``dynact_alpha_init`` / ``dynact_beta_init``: the dynActivation init (1, 0 = exactly the base);
* ``mlp_layers``: decoder-layer indices that get the new MLP (``None`` = all; PEFT's
  ``layers_to_transform`` convention).

Any activation name registered with ``ACT2FN`` (hf-acts adds ``dynact_<base>``, ``swish_beta``, ``fles``,
``fles_<gate>`` and ``adrelu``) can also be used as ``hidden_act`` with ``mlp_variant="swiglu"``.

Swapped models of any architecture (:func:`hf_acts.replace_activations` on a transformers model) get the config
class ``HfActsSwapped<Config>``: the base config with model type ``hf_acts_swapped_<type>`` and the field
``hf_acts_activations``, the swap's record (:func:`swapped_config_class`; this module builds such a class when
asked for its name, so remote code finds it). The ``Swapped`` in the names keeps them apart from the LM family's
(a swap in a stock Llama is not an ``hf_acts_llama`` model).
"""

from __future__ import annotations

import transformers
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

MLP_VARIANTS = ("swiglu", "dynactglu")
MLP_MODES = ("gate", "both")
DYNACT_BASES = ("relu", "leaky_relu", "silu", "gelu", "gelu_tanh", "mish")
HIDDEN_ACT_BASES = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                    "gelu_new": "gelu_tanh", "relu": "relu", "mish": "mish", "leaky_relu": "leaky_relu"}


def _post_init(base: type):
    def __post_init__(self, **kwargs) -> None:  # noqa: N807
        if self.mlp_variant not in MLP_VARIANTS:
            raise ValueError(f"mlp_variant must be one of {MLP_VARIANTS}, got {self.mlp_variant!r}")
        if self.mlp_mode not in MLP_MODES:
            raise ValueError(f"mlp_mode must be one of {MLP_MODES}, got {self.mlp_mode!r}")
        if self.mlp_variant == "dynactglu" and self.dynact_base not in DYNACT_BASES:
            raise ValueError(f"dynActGLU needs mlp_base in {DYNACT_BASES} (or a hidden_act with one of them), "
                             f"got mlp_base={self.mlp_base!r}, hidden_act={self.hidden_act!r}")
        base.__post_init__(self, **kwargs)

    return __post_init__


def _dynact_base(self) -> str | None:
    """The dynActivation base: ``mlp_base``, else the base of ``hidden_act``."""
    return self.mlp_base or HIDDEN_ACT_BASES.get(self.hidden_act)


def _family_config(base: type, model_type: str) -> type:
    fields = {"mlp_variant": (str, "swiglu"), "mlp_base": (str | None, None), "mlp_mode": (str, "gate"),
              "dynact_alpha_init": (float, 1.0), "dynact_beta_init": (float, 0.0),
              "mlp_layers": (list[int] | None, None)}
    namespace = {name: default for name, (_, default) in fields.items()}
    namespace.update(
        __annotations__={name: typ for name, (typ, _) in fields.items()},
        __module__=__name__,
        __doc__=f"{base.__name__} plus the hf-acts MLP variant fields (see the module docstring).",
        __post_init__=_post_init(base),
        dynact_base=property(_dynact_base),
        model_type=model_type,
    )
    return type(f"HfActs{base.__name__}", (base,), namespace)


HfActsLlamaConfig = _family_config(LlamaConfig, "hf_acts_llama")
HfActsMistralConfig = _family_config(MistralConfig, "hf_acts_mistral")
HfActsQwen2Config = _family_config(Qwen2Config, "hf_acts_qwen2")
HfActsQwen3Config = _family_config(Qwen3Config, "hf_acts_qwen3")

# base model_type -> hf-acts config class
CONFIGS = {"llama": HfActsLlamaConfig, "mistral": HfActsMistralConfig, "qwen2": HfActsQwen2Config,
           "qwen3": HfActsQwen3Config}

SWAP_FIELD = "hf_acts_activations"
SWAPPED_PREFIX = "hf_acts_swapped_"  # model types of swapped models
_SWAPPED: dict[type, type] = {}


def swapped_config_class(base: type) -> type:
    """``HfActsSwapped<base>``: ``base`` with model type ``hf_acts_swapped_<base.model_type>`` and the field
    ``hf_acts_activations``: one record per replaced activation, ``{"module", "root", "activation", "kwargs",
    "channels_last", "replaced"}`` (``root``: ``"base"`` for a module of the base model, named relative to it,
    ``"model"`` for one of a task head; ``replaced``: the class name of the module it replaced, for the model card).
    One class per base."""
    if base not in _SWAPPED:
        namespace = {SWAP_FIELD: None, "__annotations__": {SWAP_FIELD: list[dict] | None}, "__module__": __name__,
                     "model_type": f"{SWAPPED_PREFIX}{base.model_type}",
                     "__doc__": f"{base.__name__} of a model whose activations hf-acts replaced (``{SWAP_FIELD}``)."}
        _SWAPPED[base] = type(f"HfActsSwapped{base.__name__}", (base,), namespace)
    return _SWAPPED[base]


def __getattr__(name: str) -> type:
    """``HfActsSwapped<Config>`` for any transformers or hf-acts config class (remote code looks classes up by
    name)."""
    base_name = name.removeprefix("HfActsSwapped") if name.startswith("HfActsSwapped") else None
    base = base_name and (globals().get(base_name) or getattr(transformers, base_name, None))
    if isinstance(base, type) and issubclass(base, transformers.PretrainedConfig):
        return swapped_config_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HfActsLlamaConfig", "HfActsMistralConfig", "HfActsQwen2Config", "HfActsQwen3Config"]
