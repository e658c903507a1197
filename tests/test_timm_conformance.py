"""Every timm model hf-acts registers keeps timm's model contract (the checks of timm's own model tests that need no
network), at small input sizes; declared exceptions come from hf_acts.models.contract."""

import copy
import functools
import math

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import hf_acts  # noqa: F401  (registers the models)
from hf_acts.models.contract import contract_exceptions
from hf_acts.models.zoo import ZOO

MODELS = sorted({*ZOO, "resnet8_cifar", "resnet32_cifar", "mlp_mnist1d"})
HEAVY = ("efficientnetv2_m_adrelu", "efficientnetv2_l_adrelu", "resnet50_adrelu", "resnet50_fles")
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODELS]
TRACER = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}


@functools.cache
def _built(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=7)


def build(name: str) -> torch.nn.Module:
    return copy.deepcopy(_built(name))


def input_for(model: torch.nn.Module, batch: int = 2, channels: int | None = None) -> torch.Tensor:
    cfg = model.pretrained_cfg
    c, *spatial = cfg["input_size"]
    if not cfg.get("fixed_input_size", False):
        spatial = [min(s, 64) for s in spatial]
    torch.manual_seed(1)
    return torch.randn(batch, channels or c, *spatial)


def is_vector_model(name: str) -> bool:
    return "features_only" in contract_exceptions(name)


@pytest.mark.parametrize("name", PARAMS)
def test_forward_backward(name):
    model = build(name).train()
    out = model(input_for(model))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    without = sorted(n for n, p in model.named_parameters() if p.grad is None)
    if "backward" in contract_exceptions(name):
        assert without and all(n.endswith(".decision.weight") for n in without), without
    else:
        assert not without, f"parameters without a gradient: {without}"


@pytest.mark.parametrize("name", PARAMS)
def test_features_head_and_classifier_reset(name):
    model = build(name).eval()
    x = input_for(model)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        unpooled = model(x)
    if is_vector_model(name):
        assert unpooled.shape == (2, model.num_features)
    else:  # no pooling: the unpooled features (NCHW maps, NHWC for Swin, tokens for ViT)
        assert unpooled.shape == features.shape and unpooled.ndim in (3, 4)
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", PARAMS)
def test_features_only_and_intermediates(name):
    if is_vector_model(name):
        with pytest.raises(ValueError, match="no spatial feature maps"):
            timm.create_model(name, features_only=True)
        return
    model = build(name).eval()
    x = input_for(model, batch=1)
    n = len(model.feature_info)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(intermediates) == n
        assert [t.shape[1] for t in intermediates] == [i["num_chs"] for i in model.feature_info]
        # the maps are as large as feature_info's reductions say, exactly at these sizes (timm's test allows one more)
        for info, t in zip(model.feature_info, intermediates, strict=True):
            expected = [math.ceil(s / info["reduction"]) for s in x.shape[2:]]
            assert list(t.shape[2:]) == expected, (info, t.shape)
        features = timm.create_model(name, features_only=True, out_indices=(n - 2, n - 1)).eval()
        outs = features(x)
        assert len(outs) == 2 and [o.shape[1] for o in outs] == features.feature_info.channels()
        pruned = build(name).eval()
        kept = pruned.prune_intermediate_layers([n - 2])
        (only,) = pruned.forward_intermediates(x, indices=kept, intermediates_only=True)
        torch.testing.assert_close(only, intermediates[n - 2])
    # pruning drops the classifier too (prune_head=True, the default): no parameters left unused
    assert pruned.num_classes == 0 and not any(p.numel() for p in pruned.get_classifier().parameters())


@pytest.mark.parametrize("name", PARAMS)
def test_fx_forward_and_backward(name):
    model = build(name).eval()
    x = input_for(model, batch=1)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=TRACER)
    fx = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                  tracer_kwargs=TRACER).eval()
    with torch.no_grad():
        torch.testing.assert_close(fx(x)[eval_nodes[-1]], model(x))
    fx.train()
    fx(input_for(model))[train_nodes[-1]].mean().backward()
    without = [n for n, p in fx.named_parameters() if p.grad is None]
    assert not without or ("backward" in contract_exceptions(name)
                           and all(n.endswith(".decision.weight") for n in without)), without


@pytest.mark.parametrize("name", PARAMS)
def test_torchscript(name):
    with timm.layers.set_layer_config(scriptable=True):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=7).eval()
    scripted = torch.jit.script(model)
    x = input_for(model, batch=1)
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=TRACER)
    fx_scripted = torch.jit.script(create_feature_extractor(model, return_nodes=[eval_nodes[-1]],
                                                            tracer_kwargs=TRACER))  # FX graph, then TorchScript
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fx_scripted(x)[eval_nodes[-1]], model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", PARAMS)
def test_in_chans_with_pretrained_weights_from_a_file(name, tmp_path):
    source = build(name)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "weights.safetensors")
    first_conv = source.pretrained_cfg["first_conv"]
    for chans in (1, 4):
        model = timm.create_model(name, num_classes=7, in_chans=chans, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(tmp_path / "weights.safetensors"))).eval()
        weight = model.get_submodule(first_conv).weight
        if "in_chans" in contract_exceptions(name):  # a Linear over the flattened input: width scales with chans
            assert weight.shape[1] == chans * source.get_submodule(first_conv).weight.shape[1]
        elif chans == 1:  # timm's adaptation: the RGB filters summed
            assert weight.shape[1] == 1
            torch.testing.assert_close(weight[:, 0], source.get_submodule(first_conv).weight.sum(1))
        else:
            assert weight.shape[1] == chans
        with torch.no_grad():
            assert model(input_for(model, batch=1, channels=chans)).shape == (1, 7)


@pytest.mark.parametrize("name", [n for n in PARAMS if not is_vector_model(getattr(n, "values", [n])[0])])
def test_grad_checkpointing_gives_the_same_gradients(name):
    model = build(name).train()
    x = input_for(model)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(2)
        model(x).float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-4, atol=1e-5)


EXPORTED = ["resnet8_cifar_adrelu", "resnet8_cifar_dyrelu", "vit_tiny_patch16_224_fles", "resnet18_dynact",
            "vit_tiny_patch16_224_aiec"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED)
def test_torch_export_in_eval_mode(name):
    model = build(name).eval()
    x = input_for(model, batch=1)
    program = torch.export.export(model, (x,))
    assert not any("hf_acts" in str(n.target) for n in program.graph.nodes)  # decomposed to aten ops
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8_cifar_adrelu", "vit_tiny_patch16_224_fles"])
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    import onnxruntime as ort

    model = build(name).eval()
    x = input_for(model, batch=1)
    torch.onnx.export(model, (x,), tmp_path / "model.onnx", dynamo=True)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)
