"""Train a tiny dynActGLU Llama sharded on gloo, with FSDP2 (``fully_shard`` per decoder layer, then the root) or
DeepSpeed ZeRO-3 (``DS_ACCELERATOR=cpu``); run with ``torchrun --nproc_per_node N tests/sharded_worker.py ENGINE
OUT``. Every rank takes its slice of one fixed global batch, so any N trains on the same data as N = 1. Writes
(rank 0) the gathered full model with ``save_pretrained``, its logits, the loss trajectory and how each parameter
was held. Used by tests/test_scale_out.py; Accelerate shards only on accelerators (on the CPU an FSDP or DeepSpeed
config runs DDP), so this calls the engines directly."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import AutoConfig, AutoModelForCausalLM

import hf_acts

STEPS = 5


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model("hf_acts_llama", vocab_size=96, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=64, mlp_variant="dynactglu", dynact_beta_init=0.1)
    return AutoModelForCausalLM.from_config(config)


def fsdp2(model: torch.nn.Module) -> tuple[torch.nn.Module, object, dict]:
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, 0.01), lr=3e-3)
    return model, optimizer, {n: type(p).__name__ for n, p in model.named_parameters()}


def zero3(model: torch.nn.Module, world: int) -> tuple[object, object, dict]:
    import deepspeed

    config = {"train_micro_batch_size_per_gpu": 8 // world, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3}}
    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, 0.01), lr=3e-3)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    held = {n: "partitioned" if hasattr(p, "ds_id") else "replicated" for n, p in engine.module.named_parameters()}
    return engine, optimizer, held


def full_state_dict(engine: str, model: object) -> dict:
    if engine == "fsdp2":
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.module.parameters())):
        return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def main(engine: str, out: Path) -> None:
    if engine == "zero3":
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    else:
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, optimizer, held = fsdp2(build()) if engine == "fsdp2" else zero3(build(), world)
    ids = torch.randint(0, 96, (8, 24), generator=torch.Generator().manual_seed(1))
    local = ids.chunk(world)[rank]
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=local, labels=local).loss
        if engine == "fsdp2":  # FSDP2 reduce-scatters the gradients as a mean over ranks: the global batch's
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        else:  # ZeRO-3 averages over ranks in its own backward
            model.backward(loss)
            model.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    full = full_state_dict(engine, model)
    if rank == 0:
        gathered = build()
        gathered.load_state_dict(full)
        gathered.save_pretrained(out)
        with torch.no_grad():
            save_file({"logits": gathered.eval()(input_ids=ids).logits}, out / "logits.safetensors")
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "sharded.json").write_text(json.dumps(held))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
