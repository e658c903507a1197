"""Train a tiny dynActGLU Llama with FSDP2 (``fully_shard`` per decoder layer, then the root) on gloo; run with
``torchrun --nproc_per_node N tests/fsdp2_worker.py OUT``. Every rank takes its slice of one fixed global batch, so
any N trains on the same data as N = 1. Writes (rank 0) the gathered full model with ``save_pretrained``, its logits
and the loss trajectory. Used by tests/test_scale_out.py; Accelerate runs FSDP only on accelerators (on the CPU it
falls back to DDP), so this calls FSDP2 directly."""

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


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build()
    if world > 1:
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, 0.01), lr=3e-3)
    ids = torch.randint(0, 96, (8, 24), generator=torch.Generator().manual_seed(1))
    local = ids.chunk(world)[rank]
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=local, labels=local).loss
        loss.backward()  # FSDP2 reduce-scatters the gradients as a mean over ranks: the global batch's gradient
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        gathered = build()
        gathered.load_state_dict(full)
        gathered.save_pretrained(out)
        with torch.no_grad():
            save_file({"logits": gathered.eval()(input_ids=ids).logits}, out / "logits.safetensors")
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "sharded.json").write_text(json.dumps({n: type(p).__name__ for n, p in model.named_parameters()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
