"""timm model files: architectures hf-acts adds (CIFAR ResNets, MLP) and the registered zoo variants."""

from . import cifar_resnet, mlp, zoo  # noqa: F401  (registration by import)
