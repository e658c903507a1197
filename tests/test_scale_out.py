"""FSDP2 and DeepSpeed ZeRO-3 on the CPU (gloo, two processes) with hf-acts models: the shape-(1,) activation
parameters shard (both engines refuse 0-d parameters), training follows the single-process run, and the gathered
model saves and reloads with identical logits."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ENV, ROOT, lm_eval_batch, vision_eval_batch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import hf_acts  # registers the hf-acts model types

HELD = {"fsdp2": "DTensor", "zero3": "partitioned"}


def _run(tmp_path, engine: str, processes: int):
    out = tmp_path / f"{engine}{processes}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
           str(29530 + processes), str(ROOT / "tests" / "sharded_worker.py"), engine, str(out)]
    proc = subprocess.run(cmd, env={**ENV, "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_two_processes_match_one_and_save_the_full_model(tmp_path, engine):
    one, two = _run(tmp_path, engine, 1), _run(tmp_path, engine, 2)
    sharded = json.loads((two / "sharded.json").read_text())
    assert sharded["model.layers.0.mlp.act_fn.alpha"] == HELD[engine]  # sharded, not refused (0-d ones were)
    # same global batch and seed: the trajectories differ only by the order of float sums (gradient reduction over
    # 2 ranks vs one backward), which AdamW's normalised steps keep at the 1e-6 level over 5 steps
    losses_one = json.loads((one / "losses.json").read_text())
    losses_two = json.loads((two / "losses.json").read_text())
    assert losses_two[-1] < losses_two[0]
    torch.testing.assert_close(torch.tensor(losses_two), torch.tensor(losses_one), rtol=1e-4, atol=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(two).eval()
    act = reloaded.model.layers[1].mlp.act_fn
    assert act.alpha.shape == (1,) and act.alpha.item() != 1.0  # trained, gathered, saved in full
    ids = torch.randint(0, 96, (8, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, load_file(two / "logits.safetensors")["logits"])
    torch.testing.assert_close(load_file(two / "logits.safetensors")["logits"],
                               load_file(one / "logits.safetensors")["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,distributed,engine", [("fsdp2_gpu", "FSDP", "fsdp_version"),
                                                     ("fsdp2_2nodes", "FSDP", "fsdp_version"),
                                                     ("zero3_gpu", "DEEPSPEED", "zero_stage")])
def test_gpu_launch_configs_parse(name, distributed, engine):
    """The GPU launch configs (not run here: Accelerate shards only on accelerators) load with Accelerate's own
    parser and ask for the engine they name."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "finetune" / "configs" / f"{name}.yaml"))
    assert config.distributed_type == distributed
    settings = config.fsdp_config if distributed == "FSDP" else config.deepspeed_config
    assert settings[engine] in (2, 3)
    assert config.num_processes == 8 * config.num_machines


# ---- the finetune scripts through Accelerate's own FSDP2 / DeepSpeed paths (CPU processes, gloo) ----

def _metrics(out) -> dict:  # noqa: ANN001
    return json.loads((out / "metrics.json").read_text())


def _eval_losses(out) -> list[float]:  # noqa: ANN001
    return [json.loads(line)["eval_loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def _lm_eval(model, out) -> float:  # noqa: ANN001
    """The reloaded model's loss on the run's eval blocks (what the run's last eval_loss measured)."""
    with torch.no_grad():
        return model(**lm_eval_batch(out)).loss.item()


@pytest.mark.slow
def test_lm_under_fsdp2_follows_one_process_and_saves_the_full_model(tmp_path):
    """Accelerate's FSDP2 (fsdp2_cpu.yaml, 2 processes x batch 4) against one process with batch 8, same seed: the
    same samples make each optimizer step (seedable sampler, sharded by batch), so the eval losses after each epoch
    differ only by the order of float sums in the gradient reduction (measured: 1e-8 relative; rtol 1e-5)."""
    from conftest import LM, launch

    args = [*LM, "--mlp", "dynactglu", "--epochs", "2", "--max-steps", "3"]
    one, two = tmp_path / "one", tmp_path / "fsdp2"
    launch("lm.py", [*args, "--batch-size", "8", "--output-dir", str(one)])
    launch("lm.py", [*args, "--batch-size", "4", "--output-dir", str(two)], config="fsdp2_cpu.yaml")
    assert _metrics(two)["distributed_type"] == "FSDP" and _metrics(two)["num_processes"] == 2
    assert _metrics(two)["steps"] == _metrics(one)["steps"] == 6
    torch.testing.assert_close(torch.tensor(_eval_losses(two)), torch.tensor(_eval_losses(one)), rtol=1e-5, atol=0)
    auto_map = json.loads((two / "config.json").read_text())["auto_map"]
    assert set(auto_map.values()) <= {"configuration_hf_acts.HfActsLlamaConfig", "modeling_hf_acts.HfActsLlamaModel",
                                      "modeling_hf_acts.HfActsLlamaForCausalLM"}, auto_map  # not FSDP's class
    assert not list(two.glob("_fsdp*.py"))
    model = AutoModelForCausalLM.from_pretrained(two).eval()
    assert model.model.layers[1].mlp.act_fn.alpha.shape == (1,) and model.model.layers[1].mlp.act_fn.alpha != 1.0
    assert _lm_eval(model, two) == pytest.approx(_metrics(two)["eval_loss"], rel=1e-5)  # the gathered, full model
    ids = torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        save_file({"ids": ids, "logits": model(input_ids=ids).logits}, tmp_path / "expected.safetensors")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_acts"] = None  # trust_remote_code alone
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM
        expected = load_file("{tmp_path / 'expected.safetensors'}")
        model = AutoModelForCausalLM.from_pretrained("{two}", trust_remote_code=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=expected["ids"]).logits, expected["logits"], rtol=1e-5,
                                       atol=1e-5)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "zero2", "zero3"])
def test_vision_adrelu_model_under_sharding_engines(tmp_path, engine):
    """A CIFAR ResNet-8 built with act_layer="adrelu" (ADReLUs sized at their first call: the script builds them on
    a real batch before wrapping; per-channel convs and GroupNorms in every block) under FSDP2 and DeepSpeed ZeRO-2/3
    in 2 processes: the saved folder is the full model and reproduces the run's eval loss."""
    import timm
    from conftest import VISION, launch

    out = tmp_path / engine
    config, extra = {"fsdp2": ("fsdp2_cpu.yaml", ()), "zero2": ("zero3_cpu.yaml", ("--zero_stage", "2")),
                     "zero3": ("zero3_cpu.yaml", ())}[engine]
    args = [*VISION, "--model", "resnet8_cifar", "--model-kwargs", '{"act_layer": "adrelu"}']  # the later --model wins
    launch("vision.py", [*args, "--epochs", "1", "--max-eval-samples", "100", "--output-dir", str(out)],
           config=config, launch_args=extra)
    metrics = _metrics(out)
    assert metrics["distributed_type"] == ("FSDP" if engine == "fsdp2" else "DEEPSPEED")
    assert metrics["num_processes"] == 2 and metrics["steps"] == 5  # 320 samples / (2 x 32)
    hf_acts.integrations.timm.register_names()  # the folder's model_args name act_layer "adrelu"
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert sum(isinstance(m, hf_acts.ADReLU) for m in model.modules()) == 7
    batch = vision_eval_batch(model)
    with torch.no_grad():
        logits = model(batch["x"])
    # the eval loss, not top-1: after 5 steps the model is near chance, where float-order differences between the
    # 2-process run and this reload can flip a near-tied argmax
    eval_loss = torch.nn.functional.cross_entropy(logits, batch["y"]).item()
    assert eval_loss == pytest.approx(metrics["eval_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_lm_under_deepspeed_saves_the_full_model(tmp_path, stage):
    from conftest import LM, launch

    out = tmp_path / f"zero{stage}"
    launch("lm.py", [*LM, "--mlp", "dynactglu", "--max-steps", "4", "--output-dir", str(out)], config="zero3_cpu.yaml",
           launch_args=("--zero_stage", str(stage)))
    assert _metrics(out)["distributed_type"] == "DEEPSPEED" and _metrics(out)["num_processes"] == 2
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.model.layers[0].mlp.act_fn.alpha != 1.0  # trained, gathered from its partitions
    assert _lm_eval(model, out) == pytest.approx(_metrics(out)["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_kill_a_rank_under_fsdp2_and_resume_from_the_sharded_checkpoint(tmp_path):
    """SIGKILL to one of the two FSDP2 ranks mid-run; --resume loads the sharded checkpoint and ends at the same
    step count as an uninterrupted run."""
    import os
    import signal
    import time

    from conftest import ENV, VISION, launch

    out = tmp_path / "run"
    args = [*VISION, "--epochs", "2", "--max-eval-samples", "50", "--checkpoint-steps", "2", "--output-dir", str(out)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "finetune" / "configs" / "fsdp2_cpu.yaml"), str(ROOT / "finetune" / "vision.py"), *args]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("step_00000004")):
        time.sleep(0.2)
    ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                            text=True).stdout.split()]  # the launcher's children: the two ranks
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies; the launcher tears the other down
    proc.wait(timeout=120)
    assert proc.returncode != 0 and not (out / "metrics.json").exists(), "the run finished before it was killed"
    assert list((out / "checkpoints").glob("step_*/pytorch_model_fsdp_0")), "no sharded checkpoint"
    resumed = launch("vision.py", [*args, "--resume"], config="fsdp2_cpu.yaml")
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert _metrics(out)["steps"] == 2 * 5 and _metrics(out)["distributed_type"] == "FSDP"


@pytest.mark.slow
def test_two_machines_on_loopback(tmp_path):
    """--num_machines 2: machine ranks 0 and 1 started separately (one process each), rendezvous on 127.0.0.1."""
    from conftest import ENV, LM

    out = tmp_path / "run"
    base = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "finetune" / "configs" / "cpu_2proc.yaml"), "--num_machines", "2", "--num_processes", "2",
            "--main_process_ip", "127.0.0.1", "--main_process_port", "29540"]
    script = [str(ROOT / "finetune" / "lm.py"), *LM, "--mlp", "dynactglu", "--max-steps", "3", "--output-dir",
              str(out)]
    procs = [subprocess.Popen([*base, "--machine_rank", str(r), *script], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    assert _metrics(out)["num_processes"] == 2 and _metrics(out)["steps"] == 3
    assert AutoModelForCausalLM.from_pretrained(out).model.layers[0].mlp.act_fn.alpha != 1.0


AIEC_STEPS = textwrap.dedent("""
    import torch
    from torch import nn

    import hf_acts


    def aiec_steps(model, batches, wrapped=None):
        '''SGD steps on (x, y) batches with Eq. 14's loss; the counters of the AIEC layer after each step.'''
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        counters = []
        for x, y in batches:
            with hf_acts.aiec_targets(model, y):
                logits = (wrapped or model)(x)
            loss = nn.functional.cross_entropy(logits, y) + hf_acts.aiec_loss(model, lambda_gate=2.0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            counters.append(torch.stack([model[1].theta, model[1].eta, model[1].phi]))
        return torch.stack(counters)


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), hf_acts.AIEC(8, num_classes=3), nn.Linear(8, 3)).train()


    g = torch.Generator().manual_seed(0)
    BATCHES = [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
""")


@pytest.mark.slow
def test_aiec_counters_under_ddp_count_the_global_batch(tmp_path):
    """Two DDP ranks, each on half of every global batch: after every step both hold the counters one process
    holds after the same steps on the whole batches (the counts are summed over the ranks; without that, DDP's
    buffer broadcast left each rank rank 0's counts plus its own last batch)."""
    (tmp_path / "aiec_steps.py").write_text(AIEC_STEPS)
    (tmp_path / "worker.py").write_text(textwrap.dedent(f"""
        import sys
        import torch, torch.distributed as dist
        from safetensors.torch import save_file
        sys.path.insert(0, "{tmp_path}")
        from aiec_steps import BATCHES, aiec_steps, build

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model = build()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        halves = [(x.chunk(2)[rank], y.chunk(2)[rank]) for x, y in BATCHES]
        save_file({{"counters": aiec_steps(model, halves, ddp)}}, f"{tmp_path}/rank{{rank}}.safetensors")
        dist.destroy_process_group()
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29551",
           str(tmp_path / "worker.py")]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sys.path.insert(0, str(tmp_path))
    from aiec_steps import BATCHES, aiec_steps, build

    one = aiec_steps(build(), BATCHES)
    assert one[-1, 2].sum() > 0  # samples were counted
    for rank in (0, 1):
        assert torch.equal(load_file(tmp_path / f"rank{rank}.safetensors")["counters"], one), rank
