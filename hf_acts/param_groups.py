"""Optimizer parameter groups that keep activation parameters out of weight decay."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from .registry import named_activations


def _ndim(p: torch.Tensor) -> int:
    """The parameter's own rank: DeepSpeed ZeRO-3 partitions parameters at construction (transformers builds models
    under ``zero.Init`` when ZeRO-3 is on), leaving 1-D empty placeholders with the real shape in ``ds_shape``."""
    return len(getattr(p, "ds_shape", p.shape))


def activation_parameter_names(model: nn.Module) -> set[str]:
    """Names of activation parameters: the scalars and per-channel vectors of hf-acts activations
    (alpha/beta, Swish beta) and every bias/norm affine inside them (ADReLU GroupNorms, FleS and
    Dy-ReLU biases). Their projection matrices (ADReLU convs, FleS/Dy-ReLU FCs, AIEC's decision
    unit) are ordinary weights and keep weight decay (project decision)."""
    return {prefix + n for prefix, module in named_activations(model)
            for n, p in module.named_parameters() if _ndim(p) <= 1}


def param_groups_weight_decay(
    model: nn.Module, weight_decay: float = 0.05, skip_1d: bool = True, skip_list: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Two optimizer groups: with ``weight_decay`` and without.

    No decay for: activation parameters (:func:`activation_parameter_names`); with ``skip_1d`` every
    bias and 1-D parameter (timm's convention); names in ``skip_list`` or in the model's own
    ``no_weight_decay()`` (timm models define it).
    """
    skip = set(skip_list) | activation_parameter_names(model)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in skip or (skip_1d and (_ndim(p) <= 1 or name.endswith(".bias"))):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class ActivationAwareOptimizer:
    """An optimizer factory for transformers' ``Trainer`` (and TRL trainers, its subclasses): the Trainer calls it
    with the model it trains (after PEFT / distributed wrapping), so the groups of
    :func:`param_groups_weight_decay` are built from the parameters that will actually be stepped. Use it through
    :func:`trainer_optimizer`."""

    def __call__(self, model: nn.Module, optimizer_cls: type[Optimizer] = torch.optim.AdamW,
                 weight_decay: float = 0.0, **kwargs: Any) -> Optimizer:
        return optimizer_cls(param_groups_weight_decay(model, weight_decay), **kwargs)


def trainer_optimizer(args: Any, optimizer_cls: type[Optimizer] = torch.optim.AdamW) -> tuple[type, dict[str, Any]]:
    """``Trainer(..., optimizer_cls_and_kwargs=trainer_optimizer(training_args))``: the Trainer's AdamW settings
    (``learning_rate``, ``weight_decay``, betas, epsilon from ``TrainingArguments``) with activation parameters,
    biases and norms kept out of weight decay. The Trainer's default groups would decay ``alpha``/``beta``
    towards 0, away from their function-preserving init of 1."""
    kwargs: dict[str, Any] = {"optimizer_cls": optimizer_cls, "lr": args.learning_rate,
                              "weight_decay": args.weight_decay}
    if issubclass(optimizer_cls, torch.optim.Adam | torch.optim.AdamW):
        kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    return ActivationAwareOptimizer, kwargs
