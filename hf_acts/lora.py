"""LoRA with PEFT on models holding hf-acts activations: adapters on the projections, the activations trained in full.

PEFT freezes every parameter it does not adapt, so a plain ``LoraConfig`` silently freezes each dynActivation
``alpha``/``beta``, FleS coefficient MLP and ADReLU threshold network. :func:`peft_config` lists those modules in
``modules_to_save`` (PEFT's mechanism for fully trained extra modules: they are saved in the adapter folder and
kept by ``merge_and_unload``), with the classifier head (timm or transformers), and targets the linear and
ungrouped convolution layers outside them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import named_activations


def _timm_heads(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier") or ()
    names = dict(model.named_modules())
    return [h for h in ([heads] if isinstance(heads, str) else heads) if h in names]


def _output_embeddings(model: nn.Module) -> list[str]:
    get = getattr(model, "get_output_embeddings", None)
    out = get() if get else None
    return [n for n, m in model.named_modules() if out is not None and m is out]


def _transformers_heads(model: nn.Module, output_embeddings: list[str]) -> list[str]:
    """A transformers task model's head: its top-level modules with parameters outside its base model, except one
    holding the output embeddings (an LM head, often tied to the input embeddings)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    return [n for n, m in model.named_children() if m is not base and next(m.parameters(), None) is not None
            and not any(e == n or e.startswith(n + ".") for e in output_embeddings)]


def peft_config(
    model: nn.Module, r: int = 8, lora_alpha: int | None = None, lora_dropout: float = 0.0,
    target_modules: list[str] | str | None = None, **kwargs: Any,
) -> Any:
    """A ``peft.LoraConfig`` for ``model``: LoRA on every ``nn.Linear`` and ungrouped ``nn.Conv2d`` outside the
    hf-acts activations, the classifier head and the LM output embeddings (``target_modules`` overrides); the
    activations and the head (re-initialised for new classes: timm's ``pretrained_cfg["classifier"]``, a
    transformers task model's modules outside its base model) in ``modules_to_save``.
    ``lora_alpha`` defaults to ``2 * r``; ``kwargs`` go to ``LoraConfig``.
    """
    from peft import LoraConfig

    activations = [prefix[:-1] for prefix, _ in named_activations(model)]
    if not activations:
        raise ValueError(f"{type(model).__name__} holds no hf-acts activation: convert or swap it first")
    embeddings = _output_embeddings(model)
    heads = _timm_heads(model) + _transformers_heads(model, embeddings)
    skip = activations + heads + embeddings

    def outside(name: str) -> bool:
        return not any(name == s or name.startswith(s + ".") for s in skip)

    if target_modules is None:
        target_modules = [n for n, m in model.named_modules() if outside(n) and (
            isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]
    return LoraConfig(r=r, lora_alpha=lora_alpha or 2 * r, lora_dropout=lora_dropout, target_modules=target_modules,
                      modules_to_save=activations + heads + list(kwargs.pop("modules_to_save", None) or ()), **kwargs)
