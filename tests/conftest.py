import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
VISION = ["--model", "resnet8_cifar_adrelu", "--dataset", "digits", "--img-size", "32", "--hflip", "0",
          "--batch-size", "32", "--max-train-samples", "320", "--report-to", "none"]
LM = ["--model", "tiny", "--hidden-size", "64", "--intermediate-size", "160", "--num-layers", "2", "--vocab-size",
      "400", "--block-size", "64", "--batch-size", "8", "--report-to", "none"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter (read when the kernels are defined,
# so before hf_acts.ops.triton_* is imported); with one they run on CUDA tensors (tests/test_triton.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_fused_equals_plain(monkeypatch: pytest.MonkeyPatch, module: torch.nn.Module, shape: tuple) -> None:
    """The module's default (fused kernel) path equals its plain PyTorch path in float64: output and the gradients
    of the input and of every parameter. The plain path is itself checked against the papers' equations."""
    from hf_acts.ops import dispatch

    module = module.double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(*shape, dtype=torch.float64)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(dispatch, "FUSED", fused)
        y = module(x)
        results.append((y, *torch.autograd.grad(y, (x, *module.parameters()), grad)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want)


def ran_op(y: torch.Tensor, op: str) -> bool:
    """Whether the registered op ``hf_acts::<op>`` is in ``y``'s autograd graph (its node names it), or its kernels
    under the eager fast path (``direct._Direct``, whose node holds the op's backward kernel)."""
    from hf_acts.ops import direct as fast_path

    kernels = [k for o, (_, by_device, *_) in fast_path.KERNELS.items() if o._qualname == f"hf_acts::{op}"
               for k in by_device.values()]
    todo, seen = [y.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        if type(node).__name__.startswith(f"GeneratedBackwardFor_hf_acts_{op}_default"):
            return True
        if type(node).__name__ == "_DirectBackward" and node.backward in kernels:
            return True
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return False


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(module: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised layers would hide bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """ATen's intra-op thread count set to ``n`` inside the block (the kernels split their work by it), restored
    after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize_activations_(model: torch.nn.Module, scale: float = 0.5) -> torch.nn.Module:
    """:func:`randomize_` every hf-acts activation of ``model`` (moved off the init, as training would)."""
    from hf_acts.registry import named_activations

    for _, module in named_activations(model):
        randomize_(module, scale)
    return model


def launch(script: str, args: list[str], processes: int = 1, config: str | None = None,
           launch_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``accelerate launch [launch_args] finetune/<script> args`` in a subprocess with a launch config of
    ``finetune/configs`` (default: one or two plain CPU processes); fails the test with its stderr."""
    config = config or ("cpu_2proc.yaml" if processes == 2 else "cpu_single.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "finetune" / "configs" /
           config), *launch_args, str(ROOT / "finetune" / script), *args]
    proc = subprocess.run(cmd, env={**ENV, "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="session")
def vision_run(tmp_path_factory) -> Path:
    """A real (tiny) fine-tuning output: ResNet-8 ADReLU on digits, 2 epochs."""
    out = tmp_path_factory.mktemp("vision") / "run"
    launch("vision.py", [*VISION, "--epochs", "2", "--max-eval-samples", "100", "--output-dir", str(out)])
    return out


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory) -> Path:
    """A real (tiny) LM training output: dynActGLU Llama on pydoc, 12 steps."""
    out = tmp_path_factory.mktemp("lm") / "run"
    launch("lm.py", [*LM, "--mlp", "dynactglu", "--max-steps", "12", "--output-dir", str(out)])
    return out


def vision_eval_batch(model: torch.nn.Module, samples: int = 100) -> dict[str, torch.Tensor]:
    """The first ``samples`` digits eval images as finetune/vision.py evaluates them (its eval transform with the
    test runs' arguments): what a reloaded folder is checked against its run's metrics on."""
    from hf_acts.data import load_image_dataset

    sys.path.insert(0, str(ROOT / "finetune"))
    import vision

    data = load_image_dataset("digits")
    _, eval_tf, _ = vision.make_transforms(model, data, vision.parse_args(VISION))
    return eval_tf(data.eval[:samples])


def lm_eval_batch(folder: Path) -> dict[str, torch.Tensor]:
    """Every pydoc eval block (64 tokens, the test runs' block size) with the run's own tokenizer, as
    finetune/lm.py evaluates them."""
    from transformers import AutoTokenizer

    from hf_acts.data import load_text_dataset

    sys.path.insert(0, str(ROOT / "finetune"))
    import lm

    blocks = lm.pack(load_text_dataset("pydoc")["eval"], AutoTokenizer.from_pretrained(folder), 64)
    return {k: torch.stack([b[k] for b in blocks]) for k in ("input_ids", "labels")}


def assert_every_section_has_content(text: str) -> None:
    """No heading without a body, and no paragraph that announces content with ":" and stops there."""
    body = text.split("---", 2)[2]
    blocks = [b.strip() for b in re.split(r"\n\s*\n", re.sub(r"```.*?```", "CODE", body, flags=re.S)) if b.strip()]
    for block, following in zip(blocks, blocks[1:] + [""], strict=True):
        if block.startswith("#") and "\n" not in block:
            assert following and not following.startswith("#"), f"heading without content: {block!r}"
        if block.rstrip().endswith(":"):
            assert following.startswith(("*", "-", "|", "CODE", "1.")), f"{block!r} announces content it lacks"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/test_transformers_common.py is slow throughout and fetches transformers' sdist when imported (once, into
    .cache/): not even collected when slow tests are deselected (`make test`)."""
    if collection_path.name == "test_transformers_common.py" and "not slow" in (config.getoption("markexpr") or ""):
        return True
    return None
