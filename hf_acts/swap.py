"""Put a new activation into an already built (e.g. pretrained) model, Liger-style: in place,
existing weights kept, a report of what changed."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .activations._base import ChannelsLast, probe
from .registry import activation_name, get_activation, named_activations

# (library, class name) -> the base function an instance computes with its default arguments; the one table behind
# string targets, class targets and the function-preserving inits (each entry is checked numerically in the tests).
# Keyed by class name within the library so that a class moved between a library's modules still matches.
ACTIVATION_CLASSES: dict[tuple[str, str], str] = {
    ("torch", "ReLU"): "relu",
    ("torch", "LeakyReLU"): "leaky_relu",
    ("torch", "SiLU"): "silu",
    ("torch", "GELU"): "gelu",
    ("torch", "Mish"): "mish",
    ("timm", "Swish"): "silu",
    ("timm", "GELU"): "gelu",
    ("timm", "GELUTanh"): "gelu_tanh",
    ("timm", "Mish"): "mish",
    ("transformers", "SiLUActivation"): "silu",
    ("transformers", "GELUActivation"): "gelu",
    ("transformers", "GELUTanh"): "gelu_tanh",
    ("transformers", "PytorchGELUTanh"): "gelu_tanh",
    ("transformers", "NewGELUActivation"): "gelu_tanh",
    ("transformers", "FastGELUActivation"): "gelu_tanh",
    ("transformers", "MishActivation"): "mish",
}

Target = str | type[nn.Module] | Iterable[str | type[nn.Module]]


def _class_base(cls: type) -> str | None:
    return ACTIVATION_CLASSES.get((cls.__module__.split(".")[0], cls.__name__))


def base_name(module: nn.Module) -> str | None:
    """The name of the fixed activation ``module`` computes (``relu``, ``silu``, ``gelu``, ...), or None."""
    base = _class_base(type(module))
    if base == "gelu" and getattr(module, "approximate", "none") == "tanh":
        return "gelu_tanh"
    if base == "leaky_relu" and module.negative_slope != 0.01:
        return None
    return base


def _matches(module: nn.Module, targets: list[str | type[nn.Module]]) -> bool:
    """A string matches by function (base name) or class name; a class matches its instances and every library
    class that computes the same function (``nn.GELU`` matches timm's ``GELU`` and transformers'
    ``GELUActivation``)."""
    for t in targets:
        if isinstance(t, str) and (base_name(module) == t or type(module).__name__ == t):
            return True
        if isinstance(t, type):
            function = _class_base(t)
            if isinstance(module, t) or (function is not None and function == base_name(module)):
                return True
    return False


@dataclass
class SwapRecord:
    """One replaced site."""

    name: str
    old: str
    new: str
    channels: int | None
    input_shape: list[int] | None
    params_added: int
    function_preserving: bool
    calls: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)  # what the new module was built with
    channels_last: bool = False  # a (B, H, W, C) map: the module sits in a ChannelsLast wrapper


@dataclass
class SwapReport:
    """What :func:`replace_activations` changed; ``str()`` is a markdown table."""

    activation: str
    kwargs: dict[str, Any]
    records: list[SwapRecord] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    @property
    def params_added(self) -> int:
        return sum(r.params_added for r in self.records)

    @property
    def function_preserving(self) -> bool:
        return all(r.function_preserving for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        return {"activation": self.activation, "kwargs": self.kwargs,
                "records": [asdict(r) for r in self.records], "params_added": self.params_added}

    def __str__(self) -> str:
        rows = ["| layer | old | new | channels | input shape | params added | function-preserving |",
                "|---|---|---|---|---|---|---|"]
        rows += [f"| `{r.name}` | {r.old} | {r.new} | {r.channels} | {r.input_shape} | {r.params_added:,} | "
                 f"{'yes' if r.function_preserving else 'no'} |" for r in self.records]
        rows.append(f"\n{len(self.records)} site(s) replaced, {self.params_added:,} parameters added.")
        return "\n".join(rows)


def timm_input_size(model: nn.Module, cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """``cfg["input_size"]`` corrected by what the built model holds: the first conv's input channels (``in_chans``)
    and a fixed-size patch embedding's image size (``img_size``)."""
    channels, *spatial = cfg["input_size"]
    try:
        channels = model.get_submodule(cfg.get("first_conv") or "").in_channels
    except AttributeError:
        pass
    patch_embed = getattr(model, "patch_embed", None)
    if getattr(patch_embed, "img_size", None) and not getattr(patch_embed, "dynamic_img_size", False):
        spatial = list(patch_embed.img_size)
    return (channels, *spatial)


def example_inputs_for(model: nn.Module) -> Any:
    """A small example input when the model describes one (timm ``pretrained_cfg``; transformers models: their
    ``main_input_name`` sized from the config, see :func:`~hf_acts.integrations.transformers.modeling_hf_acts.
    example_inputs`), else None."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        return torch.randn(1, *timm_input_size(model, cfg))
    if _is_transformers_model(model):
        from .integrations.transformers.modeling_hf_acts import example_inputs

        return example_inputs(model)
    return None


def _is_transformers_model(model: nn.Module) -> bool:
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _trace_sites(model: nn.Module, names: list[str], example_inputs: Any) -> dict[str, dict[str, Any]]:
    """One forward pass: for each site, its first-call order, input shapes, the first input, and whether that input
    is a channels-last map (a 4-D output of an ``nn.Linear``, as between the Linear layers of a ConvNeXt block)."""
    seen: dict[str, dict[str, Any]] = {}
    modules = dict(model.named_modules())
    linear_maps: set[int] = set()  # data pointers of 4-D nn.Linear outputs

    def linear_output(_mod: nn.Module, _args: tuple, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            linear_maps.add(out.data_ptr())

    def hook(name: str):
        def record(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            info = seen.setdefault(name, {"order": len(seen), "shapes": [], "x": x,
                                          "channels_last": x.ndim == 4 and x.data_ptr() in linear_maps})
            info["shapes"].append(tuple(x.shape))
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    handles += [m.register_forward_hook(linear_output) for m in modules.values() if isinstance(m, nn.Linear)]
    try:
        probe(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _channels_of(shape: tuple[int, ...], channels_last: bool = False) -> int:
    return shape[-1] if len(shape) == 3 or channels_last else shape[1]


def replace_activations(
    model: nn.Module,
    new: str | type[nn.Module] = "fles",
    target: Target = ("relu", "silu", "gelu"),
    select: str | None = None,
    exclude: str | None = None,
    last: int | None = None,
    example_inputs: Any = None,
    preserve: bool = True,
    **kwargs: Any,
) -> SwapReport:
    """Replace activation modules of ``model`` in place with activation ``new``; return a report.

    Args:
        model: any built ``nn.Module`` (timm, transformers, torchvision, your own).
        new: a registry name (``hf_acts.list_activations()``) or class.
        target: which modules are candidates: a base name (``"relu"``, ``"silu"``, ``"gelu"``,
            ``"gelu_tanh"``, ``"leaky_relu"``, ``"mish"``: every torch, timm and transformers class of
            :data:`ACTIVATION_CLASSES` that computes it), a class name, a class (its instances and the
            library classes computing the same function), or several.
        select / exclude: regular expressions searched in the module's qualified name.
        last: keep only the last ``last`` candidates in *forward* order (found with one forward
            pass, which also gives each site's channel count).
        example_inputs: a tensor, tuple or dict of model inputs for that pass; defaults to the
            model's own description (timm ``pretrained_cfg['input_size']``, transformers
            ``dummy_inputs``). Without one, channel-dependent activations infer channels lazily.
        preserve: build each new module with the init that reproduces the module it replaces,
            where the method has one (``record.function_preserving`` says where it did).
        **kwargs: constructor arguments for ``new`` (they override the preserving ones).

    Existing weights are untouched; new parameters take their init and the dtype/device of the
    site's input. A site fed a channels-last map by a Linear layer (ConvNeXt blocks) gets its module inside a
    :class:`~hf_acts.activations._base.ChannelsLast` wrapper. A transformers model becomes its ``HfActsSwapped<Model>``
    class with the swap recorded in its config, so ``save_pretrained`` folders reload with the new activations
    (:mod:`hf_acts.integrations.transformers.swapped`). Raises ``ValueError`` when nothing matches.
    """
    cls = get_activation(new)
    if cls.__name__ == "DynActGLU":
        raise ValueError("dynactglu replaces whole gated MLP blocks: use hf_acts.convert_glu, not replace_activations")
    targets = [target] if isinstance(target, str | type) else list(target)
    candidates = [
        n for n, m in model.named_modules()
        if n and _matches(m, targets) and not isinstance(m, cls)
        and (select is None or re.search(select, n)) and not (exclude and re.search(exclude, n))
    ]
    if not candidates:
        raise ValueError(
            f"no module matches target={target!r}, select={select!r}, exclude={exclude!r} in {type(model).__name__}"
        )
    if example_inputs is None:
        example_inputs = example_inputs_for(model)
    sites: dict[str, dict[str, Any]] = {}
    if example_inputs is not None:
        sites = _trace_sites(model, candidates, example_inputs)
        candidates = sorted((n for n in candidates if n in sites), key=lambda n: sites[n]["order"])
    if last is not None:
        if example_inputs is None:
            raise ValueError("last=N needs the forward order: pass example_inputs")
        candidates = candidates[-last:]
    if not candidates:
        raise ValueError(f"no matching module of {type(model).__name__} ran in the example forward pass")

    params = inspect.signature(cls).parameters
    report = SwapReport(activation=activation_name(cls) or cls.__name__, kwargs=dict(kwargs))
    built: list[tuple[str, nn.Module]] = []
    for name in candidates:  # build everything first: a bad site leaves the model untouched
        old = model.get_submodule(name)
        site = sites.get(name)
        shapes = site["shapes"] if site else []
        channels_last = bool(site and site["channels_last"])
        channels = _channels_of(shapes[0], channels_last) if shapes else None
        base = base_name(old)
        preserving = cls.preserving_kwargs(base) if preserve and base else None
        ctor = {**(preserving or {}), **kwargs}
        if "channels" in params and channels is not None:
            ctor.setdefault("channels", channels)
        if "spatial_dims" in params and shapes and len(shapes[0]) in (2, 3):
            ctor.setdefault("spatial_dims", 1)
        module = cls(**ctor)
        if getattr(module, "channels", None) is not None and len({_channels_of(s, channels_last) for s in shapes}) > 1:
            raise ValueError(f"{name} is called with different channel counts {shapes}; a {cls.__name__} "
                             "instance has one channel count -- give each call its own module first")
        if site is not None:
            module.to(device=site["x"].device, dtype=site["x"].dtype if site["x"].is_floating_point() else None)
        module.train(old.training)
        built.append((name, ChannelsLast(module) if channels_last else module))
        report.records.append(SwapRecord(
            name=name, old=type(old).__name__, new=cls.__name__, channels=channels,
            input_shape=list(shapes[0]) if shapes else None,
            params_added=sum(p.numel() for p in module.parameters()) - sum(p.numel() for p in old.parameters()),
            function_preserving=preserving is not None and all(ctor.get(k) == v for k, v in preserving.items()),
            calls=len(shapes) or 1, kwargs=ctor, channels_last=channels_last,
        ))
    for name, module in built:
        model.set_submodule(name, module)
    if _is_transformers_model(model):
        from .integrations.transformers.swapped import record_swap

        record_swap(model, report)
    return report


def activation_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys that belong to hf-acts activation modules of ``model``."""
    return {prefix + k for prefix, module in named_activations(model) for k in module.state_dict()}
