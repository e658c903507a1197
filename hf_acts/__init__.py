"""hf-acts: trainable activation functions for timm and transformers models."""

from . import models  # noqa: F401  (registers the timm zoo)
from .activations import (
    AIEC,
    ADReLU,
    DynActGLU,
    DynActivation,
    DyReLU,
    FleS,
    SwishBeta,
    aiec_loss,
    aiec_targets,
    attach_aiec_loss,
    reset_aiec_counters,
)
from .activations._base import build_lazy
from .integrations.timm import save_timm_model  # registers hf_acts_swapped
from .integrations.transformers import (  # registers the causal-LM family, swapped families and ACT2FN names
    convert_glu,
    create_transformers_model,
)
from .kernel_hub import mark_kernel_layers
from .lora import peft_config
from .param_groups import activation_parameter_names, param_groups_weight_decay, trainer_optimizer
from .registry import create_activation, get_activation, list_activations
from .swap import SwapRecord, SwapReport, replace_activations

mark_kernel_layers()  # Kernel Hub layer names, where `kernels` is installed
__version__ = "0.2.0"


def __getattr__(name: str) -> type:
    """``hf_acts.AIECCallback`` on first use: the Trainer's modules import PEFT, about 2 s that ``import hf_acts``
    does not pay otherwise."""
    if name == "AIECCallback":
        from .integrations.trainer import AIECCallback

        return AIECCallback
    raise AttributeError(f"module 'hf_acts' has no attribute {name!r}")

__all__ = [
    "AIEC",
    "AIECCallback",
    "ADReLU",
    "DyReLU",
    "DynActGLU",
    "DynActivation",
    "FleS",
    "SwapRecord",
    "SwapReport",
    "SwishBeta",
    "activation_parameter_names",
    "build_lazy",
    "aiec_loss",
    "aiec_targets",
    "attach_aiec_loss",
    "convert_glu",
    "create_activation",
    "create_transformers_model",
    "get_activation",
    "list_activations",
    "param_groups_weight_decay",
    "peft_config",
    "replace_activations",
    "reset_aiec_counters",
    "save_timm_model",
    "trainer_optimizer",
]
