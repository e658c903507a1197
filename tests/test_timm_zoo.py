"""The timm zoo: registration, builds, warm starts from a local file, save_for_hf -> local-dir, act_layer."""

import json

import pytest
import timm
import torch
from conftest import randomize_, randomize_activations_
from safetensors.torch import save_file
from timm.layers import create_act

import hf_acts
from hf_acts.integrations.timm import register_names
from hf_acts.models.zoo import ZOO


def small_input(model, batch=2):
    c, h, w = model.pretrained_cfg["input_size"]
    if not model.pretrained_cfg.get("fixed_input_size"):
        h = w = min(h, 64)
    return torch.randn(batch, c, h, w)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_variant_builds_and_trains(name):
    variant = ZOO[name]
    model = timm.create_model(name, num_classes=4)
    base = timm.create_model(variant.base.split(".")[0], num_classes=4)
    (report,) = model.hf_acts_reports
    assert report.records, "no site replaced"
    assert all(isinstance(model.get_submodule(n), hf_acts.get_activation(variant.act)) for n in report.names)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in base.parameters()) + report.params_added
    x = small_input(model)
    y = torch.tensor([0, 3])
    with hf_acts.aiec_targets(model, y):  # a no-op for the other methods
        out = model(x)
    assert out.shape == (2, 4)
    (torch.nn.functional.cross_entropy(out, y) + hf_acts.aiec_loss(model)).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(report.names[-1]))
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and cfg["paper_name"] and variant.act in cfg["notes"]
    assert cfg["mean"] == timm.models.get_pretrained_cfg(variant.base).mean


def test_placements_follow_the_papers():
    names = lambda n: timm.create_model(n).hf_acts_reports[0].names  # noqa: E731
    assert names("efficientnetv2_rw_t_adrelu") == ["blocks.5.13.bn1.act", "blocks.5.13.bn2.act", "bn2.act"]
    assert names("efficientnetv2_s_adrelu") == ["blocks.5.14.bn1.act", "blocks.5.14.bn2.act", "bn2.act"]
    assert names("resnet18_aiec") == ["layer4.1.act1", "layer4.1.act2"]
    assert len(names("vit_tiny_patch16_224_aiec")) == 12
    assert len(names("resnet8_cifar_adrelu")) == 7


def test_cifar_resnets_reproduce_table5_parameter_counts():
    count = lambda n: sum(p.numel() for p in timm.create_model(n, num_classes=100).parameters())  # noqa: E731
    assert count("resnet8_cifar") == 83_892 and count("resnet32_cifar") == 472_756
    assert count("resnet8_cifar_dyrelu") == 98_672 and count("resnet32_cifar_dyrelu") == 545_104


def test_cifar_resnet_head_dropout_only_in_training():
    model = timm.create_model("resnet8_cifar", drop_rate=0.5, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        features = model.forward_features(x)
        model.train()
        dropped = model.forward_head(features, pre_logits=True)
    pooled = features.mean((2, 3))
    kept = dropped != 0
    assert not kept.all() and torch.allclose(dropped[kept], 2 * pooled[kept])  # inverted dropout, p = 0.5


def test_list_models():
    assert "efficientnetv2_rw_t_adrelu" in timm.list_models("*adrelu*")
    assert set(timm.list_models("*fles*")) >= {"resnet50_fles", "vit_tiny_patch16_224_fles",
                                                "swin_tiny_patch4_window7_224_fles", "poolformer_s12_fles"}
    assert {"resnet18_aiec", "vit_tiny_patch16_224_aiec"} <= set(timm.list_models("*aiec*"))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_warm_start_from_a_local_base_checkpoint(name, tmp_path):
    """Every variant loads every weight of its base, and where its method has an init equal to the activation it
    replaces (``preserving_kwargs``), it starts as the base model: exactly, or within 1e-5 for FleS, whose kernel
    computes ``rho(x) x`` in its own arithmetic rather than through the base's ATen kernel. A variant whose
    arguments contradict that init (a dynActivation over SiLU in place of GELU) fails here."""
    variant = ZOO[name]
    preserves = hf_acts.get_activation(variant.act).preserving_kwargs(variant.target) is not None
    base = timm.create_model(variant.base.split(".")[0], num_classes=5).eval()
    save_file(base.state_dict(), tmp_path / "base.safetensors")
    model = timm.create_model(name, pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "base.safetensors"), num_classes=5))
    model.eval()
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in base.state_dict().items())  # every base weight loaded
    assert model.hf_acts_reports[0].function_preserving == preserves
    if preserves:
        x = small_input(model)
        with torch.no_grad():
            got, want = model(x), base(x)
        if variant.act == "fles":
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()
        else:
            assert torch.equal(got, want)


def test_features_only_of_a_base_with_fewer_than_five_feature_levels():
    """The default out_indices is every level up to five: the CIFAR ResNet-8 has three."""
    model = timm.create_model("hf_acts_swapped", base_model="resnet8_cifar", features_only=True,
                              swaps=[{"act": "fles", "target": "relu", "last": 1}])
    maps = model(torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_warm_start_runs_the_base_architectures_checkpoint_filter(tmp_path):
    """A 224 px ViT checkpoint into the FleS variant at 64 px: ViT's own filter resamples the position embeddings,
    exactly as timm does when it loads that checkpoint into the base model at 64 px."""
    base = timm.create_model("vit_tiny_patch16_224", num_classes=5).eval()
    save_file(base.state_dict(), tmp_path / "base.safetensors")
    cfg = dict(pretrained_cfg_overlay=dict(file=str(tmp_path / "base.safetensors"), num_classes=5))
    model = timm.create_model("vit_tiny_patch16_224_fles", pretrained=True, num_classes=5, img_size=64, **cfg).eval()
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=5, img_size=64, **cfg).eval()
    assert model.pos_embed.shape == (1, 17, 192) and torch.equal(model.pos_embed, reference.pos_embed)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)  # FleS starts as GELU


@pytest.mark.parametrize("name,kwargs", [
    ("resnet8_cifar_adrelu", {}),
    ("vit_tiny_patch16_224_fles", {}),
    ("resnet18_aiec", {}),
    ("hf_acts_swapped", {"base_model": "resnet34",
                         "swaps": [{"act": "fles", "target": "relu", "select": r"^layer4\."}]}),
])
def test_save_for_hf_local_dir_round_trip(name, kwargs, tmp_path):
    model = timm.create_model(name, num_classes=6, **kwargs).eval()
    for n in model.hf_acts_reports[0].names:
        randomize_(model.get_submodule(n), 0.1)
    x = small_input(model)
    hf_acts.save_timm_model(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == name and "num_classes" not in config["model_args"]
    assert (tmp_path / "model.safetensors").exists()
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert reloaded.num_classes == 6
    assert torch.equal(reloaded(x), model(x))


def test_swap_on_a_saved_base_starts_from_its_weights(tmp_path):
    """The ADReLU paper's recipe on your own checkpoint: ``base_model="local-dir:..."`` takes the folder's architecture
    and saved arguments (here SiLU), loads its weights, and the swapped folder reloads without the base folder."""
    base = timm.create_model("resnet8_cifar", num_classes=10, act_layer="silu").eval()
    randomize_(base, 0.1)
    hf_acts.save_timm_model(base, tmp_path / "base")
    swaps = [{"act": "adrelu", "target": "silu", "last": 3}]
    model = timm.create_model("hf_acts_swapped", pretrained=True, base_model=f"local-dir:{tmp_path / 'base'}",
                              swaps=swaps, num_classes=10).eval()
    own = model.state_dict()
    shared = [k for k in base.state_dict() if k in own]
    assert len(shared) == len(base.state_dict())  # a swap adds parameters, it removes none
    for k in shared:
        assert torch.equal(own[k], base.state_dict()[k]), k
    assert model.hf_acts_reports[0].names == ["stages.1.0.act2", "stages.2.0.act1", "stages.2.0.act2"]
    silus = [sum(isinstance(m, torch.nn.SiLU) for m in net.modules()) for net in (base, model)]
    assert silus == [7, 4]  # stem + 2 per block; the other SiLUs stay
    hf_acts.save_timm_model(model, tmp_path / "swapped")
    config = json.loads((tmp_path / "swapped" / "config.json").read_text())
    assert config["model_args"]["base_model"] == "resnet8_cifar" and config["model_args"]["act_layer"] == "silu"
    for f in (tmp_path / "base").iterdir():
        f.unlink()
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'swapped'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(reloaded(x), model(x))


@pytest.mark.parametrize("arch", ["convnext_atto", "resnet18", "efficientnet_b0", "vit_tiny_patch16_224"])
def test_act_layer_class_infers_channels(arch):
    model = timm.create_model(arch, act_layer=hf_acts.get_activation("fles"), num_classes=3)
    x = small_input(model, batch=1)
    assert model(x).shape == (1, 3)
    assert any(isinstance(m, hf_acts.FleS) and m.channels for m in model.modules())


def test_register_names_string_act_layer_round_trip(tmp_path):
    register_names()
    model = timm.create_model("resnet18", act_layer="fles", num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    model(x)  # lazy channels materialise
    randomize_activations_(model, 0.05)
    hf_acts.save_timm_model(model, tmp_path)
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert torch.equal(reloaded(x), model(x))


def test_register_names_fails_loudly_if_timm_internals_change(monkeypatch):
    monkeypatch.delattr(create_act, "_ACT_LAYER_DEFAULT")
    with pytest.raises(RuntimeError, match="_ACT_LAYER_DEFAULT changed"):
        register_names()


def test_register_names_never_shadows_timm(monkeypatch):
    monkeypatch.setitem(create_act._ACT_LAYER_DEFAULT, "fles", torch.nn.ReLU)
    with pytest.raises(RuntimeError, match="timm already defines act_layer 'fles'"):
        register_names()


def test_bad_input():
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("resnet18_prelu")
    with pytest.raises(ValueError, match="unknown activation"):
        timm.create_model("hf_acts_swapped", base_model="resnet18", swaps=[{"act": "prelu", "target": "relu"}])
    with pytest.raises(ValueError, match="needs swaps"):
        timm.create_model("hf_acts_swapped", base_model="resnet18")
    with pytest.raises(ValueError, match="only the keys"):
        timm.create_model("hf_acts_swapped", swaps=[{"act": "fles", "where": "layer4"}])
