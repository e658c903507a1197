"""The Accelerate scripts end to end on the embedded datasets (subprocesses through `accelerate launch`)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
from conftest import ENV, LM, ROOT, VISION, launch, lm_eval_batch, vision_eval_batch
from transformers import AutoModelForCausalLM

import hf_acts

sys.path.insert(0, str(ROOT / "finetune"))
import lm  # noqa: E402
import vision  # noqa: E402

SHORT = ["--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "16"]


def _last_record(out) -> dict:
    return json.loads((out / "log.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
def test_vision_output_is_hub_ready_and_reproduces_its_metrics(vision_run):
    files = {p.name for p in vision_run.iterdir()}
    assert {"model.safetensors", "config.json", "training_args.json", "metrics.json", "log.jsonl",
            "training_curves.png", "hf_acts_swaps.json", "README.md"} <= files
    metrics = json.loads((vision_run / "metrics.json").read_text())
    assert metrics["steps"] == 2 * 10 and metrics["eval_count"] == 100
    config = json.loads((vision_run / "config.json").read_text())
    assert config["label_names"] == [str(i) for i in range(10)] and "num_classes" not in config["model_args"]
    model = timm.create_model(f"local-dir:{vision_run}", pretrained=True).eval()
    batch = vision_eval_batch(model)
    with torch.no_grad():
        logits = model(batch["x"])
    assert (logits.argmax(-1) == batch["y"]).float().mean().item() == pytest.approx(metrics["top1"])
    last = sorted((vision_run / "checkpoints").glob("step_*"))[-1]
    from safetensors.torch import load_file
    twin = timm.create_model("resnet8_cifar_adrelu", num_classes=10).eval()
    twin.load_state_dict(load_file(last / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(twin(batch["x"]), logits)


@pytest.mark.slow
def test_vision_two_processes_count_each_eval_sample_once(tmp_path):
    out = tmp_path / "run"
    launch("vision.py", [*VISION, "--epochs", "1", "--max-eval-samples", "101", "--output-dir", str(out)],
           processes=2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["eval_count"] == 101  # odd: the padded duplicate is dropped
    assert metrics["steps"] == 5  # 320 samples / (2 x 32)
    assert _last_record(out)["lr"] == 0.0  # the cosine schedule ends on the last step of each process


@pytest.mark.slow
def test_kill_and_resume_finishes_with_the_same_number_of_steps(tmp_path):
    out = tmp_path / "run"
    args = [*VISION, "--epochs", "2", "--max-eval-samples", "50", "--checkpoint-steps", "3", "--output-dir", str(out)]
    config = ROOT / "finetune" / "configs" / "cpu_single.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           str(ROOT / "finetune" / "vision.py"), *args]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("step_00000006")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((out / "checkpoints").glob("step_*")), "no checkpoint before the kill"
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    proc2 = launch("vision.py", [*args, "--resume"])
    assert "resumed from" in proc2.stdout + proc2.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 * 10
    assert [r["epoch"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())][-1] == 2
    assert not list((out / "checkpoints").glob(".tmp-*"))
    # every 3 steps, the newest two kept (--keep-checkpoints' default)
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*"))] == ["step_00000015", "step_00000018"]


def test_lm_tiny_end_to_end_and_reload(lm_run):  # not slow: `make test`'s real training-to-reload run
    out = lm_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"])
    assert _last_record(out)["lr"] == 0.0  # the cosine schedule spans --max-steps
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(model).__name__ == "HfActsLlamaForCausalLM"
    assert model.model.layers[0].mlp.act_fn.alpha.item() != 1.0  # trained
    batch = lm_eval_batch(out)
    with torch.no_grad():
        ours, theirs = model(**batch), remote(**batch)
    assert torch.equal(ours.logits, theirs.logits)
    assert ours.loss.item() == pytest.approx(metrics["eval_loss"], rel=1e-4)


@pytest.mark.parametrize("extra,match", [
    (["--model", "resnet_nope"], r"Unknown model \(resnet_nope\)"),  # timm's error; the CLI line: test_errors
    (["--label-column", "klass"], "label column 'klass' not in dataset 'digits'"),
    (["--act", "fles", "--select", "nothing_matches"], "no module matches"),
    (["--dataset", "no-such-org/no-such-dataset"], "cannot load dataset 'no-such-org/no-such-dataset'"),
])
def test_vision_bad_input_fails_before_training(tmp_path, extra, match):
    out = tmp_path / "run"
    with pytest.raises(Exception, match=match):
        vision.main([*VISION, "--epochs", "1", "--output-dir", str(out), *extra])
    assert not (out / "checkpoints").exists()


def test_output_dir_holding_another_run_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "training_args.json").write_text(json.dumps({"model": "other"}))
    with pytest.raises(ValueError, match="holds a different run"):
        vision.main([*VISION, "--output-dir", str(out)])
    with pytest.raises(ValueError, match="holds a different run"):
        lm.main([*LM, "--output-dir", str(out), "--resume"])


def test_same_run_without_resume_is_refused(tmp_path):
    out = tmp_path / "run"
    args = vision.parse_args([*VISION, "--output-dir", str(out)])
    hf_acts.training.prepare_output_dir(out, vars(args), resume=False)
    hf_acts.training.write_args(out, vars(args))
    with pytest.raises(ValueError, match="pass --resume"):
        vision.main([*VISION, "--output-dir", str(out)])


def test_resuming_lets_only_the_resume_free_arguments_change(tmp_path):
    out = tmp_path / "run"
    args = vars(vision.parse_args([*VISION, "--output-dir", str(out)]))
    hf_acts.training.prepare_output_dir(out, args, resume=False)
    hf_acts.training.write_args(out, args)
    moved = {**args, "resume": True, "output_dir": str(tmp_path / "moved"),
             "report_to": "tensorboard" if args["report_to"] == "none" else "none"}
    assert hf_acts.training.prepare_output_dir(out, moved, resume=True) == out
    with pytest.raises(ValueError, match=r"arguments differ: \['lr'\]"):
        hf_acts.training.prepare_output_dir(out, {**args, "lr": args["lr"] * 2}, resume=True)


@pytest.mark.parametrize("sync", [True, False])
def test_optimizer_step_clips_at_synchronisation_steps_only(sync):
    """Clipping a micro-batch's partial gradient during accumulation would clip the wrong norm."""

    class Accelerator:  # the members optimizer_step uses; Accelerate's prepared optimizer skips non-sync steps
        sync_gradients = sync
        backward = staticmethod(lambda loss: loss.backward())
        clip_grad_norm_ = staticmethod(torch.nn.utils.clip_grad_norm_)

    model = torch.nn.Linear(4, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loss = 100 * model(torch.ones(1, 4)).sum()  # gradient 100 per weight: norm 200
    hf_acts.training.optimizer_step(Accelerator(), model, optimizer, scheduler, loss, clip_grad=1.0)
    assert model.weight.norm().item() == pytest.approx(1.0 if sync else 200.0)
    assert model.weight.grad is None or not model.weight.grad.any()


@pytest.mark.parametrize("batches,processes,accum,max_steps,steps", [
    (10, 1, 1, None, 10), (11, 2, 1, None, 6), (11, 2, 2, None, 3), (11, 2, 2, 2, 2), (3, 4, 1, 5, 1)])
def test_steps_per_epoch_counts_the_optimizer_steps_of_each_process(batches, processes, accum, max_steps, steps):
    assert hf_acts.training.steps_per_epoch(batches, processes, accum, max_steps) == steps


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_cosine_schedule_warms_up_and_ends_at_zero_on_the_last_step_of_each_process(processes):
    """Stepped as Accelerate steps a prepared scheduler (``processes`` times per optimizer step), the schedule peaks
    after the warmup steps and reaches 0 at the run's last optimizer step, not before."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = hf_acts.training.cosine_schedule(optimizer, total_steps=10, warmup_ratio=0.2, num_processes=processes)
    lrs = []
    for _ in range(10):
        optimizer.step()
        for _ in range(processes):
            scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-2] > 0 and lrs[-1] == 0.0


def test_vision_label_smoothing_is_the_training_loss_it_asks_for(tmp_path):
    """With ``--lr 0`` three runs of one seed see the same model and batches, and label smoothing's loss is linear in
    its epsilon: ``(1 - eps) * NLL + eps * mean_k(-log p_k)``, so the eps = 0.3 run's loss is 0.7 L(0) + 0.3 L(1)."""
    loss = {}
    for eps in ("0", "1", "0.3"):
        vision.main([*VISION, *SHORT, "--lr", "0", "--label-smoothing", eps, "--output-dir", str(tmp_path / eps)])
        loss[eps] = _last_record(tmp_path / eps)["train_loss"]
    assert abs(loss["1"] - loss["0"]) > 1e-3  # the flag changes the loss (else the relation below holds trivially)
    assert loss["0.3"] == pytest.approx(0.7 * loss["0"] + 0.3 * loss["1"], rel=1e-6)


def test_vision_clears_the_aiec_counters_at_every_epoch_start(tmp_path, monkeypatch):
    """The class counters hold one epoch's statistics (Sec. 3.4): cleared before the first epoch and again after it,
    once per epoch."""
    counted, reset = [], hf_acts.reset_aiec_counters

    def spy(model):
        counted.append(sum(m.phi.sum().item() for m in hf_acts.activations.aiec.aiec_modules(model)))
        reset(model)

    monkeypatch.setattr(hf_acts, "reset_aiec_counters", spy)
    out = tmp_path / "run"
    vision.main([*VISION, *SHORT, "--epochs", "2", "--model", "resnet8_cifar", "--act", "aiec", "--last", "2",
                 "--output-dir", str(out)])
    assert len(counted) == 2 and counted[0] == 0 and counted[1] > 0
    record = _last_record(out)  # Eq. 14: the training loss adds L_aux (about ln 10 = 2.3 for an untrained unit)
    assert record["train_loss"] - record["eval_loss"] > 1.0


def test_lm_bad_model(tmp_path):
    with pytest.raises(ValueError, match="cannot load model"):
        lm.main([*LM, "--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "run")])


def test_recipes_parse_and_the_lm_pair_differs_only_in_the_mlp():
    recipe = vision.parse_args([f"@{ROOT}/finetune/configs/efficientnetv2_s_adrelu_cifar100.args"])
    assert recipe.model == "efficientnetv2_s_adrelu" and recipe.pretrained and recipe.label_column == "fine_label"
    a, b = (vars(lm.parse_args([f"@{ROOT}/finetune/configs/lm_tiny_{m}.args"])) for m in ("swiglu", "dynactglu"))
    assert {k for k in a if a[k] != b[k]} == {"mlp", "output_dir"}


CODE_DOCS = ["def f(x):\n    return x + 1\n", "class A:\n    pass\n", "import os\nprint(os.sep)\n"]


def test_lm_packing_joins_documents_with_eos_and_drops_the_last_partial_block():
    from datasets import Dataset

    tokenizer = lm.tiny_tokenizer(CODE_DOCS * 20, vocab_size=300)
    stream = [t for doc in CODE_DOCS for t in [*tokenizer(doc)["input_ids"], tokenizer.eos_token_id]]
    block = 7
    packed = lm.pack(Dataset.from_dict({"text": CODE_DOCS}), tokenizer, block)[:]
    assert len(packed["input_ids"]) == len(stream) // block > 1
    assert torch.equal(packed["input_ids"].flatten(), torch.tensor(stream[:len(stream) // block * block]))
    assert torch.equal(packed["labels"], packed["input_ids"])


@pytest.mark.parametrize("pretrained", [False, True])
def test_lm_build_converts_the_layers_and_mode_it_is_given(pretrained, tmp_path):
    """``--layers``, ``--mlp-mode`` and ``--dynact-beta-init`` reach the model, for a tiny model built from scratch and
    for a pretrained plain Llama converted by ``convert_glu``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = CODE_DOCS * 20
    args = [*LM, "--layers", "1", "--mlp-mode", "both", "--dynact-beta-init", "0.25"]
    if pretrained:
        base = tmp_path / "base"
        LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)).save_pretrained(base)
        lm.tiny_tokenizer(texts, 300).save_pretrained(base)
        args[args.index("tiny")] = str(base)
    _, model = lm.build(lm.parse_args(args), texts)
    first, second = (layer.mlp for layer in model.model.layers)
    assert not isinstance(first, hf_acts.DynActGLU) and isinstance(second, hf_acts.DynActGLU)
    assert second.mode == "both" and second.act_fn.beta.item() == 0.25
    assert model.config.mlp_layers == [1] and model.config.mlp_mode == "both"


def test_vision_model_spec_passes_every_swap_argument():
    """``--act`` and its site arguments become one ``hf_acts_swapped`` swap over ``--model``; ``--model-kwargs``,
    the class count and a one-channel input reach ``timm.create_model``."""
    args = vision.parse_args(["--model", "resnet18", "--act", "fles", "--target", "relu,gelu", "--select", "^layer4",
                              "--exclude", r"\.act1$", "--last", "2", "--act-kwargs", '{"base": "gelu"}',
                              "--model-kwargs", '{"drop_rate": 0.1}'])
    name, kwargs = vision.model_spec(args, num_classes=7, in_chans=1)
    assert name == "hf_acts_swapped"
    assert kwargs == {"drop_rate": 0.1, "num_classes": 7, "in_chans": 1, "base_model": "resnet18",
                      "swaps": [{"act": "fles", "target": ["relu", "gelu"], "select": "^layer4",
                                 "exclude": r"\.act1$", "last": 2, "kwargs": {"base": "gelu"}}]}
    plain = vision.parse_args(["--model", "resnet8_cifar_adrelu"])
    assert vision.model_spec(plain, num_classes=10, in_chans=3) == ("resnet8_cifar_adrelu", {"num_classes": 10})
