"""transformers' Trainer with hf-acts' optimizer groups, and text-generation pipelines on the LM folders."""

import subprocess
import sys
import textwrap

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, pipeline

import hf_acts
from hf_acts.ops import dispatch

CONFIG = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64)
ENV = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}


def blocks(n: int = 40, length: int = 16) -> Dataset:
    ids = torch.randint(0, 96, (n, length), generator=torch.Generator().manual_seed(0)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def without_hf_acts(code: str, tmp_path) -> str:
    """Run ``code`` in a fresh interpreter where ``import hf_acts`` fails; its stdout."""
    script = "import sys\nsys.modules['hf_acts'] = None\n" + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**ENV, "HF_HOME": str(tmp_path / "hf_home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_trainer_ten_steps_groups_and_remote_code_save(tmp_path):
    torch.manual_seed(0)
    model = hf_acts.convert_glu(LlamaForCausalLM(CONFIG), "dynactglu")
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=10, per_device_train_batch_size=4,
                             learning_rate=1e-2, weight_decay=0.5, report_to=[], save_strategy="no", use_cpu=True,
                             logging_steps=5, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=blocks(),
                      optimizer_cls_and_kwargs=hf_acts.trainer_optimizer(args))
    alpha = model.model.layers[0].mlp.act_fn.alpha
    # why the helper: the Trainer's default groups would decay alpha/beta (they are not named bias or norm)
    assert "model.layers.0.mlp.act_fn.alpha" in trainer.get_decay_parameter_names(model)
    trainer.train()
    assert trainer.state.global_step == 10
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decay[id(alpha)] == 0.0 and decay[id(model.model.layers[0].mlp.gate_proj.weight)] == 0.5
    assert isinstance(trainer.optimizer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["lr"] == 1e-2
    assert not torch.equal(alpha.detach(), torch.ones(1))

    folder = tmp_path / "saved"
    trainer.save_model(str(folder))
    assert (folder / "modeling_hf_acts.py").exists()
    ids = torch.arange(12)[None]
    model.eval()
    dispatch.FUSED = False  # the remote code computes the plain formula
    try:
        with torch.no_grad():
            expected = model(input_ids=ids).logits
    finally:
        dispatch.FUSED = True
    torch.save(expected, tmp_path / "expected.pt")
    out = without_hf_acts(f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained("{folder}", trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(input_ids=torch.arange(12)[None]).logits
        assert torch.equal(logits, torch.load("{tmp_path}/expected.pt"))
        print("remote ok")
    """, tmp_path)
    assert "remote ok" in out


@pytest.mark.slow
def test_text_generation_pipeline_with_and_without_hf_acts(lm_run, tmp_path):
    dispatch.FUSED = False  # the same formula as the remote code, so greedy decoding must agree token for token
    try:
        generate = pipeline("text-generation", model=str(lm_run))
        text = generate("def main():", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    finally:
        dispatch.FUSED = True
    assert type(generate.model).__module__.startswith("hf_acts")
    assert text.startswith("def main():") and len(text) > len("def main():")
    out = without_hf_acts(f"""
        from transformers import pipeline
        generate = pipeline("text-generation", model="{lm_run}", trust_remote_code=True)
        assert "transformers_modules" in type(generate.model).__module__
        print(repr(generate("def main():", max_new_tokens=8, do_sample=False)[0]["generated_text"]))
    """, tmp_path)
    assert out.strip().splitlines()[-1] == repr(text)


def aiec_vit(num_classes: bool = True):
    """A tiny ViT classifier with AIEC (class-token pooling) in every MLP, the paper's placement."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, image_size=16, patch_size=8, num_labels=3))
    kwargs = {"num_classes": model.config.num_labels} if num_classes else {}
    hf_acts.replace_activations(model, "aiec", target="gelu", pool="cls", **kwargs)
    return model


def images(n: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset.from_dict({"pixel_values": torch.randn(n, 3, 16, 16, generator=g).tolist(),
                              "labels": torch.randint(0, 3, (n,), generator=g).tolist()}).with_format("torch")


def test_aiec_callback_trains_the_decision_units_and_clears_the_counters_each_epoch(tmp_path, monkeypatch):
    """The Trainer's loss becomes Eq. 14's total: the decision units, which only L_aux trains, move; the counters
    are cleared at every epoch start; after training the model's loss is its own again."""
    from hf_acts.integrations import trainer as callbacks

    model = aiec_vit()
    decision = model.vit.layers[0].mlp.activation_fn.decision.weight
    before = decision.detach().clone()
    resets, reset = [], callbacks.reset_aiec_counters
    monkeypatch.setattr(callbacks, "reset_aiec_counters", lambda m: resets.append(1) or reset(m))
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=images(), callbacks=[hf_acts.AIECCallback(lambda_gate=2.0)])
    trainer.train()
    assert trainer.state.global_step == 8 and len(resets) == 2
    assert not torch.equal(decision.detach(), before)
    x, y = images(4)[:]["pixel_values"], images(4)[:]["labels"]
    out = model.train()(pixel_values=x, labels=y)  # hooks removed: the classifier's cross-entropy alone
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, y))


def test_aiec_callback_with_lora_trains_the_adapted_copies_of_the_decision_units(tmp_path):
    """PEFT keeps a frozen original and a trained copy of each AIEC site (modules_to_save): the copies run, get the
    labels and move; the originals stay as they were."""
    from peft import get_peft_model

    model = aiec_vit()
    model = get_peft_model(model, hf_acts.peft_config(model, r=4))
    sites = {n: m for n, m in model.named_modules() if isinstance(m, hf_acts.AIEC)}
    before = {n: m.decision.weight.detach().clone() for n, m in sites.items()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], save_strategy="no", use_cpu=True, seed=0)
    Trainer(model=model, args=args, train_dataset=images(), callbacks=[hf_acts.AIECCallback(lambda_gate=2.0)]).train()
    moved = {(n.rpartition(".activation_fn.")[2], not torch.equal(m.decision.weight.detach(), before[n]))
             for n, m in sites.items()}  # (role, moved) of both layers' sites
    assert len(sites) == 4 and moved == {("original_module", False), ("modules_to_save.default", True)}


@pytest.mark.parametrize("case,match", [("no_classes", "no num_classes"), ("smoothing", "label_smoothing_factor"),
                                        ("no_aiec", "no AIEC activation")])
def test_aiec_callback_refuses_what_would_train_aiec_silently_as_a_threshold(tmp_path, case, match):
    from transformers import ViTConfig, ViTForImageClassification

    model = aiec_vit(num_classes=case != "no_classes")
    if case == "no_aiec":
        model = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, image_size=16, patch_size=8))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                             label_smoothing_factor=0.1 if case == "smoothing" else 0.0)
    trainer = Trainer(model=model, args=args, train_dataset=images(), callbacks=[hf_acts.AIECCallback()])
    with pytest.raises(ValueError, match=match):
        trainer.train()
