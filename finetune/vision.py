"""Fine-tune / train a timm image classifier with hf-acts activations, with Accelerate.

    accelerate launch finetune/vision.py --model efficientnetv2_s_adrelu --pretrained --dataset uoft-cs/cifar100
    python finetune/vision.py --model efficientnetv2_rw_t_adrelu --dataset digits --img-size 64 --epochs 2

Model: a timm name, an hf-acts zoo variant, ``hf-hub:``/``local-dir:``, or a base model plus ``--act`` (the swap
API). Data: a Hub dataset, a local image folder, or the embedded ``digits`` / ``mnist1d``. The output folder is
Hub-ready: ``model.safetensors``, timm ``config.json`` (with label names), ``training_args.json``,
``metrics.json``, ``log.jsonl``, ``training_curves.png`` and TensorBoard logs; ``checkpoints/`` holds the
Accelerate states ``--resume`` continues from.
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import hf_acts
from hf_acts.cards import BASE_SPEC, render_card
from hf_acts.data import load_image_dataset
from hf_acts.errors import json_object, run
from hf_acts.integrations.timm import TIMM_NAMES, register_names
from hf_acts.metrics import load_metric
from hf_acts.training import (
    RecipeArgumentParser,
    add_training_args,
    after_batch,
    cosine_schedule,
    end_epoch,
    epoch_batches,
    final_metrics,
    gathered_state_dict,
    make_accelerator,
    optimizer_step,
    plot_curves,
    prepare_output_dir,
    read_log,
    start_state,
    steps_per_epoch,
    sync_buffers,
    write_args,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = RecipeArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="efficientnetv2_rw_t_adrelu", help="timm / hf-acts model, hf-hub:, local-dir:")
    g.add_argument("--pretrained", action="store_true", help="start from pretrained (or warm-start) weights")
    g.add_argument("--model-kwargs", default="{}",
                   help='JSON arguments for timm.create_model, e.g. \'{"act_layer": "adrelu", "drop_path_rate": 0.1}\'')
    g.add_argument("--act", help="swap this hf-acts activation into --model (e.g. fles, adrelu, dynactivation)")
    g.add_argument("--target", default="relu,silu,gelu", help="activations the swap replaces (comma-separated)")
    g.add_argument("--select", help="regex on module names the swap keeps")
    g.add_argument("--exclude", help="regex on module names the swap skips")
    g.add_argument("--last", type=int, help="swap only the last N sites in forward order")
    g.add_argument("--act-kwargs", default="{}", help="JSON constructor arguments for --act")
    g.add_argument("--lora-r", type=int, help="train LoRA adapters of this rank (PEFT) plus the activations and head")
    g.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2 * rank)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help="digits | mnist1d | Hub dataset | local image folder")
    g.add_argument("--image-column")
    g.add_argument("--label-column")
    g.add_argument("--train-split", default="train")
    g.add_argument("--eval-split")
    g.add_argument("--img-size", type=int, help="input size (default: the model's data config)")
    g.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability in training")
    g.add_argument("--max-train-samples", type=int)
    g.add_argument("--max-eval-samples", type=int)
    g = p.add_argument_group("method")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--aiec-lambda-aux", type=float, default=1.0)
    g.add_argument("--aiec-lambda-gate", type=float, default=200.0)
    add_training_args(p, lr=1e-3, batch_size=32, weight_decay=0.05, warmup_ratio=0.1, epochs=3)
    args = p.parse_args(argv)
    if args.lora_r and not args.pretrained:
        p.error("--lora-r adapts pretrained weights: add --pretrained (with a timm name, hf-hub: or local-dir: model)")
    args.output_dir = args.output_dir or f"outputs/{args.model.replace('/', '_').replace(':', '_')}-{args.dataset}"
    return args


def model_spec(args: argparse.Namespace, num_classes: int, in_chans: int) -> tuple[str, dict]:
    """``timm.create_model`` name and arguments: ``--model`` as is, or ``hf_acts_swapped`` when ``--act`` asks for a
    swap."""
    kwargs: dict = {**json_object(args.model_kwargs, "--model-kwargs"), "num_classes": num_classes}
    if kwargs.get("act_layer") in TIMM_NAMES:  # an hf-acts act_layer name: timm looks it up in its own table
        register_names()  # (loading the saved folder needs the same call: hf_acts.integrations.timm.register_names)
    if in_chans != 3:
        kwargs["in_chans"] = in_chans
    name = args.model
    if args.act:
        swap = {"act": args.act, "target": args.target.split(","), "select": args.select, "exclude": args.exclude,
                "last": args.last, "kwargs": json_object(args.act_kwargs, "--act-kwargs")}
        name, kwargs = "hf_acts_swapped", {**kwargs, "base_model": args.model, "swaps": [swap]}
    return name, kwargs


def make_transforms(model: torch.nn.Module, data, args: argparse.Namespace):
    """Batch transforms from timm's data config (images) or a reshape (MNIST-1D vectors)."""
    if data.is_vector:
        shape = model.pretrained_cfg.get("input_size", (1, 1, -1))

        def vectors(batch):
            x = torch.tensor(batch[data.image_column], dtype=torch.float32)
            return {"x": x.view(len(x), *shape[:-1], -1), "y": torch.tensor(batch[data.label_column])}

        return vectors, vectors, {"input_size": tuple(shape)}
    overrides = {"input_size": (3, args.img_size, args.img_size)} if args.img_size else {}
    cfg = resolve_data_config(overrides, model=model)
    train_tf = create_transform(**cfg, is_training=True, hflip=args.hflip)
    eval_tf = create_transform(**cfg)

    def wrap(tf):
        def apply(batch):
            x = torch.stack([tf(img.convert("RGB")) for img in batch[data.image_column]])
            return {"x": x, "y": torch.tensor(batch[data.label_column])}
        return apply

    return wrap(train_tf), wrap(eval_tf), cfg


def evaluate_model(model, loader, accelerator: Accelerator, k: int) -> dict[str, float]:
    """Top-1 / top-k with the shipped evaluate modules; ``gather_for_metrics`` counts each sample once."""
    top1 = load_metric("accuracy", keep_in_memory=True)
    topk = load_metric("top_k_accuracy", keep_in_memory=True)
    model.eval()
    loss_sum, n = 0.0, 0
    for batch in loader:
        with torch.no_grad():
            logits = model(batch["x"])
        logits, labels = accelerator.gather_for_metrics((logits, batch["y"]))
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
        n += len(labels)
        top1.add_batch(predictions=logits.argmax(-1), references=labels)
        topk.add_batch(predictions=logits.topk(k, dim=-1).indices, references=labels)
    r1, rk = top1.compute(), topk.compute()
    return {"eval_loss": loss_sum / n, "top1": r1["accuracy"], f"top{k}": rk["top_k_accuracy"], "eval_count": n}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run_args = dict(vars(args))
    out = prepare_output_dir(args.output_dir, run_args, args.resume)  # fails before any heavy work
    accelerator = make_accelerator(args, out)
    data = load_image_dataset(args.dataset, args.image_column, args.label_column, args.train_split, args.eval_split)
    # seeded after loading: a first import while loading (rich's) draws from Python's random, which the training
    # transforms use, so a second run with the same seed in one process (a notebook) would otherwise differ
    set_seed(args.seed)
    if args.max_train_samples:
        data.train = data.train.select(range(min(args.max_train_samples, len(data.train))))
    if args.max_eval_samples:
        data.eval = data.eval.select(range(min(args.max_eval_samples, len(data.eval))))
    name, kwargs = model_spec(args, len(data.label_names), in_chans=1 if data.is_vector else 3)
    model = timm.create_model(name, pretrained=args.pretrained, **kwargs)  # unknown names: hf_acts.errors reports
    reports = getattr(model, "hf_acts_reports", [])
    train_tf, eval_tf, data_cfg = make_transforms(model, data, args)
    # activations sized at their first call (act_layer="fles", ...) get their parameters before the optimizer, LoRA
    # and any DDP / FSDP / DeepSpeed wrapping see the model
    hf_acts.build_lazy(model, data.eval.with_transform(eval_tf)[:2]["x"])
    if args.lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, hf_acts.peft_config(model, r=args.lora_r, lora_alpha=args.lora_alpha))
    train_loader = DataLoader(data.train.with_transform(train_tf), batch_size=args.batch_size, shuffle=True)
    eval_loader = DataLoader(data.eval.with_transform(eval_tf), batch_size=args.batch_size)
    if accelerator.is_main_process:
        write_args(out, run_args)
        for report in reports:
            accelerator.print(report)

    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, args.weight_decay), lr=args.lr)
    total_steps = steps_per_epoch(len(train_loader), accelerator.num_processes, args.grad_accum) * args.epochs
    scheduler = cosine_schedule(optimizer, total_steps, args.warmup_ratio, accelerator.num_processes)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    state = start_state(accelerator, out, args.resume, "vision", run_args)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    k = min(5, len(data.label_names))

    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_local_main_process)
    started, first_step = time.perf_counter(), state.step
    while state.epoch < args.epochs:
        model.train()
        if state.batches_in_epoch == 0:
            hf_acts.reset_aiec_counters(model)
        loss_sum, seen = 0.0, 0
        for batch in epoch_batches(accelerator, train_loader, state):
            with accelerator.accumulate(model):
                with hf_acts.aiec_targets(model, batch["y"]):
                    logits = model(batch["x"])
                loss = criterion(logits, batch["y"]) + hf_acts.aiec_loss(
                    model, args.aiec_lambda_aux, args.aiec_lambda_gate).to(logits.device)
                optimizer_step(accelerator, model, optimizer, scheduler, loss, args.clip_grad)
            loss_sum, seen = loss_sum + loss.item(), seen + 1
            if after_batch(accelerator, state, out, args.checkpoint_steps, args.keep_checkpoints):
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        sync_buffers(accelerator, model)  # BatchNorm statistics: one model evaluated, the one saved
        metrics = evaluate_model(model, eval_loader, accelerator, k)
        record = {"epoch": state.epoch, "step": state.step, "train_loss": loss_sum / max(seen, 1), **metrics,
                  "lr": scheduler.get_last_lr()[0]}
        end_epoch(accelerator, state, out, record, args.checkpoint_steps, args.keep_checkpoints)
    progress.close()

    final = final_metrics(accelerator, out, state, args.epochs, time.perf_counter() - started, state.step - first_step)
    state_dict = gathered_state_dict(accelerator, model)  # all ranks: FSDP / ZeRO-3 shards gathered
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        if args.lora_r:  # an adapter folder, and how to build the model it adapts
            model.save_pretrained(out, state_dict=state_dict)
            spec = {"model_name": name, "kwargs": kwargs, "activation": reports[0].activation if reports else None}
            (out / BASE_SPEC).write_text(json.dumps(spec, indent=2))
        else:
            hf_acts.save_timm_model(model, out, label_names=data.label_names, state_dict=state_dict)
        final.update(model=args.model, dataset=args.dataset, data_config={k_: list(v) if isinstance(v, tuple) else v
                                                                            for k_, v in data_cfg.items()},
                     parameters=sum(p.numel() for p in model.parameters()))
        (out / "metrics.json").write_text(json.dumps(final, indent=2))
        plot_curves(read_log(out), out / "training_curves.png", ("top1", "eval_loss"))
        if (out / "hf_acts_swaps.json").exists() or args.lora_r:  # a card describes an hf-acts model or adapter
            render_card(out).save(out / "README.md")
        accelerator.print(f"Hub-ready folder: {out.resolve()} (publish: hf-acts publish {out} --repo-id ORG/NAME)")
    accelerator.end_training()  # after the gather: it ends the process group
    return final


if __name__ == "__main__":
    run(main, "vision.py")  # errors end in one line on stderr; --debug shows the traceback
