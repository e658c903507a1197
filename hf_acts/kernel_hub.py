"""The Hugging Face Kernel Hub (the ``kernels`` library) for hf-acts: stable layer names, the kernel repository
built from :mod:`hf_acts.ops`, and the mapping that ``kernels.kernelize`` needs.

With ``kernels`` installed, ``import hf_acts`` marks :class:`~hf_acts.DynActivation`, :class:`~hf_acts.SwishBeta`,
:class:`~hf_acts.DynActGLU` and :class:`~hf_acts.FleS` as Kernel Hub layers (``kernel_layer_name`` below), so::

    from kernels import Mode, kernelize, use_kernel_mapping
    with use_kernel_mapping(hf_acts.kernel_hub.kernel_mapping("path/or/hub-id", device="cuda")):
        kernelize(model, mode=Mode.TRAINING, device="cuda")

swaps their forwards for the repository's Triton layers (:mod:`hf_acts.ops.hub_layers`). The repository is a
``torch-cuda`` build (pure Python + Triton), laid out as the Kernel Hub expects; ``hf-acts kernel-repo`` writes
it and ``hf-acts publish`` pushes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from .activations import DynActGLU, DynActivation, FleS, SwishBeta

# Kernel Hub layer name -> (the class marked with it, its layer in the repository's ``layers.py``)
LAYERS: dict[str, tuple[type[nn.Module], str]] = {
    "HfActsDynActivation": (DynActivation, "DynActivation"),
    "HfActsSwishBeta": (SwishBeta, "SwishBeta"),
    "HfActsDynActGLU": (DynActGLU, "DynActGLU"),
    "HfActsFleS": (FleS, "FleS"),
}
CONDITIONS = {"HfActsFleS": lambda module: not module.proto}  # FleS-Proto (an ablation) keeps its own forward
PACKAGE = "hf_acts_kernels"
VARIANT = "torch-cuda"
OPS = Path(__file__).resolve().parent / "ops"
KERNEL_FILES = ("ids.py", "triton_pointwise.py", "triton_fles.py", "fles_math.py")


def mark_kernel_layers() -> bool:
    """Give each hf-acts layer class its Kernel Hub name (``kernels.replace_kernel_forward_from_hub``); False, and
    nothing changed, without ``kernels``."""
    try:
        from kernels import replace_kernel_forward_from_hub
    except ImportError:
        return False
    for name, (cls, _) in LAYERS.items():
        replace_kernel_forward_from_hub(cls, name, CONDITIONS.get(name))
    return True


def build_kernel_repo(output_dir: str | Path, version: int = 1) -> Path:
    """Write the kernel repository into ``output_dir``: ``build/torch-cuda/hf_acts_kernels/`` (the Triton
    kernels, the FleS math and ``layers.py``) with its ``metadata.json``, and a README. Returns ``output_dir``."""
    out = Path(output_dir)
    variant = out / "build" / VARIANT
    package = variant / PACKAGE
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for name in KERNEL_FILES:
        shutil.copyfile(OPS / name, package / name)
    shutil.copyfile(OPS / "hub_layers.py", package / "layers.py")
    (package / "__init__.py").write_text('"""hf-acts Triton kernels for the Kernel Hub."""\n\nfrom . import layers\n\n'
                                         '__all__ = ["layers"]\n')
    metadata = {"name": PACKAGE.replace("_", "-"), "id": f"_{PACKAGE}_v{version}", "version": version,
                "license": "Apache-2.0", "python-depends": [], "backend": {"type": "cuda"}}
    (variant / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    rows = "\n".join(f"| `{name}` | `{layer}` | `hf_acts.{cls.__name__}` |" for name, (cls, layer) in LAYERS.items())
    (out / "README.md").write_text(f"""---
license: apache-2.0
tags: [kernels, triton, activations, hf-acts]
---
# hf-acts activation kernels

Triton kernels (forward and backward, float32 / bfloat16 / float16 with float32 arithmetic) for the trainable
activations of hf-acts (the `hf-acts` Python package): dynActivation, dynActGLU's gate product, Swish-beta
and FleS. A `{VARIANT}` noarch build (for any torch version): pure Python and Triton.

| layer name (`kernel_layer_name`) | layer here | replaces the forward of |
|---|---|---|
{rows}

```python
import hf_acts
from kernels import Mode, kernelize, use_kernel_mapping

with use_kernel_mapping(hf_acts.kernel_hub.kernel_mapping("<this repo id>", device="cuda")):
    model = kernelize(model, mode=Mode.TRAINING, device="cuda")
```
""")
    return out


def kernel_mapping(repo: str | Path, device: str = "cuda") -> dict:
    """The ``kernels.use_kernel_mapping`` argument for every hf-acts layer: a local repository folder (an existing
    path) or a Hub repository id."""
    from kernels import LayerRepository, LocalLayerRepository

    local = Path(repo).exists()

    def repository(layer: str) -> object:
        if local:
            return LocalLayerRepository(repo_path=Path(repo), layer_name=layer)
        return LayerRepository(repo_id=str(repo), layer_name=layer)

    return {name: {device: repository(layer)} for name, (_, layer) in LAYERS.items()}
