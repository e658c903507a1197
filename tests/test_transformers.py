"""The transformers integration on tiny Llama / Mistral / Qwen2 / Qwen3 models built locally."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.activations import ACT2FN

import hf_acts
from hf_acts.integrations.transformers.configuration_hf_acts import HIDDEN_ACT_BASES, HfActsLlamaConfig
from hf_acts.ops import dispatch

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}
IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))


def tiny(family, **kw):
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    return model_class(config_class(**TINY, **kw)).eval()


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def train(model, steps=20):
    model.train()
    opt = torch.optim.AdamW(hf_acts.param_groups_weight_decay(model, 0.01), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each family: convert, train 20 steps, save; the saved folders and what the model produced."""
    out = {}
    for family in FAMILIES:
        model = tiny(family)
        before = logits(model)
        model = hf_acts.convert_glu(model, "dynactglu", mode="both")
        converted = logits(model)
        model, losses = train(model)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        expected = logits(model)
        tokens = model.generate(IDS[:1], max_new_tokens=6, do_sample=False)
        dispatch.FUSED = False  # what the remote code computes without hf-acts: the plain formula
        try:
            plain, plain_tokens = logits(model), model.generate(IDS[:1], max_new_tokens=6, do_sample=False)
        finally:
            dispatch.FUSED = True
        save_file({"logits": expected, "tokens": tokens, "plain_logits": plain, "plain_tokens": plain_tokens},
                  folder / "expected.safetensors")
        out[family] = dict(model=model, before=before, converted=converted, losses=losses, folder=folder)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_convert_is_function_preserving(trained, family):
    t = trained[family]
    assert torch.equal(t["converted"], t["before"])
    assert type(t["model"]).__name__ == f"HfActs{FAMILIES[family][1].__name__}"
    assert t["model"].config.model_type == f"hf_acts_{family}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_reduces_the_loss_and_moves_alpha_beta(trained, family):
    t = trained[family]
    assert t["losses"][-1] < t["losses"][0] - 0.1
    act = t["model"].model.layers[0].mlp.act_fn
    assert act.alpha.item() != 1.0 and act.beta.item() != 0.0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_load_identical_logits_and_generation(trained, family):
    t = trained[family]
    expected = load_file(t["folder"] / "expected.safetensors")
    reloaded = AutoModelForCausalLM.from_pretrained(t["folder"]).eval()
    assert type(reloaded) is type(t["model"])
    assert torch.equal(logits(reloaded), expected["logits"])
    assert torch.equal(reloaded.generate(IDS[:1], max_new_tokens=6, do_sample=False), expected["tokens"])
    # the fused kernels and the plain formula differ by float rounding only
    torch.testing.assert_close(expected["logits"], expected["plain_logits"])
    assert torch.equal(expected["tokens"], expected["plain_tokens"])


def test_remote_code_without_hf_acts(trained, tmp_path):
    """A fresh interpreter where `import hf_acts` fails loads every family with trust_remote_code."""
    folders = [str(trained[f]["folder"]) for f in FAMILIES]
    script = textwrap.dedent(f"""
        import sys
        sys.modules["hf_acts"] = None  # importing hf_acts now raises ImportError
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM
        ids = torch.tensor({IDS.tolist()})
        for folder in {folders}:
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
            assert "transformers_modules" in type(model).__module__, type(model).__module__
            expected = load_file(folder + "/expected.safetensors")
            with torch.no_grad():
                assert torch.equal(model(input_ids=ids).logits, expected["plain_logits"]), folder
            tokens = model.generate(ids[:1], max_new_tokens=6, do_sample=False)
            assert torch.equal(tokens, expected["plain_tokens"]), folder
        print("remote ok")
    """)
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "remote ok" in proc.stdout


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_bf16_forward(family):
    model = hf_acts.convert_glu(tiny(family).to(torch.bfloat16))
    out = logits(model)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert model.model.layers[0].mlp.act_fn.alpha.dtype == torch.bfloat16


@pytest.mark.parametrize("hidden_act", sorted(HIDDEN_ACT_BASES))
def test_every_hidden_act_with_a_base_converts_function_preserving(hidden_act):
    """Each hidden_act convert_glu accepts maps to the dynActivation base that computes it."""
    model = tiny("llama", hidden_act=hidden_act)
    before = logits(model)
    hf_acts.convert_glu(model)
    x = 4 * torch.randn(256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.model.layers[0].mlp.act_fn(x), ACT2FN[hidden_act](x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits(model), before, rtol=1e-5, atol=1e-6)


def test_layer_selection_and_keys():
    model = tiny("llama")
    keys = set(model.state_dict())
    hf_acts.convert_glu(model, layers=[0, 2])
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    assert kinds == ["DynActGLU", "LlamaMLP", "DynActGLU"]
    assert type(model.model).__name__ == "HfActsLlamaModel"
    holders = [m for m in model.modules() if hasattr(m, "config")]
    assert len(holders) > 2 and all(m.config is model.config for m in holders)  # one config, the family's
    new = set(model.state_dict())
    assert keys <= new and new - keys == {f"model.layers.{i}.mlp.act_fn.{p}" for i in (0, 2) for p in ("alpha", "beta")}


def test_a_second_conversion_adds_its_layers_and_keeps_the_settings(tmp_path):
    """The config records the union of both calls' layers, so a reload rebuilds every converted MLP; a second call
    asking for another mode or base than the converted layers have is refused before anything changes."""
    model = hf_acts.convert_glu(tiny("llama"), layers=[0], mode="both", beta_init=0.25)
    with torch.no_grad():
        model.model.layers[0].mlp.act_fn.alpha.fill_(1.5)  # trained between the calls: the second keeps it
    hf_acts.convert_glu(model, layers=2)
    assert model.model.layers[0].mlp.act_fn.alpha.item() == 1.5
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == ["DynActGLU", "LlamaMLP", "DynActGLU"]
    config = model.config
    assert (config.mlp_layers, config.mlp_mode, config.mlp_base, config.dynact_beta_init) == ([0, 2], "both", None,
                                                                                             0.25)
    assert model.model.layers[2].mlp.mode == "both" and model.model.layers[2].mlp.act_fn.beta.item() == 0.25
    with torch.no_grad():
        for i in (0, 2):
            model.model.layers[i].mlp.act_fn.beta.fill_(0.1 * i + 0.5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0)
    for kwargs, message in (({"mode": "gate"}, "mode='gate'"), ({"base": "gelu"}, "base='gelu'")):
        with pytest.raises(ValueError, match=rf"layers \[0, 2\] are DynActGLU\(mode='both', base='silu'\).*{message}"):
            hf_acts.convert_glu(model, layers=[1], **kwargs)
    with pytest.raises(ValueError, match="does not turn them back"):
        hf_acts.convert_glu(model, "swiglu")
    assert type(model.model.layers[1].mlp).__name__ == "LlamaMLP" and model.config.mlp_layers == [0, 2]
    model = hf_acts.convert_glu(tiny("llama", hidden_act="tanh"), layers=[1], base="gelu")
    hf_acts.convert_glu(model)  # all layers, with the converted layer's base
    assert model.config.mlp_layers is None and model.config.mlp_base == "gelu"
    assert {layer.mlp.act_fn.base for layer in model.model.layers} == {"gelu"}


def test_missing_activation_parameters_get_their_init(tmp_path):
    """Loading a plain Llama checkpoint into a dynactglu config: alpha/beta are initialised, not garbage."""
    base = tiny("llama")
    base.save_pretrained(tmp_path)
    config = HfActsLlamaConfig(**TINY, mlp_variant="dynactglu", dynact_alpha_init=1.0, dynact_beta_init=0.0)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, config=config).eval()
    for layer in model.model.layers:
        assert layer.mlp.act_fn.alpha.item() == 1.0 and layer.mlp.act_fn.beta.item() == 0.0
    assert torch.equal(logits(model), logits(base))


def test_from_config_and_auto_classes():
    config = AutoConfig.for_model("hf_acts_qwen2", **TINY, mlp_variant="dynactglu", dynact_beta_init=0.25)
    model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "HfActsQwen2ForCausalLM" and type(model.model).__name__ == "HfActsQwen2Model"
    assert model.model.layers[1].mlp.act_fn.beta.item() == 0.25


def test_act2fn_names_in_any_config(tmp_path):
    assert type(ACT2FN["silu"]).__name__ == "SiLUActivation"  # transformers' own names untouched
    assert isinstance(ACT2FN["dynact_silu"], hf_acts.DynActivation) and isinstance(ACT2FN["swish_beta"],
                                                                                   hf_acts.SwishBeta)
    model = tiny("llama", hidden_act="dynact_silu")
    plain = tiny("llama")
    assert torch.equal(logits(model), logits(plain))  # dynActivation(silu) at init is SiLU
    with torch.no_grad():
        model.model.layers[0].mlp.act_fn.beta.fill_(0.5)
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(LlamaForCausalLM.from_pretrained(tmp_path)), logits(model))


def test_errors():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64))
    with pytest.raises(ValueError, match="convert_glu supports"):
        hf_acts.convert_glu(gpt2)
    for layers in ([5], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            hf_acts.convert_glu(tiny("llama"), layers=layers)
    with pytest.raises(ValueError, match="mlp_mode must be one of"):
        HfActsLlamaConfig(**TINY, mlp_mode="up")
    model = tiny("llama")
    model.model.layers[1].mlp = torch.nn.Sequential(torch.nn.Linear(32, 32))
    with pytest.raises(ValueError, match="layer 1: expected a gated MLP"):
        hf_acts.convert_glu(model)
    assert type(model).__name__ == "LlamaForCausalLM"  # nothing half-converted
    with pytest.raises(ValueError, match="mlp_variant must be one of"):
        hf_acts.convert_glu(tiny("llama"), variant="kan")
    with pytest.raises(ValueError, match="no dynActivation base"):
        hf_acts.convert_glu(tiny("llama", hidden_act="tanh"))


def test_checkpoints_with_0d_activation_parameters_still_load(tmp_path):
    """hf-acts 0.1 wrote dynActivation's alpha/beta as 0-d tensors; they are (1,) now (FSDP2 / ZeRO-3 refuse 0-d
    parameters). A folder written the old way loads with identical logits, with hf-acts and through remote code."""
    model = hf_acts.convert_glu(tiny("llama"))
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.mlp.act_fn.alpha.fill_(1.1 + 0.1 * i)
            layer.mlp.act_fn.beta.fill_(0.2)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    old = {k: v.reshape(()) if k.endswith((".alpha", ".beta")) else v for k, v in weights.items()}
    assert sum(v.ndim == 0 for v in old.values()) == 2 * TINY["num_hidden_layers"]
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for kwargs in ({}, {"trust_remote_code": True}):
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs).eval()
        assert reloaded.model.layers[2].mlp.act_fn.alpha.shape == (1,)
        torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0)


def test_remote_code_copies_are_current():
    """The files saved beside checkpoints for trust_remote_code are real copies of the activation modules (no
    symlinks in the package); `python scripts/sync_remote_code.py` refreshes them."""
    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from sync_remote_code import REMOTE_CODE_MODULES

    for name in REMOTE_CODE_MODULES:
        copy = ROOT / "hf_acts" / "integrations" / "transformers" / name
        assert not copy.is_symlink(), copy
        assert copy.read_text() == (ROOT / "hf_acts" / "activations" / name).read_text(), f"stale copy: {copy}"


def test_remote_code_names_every_file_it_needs_directly():
    """transformers up to 5.9 copies only the direct relative imports of a local folder's remote module into its
    module cache (5.10 follows them transitively), so every file the remote code reaches must be imported by
    ``modeling_hf_acts.py`` itself: otherwise `from_pretrained(folder, trust_remote_code=True)` fails there with a
    FileNotFoundError for the file one import further away."""
    from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

    folder = Path(hf_acts.__file__).parent / "integrations" / "transformers"
    modeling = folder / "modeling_hf_acts.py"
    reached = {Path(f).name for f in get_relative_import_files(str(modeling))}
    direct = {f"{name}.py" for name in get_relative_imports(str(modeling))}
    assert "bases.py" in reached and reached <= direct, f"imported only indirectly: {sorted(reached - direct)}"
