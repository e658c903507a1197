"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2) as timm models: ResNet-8/32 of the ADReLU paper.

3x3 stem (16 channels, stride 1, no pooling), three stages of ``n = (depth - 2) / 6`` basic blocks with
16/32/64 channels, 1x1 conv + BN projection shortcuts where shape changes, global average pool, linear
head. With 100 classes ResNet-8 has 83,892 parameters and ResNet-32 472,756 (ADReLU paper, Table 5).
"""

from __future__ import annotations

import torch
from timm.layers import create_classifier, get_act_layer
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["CifarResNet"]


class BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))
        self.act2 = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(x + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs with timm's model interface."""

    def __init__(
        self,
        depth: int = 8,
        num_classes: int = 100,
        in_chans: int = 3,
        channels: tuple[int, ...] = (16, 32, 64),
        act_layer: str | type[nn.Module] = "relu",
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, ...), got {depth}")
        act = get_act_layer(act_layer)
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.conv1 = nn.Conv2d(in_chans, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.act1 = act(inplace=True)
        stages, in_chs = [], channels[0]
        for i, chs in enumerate(channels):
            blocks = [BasicBlock(in_chs if j == 0 else chs, chs, 2 if i > 0 and j == 0 else 1, act) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_chs = chs
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(in_chs, num_classes, pool_type=global_pool)
        self.feature_info = [dict(num_chs=c, reduction=2**i, module=f"stages.{i}") for i, c in enumerate(channels)]
        self.grad_checkpointing = False

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^conv1|bn1", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False, stop_early: bool = False,
        output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediates API: the outputs of the stages in ``indices`` (last n if int, all if None)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.act1(self.bn1(self.conv1(x)))
        intermediates = []
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 100, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762),
        "first_conv": "conv1", "classifier": "fc", "paper_ids": "arXiv:1512.03385",
        "paper_name": "Deep Residual Learning for Image Recognition", **kwargs,
    }


default_cfgs = generate_default_cfgs({"resnet8_cifar": _cfg(), "resnet32_cifar": _cfg()})


def _create(variant: str, depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, depth=depth,
                                feature_cfg=dict(out_indices=(0, 1, 2), feature_cls="getter"), **kwargs)


@register_model
def resnet8_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-8 (one basic block per stage)."""
    return _create("resnet8_cifar", 8, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (five basic blocks per stage)."""
    return _create("resnet32_cifar", 32, pretrained, **kwargs)
