"""The hf-acts timm zoo: one table of variants (base model + activation swap), registered in a loop.

Each variant is a timm base architecture plus one ``replace_activations`` call. ``pretrained=True``
warm-starts from the base model's weights (timm's normal loading: the Hub for a real user, or
``pretrained_cfg_overlay=dict(file=...)``) and builds the new activations with their
function-preserving init where the method has one; otherwise new activations take the paper's init.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import nn

from ..integrations.timm import base_pretrained_cfg, create_swapped
from ..papers import PAPERS
from . import cifar_resnet  # noqa: F401  (registers the CIFAR ResNet bases)

MLP = r"\.mlp\."  # transformer MLP activations only


@dataclass(frozen=True)
class Variant:
    base: str  # timm model (with pretrained tag) the variant is built from and warm-started with
    act: str  # hf-acts registry name
    target: str  # base activation replaced
    placement: str  # where, in words (model cards, README)
    select: str | None = None
    exclude: str | None = None
    last: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def swaps(self) -> list[dict[str, Any]]:
        return [{"act": self.act, "target": self.target, "select": self.select, "exclude": self.exclude,
                 "last": self.last, "kwargs": dict(self.kwargs)}]


_EFFNET_LAST3 = "last three SiLU feature-map activations (last block's bn1.act, bn2.act; head bn2.act; SE act excluded)"

ZOO: dict[str, Variant] = {
    # ADReLU paper, Sec. 4.2: fine-tune EfficientNetV2 S/M/L with the last three SiLU layers replaced
    "efficientnetv2_s_adrelu": Variant("tf_efficientnetv2_s.in21k_ft_in1k", "adrelu", "silu", _EFFNET_LAST3,
                                       exclude=r"\.se\.", last=3),
    "efficientnetv2_m_adrelu": Variant("tf_efficientnetv2_m.in21k_ft_in1k", "adrelu", "silu", _EFFNET_LAST3,
                                       exclude=r"\.se\.", last=3),
    "efficientnetv2_l_adrelu": Variant("tf_efficientnetv2_l.in21k_ft_in1k", "adrelu", "silu", _EFFNET_LAST3,
                                       exclude=r"\.se\.", last=3),
    "efficientnetv2_rw_t_adrelu": Variant("efficientnetv2_rw_t.ra2_in1k", "adrelu", "silu", _EFFNET_LAST3,
                                          exclude=r"\.se\.", last=3),
    # ADReLU everywhere (Tables 1-5), with the CIFAR ResNets of Table 5 and their Dy-ReLU twins
    "resnet18_adrelu": Variant("resnet18.a1_in1k", "adrelu", "relu", "every ReLU"),
    "resnet50_adrelu": Variant("resnet50.a1_in1k", "adrelu", "relu", "every ReLU"),
    "resnet8_cifar_adrelu": Variant("resnet8_cifar", "adrelu", "relu", "every ReLU"),
    "resnet32_cifar_adrelu": Variant("resnet32_cifar", "adrelu", "relu", "every ReLU"),
    "resnet8_cifar_dyrelu": Variant("resnet8_cifar", "dyrelu", "relu", "every ReLU"),
    "resnet32_cifar_dyrelu": Variant("resnet32_cifar", "dyrelu", "relu", "every ReLU"),
    # FleS paper: MLP/FFN activations of ViT, Swin, PoolFormer (GELU base); ReLU positions of ResNet-50
    "resnet50_fles": Variant("resnet50.a1_in1k", "fles", "relu", "every ReLU (FleS over SiLU)",
                             kwargs={"base": "silu"}),
    "vit_tiny_patch16_224_fles": Variant("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "fles", "gelu",
                                         "every block's MLP activation (FleS over GELU)", select=MLP,
                                         kwargs={"base": "gelu"}),
    "swin_tiny_patch4_window7_224_fles": Variant("swin_tiny_patch4_window7_224.ms_in1k", "fles", "gelu",
                                                 "every block's MLP activation (FleS over GELU)", select=MLP,
                                                 kwargs={"base": "gelu"}),
    "poolformer_s12_fles": Variant("poolformer_s12.sail_in1k", "fles", "gelu",
                                   "every block's MLP activation (FleS over GELU)", select=MLP,
                                   kwargs={"base": "gelu"}),
    # dynActivation
    "resnet18_dynact": Variant("resnet18.a1_in1k", "dynactivation", "relu", "every ReLU (base ReLU)",
                               kwargs={"base": "relu"}),
    "vit_tiny_patch16_224_dynact": Variant("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "dynactivation", "gelu",
                                           "every block's MLP activation (base GELU)", select=MLP,
                                           kwargs={"base": "gelu"}),
    # AIEC, Sec. 3.4: every block's MLP activation in ViTs (class-token feature), the last block in CNNs
    "vit_tiny_patch16_224_aiec": Variant("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "aiec", "gelu",
                                         "every block's MLP activation (class-token pooling)", select=MLP,
                                         kwargs={"pool": "cls"}),
    "resnet18_aiec": Variant("resnet18.a1_in1k", "aiec", "relu", "the last block's ReLUs (layer4.1)",
                             select=r"^layer4\.1\."),
}


def _cfg(name: str, variant: Variant) -> dict[str, Any]:
    paper = PAPERS[variant.act]
    cfg = base_pretrained_cfg(variant.base, name)
    cfg.update(paper_name=paper.name, paper_ids=paper.paper_id,
               notes=(f"hf-acts: {variant.act} replaces {variant.target} at {variant.placement}; "
                      f"base {variant.base}"))
    return cfg


default_cfgs = generate_default_cfgs({name: _cfg(name, v) for name, v in ZOO.items()})


def _entrypoint(name: str, variant: Variant):
    def fn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_swapped(name, variant.base.split(".")[0], variant.swaps, pretrained, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"{variant.base.split('.')[0]} with {variant.act} at {variant.placement}."
    return fn


for _name, _variant in ZOO.items():
    globals()[_name] = register_model(_entrypoint(_name, _variant))
