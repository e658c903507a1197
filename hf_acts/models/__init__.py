"""timm model files: architectures hf-acts adds (CIFAR ResNets) and the registered zoo variants."""

from . import cifar_resnet, zoo  # noqa: F401  (registration by import)
