"""transformers vision and encoder models with hf-acts activations: ACT2FN names, swapped models that reload as they
were saved (with hf-acts and through remote code alone), the registered variants, channels-last sites."""

import json
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import transformers
from conftest import randomize_, randomize_activations_
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    pipeline,
)
from transformers.activations import ACT2FN

import hf_acts
from hf_acts import ADReLU, DynActivation, FleS
from hf_acts.activations._base import ChannelsLast
from hf_acts.integrations.transformers.configuration_hf_acts import swapped_config_class
from hf_acts.integrations.transformers.modeling_hf_acts import swapped_model_class
from hf_acts.ops import dispatch

VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8, num_labels=3)
CONVNEXT = dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1], image_size=64, num_labels=3)
BERT = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32, num_labels=3)
PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
PIXELS64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
IDS = torch.randint(0, 60, (2, 10), generator=torch.Generator().manual_seed(0))

# variant -> (config kwargs, Auto class, input name, input, activation class expected at the sites)
CASES = {
    "vit_fles": (VIT, "AutoModelForImageClassification", "pixel_values", PIXELS, FleS),
    "convnext_fles": (CONVNEXT, "AutoModelForImageClassification", "pixel_values", PIXELS64, FleS),
    "convnext_adrelu_last_stage": (CONVNEXT, "AutoModelForImageClassification", "pixel_values", PIXELS64, ADReLU),
    "bert_dynact": (BERT, "AutoModelForSequenceClassification", "input_ids", IDS, DynActivation),
}


def _logits(model, name, x):  # noqa: ANN001, ANN202
    with torch.no_grad():
        return model.eval()(**{name: x}).logits


def _train(model, name, x, steps: int = 3) -> None:  # noqa: ANN001
    """A few AdamW steps, so that every activation parameter moves off its init."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    labels = torch.tensor([0, 2])
    model.train()
    for _ in range(steps):
        loss = model(**{name: x}, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each variant: built, trained 3 steps, saved with its logits (fused kernels and plain formula)."""
    out = {}
    for variant, (kwargs, auto, name, x, cls) in CASES.items():
        torch.manual_seed(0)
        model = hf_acts.create_transformers_model(variant, auto_class=auto, **kwargs)
        _train(model, name, x)
        folder = tmp_path_factory.mktemp(variant)
        model.save_pretrained(folder)
        fused = _logits(model, name, x)
        dispatch.FUSED = False
        try:
            plain = _logits(model, name, x)
        finally:
            dispatch.FUSED = True
        save_file({"fused": fused, "plain": plain, "x": x}, folder / "expected.safetensors")
        out[variant] = {"model": model, "folder": folder, "auto": auto, "name": name, "x": x, "cls": cls}
    return out


@pytest.mark.parametrize("variant", CASES)
def test_variant_swaps_its_sites_and_preserves_the_function_where_the_method_can(variant):
    kwargs, auto, name, x, cls = CASES[variant]
    torch.manual_seed(0)
    stock = getattr(__import__("transformers"), auto).from_config(
        {"vit": ViTConfig, "convnext": ConvNextConfig, "bert": BertConfig}[variant.split("_")[0]](**kwargs))
    before = _logits(stock, name, x)
    report = hf_acts.replace_activations(stock, **hf_acts.integrations.transformers.swapped.VARIANTS[variant][1])
    sites = [m for m in stock.modules() if isinstance(m, cls)]
    assert len(sites) == len(report.records) > 0
    assert type(stock).__name__.startswith("HfActsSwapped") and stock.config.model_type.startswith("hf_acts_swapped_")
    if cls is not ADReLU:  # FleS and dynActivation start as GELU exactly; ADReLU has no GELU-preserving init
        assert report.function_preserving
        torch.testing.assert_close(_logits(stock, name, x), before, rtol=1e-5, atol=1e-5)
    if variant.startswith("convnext"):  # the MLP activation sees (B, H, W, 4C) maps from a Linear layer
        assert all(r.channels_last for r in report.records)
        assert all(isinstance(stock.get_submodule(r.name), ChannelsLast) for r in report.records)
        assert [s.channels for s in sites] == [r.channels for r in report.records]
        assert {s.channels for s in sites} <= {4 * c for c in kwargs["hidden_sizes"]}
    if variant == "convnext_adrelu_last_stage":
        assert [r.name for r in report.records] == ["convnext.encoder.stages.3.layers.0.act"]


@pytest.mark.parametrize("variant", CASES)
def test_trained_variant_reloads_with_every_parameter(saved, variant):
    t = saved[variant]
    reloaded = getattr(__import__("transformers"), t["auto"]).from_pretrained(t["folder"])
    assert type(reloaded) is type(t["model"])
    want, got = t["model"].state_dict(), reloaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    activation_keys = hf_acts.swap.activation_state_keys(t["model"])
    assert activation_keys and activation_keys <= set(got)
    assert torch.equal(_logits(reloaded, t["name"], t["x"]), load_file(t["folder"] / "expected.safetensors")["fused"])


def test_task_folder_loads_into_the_bare_model(saved):
    t = saved["vit_fles"]
    bare = AutoModel.from_pretrained(t["folder"]).eval()
    assert type(bare).__name__ == "HfActsSwappedViTModel"
    want = t["model"].vit.state_dict()
    assert all(torch.equal(bare.state_dict()[k], want[k]) for k in want if not k.startswith("pooler"))
    with torch.no_grad():
        torch.testing.assert_close(bare(pixel_values=PIXELS).last_hidden_state,
                                   t["model"].vit(pixel_values=PIXELS).last_hidden_state, rtol=0, atol=0)


def test_a_swap_in_the_bare_model_reloads(tmp_path):
    """A swap in a base model (no task head: its sites are the base model's own) reloads with every parameter."""
    model = AutoModel.from_config(ViTConfig(**VIT)).eval()
    hf_acts.replace_activations(model, "fles", target="gelu")
    assert {r["root"] for r in model.config.hf_acts_activations} == {"base"}
    randomize_activations_(model, 0.3)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got, want = reloaded(pixel_values=PIXELS), model(pixel_values=PIXELS)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)


def test_a_task_folder_with_a_swapped_head_loads_into_the_bare_model(tmp_path):
    """BERT's masked-LM head has its own GELU: its record names the task model's module (root "model"), which the
    bare model skips when it loads the folder; the encoder's swapped activations load into it."""
    from transformers import BertForMaskedLM

    model = BertForMaskedLM(BertConfig(**BERT)).eval()
    hf_acts.replace_activations(model, "dynactivation", target="gelu")
    roots = {r["module"]: r["root"] for r in model.config.hf_acts_activations}
    assert roots.pop("cls.predictions.transform.transform_act_fn") == "model" and set(roots.values()) == {"base"}
    randomize_activations_(model, 0.3)
    model.save_pretrained(tmp_path)
    bare = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got, want = bare(input_ids=IDS), model.bert(input_ids=IDS)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)


def test_create_transformers_model_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="unknown variant 'vit_nope'; known: vit_fles"):
        hf_acts.create_transformers_model("vit_nope")
    with pytest.raises(ValueError, match="variant 'vit_fles' is for vit models, got model_type 'bert'"):
        hf_acts.create_transformers_model("vit_fles", config=BertConfig(**BERT),
                                          auto_class="AutoModelForSequenceClassification")


def test_remote_code_alone_reloads_every_variant(saved, tmp_path):
    """A fresh interpreter where `import hf_acts` fails: trust_remote_code rebuilds every variant (plain formulas),
    and loads each task folder into the bare model (``AutoModel``) with the same activations, as hf-acts does."""
    folders = {v: (str(t["folder"]), t["auto"], t["name"]) for v, t in saved.items()}
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_acts"] = None  # importing hf_acts now raises ImportError
        import torch, transformers
        from safetensors.torch import load_file
        for variant, (folder, auto, name) in {folders}.items():
            model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
            assert "transformers_modules" in type(model).__module__, type(model).__module__
            expected = load_file(folder + "/expected.safetensors")
            with torch.no_grad():
                got = model(**{{name: expected["x"]}}).logits
            assert torch.equal(got, expected["plain"]), (variant, (got - expected["plain"]).abs().max())
            bare = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            assert type(bare).__name__ == "HfActsSwapped" + type(model.base_model).__name__, type(bare)
            with torch.no_grad():
                want = model.base_model(**{{name: expected["x"]}}).last_hidden_state
                assert torch.equal(bare(**{{name: expected["x"]}}).last_hidden_state, want), variant
        print("remote ok")
    """)
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "remote ok" in proc.stdout


def test_remote_code_alone_loads_an_aiec_folder_with_its_decision_units(tmp_path):
    """AIEC has a remote copy too: a classifier swapped to AIEC (as AIECCallback trains it) loads with
    trust_remote_code alone, its threshold and decision units as saved; at inference it is the threshold (Alg. 2).
    Dy-ReLU, a baseline without a remote copy, is refused with a message."""
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**VIT)).eval()
    hf_acts.replace_activations(model, "aiec", target="gelu", num_classes=3, pool="cls", tau=0.1)
    model.save_pretrained(tmp_path / "aiec")
    baseline = ViTForImageClassification(ViTConfig(**VIT))
    hf_acts.replace_activations(baseline, "dyrelu", target="gelu")
    baseline.save_pretrained(tmp_path / "dyrelu")
    with torch.no_grad():
        logits = model(pixel_values=PIXELS).logits
    decision = {k: v for k, v in model.state_dict().items() if k.endswith("decision.weight")}
    assert len(decision) == 2
    save_file({"x": PIXELS, "logits": logits, **decision}, str(tmp_path / "expected.safetensors"))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_acts"] = None  # importing hf_acts now raises ImportError
        import torch, transformers
        from safetensors.torch import load_file
        expected = load_file("{tmp_path}/expected.safetensors")
        model = transformers.AutoModelForImageClassification.from_pretrained("{tmp_path}/aiec",
                                                                             trust_remote_code=True).eval()
        acts = [m for m in model.modules() if type(m).__name__ == "AIEC"]
        assert len(acts) == 2 and all(m.tau == 0.1 and m.pool == "cls" for m in acts), acts
        state = model.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected if k.endswith("decision.weight"))
        with torch.no_grad():
            assert torch.equal(model(pixel_values=expected["x"]).logits, expected["logits"])
        try:
            transformers.AutoModelForImageClassification.from_pretrained("{tmp_path}/dyrelu", trust_remote_code=True)
        except ValueError as error:
            assert "holds a 'dyrelu' activation, which needs hf-acts installed" in str(error), error
        else:
            raise AssertionError("a Dy-ReLU folder loaded without hf-acts")
        print("remote ok")
    """)
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "remote ok" in proc.stdout, proc.stderr[-3000:]


def test_a_folder_whose_config_lost_a_swap_raises_instead_of_dropping_parameters(saved, tmp_path):
    import shutil

    t = saved["vit_fles"]
    folder = tmp_path / "edited"
    shutil.copytree(t["folder"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["hf_acts_activations"] = config["hf_acts_activations"][:1]  # the second FleS is no longer recorded
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"would drop: \['vit\.layers\.1\.mlp\.activation_fn\.fc1\.bias'"):
        AutoModelForImageClassification.from_pretrained(folder)


def test_stock_transformers_refuses_a_swapped_folder_rather_than_dropping_it(saved):
    """Model type hf_acts_swapped_vit: without hf-acts registering it or trust_remote_code, no class loads it."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    t = saved["vit_fles"]
    model_type = json.loads((t["folder"] / "config.json").read_text())["model_type"]
    assert model_type == "hf_acts_swapped_vit"
    registered = CONFIG_MAPPING._extra_content.pop(model_type)
    try:
        with pytest.raises(ValueError, match="trust_remote_code"):
            AutoConfig.from_pretrained(t["folder"], trust_remote_code=False)
    finally:
        CONFIG_MAPPING._extra_content[model_type] = registered


def test_image_classification_pipeline_on_a_variant_folder(saved, tmp_path):
    from PIL import Image

    t = saved["vit_fles"]
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(t["folder"])
    classify = pipeline("image-classification", model=str(t["folder"]))
    image = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    out = classify(image, top_k=3)
    assert [o["label"] for o in out] and sorted(o["label"] for o in out) == sorted(t["model"].config.id2label.values())
    assert abs(sum(o["score"] for o in out) - 1) < 1e-5


def test_act2fn_names_are_lazily_sized_activations():
    for name, cls in (("fles", FleS), ("fles_gelu", FleS), ("adrelu", ADReLU)):
        module = ACT2FN[name]
        assert isinstance(module, cls) and module.channels is None
    assert ACT2FN["fles_gelu"].base == "gelu" and ACT2FN["adrelu"].spatial_dims == 1
    stock = ViTForImageClassification(ViTConfig(**VIT, hidden_act="fles")).eval()
    assert stock(pixel_values=PIXELS).logits.shape == (2, 3)
    assert {m.channels for m in stock.modules() if isinstance(m, FleS)} == {64}
    gray = ViTForImageClassification(ViTConfig(**VIT, num_channels=1, hidden_act="fles"))  # inputs from the config
    assert {m.channels for m in gray.modules() if isinstance(m, FleS)} == {64}  # sized when built, before any call


@pytest.mark.parametrize("hidden_act", ["fles_gelu", "adrelu"])
def test_hidden_act_in_an_hf_acts_config_is_built_before_loading(hidden_act, tmp_path):
    """HfActsSwapped<Config>(hidden_act=...) models size their lazily built activations when constructed (also on the
    meta device, where from_pretrained builds them), so from_pretrained finds every parameter."""
    config = swapped_config_class(ViTConfig)(**VIT, hidden_act=hidden_act)
    cls = swapped_model_class(ViTForImageClassification)
    with torch.device("meta"):
        meta = cls(config)
    assert all(m.channels == 64 for m in meta.modules() if isinstance(m, (FleS, ADReLU)))
    model = cls(config)
    randomize_activations_(model, 0.3)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(reloaded) is cls
    assert torch.equal(_logits(reloaded, "pixel_values", PIXELS), _logits(model, "pixel_values", PIXELS))


@pytest.mark.parametrize("make,name,x", [
    (lambda: ViTForImageClassification(ViTConfig(**VIT)), "pixel_values", PIXELS),
    (lambda: ConvNextForImageClassification(ConvNextConfig(**CONVNEXT)), "pixel_values", PIXELS64),
    (lambda: BertForSequenceClassification(BertConfig(**BERT)), "input_ids", IDS),
])
def test_replace_activations_builds_its_inputs_from_the_model(make, name, x):
    model = make().eval()
    before = _logits(model, name, x)
    report = hf_acts.replace_activations(model, "fles", target="gelu")  # no example_inputs
    assert report.records and all(r.channels for r in report.records) and report.function_preserving
    torch.testing.assert_close(_logits(model, name, x), before, rtol=1e-5, atol=1e-5)


def test_second_swap_appends_to_the_record(tmp_path):
    model = BertForSequenceClassification(BertConfig(**BERT)).eval()
    hf_acts.replace_activations(model, "dynactivation", target="gelu", select=r"layer\.0\.")
    hf_acts.replace_activations(model, "fles", target="gelu", select=r"layer\.1\.")
    records = model.config.hf_acts_activations
    assert [(r["module"], r["activation"]) for r in records] == [
        ("encoder.layer.0.intermediate.intermediate_act_fn", "dynactivation"),
        ("encoder.layer.1.intermediate.intermediate_act_fn", "fles")]
    assert [r["replaced"] for r in records] == ["GELUActivation", "GELUActivation"]
    hf_acts.replace_activations(model, "swish_beta", target="DynActivation")  # a site swapped again: one record
    assert [(r["module"], r["activation"], r["replaced"]) for r in model.config.hf_acts_activations] == [
        ("encoder.layer.1.intermediate.intermediate_act_fn", "fles", "GELUActivation"),
        ("encoder.layer.0.intermediate.intermediate_act_fn", "swish_beta", "DynActivation")]
    randomize_activations_(model, 0.3)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(_logits(reloaded, "input_ids", IDS), _logits(model, "input_ids", IDS))


def test_channels_last_sites_in_timm_convnext():
    """timm's ConvNeXt with conv_mlp=False runs its MLP on (B, H, W, C) maps: the swap sizes FleS by C."""
    model = timm.create_model("convnext_tiny", depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    report = hf_acts.replace_activations(model, "fles", target="gelu", example_inputs=x)
    assert [r.channels for r in report.records] == [32, 64, 128, 256] and all(r.channels_last for r in report.records)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    randomize_activations_(model, 0.3)
    y = model(torch.randn(2, 3, 96, 96))  # another spatial size: still sized by channels
    assert y.shape == (2, 3)


def test_channels_last_wrapper_rejects_other_layouts():
    with pytest.raises(ValueError, match=r"expects a \(B, H, W, C\) map"):
        ChannelsLast(FleS(8))(torch.randn(2, 5, 8))


def test_a_swap_in_a_stock_llama_leaves_the_lm_family_alone(tmp_path):
    """Swapped models of the llama type are hf_acts_swapped_llama; hf_acts_llama stays the dynActGLU family."""
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from hf_acts.integrations.transformers.configuration_hf_acts import HfActsLlamaConfig

    config = LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    llama = LlamaForCausalLM(config).eval()
    hf_acts.replace_activations(llama, "swish_beta", target="silu", select=r"layers\.0\.")
    assert llama.config.model_type == "hf_acts_swapped_llama"
    assert AutoConfig.for_model("hf_acts_llama").__class__ is HfActsLlamaConfig
    llama.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(llama)
    assert torch.equal(reloaded(input_ids=IDS).logits, llama(input_ids=IDS).logits)
    with pytest.raises(ValueError, match="call convert_glu first, then replace_activations"):
        hf_acts.convert_glu(llama)


def test_a_swap_in_a_converted_llama_reloads_both(tmp_path):
    """convert_glu, then a swap of an unconverted layer's activation: the model reloads as the swapped LM-family
    class, through the installed hf-acts and through the code saved in the folder."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    hf_acts.convert_glu(llama, layers=[0])
    hf_acts.replace_activations(llama, "swish_beta", target="silu", select=r"layers\.1\.")
    assert llama.config.model_type == "hf_acts_swapped_hf_acts_llama" and llama.config.mlp_layers == [0]
    with torch.no_grad():
        for name, p in llama.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.add_(0.3)
    llama.save_pretrained(tmp_path)
    for kwargs in ({}, {"trust_remote_code": True}):
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs).eval()
        assert [type(layer.mlp.act_fn).__name__ for layer in reloaded.model.layers] == ["DynActivation", "SwishBeta"]
        assert torch.equal(reloaded(input_ids=IDS).logits, llama(input_ids=IDS).logits)


@pytest.mark.parametrize("make,auto,name,x", [
    (lambda act: ViTForImageClassification(ViTConfig(**VIT, hidden_act=act)), "AutoModelForImageClassification",
     "pixel_values", PIXELS),
    (lambda act: BertForSequenceClassification(BertConfig(**BERT, hidden_act=act)),
     "AutoModelForSequenceClassification", "input_ids", IDS),
])
@pytest.mark.parametrize("hidden_act", ["fles_gelu", "adrelu"])
def test_stock_classes_with_an_hf_acts_hidden_act_reload_every_parameter(make, auto, name, x, hidden_act, tmp_path):
    """A stock transformers class with hidden_act="fles_gelu"/"adrelu" sizes them when built (on the meta device
    inside from_pretrained too): trained, saved and reloaded by the stock Auto class, nothing is missing or dropped
    and the logits are identical."""
    import transformers

    torch.manual_seed(0)
    model = make(hidden_act)
    acts = [m for m in model.modules() if isinstance(m, (FleS, ADReLU))]
    assert len(acts) == 2 and all(m.channels == 64 for m in acts)  # before any call
    with torch.device("meta"):
        assert all(m.channels == 64 for m in make(hidden_act).modules() if isinstance(m, (FleS, ADReLU)))
    _train(model, name, x)
    model.save_pretrained(tmp_path)
    reloaded, info = getattr(transformers, auto).from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(_logits(reloaded, name, x), _logits(model, name, x))


def test_a_gelu_checkpoint_loads_into_fles_gelu_as_the_same_function(tmp_path):
    """from_pretrained(gelu folder, hidden_act="fles_gelu"): the FleS parameters the checkpoint lacks get FleS's own
    init (zero coefficient layer), not ViT's normal init for Linear layers, so the model computes what it did."""
    gelu = ViTForImageClassification(ViTConfig(**VIT)).eval()
    gelu.save_pretrained(tmp_path)
    fles, info = ViTForImageClassification.from_pretrained(tmp_path, hidden_act="fles_gelu", output_loading_info=True)
    acts = [m for m in fles.modules() if isinstance(m, FleS)]
    assert len(acts) == 2 and all(m.base == "gelu" for m in acts)
    assert {k.rpartition(".")[2] for k in info["missing_keys"]} == {"weight", "bias", "hf_acts_channels"}
    assert all(torch.count_nonzero(m.fc2.weight) == 0 and torch.count_nonzero(m.fc2.bias) == 0 for m in acts)
    assert all(int(m.hf_acts_channels) == 64 for m in acts)
    torch.testing.assert_close(_logits(fles, "pixel_values", PIXELS), _logits(gelu, "pixel_values", PIXELS),
                               rtol=1e-5, atol=1e-6)


def test_an_encoder_decoder_with_an_hf_acts_act_reloads(tmp_path):
    """T5's feed-forward takes ACT2FN[config.dense_act_fn]: sized with encoder and decoder tokens."""
    from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=60, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      feed_forward_proj="fles", decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    assert [m.channels for m in model.modules() if isinstance(m, FleS)] == [32, 32]
    randomize_activations_(model, 0.3)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=IDS, decoder_input_ids=IDS).logits,
                           model(input_ids=IDS, decoder_input_ids=IDS).logits)


class _OddInputs(transformers.PreTrainedModel):
    """A model whose main input hf-acts cannot make: its activations stay lazy."""

    config_class = ViTConfig
    main_input_name = "odd"

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.proj = torch.nn.Linear(8, 64)
        self.act = ACT2FN[config.hidden_act]
        self.post_init()

    def forward(self, odd: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(odd))


def test_a_model_that_cannot_be_sized_when_built_warns_and_its_reload_raises_at_the_first_call(tmp_path):
    """Where the inputs can't be made the activation stays lazy, with a warning; a stock from_pretrained then has no
    module for its parameters, and the activation knows it was loaded and raises rather than start over."""
    from transformers.testing_utils import CaptureLogger

    from hf_acts.integrations.transformers import modeling_hf_acts

    with CaptureLogger(modeling_hf_acts.logger) as log:
        model = _OddInputs(ViTConfig(hidden_act="fles_gelu"))
    assert model.act.channels is None
    assert "_OddInputs: hf-acts activations built without a channel count could not be sized" in log.out
    assert "no example input for _OddInputs's main input 'odd'" in log.out
    model(torch.randn(2, 5, 8))
    randomize_(model.act, 0.3)
    model.save_pretrained(tmp_path)
    reloaded = _OddInputs.from_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="loaded from a checkpoint trained with 64 channels"):
        reloaded(torch.randn(2, 5, 8))
