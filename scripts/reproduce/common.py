"""What the reproductions share: offline data as tensors, one plain training loop, statistics and verdicts.

The experiments train many small models (hundreds of runs), so they use an in-memory loop instead of
``finetune/vision.py`` (whose per-run cost is the Accelerate set-up, checkpoints and a model card); the
demo experiment goes through the real scripts. Every run is seeded; results go to
``benchmarks/reproductions/<experiment>.json`` and :mod:`report` renders them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import get_cosine_schedule_with_warmup

import hf_acts
from hf_acts.bench import machine
from hf_acts.data import mnist1d_dataset

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "reproductions"

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """Arguments every experiment takes: ``--quick`` (a smoke test of seconds), seeds, threads, output folder."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke test of the whole experiment")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: runs stay comparable across machines)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for <experiment>.json")
    return p


def parse(doc: str | None, argv: list[str] | None, epochs: int = 0,
          p: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """An experiment's arguments (``p``, default :func:`parser`), with torch's threads set. ``--quick`` keeps the
    first seed, 1 epoch and 600 samples; a full run has ``epochs`` epochs of 5,000 samples. ``args.epochs`` and
    ``args.samples`` carry the choice (and land in the results' settings)."""
    args = (p or parser(doc)).parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds = args.seeds[:1]
    args.epochs, args.samples = (1, 600) if args.quick else (epochs, 5000)
    return args


def mnist1d(num_samples: int = 5000, shape: tuple[int, ...] = (1, 1, 40)) -> Data:
    """MNIST-1D (generated locally, 80/20 split) as ``(x_train, y_train, x_test, y_test)``; ``x`` is
    ``(N, *shape)``: ``(1, 1, 40)`` makes a one-row image for CNNs and ViTs."""
    ds = mnist1d_dataset(num_samples=num_samples)
    x, y = ({split: torch.tensor(ds[split][col][:]) for split in ("train", "test")} for col in ("x", "label"))
    return x["train"].view(-1, *shape), y["train"], x["test"].view(-1, *shape), y["test"]


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)


SIGNAL = (1, 1, 40)  # an MNIST-1D signal as a one-row image


def mlp(act: str = "relu", hidden: tuple[int, ...] = (512, 256, 128)) -> nn.Module:
    """The zoo's ``mlp_mnist1d`` (the ADReLU paper's FC network, Table 6)."""
    return timm.create_model("mlp_mnist1d", hidden=hidden, act_layer=act)


def resnet8(act: str = "relu") -> nn.Module:
    """The zoo's CIFAR ResNet-8 on one-row images: its 3x3 convolutions see the row and zero padding."""
    return timm.create_model("resnet8_cifar", num_classes=10, in_chans=1, act_layer=act)


def vit(act: str = "gelu", depth: int = 4, dim: int = 64) -> nn.Module:
    """A small ViT on MNIST-1D: patches of 4 samples (10 tokens) and a class token."""
    return VisionTransformer(img_size=SIGNAL[1:], patch_size=(1, 4), in_chans=1, num_classes=10, embed_dim=dim,
                             depth=depth, num_heads=4, mlp_ratio=2.0, act_layer=timm.layers.get_act_layer(act))


def swap(model: nn.Module, act: str, target: str, **kwargs: Any) -> nn.Module:
    """``hf_acts.replace_activations`` with the method's own (paper) init: these models train from scratch."""
    hf_acts.replace_activations(model, act, target=target, example_inputs=torch.randn(2, *SIGNAL), preserve=False,
                                **kwargs)
    return model


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterable[torch.Tensor]:
    """Index batches: shuffled with ``generator``, in order without one."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             order: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy and loss in eval mode; ``order`` fixes which samples share a batch (FleS-Proto's test)."""
    model.eval()
    order = torch.arange(len(y)) if order is None else order
    correct, loss = 0, 0.0
    for idx in order.split(batch_size):
        logits = model(x[idx]).float()
        correct += (logits.argmax(-1) == y[idx]).sum().item()
        loss += F.cross_entropy(logits, y[idx], reduction="sum").item()
    return {"acc": correct / len(y), "loss": loss / len(y)}


def train_classifier(model: nn.Module, data: Data, *, epochs: int, lr: float, batch_size: int = 128,
                     weight_decay: float = 0.0, seed: int = 0, warmup_ratio: float = 0.05,
                     aiec: tuple[float, float] | None = None, clip_grad: float = 1.0,
                     on_epoch: Callable[[int, nn.Module], None] | None = None) -> dict[str, Any]:
    """AdamW (activation parameters and 1-D tensors without decay) with a cosine schedule; cross-entropy,
    plus AIEC's losses (Eq. 14, ``aiec = (lambda_aux, lambda_gate)``) when given. Returns the final
    train/test accuracy and the test accuracy after every epoch."""
    x, y, x_test, y_test = data
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, weight_decay), lr=lr)
    steps = epochs * math.ceil(len(y) / batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    curve, start = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        if aiec is not None:
            hf_acts.reset_aiec_counters(model)
        for idx in batches(len(y), batch_size, gen):
            if aiec is not None:
                with hf_acts.aiec_targets(model, y[idx]):
                    logits = model(x[idx])
                loss = F.cross_entropy(logits, y[idx]) + hf_acts.aiec_loss(model, *aiec)
            else:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            scheduler.step()
        curve.append(evaluate(model, x_test, y_test)["acc"])
        if on_epoch is not None:
            on_epoch(epoch, model)
    return {"train_acc": evaluate(model, x, y)["acc"], "test_acc": curve[-1], "curve": curve,
            "seconds": time.perf_counter() - start}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``values`` times ``scale``."""
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def verdict(ours: list[float], base: list[float], higher_is_better: bool = True) -> str:
    """Does ``ours`` beat ``base`` as the paper claims? "holds" when the mean difference exceeds both runs'
    spread (the larger std), "holds in direction only" when it is within it (or with a single seed), else
    "does not hold here"."""
    (m1, s1), (m0, s0) = mean_std(ours), mean_std(base)
    diff = (m1 - m0) if higher_is_better else (m0 - m1)
    if diff <= 0:
        return "does not hold here"
    if min(len(ours), len(base)) < 2:  # one seed has no spread to compare with
        return "holds in direction only"
    return "holds" if diff > max(s1, s0) else "holds in direction only"


def save(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json`` with the settings, the seeds (and epochs and samples, where the experiment has
    them) and the machine beside the results."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    run = {"epochs": args.epochs, "samples": args.samples} if args.epochs else {}
    path.write_text(json.dumps({"experiment": name, "settings": settings, "machine": machine(), **run,
                                "seeds": args.seeds, **payload}, indent=1))
    print(f"wrote {path}")
    return path
