"""The Kernel Hub path: hf-acts layers carry stable layer names, `hf-acts kernel-repo` writes a repository that the
`kernels` library loads, and `kernelize` swaps in its Triton layers (here on CPU tensors through Triton's
interpreter), which match the plain formulas."""

import json

import pytest
import torch
from conftest import TRITON_DEVICE, randomize_
from kernels import Mode, kernelize, use_kernel_mapping

from hf_acts import DynActGLU, DynActivation, FleS, SwishBeta, kernel_hub
from hf_acts.cli import main as cli
from hf_acts.ops import dispatch


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel-repo")
    cli(["kernel-repo", str(out)])
    return out


def test_layers_are_marked_with_stable_names():
    assert DynActivation.kernel_layer_name == "HfActsDynActivation"
    assert {cls.kernel_layer_name for cls in (DynActivation, SwishBeta, DynActGLU, FleS)} == set(kernel_hub.LAYERS)


def test_repository_layout(repo):
    variant = repo / "build" / kernel_hub.VARIANT
    metadata = json.loads((variant / "metadata.json").read_text())
    assert metadata["name"] == "hf-acts-kernels" and metadata["backend"] == {"type": "cuda"}
    names = {p.name for p in (variant / kernel_hub.PACKAGE).iterdir()}
    assert {"__init__.py", "layers.py", "triton_pointwise.py", "triton_fles.py", "fles_math.py", "ids.py"} <= names
    readme = (repo / "README.md").read_text()
    assert "HfActsFleS" in readme and f"`{kernel_hub.VARIANT}` noarch build" in readme


def _model() -> torch.nn.Module:
    glu = randomize_(DynActGLU(8, 12), 0.3)
    with torch.no_grad():
        glu.act_fn.alpha.fill_(1.2)
        glu.act_fn.beta.fill_(0.2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1), DynActivation("gelu", 1.2, 0.3, per_channel=True, channels=8),
        SwishBeta(1.3), randomize_(FleS(8), 0.3), torch.nn.Flatten(2), _Transpose(), glu,
        FleS(8, proto=True)).to(TRITON_DEVICE)


class _Transpose(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)  # (B, 8, 25) -> tokens (B, 25, 8)


def test_kernelize_swaps_in_the_triton_layers_and_they_match_the_plain_formula(repo, monkeypatch):
    model = _model()
    x = torch.randn(2, 3, 5, 5, device=TRITON_DEVICE, requires_grad=True)
    monkeypatch.setattr(dispatch, "FUSED", False)
    want = model(x)
    want_grads = torch.autograd.grad(want.sum(), (x, *model.parameters()))
    monkeypatch.undo()
    with use_kernel_mapping(kernel_hub.kernel_mapping(repo, device=TRITON_DEVICE)):
        kernelize(model, mode=Mode.TRAINING, device=TRITON_DEVICE)
    for module in model:
        if isinstance(module, (DynActivation, SwishBeta, DynActGLU, FleS)):
            swapped = module.forward.__func__ is not type(module).forward
            assert swapped is not getattr(module, "proto", False), module  # FleS-Proto keeps its own forward
    got = model(x)
    got_grads = torch.autograd.grad(got.sum(), (x, *model.parameters()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_publish_dry_run_lists_the_repository(repo, capsys):
    cli(["publish", str(repo), "--repo-id", "someone/hf-acts-kernels", "--dry-run"])
    out = capsys.readouterr().out
    assert f"build/{kernel_hub.VARIANT}/metadata.json" in out and "layers.py" in out
