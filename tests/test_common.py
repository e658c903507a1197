"""Contract every registered activation keeps: layouts, dtypes, lazy channels, compile, state dicts."""

import warnings

import pytest
import torch
from conftest import randomize_
from safetensors.torch import load_file, save_file

import hf_acts
from hf_acts import DynActGLU
from hf_acts.activations.bases import BASE_ACTIVATIONS, BASE_NAMES

NAMES = [n for n in hf_acts.list_activations() if n != "dynactglu"]
EXTRA = {"aiec": {"num_classes": 5}, "dynactivation": {"per_channel": True}, "swish_beta": {"per_channel": True}}
LAYOUTS = [(2, 16, 5, 5), (2, 7, 16), (2, 16), (1, 16, 3, 3), (1, 4, 16), (1, 16)]


def build(name, channels=None, **kw):
    return hf_acts.create_activation(name, channels=channels, **{**EXTRA.get(name, {}), **kw})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", LAYOUTS)
def test_layouts_and_batch_one(name, shape):
    m = randomize_(build(name, 16), 0.2)
    x = torch.randn(shape)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(name, dtype):
    m = randomize_(build(name, 16), 0.2)
    x = torch.randn(2, 16, 4, 4)
    ref = m(x)
    y = m.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


@pytest.mark.parametrize("name", NAMES)
def test_timm_style_construction_is_lazy(name):
    """timm calls act_layer(inplace=True) without a channel count."""
    lazy = build(name, inplace=True)
    x = torch.randn(2, 16, 4, 4)
    lazy(x)
    eager = build(name, 16)
    eager.load_state_dict(lazy.state_dict())
    torch.testing.assert_close(lazy(x), eager(x))


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_round_trip_into_an_unbuilt_module(name, tmp_path):
    m = randomize_(build(name, 16), 0.2)
    x = torch.randn(2, 5, 16)
    save_file(m.state_dict(), tmp_path / "w.safetensors")
    fresh = build(name)  # channels unknown: built from the stored shapes
    fresh.load_state_dict(load_file(tmp_path / "w.safetensors"))
    assert torch.equal(fresh(x), m(x))


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_parity(name):
    m = randomize_(build(name, 16), 0.2)
    x = torch.randn(2, 16, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)


def test_compile_aiec_training_forward():
    m = hf_acts.AIEC(16, num_classes=3).train()
    m.set_targets(torch.tensor([0, 2]))
    torch._dynamo.reset()
    y = torch.compile(m, fullgraph=True)(torch.randn(2, 16, 4, 4))
    assert y.shape == (2, 16, 4, 4) and m.aux_loss is not None and m.phi.sum() >= 0


def test_compile_dynactglu():
    m = DynActGLU(16, 32)
    x = torch.randn(2, 3, 16)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x))


REPR_KEYS = {"adrelu": "head_dim=8", "fles": "reduction=32", "dynactivation": "base='silu'",
             "swish_beta": "beta_init=1.0", "dyrelu": "k=2", "aiec": "num_classes=5"}


@pytest.mark.parametrize("name", NAMES)
def test_extra_repr_names_hyperparameters(name):
    assert REPR_KEYS[name] in build(name, 16).extra_repr()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(16,), (2, 16, 3, 3, 3)])
def test_wrong_rank_is_a_clear_error(name, shape):
    m = build(name, 16, **({"per_channel": True} if name in ("dynactivation", "swish_beta") else {}))
    with pytest.raises(ValueError, match="expects images"):
        m(torch.randn(shape))


@pytest.mark.parametrize("name", ["adrelu", "fles", "dyrelu", "aiec"])
def test_wrong_channel_count(name):
    with pytest.raises(ValueError, match="built for channels=16"):
        build(name, 16)(torch.randn(2, 8, 3, 3))


def test_registry():
    assert set(hf_acts.list_activations()) == {"adrelu", "fles", "dynactivation", "dynactglu", "swish_beta",
                                               "dyrelu", "aiec"}
    assert hf_acts.get_activation("dynact") is hf_acts.DynActivation
    assert hf_acts.get_activation(hf_acts.FleS) is hf_acts.FleS
    assert hf_acts.create_activation("dynactglu", channels=8, intermediate_size=16).hidden_size == 8
    assert hf_acts.create_activation("fles", channels=32).channels == 32
    with pytest.raises(ValueError, match="unknown activation 'prelu'"):
        hf_acts.get_activation("prelu")


@pytest.mark.parametrize("name,kernel", [("adrelu", "adrelu"), ("dynactivation", "pointwise"),
                                         ("swish_beta", "pointwise"), ("fles", "fles")])
def test_a_kernel_that_cannot_be_built_warns_once_and_falls_back_to_the_plain_path(monkeypatch, name, kernel):
    import torch.utils.cpp_extension

    from hf_acts.ops import _cpp

    m = randomize_(build(name, 16), 0.2)
    x = torch.randn(2, 16, 4, 4)
    fused = m(x)

    def no_compiler(**kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(_cpp, "_modules", {})
    with pytest.warns(UserWarning, match=f"fused {kernel} CPU kernel could not be built .*no C\\+\\+ compiler"):
        plain = m(x)
    assert _cpp._modules == {kernel: None}
    torch.testing.assert_close(plain, fused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        torch.testing.assert_close(m(x), fused)


@pytest.mark.parametrize("name", NAMES)
def test_torch_func_grad_and_vmap(name):
    """torch.func.grad/vmap run the plain formulas (the fused autograd functions are first-order, eager only)."""
    m = randomize_(build(name, 16), 0.2).double()
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    grad = torch.func.grad(lambda t: m(t).sum())(x)
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(grad, torch.autograd.grad(m(xg).sum(), xg)[0])
    torch.testing.assert_close(torch.func.vmap(m)(x.unsqueeze(1)).squeeze(1), m(x))


def test_lazily_sized_activations_refuse_to_build_in_a_multi_process_run_outside_build_lazy(monkeypatch):
    """Parameters created after DDP / FSDP / ZeRO wrapped the model would be neither synchronised nor sharded."""
    import torch.distributed as dist

    from hf_acts.activations._base import unbuilt_activations

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), hf_acts.FleS(), torch.nn.Conv2d(8, 8, 1), hf_acts.ADReLU())
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    with pytest.raises(RuntimeError, match=r"hf_acts.build_lazy\(model, example_batch\)"):
        model(torch.randn(2, 3, 5, 5))
    assert len(unbuilt_activations(model)) == 2
    model.train()
    assert hf_acts.build_lazy(model, torch.randn(2, 3, 5, 5)) == 2
    assert model.training and not unbuilt_activations(model)
    assert [m.channels for m in model if hasattr(m, "channels")] == [8, 8]


def test_build_lazy_restores_every_module_mode_and_counts_what_it_built():
    """A model training with frozen (eval-mode) BatchNorm keeps it frozen: the sizing pass restores each module's
    own flag, not the model's flag everywhere. An activation the pass never reached stays unbuilt and uncounted."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = torch.nn.Conv2d(3, 8, 1), torch.nn.BatchNorm2d(8), hf_acts.FleS()
            self.unused = hf_acts.ADReLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    model = Net().train()
    model.bn.eval()
    before = model.bn.running_mean.clone()
    assert hf_acts.build_lazy(model, torch.randn(2, 3, 5, 5)) == 1
    assert [m.training for m in (model, model.conv, model.bn, model.act, model.unused)] == [True, True, False, True,
                                                                                           True]
    assert torch.equal(model.bn.running_mean, before)  # the pass ran in eval mode
    assert model.act.channels == 8 and model.unused.channels is None
    evaluated = Net().eval()
    hf_acts.build_lazy(evaluated, torch.randn(2, 3, 5, 5))
    assert not any(m.training for m in evaluated.modules())  # layers built in the pass take their parent's mode


@pytest.mark.parametrize("name", NAMES)
def test_lazy_parameters_sized_under_autocast_are_float32(name):
    """Under autocast the activation's input is bfloat16, but its parameters are the optimizer's float32 weights."""
    lazy, conv = build(name), torch.nn.Conv2d(3, 16, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = conv(torch.randn(2, 3, 5, 5))
        y = lazy(x)
    assert x.dtype == torch.bfloat16 and y.shape == x.shape
    assert {p.dtype for p in lazy.parameters()} == {torch.float32}


def test_channels_last_wrapper_equals_the_activation_on_the_channels_first_map():
    """ADReLU's 3x3 depthwise conv tells H from W, so a transposed view inside the wrapper would show."""
    from hf_acts.activations._base import ChannelsLast

    act = randomize_(hf_acts.ADReLU(16), 0.2)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(ChannelsLast(act)(x.permute(0, 2, 3, 1)), act(x).permute(0, 2, 3, 1))


# (activation, base) pairs with an init equal to the base: the README's swap section and the activations table
PRESERVING = {("adrelu", "relu"), ("aiec", "relu"), ("fles", "silu"), ("fles", "gelu"), ("swish_beta", "silu"),
              *(("dynactivation", b) for b in BASE_NAMES)}


def test_every_preserving_init_claimed_reproduces_its_base():
    """What the swap reports as function-preserving is the numerical truth, and claimed for the documented pairs
    only (ADReLU's zero init is ReLU, not LeakyReLU)."""
    claimed = set()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64) * 3
    for name in NAMES:
        for base in BASE_NAMES:
            kwargs = hf_acts.get_activation(name).preserving_kwargs(base)
            if kwargs is None:
                continue
            claimed.add((name, base))
            module = build(name, 16, **kwargs).double()
            torch.testing.assert_close(module(x), BASE_ACTIVATIONS[base](x), rtol=0, atol=1e-12,
                                       msg=f"{name} with {kwargs} is not {base}")
    assert claimed == PRESERVING
