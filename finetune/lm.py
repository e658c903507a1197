"""Train or fine-tune a causal LM with a dynActGLU (or SwiGLU) MLP, with Accelerate.

    accelerate launch finetune/lm.py --model Qwen/Qwen3-0.6B --mlp dynactglu --dataset Salesforce/wikitext ...
    python finetune/lm.py --model tiny --mlp dynactglu --dataset pydoc --max-steps 200

``--model tiny`` trains a small Llama-style model from scratch with a byte-level BPE tokenizer trained on the
corpus; a Hub id or local folder is converted with ``hf_acts.convert_glu`` (function-preserving). The output
folder is Hub-ready: ``save_pretrained`` weights + config + model code (``trust_remote_code``), the tokenizer,
``training_args.json``, ``metrics.json``, ``log.jsonl``, ``training_curves.png``; ``checkpoints/`` for ``--resume``.
With ``--lora-r R`` (a pretrained ``--model``) it trains PEFT LoRA adapters plus the activation parameters
(:func:`hf_acts.peft_config`) and the folder is an adapter folder (``adapter_model.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tokenizers import ByteLevelBPETokenizer
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    default_data_collator,
)

import hf_acts
from hf_acts.cards import render_card
from hf_acts.data import load_text_dataset
from hf_acts.errors import run
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
    write_args,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = RecipeArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny", help="tiny | Hub id | local folder (Llama/Mistral/Qwen2/Qwen3)")
    g.add_argument("--mlp", default="dynactglu", choices=["swiglu", "dynactglu"])
    g.add_argument("--mlp-mode", default="gate", choices=["gate", "both"])
    g.add_argument("--layers", type=int, nargs="*", help="decoder layers to convert (default: all)")
    g.add_argument("--dynact-beta-init", type=float, default=0.0)
    g.add_argument("--hidden-size", type=int, default=128, help="tiny model")
    g.add_argument("--intermediate-size", type=int, default=352, help="tiny model")
    g.add_argument("--num-layers", type=int, default=4, help="tiny model")
    g.add_argument("--num-heads", type=int, default=4, help="tiny model")
    g.add_argument("--vocab-size", type=int, default=1024, help="tiny model's BPE tokenizer")
    g.add_argument("--lora-r", type=int, help="train LoRA adapters of this rank (PEFT) plus the activations")
    g.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2 * rank)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="pydoc", help="pydoc | Hub text dataset | local dataset folder")
    g.add_argument("--text-column", default="text")
    g.add_argument("--block-size", type=int, default=128)
    g = p.add_argument_group("schedule")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (per epoch budget)")
    add_training_args(p, lr=3e-3, batch_size=16, weight_decay=0.1, warmup_ratio=0.05, epochs=1)
    args = p.parse_args(argv)
    if args.lora_r and args.model == "tiny":
        p.error("--lora-r adapts pretrained weights: pass --model <Hub id or local folder>")
    args.output_dir = args.output_dir or f"outputs/lm-{args.model.replace('/', '_')}-{args.mlp}-{args.dataset}"
    return args


def tiny_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the corpus (deterministic: every process gets the same one)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def build(args: argparse.Namespace, texts: list[str]):
    """Tokenizer and model: a tiny hf-acts Llama from scratch, or a pretrained model converted in place."""
    if args.model == "tiny":
        tokenizer = tiny_tokenizer(texts, args.vocab_size)
        config = AutoConfig.for_model(
            "hf_acts_llama", vocab_size=len(tokenizer), hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size, num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads, num_key_value_heads=args.num_heads,
            max_position_embeddings=args.block_size, mlp_variant=args.mlp, mlp_mode=args.mlp_mode,
            mlp_layers=args.layers, dynact_beta_init=args.dynact_beta_init, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return tokenizer, AutoModelForCausalLM.from_config(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model)
    except OSError as e:
        raise ValueError(f"cannot load model {args.model!r}: {e}") from e
    if args.mlp == "dynactglu":
        model = hf_acts.convert_glu(model, "dynactglu", layers=args.layers, mode=args.mlp_mode,
                                    beta_init=args.dynact_beta_init)
    if args.lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, hf_acts.peft_config(model, r=args.lora_r, lora_alpha=args.lora_alpha))
    return tokenizer, model


def pack(dataset, tokenizer, block_size: int):
    """Tokenize, join documents with EOS and cut into fixed-length blocks (labels = inputs)."""
    def tokenize(batch):
        return {"ids": [ids + [tokenizer.eos_token_id] for ids in tokenizer(batch["text"])["input_ids"]]}

    def chunk(batch):
        flat = [t for ids in batch["ids"] for t in ids]
        n = len(flat) // block_size * block_size
        blocks = [flat[i:i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": blocks}

    tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
    return tokens.map(chunk, batched=True, batch_size=10_000, remove_columns=["ids"]).with_format("torch")


def evaluate_lm(model, loader, accelerator: Accelerator) -> dict[str, float]:
    """Token-weighted eval loss and perplexity; ``gather_for_metrics`` counts each block once."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        with torch.no_grad():
            loss = model(**batch).loss
        n = torch.full((batch["input_ids"].shape[0],), batch["input_ids"].shape[1] - 1, device=loss.device)
        losses, counts = accelerator.gather_for_metrics((loss.repeat(len(n)), n))
        total += (losses * counts).sum().item()
        tokens += counts.sum().item()
    mean = total / tokens
    return {"eval_loss": mean, "perplexity": math.exp(mean), "eval_tokens": tokens}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run_args = dict(vars(args))
    out = prepare_output_dir(args.output_dir, run_args, args.resume)
    set_seed(args.seed)
    accelerator = make_accelerator(args, out)
    data = load_text_dataset(args.dataset, args.text_column)
    tokenizer, model = build(args, data["train"]["text"])
    train_ds, eval_ds = pack(data["train"], tokenizer, args.block_size), pack(data["eval"], tokenizer, args.block_size)
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise ValueError(f"--block-size {args.block_size} leaves no training/eval block in {args.dataset!r}")
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, collate_fn=default_data_collator)
    eval_loader = DataLoader(eval_ds, batch_size=args.batch_size, collate_fn=default_data_collator)
    if accelerator.is_main_process:
        write_args(out, run_args)
    epoch_steps = steps_per_epoch(len(train_loader), accelerator.num_processes, args.grad_accum, args.max_steps)
    total_steps = epoch_steps * args.epochs
    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, args.weight_decay), lr=args.lr,
                                  betas=(0.9, 0.95))
    scheduler = cosine_schedule(optimizer, total_steps, args.warmup_ratio, accelerator.num_processes)
    model_class = type(model)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    state = start_state(accelerator, out, args.resume, "lm", run_args)

    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_local_main_process)
    started, first_step = time.perf_counter(), state.step
    while state.epoch < args.epochs:
        model.train()
        loss_sum, seen = 0.0, 0
        for batch in epoch_batches(accelerator, train_loader, state):
            if state.step >= (state.epoch + 1) * epoch_steps:
                break
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                optimizer_step(accelerator, model, optimizer, scheduler, loss, args.clip_grad)
            loss_sum, seen = loss_sum + loss.item(), seen + 1
            if after_batch(accelerator, state, out, args.checkpoint_steps, args.keep_checkpoints):
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        record = {"epoch": state.epoch, "step": state.step, "train_loss": loss_sum / max(seen, 1),
                  **evaluate_lm(model, eval_loader, accelerator), "lr": scheduler.get_last_lr()[0]}
        end_epoch(accelerator, state, out, record, args.checkpoint_steps, args.keep_checkpoints)
    progress.close()

    final = final_metrics(accelerator, out, state, args.epochs, time.perf_counter() - started, state.step - first_step)
    state_dict = gathered_state_dict(accelerator, model)  # all ranks: FSDP / ZeRO-3 shards gathered
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model)
        # FSDP2's fully_shard swaps in a class defined in torch (FSDP<cls>); save_pretrained copies the file of the
        # model's class as remote code, so training is over and the model gets its own class back
        model.__class__ = model_class
        model.save_pretrained(out, state_dict=state_dict)
        tokenizer.save_pretrained(out)
        final.update(model=args.model, mlp=args.mlp, dataset=args.dataset,
                     parameters=sum(p.numel() for p in model.parameters()),
                     trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
        (out / "metrics.json").write_text(json.dumps(final, indent=2))
        plot_curves(read_log(out), out / "training_curves.png", ("eval_loss", "perplexity"))
        render_card(out).save(out / "README.md")
        accelerator.print(f"Hub-ready folder: {out.resolve()} (publish: hf-acts publish {out} --repo-id ORG/NAME)")
    accelerator.end_training()  # after the gather: it ends the process group
    return final


if __name__ == "__main__":
    run(main, "lm.py")  # errors end in one line on stderr; --debug shows the traceback
