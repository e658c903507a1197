"""LoRA with PEFT: adapters plus trained activations, saved, reloaded onto a freshly converted base, merged."""

import json

import pytest
import torch
from conftest import LM, VISION, assert_every_section_has_content, launch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import hf_acts
from hf_acts.activations import DynActivation
from hf_acts.cards import render_card

CONFIG = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))


def converted_base():
    torch.manual_seed(0)
    return hf_acts.convert_glu(LlamaForCausalLM(CONFIG), "dynactglu", mode="both")


def test_peft_config_trains_activations_and_adapters_only():
    model = get_peft_model(converted_base(), hf_acts.peft_config(converted_base(), r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("act_fn.modules_to_save.default.alpha") for n in trainable)
    assert any(n.endswith("up_act.modules_to_save.default.beta") for n in trainable)
    assert any("gate_proj.lora_A" in n for n in trainable) and any("q_proj.lora_B" in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    assert not any(n.endswith("proj.base_layer.weight") for n in trainable)  # the base weights stay frozen


def test_peft_config_of_a_timm_model():
    """The re-initialised classifier is trained in full, grouped (depthwise) convolutions get no adapter (LoRA's
    low-rank update is for dense weights), and lora_alpha defaults to 2 r."""
    import timm

    model = timm.create_model("efficientnet_b0", num_classes=3)
    hf_acts.replace_activations(model, "dynactivation", target="silu", select=r"^blocks\.6",
                                example_inputs=torch.randn(1, 3, 32, 32))
    config = hf_acts.peft_config(model, r=4)
    modules = dict(model.named_modules())
    assert config.lora_alpha == 8 and "classifier" in config.modules_to_save
    assert "blocks.6.0.bn1.act" in config.modules_to_save  # the swapped activation
    assert "blocks.6.0.conv_pwl" in config.target_modules and "conv_stem" in config.target_modules
    assert modules["blocks.6.0.conv_dw"].groups > 1 and "blocks.6.0.conv_dw" not in config.target_modules
    assert "classifier" not in config.target_modules


def test_peft_config_of_a_transformers_task_model():
    """A swapped ViT classifier: its head is trained in full like timm's; the LM head of a causal LM is not (it is
    the output embeddings), nor is a masked-LM head holding them; a bare model has no head."""
    from transformers import BertConfig, BertForMaskedLM, ViTConfig, ViTForImageClassification, ViTModel

    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8, num_labels=3)
    model = ViTForImageClassification(ViTConfig(**vit))
    hf_acts.replace_activations(model, "fles", target="gelu")
    config = hf_acts.peft_config(model, r=4)
    assert set(config.modules_to_save) == {"classifier"} | {f"vit.layers.{i}.mlp.activation_fn" for i in (0, 1)}
    assert "classifier" not in config.target_modules and "vit.layers.0.mlp.fc1" in config.target_modules
    peft_model = get_peft_model(model, config)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any(n.endswith("classifier.modules_to_save.default.weight") for n in trainable)
    assert peft_model(pixel_values=torch.randn(2, 3, 32, 32)).logits.shape == (2, 3)

    bare = ViTModel(ViTConfig(**vit))
    hf_acts.replace_activations(bare, "fles", target="gelu")
    assert set(hf_acts.peft_config(bare).modules_to_save) == {f"layers.{i}.mlp.activation_fn" for i in (0, 1)}
    assert "lm_head" not in hf_acts.peft_config(converted_base()).modules_to_save
    mlm = BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64))
    hf_acts.replace_activations(mlm, "dynactivation", target="gelu")
    assert not {"cls", "cls.predictions"} & set(hf_acts.peft_config(mlm).modules_to_save)


def test_plain_lora_config_would_freeze_the_activations():
    """Why the helper exists: PEFT's own default trains no activation parameter."""
    from peft import LoraConfig

    model = get_peft_model(converted_base(), LoraConfig(r=4, target_modules="all-linear"))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith((".alpha", ".beta")))


def test_adapter_round_trip_and_merge(tmp_path):
    model = get_peft_model(converted_base(), hf_acts.peft_config(converted_base(), r=4))
    opt = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, 0.01), lr=1e-2)
    for _ in range(5):
        model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    trained_alpha = model.base_model.model.model.layers[0].mlp.act_fn.modules_to_save["default"].alpha.detach().clone()
    assert not torch.equal(trained_alpha, torch.ones(1))
    model.peft_config["default"].base_model_name_or_path = "org/tiny-llama"  # as from_pretrained("org/...") sets it
    model.save_pretrained(tmp_path)
    assert any(k.endswith("mlp.act_fn.alpha") for k in load_file(tmp_path / "adapter_model.safetensors"))
    card = render_card(tmp_path)
    meta = card.data.to_dict()
    assert meta["base_model"] == "org/tiny-llama" and meta["base_model_relation"] == "adapter"
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    saved = sum(p.numel() for n, p in model.named_parameters() if ".modules_to_save.default." in n)
    assert f"({lora:,} parameters)" in str(card) and f"({saved:,} parameters)" in str(card)

    reloaded = PeftModel.from_pretrained(converted_base(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=IDS).logits, expected)
    merged = reloaded.merge_and_unload()
    act = merged.model.layers[0].mlp.act_fn
    assert type(act) is DynActivation and torch.equal(act.alpha.detach(), trained_alpha)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)


def test_peft_config_errors_on_a_model_without_activations():
    with pytest.raises(ValueError, match="holds no hf-acts activation"):
        hf_acts.peft_config(LlamaForCausalLM(CONFIG))


@pytest.mark.slow
def test_finetune_lm_with_lora(lm_run, tmp_path):
    """``finetune/lm.py --lora-r`` on a pretrained (here: locally saved) plain Llama: an adapter folder whose
    trained activations reload, and a card naming the base model."""
    tokenizer = AutoTokenizer.from_pretrained(lm_run)
    base = tmp_path / "base"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=64)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "adapter"
    args = [a for a in LM if a not in ("tiny",)]
    args[args.index("--model") + 1:args.index("--model") + 1] = [str(base)]
    launch("lm.py", [*args, "--lora-r", "4", "--max-steps", "6", "--output-dir", str(out)])
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and "model.layers.0.mlp.act_fn" in config["modules_to_save"]
    weights = load_file(out / "adapter_model.safetensors")
    alpha = weights["base_model.model.model.layers.0.mlp.act_fn.alpha"]
    assert not torch.equal(alpha, torch.ones(1))  # trained, not frozen at its init

    fresh = hf_acts.convert_glu(AutoModelForCausalLM.from_pretrained(base), "dynactglu")
    reloaded = PeftModel.from_pretrained(fresh, out)
    assert torch.equal(reloaded.base_model.model.model.layers[0].mlp.act_fn.modules_to_save["default"].alpha, alpha)
    card = render_card(out)
    assert_every_section_has_content(str(card))
    assert "PeftModel.from_pretrained(base" in str(card) and "hf_acts.convert_glu(base, \"dynactglu\"" in str(card)
    meta = card.data.to_dict()
    assert "base_model" not in meta and f"`{base}`, converted with" in str(card)  # a local base is not a Hub id
    assert meta["library_name"] == "peft" and "dynactglu" in meta["tags"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["parameters"] / 2


@pytest.mark.slow
def test_finetune_vision_with_lora(vision_run, tmp_path):
    """``finetune/vision.py --lora-r`` on a pretrained hf-acts timm model (a local folder): the adapter trains the
    ADReLU modules and the head in full, reloads onto the same base with identical logits, and is named on its card."""
    import timm

    out = tmp_path / "adapter"
    args = list(VISION)
    args[args.index("--model") + 1] = f"local-dir:{vision_run}"
    launch("vision.py", [*args, "--pretrained", "--lora-r", "4", "--epochs", "1", "--max-eval-samples", "50",
                         "--output-dir", str(out)])
    config = json.loads((out / "adapter_config.json").read_text())
    assert "stages.2.0.act2" in config["modules_to_save"] and "fc" in config["modules_to_save"]
    spec = json.loads((out / "hf_acts_base.json").read_text())
    base = timm.create_model(spec["model_name"], pretrained=True, **spec["kwargs"]).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, out).eval()
    weights = load_file(out / "adapter_model.safetensors")
    trained = next(k for k in weights if "stages.2.0.act2" in k and k.endswith("weight"))
    assert not torch.equal(weights[trained], before[trained.removeprefix("base_model.model.")])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model.merge_and_unload()(x), expected, rtol=1e-4, atol=1e-4)
    card = render_card(out)
    assert_every_section_has_content(str(card))
    assert "adrelu" in card.data.to_dict()["tags"] and "timm.create_model('local-dir:" in str(card)
