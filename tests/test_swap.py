"""replace_activations on real timm and transformers models (random init, offline)."""

import copy

import pytest
import timm
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import hf_acts
from hf_acts import replace_activations
from hf_acts.activations.bases import BASE_ACTIVATIONS
from hf_acts.swap import ACTIVATION_CLASSES, base_name


@pytest.fixture(scope="module")
def effnet():
    return timm.create_model("efficientnetv2_rw_t", num_classes=7).eval()


def fresh(model):
    return copy.deepcopy(model)


def test_efficientnetv2_last_three_feature_map_silus(effnet):
    model = fresh(effnet)
    x = torch.randn(2, 3, 64, 64)
    report = replace_activations(model, "adrelu", target="silu", exclude=r"\.se\.", last=3, example_inputs=x)
    assert report.names == ["blocks.5.13.bn1.act", "blocks.5.13.bn2.act", "bn2.act"]
    blk = effnet.blocks[5][13]
    assert [r.channels for r in report.records] == [blk.bn1.num_features, blk.bn2.num_features,
                                                    effnet.bn2.num_features]
    assert all(isinstance(model.get_submodule(n), hf_acts.ADReLU) for n in report.names)
    assert not report.function_preserving  # ADReLU has no init equal to SiLU
    assert report.params_added == sum(sum(p.numel() for p in model.get_submodule(n).parameters()) for n in report.names)
    # every pretrained weight is kept
    old = effnet.state_dict()
    new = model.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old)
    assert model(x).shape == (2, 7)


def test_efficientnetv2_literal_reading_is_one_argument_away(effnet):
    model = fresh(effnet)
    x = torch.randn(1, 3, 64, 64)
    # the SE gate's act sees 52 channels in rw_t: not divisible by the default head_dim=8
    with pytest.raises(ValueError, match="channels=52 must be divisible by head_dim=8"):
        replace_activations(model, "adrelu", target="silu", last=3, example_inputs=x)
    assert not any(isinstance(m, hf_acts.ADReLU) for m in model.modules())  # nothing half-swapped
    report = replace_activations(model, "adrelu", target="silu", last=3, example_inputs=x, head_dim=4)
    assert report.names == ["blocks.5.13.bn2.act", "blocks.5.13.se.act1", "bn2.act"]
    assert report.records[1].input_shape == [1, 52, 1, 1]


def test_forward_order_not_registration_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.late, self.early = nn.ReLU(), nn.ReLU()  # registered in the opposite order
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.late(self.fc2(self.early(self.fc1(x))))

    report = replace_activations(Net(), "dyrelu", target="relu", last=1, example_inputs=torch.randn(2, 4))
    assert report.names == ["late"]


@pytest.mark.parametrize("new", ["fles", "dynactivation", "swish_beta"])
def test_function_preserving_swap_of_every_silu(effnet, new):
    """In float64: an untrained EfficientNetV2 is chaotic enough (logits up to ~1e3 for some seeds) that float32
    rounding differences of ~1e-7 per site grow past 1e-5 of the logits over 99 sites; in float64 they stay ~1e-13."""
    base = fresh(effnet).double()
    model = fresh(base)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    before = base(x)
    report = replace_activations(model, new, target="silu", example_inputs=x)
    assert len(report.records) == 99 and report.function_preserving
    after = model(x)
    if new == "dynactivation":  # alpha=1, beta=0: the base op itself, bit for bit
        assert torch.equal(after, before)
    else:  # x * sigmoid(1 * x) vs F.silu, compounded over 99 sites of a random net
        assert (after - before).abs().max() <= 1e-10 * before.abs().max()


@pytest.mark.parametrize("new", ["adrelu", "aiec"])
def test_function_preserving_over_relu(new):
    model = timm.create_model("resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    kwargs = {"num_classes": 5} if new == "aiec" else {}
    report = replace_activations(model, new, target="relu", select=r"^layer4", example_inputs=x, **kwargs)
    assert report.names == ["layer4.0.act1", "layer4.0.act2", "layer4.1.act1", "layer4.1.act2"]
    assert report.function_preserving
    assert torch.equal(model(x), before)


def test_preserve_false_uses_the_paper_init():
    model = timm.create_model("resnet18", num_classes=5).eval()
    report = replace_activations(model, "adrelu", target="relu", last=1, preserve=False,
                                 example_inputs=torch.randn(1, 3, 32, 32))
    assert not report.function_preserving and model.get_submodule(report.names[0]).tau_init == "paper"


def test_a_preserving_argument_overridden_is_reported_as_not_preserving():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    x = torch.randn(2, 4)
    before = model(x)
    report = replace_activations(model, "dynactivation", target="relu", select="^1$", example_inputs=x)
    assert report.function_preserving and torch.equal(model(x), before)
    report = replace_activations(model, "dynactivation", target="relu", base="gelu", example_inputs=x)
    assert report.records[0].kwargs["base"] == "gelu" and not report.function_preserving


def test_llama_mlp_activation():
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 9))
    before = model(input_ids=ids).logits
    report = replace_activations(model, "dynactivation", target="silu", example_inputs={"input_ids": ids})
    assert report.names == ["model.layers.0.mlp.act_fn", "model.layers.1.mlp.act_fn"]
    assert [r.input_shape for r in report.records] == [[2, 9, 48]] * 2
    assert report.params_added == 4 and report.function_preserving
    assert torch.equal(model(input_ids=ids).logits, before)
    report = replace_activations(model, "fles", target="DynActivation",
                                 example_inputs={"input_ids": ids})
    assert report.records[0].channels == 48


def test_shared_module_with_two_channel_counts_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 16)

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    with pytest.raises(ValueError, match="different channel counts"):
        replace_activations(Net(), "adrelu", target="relu", example_inputs=torch.randn(2, 4))
    report = replace_activations(Net(), "dynactivation", target="relu", example_inputs=torch.randn(2, 4))
    assert report.records[0].calls == 2


def test_modes_are_kept_and_modules_of_the_new_class_are_not_swapped_again():
    """The tracing pass restores each module's own mode (frozen BatchNorm stays frozen in a training model); each new
    module takes the mode of the module it replaces; a module already of the new class is not rebuilt."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()).train()
    model[1].eval()
    model[4].eval()
    replace_activations(model, "dynactivation", target="relu", example_inputs=torch.randn(2, 4))
    assert [m.training for m in model] == [True, False, True, True, False]
    with pytest.raises(ValueError, match="no module matches"):
        replace_activations(model, "dynactivation", target=["relu", hf_acts.DynActivation])
    report = replace_activations(model, "swish_beta", target=hf_acts.DynActivation, example_inputs=torch.randn(2, 4))
    assert report.names == ["2", "4"] and [model[2].training, model[4].training] == [True, False]


def test_errors_and_report_text():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    with pytest.raises(ValueError, match="no module matches"):
        replace_activations(model, "fles", target="gelu")
    with pytest.raises(ValueError, match="needs the forward order"):
        replace_activations(model, "fles", target="relu", last=1)
    with pytest.raises(ValueError, match="convert_glu"):
        replace_activations(model, "dynactglu", target="relu")
    with pytest.raises(ValueError, match="unknown activation"):
        replace_activations(model, "nope", target="relu")
    report = replace_activations(model, "dynactivation", target="relu", example_inputs=torch.randn(1, 4))
    text = str(report)
    assert "| `1` | ReLU | DynActivation | 8 |" in text and "1 site(s) replaced, 2 parameters added" in text


def _library_class(library: str, name: str) -> type | None:
    import importlib

    modules = {"torch": "torch.nn", "timm": "timm.layers.activations", "transformers": "transformers.activations"}
    return getattr(importlib.import_module(modules[library]), name, None)


@pytest.mark.parametrize("key", list(ACTIVATION_CLASSES))
def test_activation_class_table_matches_the_functions(key):
    """Each table entry names a class the installed library has, and that class computes the base function it is
    mapped to (a class a library dropped is a dead entry: this fails)."""
    cls = _library_class(*key)
    assert cls is not None, f"{key} is not in the installed {key[0]}: remove or rename the table entry"
    module = cls()
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert base_name(module) == ACTIVATION_CLASSES[key]
    torch.testing.assert_close(module(x), BASE_ACTIVATIONS[ACTIVATION_CLASSES[key]](x), rtol=1e-6, atol=1e-6)


def test_attribute_refinements():
    assert base_name(nn.GELU(approximate="tanh")) == "gelu_tanh" and base_name(nn.LeakyReLU(0.2)) is None
    assert base_name(nn.Tanh()) is None


def test_class_targets_match_library_classes_by_function():
    import timm
    from timm.layers.activations import GELU as TimmGELU
    from transformers import ViTConfig, ViTModel
    from transformers.activations import GELUActivation

    convnext = timm.create_model("convnext_atto", num_classes=4)
    assert any(isinstance(m, TimmGELU) for m in convnext.modules())
    report = replace_activations(convnext, "fles", target=nn.GELU, last=2)
    assert len(report.records) == 2 and report.function_preserving and report.records[0].old == "GELU"

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8)
    report = replace_activations(vit, "fles", target=nn.GELU, select=r"^blocks\.11\.")
    assert [r.name for r in report.records] == ["blocks.11.mlp.act"] and report.function_preserving

    effnet = timm.create_model("efficientnet_b0", num_classes=4)
    x = torch.randn(1, 3, 64, 64)
    report = replace_activations(effnet, "dynactivation", target=nn.SiLU, exclude=r"\.se\.", last=3, example_inputs=x)
    assert len(report.records) == 3 and report.function_preserving

    hf_vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                image_size=32, patch_size=8)).eval()
    assert isinstance(hf_vit.layers[0].mlp.activation_fn, GELUActivation)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = hf_vit(pixel_values=pixels).last_hidden_state
    report = replace_activations(hf_vit, "fles", target=nn.GELU, example_inputs={"pixel_values": pixels})
    assert report.records[0].old == "GELUActivation" and report.function_preserving
    with torch.no_grad():
        torch.testing.assert_close(hf_vit(pixel_values=pixels).last_hidden_state, before)
    with pytest.raises(ValueError, match="no module matches"):
        replace_activations(timm.create_model("resnet18"), "fles", target=nn.GELU)
