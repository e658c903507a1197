"""Swap demo: put new activations into timm models and show what changed.

1. EfficientNetV2 (rw_t, random init): the last three SiLU feature-map activations -> ADReLU
   (the ADReLU paper's fine-tuning recipe, Sec. 4.2).
2. ResNet-18: every ReLU -> ADReLU(tau_init="zero") and every ReLU -> dynActivation: function
   preserving, so the logits do not move.
"""

from __future__ import annotations

import argparse

import timm
import torch

import hf_acts


def swap_and_compare(model_name: str, new: str, image_size: int, **kwargs) -> None:
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10).eval()
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        before = model(x)
    report = hf_acts.replace_activations(model, new, example_inputs=x, **kwargs)
    with torch.no_grad():
        after = model(x)
    print(f"\n## {model_name}: -> {new} {kwargs}\n\n{report}")
    print(f"max |logit difference| = {(after - before).abs().max().item():.3e} "
          f"(function-preserving: {report.function_preserving})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=96)
    args = parser.parse_args()
    swap_and_compare("efficientnetv2_rw_t", "adrelu", args.image_size, target="silu", exclude=r"\.se\.", last=3)
    swap_and_compare("resnet18", "adrelu", args.image_size, target="relu", select=r"^layer4")
    swap_and_compare("resnet18", "dynactivation", args.image_size, target="relu")


if __name__ == "__main__":
    main()
