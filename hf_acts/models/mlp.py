"""A plain MLP as a timm model: the fully connected case study of the ADReLU paper (Table 6) and the
MNIST-1D / depth-scaling experiments of dynActivation. Input of any shape is flattened."""

import torch
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """``Linear -> act`` for each hidden width, then a linear head; timm's model interface.
    ``in_features`` defaults to ``in_chans * H * W`` of ``img_size``."""

    def __init__(
        self,
        in_features: int | None = None,
        hidden: tuple[int, ...] = (512, 256, 128),
        num_classes: int = 10,
        act_layer: str | type[nn.Module] = "relu",
        drop_rate: float = 0.0,
        in_chans: int = 1,
        img_size: int | tuple[int, int] = (1, 40),
        global_pool: str = "",
    ) -> None:
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        in_features = in_features or in_chans * h * w
        act = get_act_layer(act_layer)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act(inplace=True)]
            width = h
        self.layers = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = width
        self.drop_rate = drop_rate
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({
    "mlp_mnist1d": {"num_classes": 10, "input_size": (1, 1, 40), "mean": (0.0,), "std": (1.0,),
                    "first_conv": "layers.0", "classifier": "head", "fixed_input_size": True,
                    "paper_ids": "arXiv:2011.14439", "paper_name": "Scaling Down Deep Learning (MNIST-1D)"},
})


@register_model
def mlp_mnist1d(pretrained: bool = False, **kwargs) -> MLP:
    """40 -> 512 -> 256 -> 128 -> classes, for MNIST-1D signals shaped (1, 1, 40)."""
    if kwargs.get("features_only"):
        raise ValueError("mlp_mnist1d has no spatial feature maps: features_only=True is not supported "
                         "(hf_acts.models.contract)")
    return build_model_with_cfg(MLP, "mlp_mnist1d", pretrained, **kwargs)
