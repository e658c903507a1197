"""Activation modules, one method per file, torch only."""

from .adrelu import ADReLU
from .aiec import AIEC, aiec_loss, aiec_modules, aiec_targets, attach_aiec_loss, reset_aiec_counters
from .dynactglu import DynActGLU
from .dynactivation import DynActivation
from .dyrelu import DyReLU
from .fles import FleS
from .swish_beta import SwishBeta

__all__ = [
    "ADReLU",
    "AIEC",
    "DyReLU",
    "DynActGLU",
    "DynActivation",
    "FleS",
    "SwishBeta",
    "aiec_loss",
    "aiec_modules",
    "aiec_targets",
    "attach_aiec_loss",
    "reset_aiec_counters",
]
