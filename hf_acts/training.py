"""Pieces the Accelerate scripts share: run folders, crash-safe checkpoints, logs and curves.

Not a trainer: the scripts in ``finetune/`` own their loops (Accelerate-examples style).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedType
from transformers import get_cosine_schedule_with_warmup

CHECKPOINTS = "checkpoints"
ARGS_FILE = "training_args.json"
# arguments that may differ between a run and its resumption
RESUME_FREE = {"resume", "output_dir", "report_to"}


class TrainState:
    """Counters saved with every checkpoint (registered with ``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps
        self.epoch = 0
        self.batches_in_epoch = 0  # micro-batches of ``epoch`` already consumed

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.epoch, self.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]


def prepare_output_dir(output_dir: str | Path, args: dict[str, Any], resume: bool) -> Path:
    """Create the run folder and record the arguments; refuse (``ValueError``) a folder holding another
    run, or a finished/started run without ``--resume``."""
    out = Path(output_dir)
    saved = out / ARGS_FILE
    if saved.exists():
        previous = json.loads(saved.read_text())
        differs = {k for k in set(previous) | set(args) if k not in RESUME_FREE and previous.get(k) != args.get(k)}
        if differs:
            raise ValueError(f"{out} holds a different run (arguments differ: {sorted(differs)}); use another "
                             "--output-dir")
        if not resume:
            raise ValueError(f"{out} already holds this run; pass --resume to continue it or use another --output-dir")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{'--resume: ' if resume else ''}{out} holds files but no {ARGS_FILE}: it is not a "
                              "run folder; use another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_args(output_dir: Path, args: dict[str, Any]) -> None:
    (output_dir / ARGS_FILE).write_text(json.dumps(args, indent=2, sort_keys=True))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (half-written ones only exist under a temporary name)."""
    ckpts = sorted(p for p in (Path(output_dir) / CHECKPOINTS).glob("step_*") if p.is_dir())
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int = 2) -> Path:
    """``accelerator.save_state`` into a temporary folder, renamed into place when complete; keeps the
    newest ``keep`` checkpoints."""
    root = output_dir / CHECKPOINTS
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # atomic on one filesystem
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def append_log(output_dir: Path, record: dict[str, Any]) -> None:
    with (output_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def plot_curves(records: list[dict[str, Any]], path: Path, metrics: tuple[str, ...]) -> Path:
    """Training curves (train loss and the given eval metrics per epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(4.5 * (1 + len(metrics)), 3.5))
    epochs = [r["epoch"] for r in records]
    for ax, key in zip(axes, ("train_loss", *metrics), strict=True):
        ax.plot(epochs, [r.get(key) for r in records], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def epoch_batches(accelerator: Accelerator, loader, state: TrainState):
    """The batches of ``state.epoch`` still to do (skips those a resumed checkpoint already consumed)."""
    loader.set_epoch(state.epoch)
    return accelerator.skip_first_batches(loader, state.batches_in_epoch)


def steps_per_epoch(num_batches: int, num_processes: int, grad_accum: int, max_steps: int | None = None) -> int:
    """Optimizer steps each process takes per epoch: Accelerate shards the ``num_batches`` batches of the unprepared
    loader over the processes (the last shard padded), and every ``grad_accum`` micro-batches make a step."""
    steps = math.ceil(math.ceil(num_batches / num_processes) / grad_accum)
    return min(steps, max_steps) if max_steps else steps


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, num_processes: int):
    """transformers' cosine schedule with linear warmup over ``total_steps`` optimizer steps, for
    ``accelerator.prepare``: a prepared scheduler steps once per process at each optimizer step (Accelerate's
    ``split_batches=False`` default), so the schedule spans ``num_processes`` times the steps and ends at 0 on the
    run's last step."""
    n = num_processes
    return get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps) * n, total_steps * n)


def optimizer_step(accelerator: Accelerator, model, optimizer, scheduler, loss, clip_grad: float) -> None:
    """Backward, clip at synchronisation steps, step optimizer and scheduler (inside ``accumulate``)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and clip_grad:
        accelerator.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def after_batch(accelerator: Accelerator, state: TrainState, output_dir: Path, checkpoint_steps: int,
                keep: int) -> bool:
    """Count the micro-batch; on an optimizer step count it and checkpoint every ``checkpoint_steps``.
    Returns whether an optimizer step happened."""
    state.batches_in_epoch += 1
    if not accelerator.sync_gradients:
        return False
    state.step += 1
    if checkpoint_steps and state.step % checkpoint_steps == 0:
        save_checkpoint(accelerator, output_dir, state.step, keep)
    return True


def end_epoch(accelerator: Accelerator, state: TrainState, output_dir: Path, record: dict[str, Any],
              checkpoint_steps: int, keep: int) -> None:
    """Log the epoch's record (console, trackers, ``log.jsonl``) and checkpoint if saving per epoch."""
    accelerator.log(record, step=state.step)
    accelerator.print(json.dumps(record))
    if accelerator.is_main_process:
        append_log(output_dir, record)
    if not checkpoint_steps:
        save_checkpoint(accelerator, output_dir, state.step, keep)


class RecipeArgumentParser(argparse.ArgumentParser):
    """argparse that reads ``@recipe.args`` files: one ``--flag=value`` per line, ``#`` comments allowed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, fromfile_prefix_chars="@", **kwargs)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        line = arg_line.strip()
        return [] if not line or line.startswith("#") else [line]


def add_training_args(parser: argparse.ArgumentParser, lr: float, batch_size: int, weight_decay: float,
                      warmup_ratio: float, epochs: int) -> None:
    """The optimisation and output flags both scripts share (defaults differ per script)."""
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=batch_size, help="per process")
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--weight-decay", type=float, default=weight_decay)
    g.add_argument("--warmup-ratio", type=float, default=warmup_ratio)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    g.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("output")
    g.add_argument("--output-dir")
    g.add_argument("--checkpoint-steps", type=int, default=0, help="save every N optimizer steps (0: each epoch)")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    g.add_argument("--report-to", default="tensorboard", choices=["tensorboard", "none"])


def shard_on_cpu() -> bool:
    """Make multi-process launches on a machine without an accelerator run as what their config asks for.

    Two silent fallbacks of Accelerate 1.15 on such machines: a launch config's ``use_cpu: true`` does not reach the
    processes of a multi-process launch, so each runs alone on the whole dataset (this sets ``ACCELERATE_USE_CPU``
    where ``WORLD_SIZE > 1`` and no accelerator exists); and FSDP / DeepSpeed configs become plain DDP (their switches
    cover accelerator devices only). For the latter this wraps ``AcceleratorState.__init__`` so that the state says
    FSDP / DeepSpeed and Accelerate's own ``prepare`` shards (FSDP2's ``fully_shard`` and DeepSpeed with
    ``DS_ACCELERATOR=cpu`` both run on gloo). The finetune scripts call it; where an accelerator exists it changes
    nothing. Returns True once installed."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")

    init = AcceleratorState.__init__
    if getattr(init, "hf_acts_cpu_sharding", False):
        return True

    def __init__(self, *args: Any, fsdp_plugin: Any = None, deepspeed_plugin: Any = None, **kwargs: Any) -> None:  # noqa: N807
        fresh = not AcceleratorState._shared_state
        init(self, *args, fsdp_plugin=fsdp_plugin, deepspeed_plugin=deepspeed_plugin, **kwargs)
        if not fresh or self.distributed_type != DistributedType.MULTI_CPU:
            return
        if fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
        elif deepspeed_plugin is not None:
            self.distributed_type = DistributedType.DEEPSPEED
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            self._mixed_precision = "no"  # DeepSpeed applies the precision itself (as Accelerate does on GPUs)
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type

    __init__.hf_acts_cpu_sharding = True
    AcceleratorState.__init__ = __init__
    return True


def make_accelerator(args: argparse.Namespace, output_dir: Path) -> Accelerator:
    """An Accelerator for the scripts: accumulation, mixed precision, trackers, reproducible shuffling; FSDP and
    DeepSpeed configs shard on CPU processes too (:func:`shard_on_cpu`)."""
    shard_on_cpu()
    return Accelerator(
        gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to, project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def start_state(accelerator: Accelerator, output_dir: Path, resume: bool, name: str,
                run_args: dict[str, Any]) -> TrainState:
    """Register the counters for checkpointing, load the newest checkpoint when resuming, start trackers."""
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if resume and (ckpt := latest_checkpoint(output_dir)) is not None:
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} (step {state.step}, epoch {state.epoch})")
    accelerator.init_trackers(name, config={k: str(v) for k, v in run_args.items()})
    return state


def final_metrics(accelerator: Accelerator, output_dir: Path, state: TrainState, epochs: int, seconds: float,
                  steps_run: int) -> dict[str, Any]:
    """The last epoch's record plus the run's totals (what ``metrics.json`` and the model card report): the engine,
    optimizer steps per second of this launch (training and evaluation loop, ``seconds`` for ``steps_run``) and each
    process's peak resident memory. Every process must call it (the memory figures are gathered)."""
    last = read_log(output_dir)[-1]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    rss = accelerator.gather(torch.tensor([rss_mb], device=accelerator.device)).tolist()
    return {"epochs": epochs, "steps": state.step, "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type).rpartition(".")[2],
            "steps_per_second": round(steps_run / seconds, 3) if seconds > 0 else None,
            "peak_rss_mb_per_process": [round(r, 1) for r in rss],
            **{k: v for k, v in last.items() if k not in ("epoch", "step")}}


def sync_buffers(accelerator: Accelerator, model: Any) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics, ...) under FSDP and DeepSpeed, as DDP does at
    each forward: those engines leave buffers per rank, so each rank would evaluate its half of the data with its own
    statistics and the saved model (rank 0's) would not be the model that was evaluated. Every rank must call it."""
    if accelerator.num_processes > 1 and accelerator.distributed_type in (DistributedType.FSDP,
                                                                          DistributedType.DEEPSPEED):
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def gathered_state_dict(accelerator: Accelerator, model: Any) -> dict[str, Any] | None:
    """The trained model's full (unsharded) weights on the main process, None on the others. Every rank must call it:
    under FSDP and DeepSpeed ZeRO-3 gathering the shards is a collective."""
    state_dict = accelerator.get_state_dict(model)
    return state_dict if accelerator.is_main_process else None
