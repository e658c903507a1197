"""The hf-acts causal-LM family (Llama, Mistral, Qwen2 and Qwen3 with a configurable gated MLP) and the swapped
models of any architecture.

Each LM family is its transformers base model with the MLPs of ``config.mlp_layers`` turned into
``DynActGLU`` (same projection keys, plus the dynActivation ``alpha``/``beta``). A swapped model class
``HfActsSwapped<Model>`` (:func:`swapped_model_class`) is a model class that rebuilds the activations recorded in
``config.hf_acts_activations`` after its own ``__init__``. Every transformers model sizes the activations it builds
from an hf-acts ``hidden_act`` (``"fles"``) at the end of its ``__init__`` and gives the ones a checkpoint lacks their
own init (:func:`install_model_hooks`), so that ``from_pretrained`` finds every parameter. This file is saved beside
checkpoints for ``trust_remote_code``: it imports torch, transformers and the files beside it.
"""

from __future__ import annotations

import copy
import inspect

import torch
import transformers
from torch import nn
from transformers import (
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    MistralForCausalLM,
    MistralModel,
    MistralPreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen3ForCausalLM,
    Qwen3Model,
    Qwen3PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.utils import logging

try:  # one class identity with the rest of hf-acts when it is installed
    from hf_acts.activations._base import ChannelsLast, LazyChannels, build_lazy, unbuilt_activations
    from hf_acts.activations.adrelu import ADReLU
    from hf_acts.activations.dynactglu import DynActGLU
    from hf_acts.activations.dynactivation import DYN_BASES, DynActivation
    from hf_acts.activations.fles import GATES, FleS
    from hf_acts.activations.swish_beta import SwishBeta
    from hf_acts.registry import ACTIVATIONS
except ImportError:  # remote code on a machine without hf-acts: the files saved beside this one
    from ._base import ChannelsLast, LazyChannels, build_lazy, unbuilt_activations
    from .adrelu import ADReLU
    from .aiec import AIEC
    from .bases import get_base  # noqa: F401  (transformers <= 5.9 copies only the direct imports of a local folder)
    from .dynactglu import DynActGLU
    from .dynactivation import DYN_BASES, DynActivation
    from .fles import GATES, FleS
    from .swish_beta import SwishBeta

    ACTIVATIONS = {"adrelu": ADReLU, "aiec": AIEC, "fles": FleS, "dynactivation": DynActivation,
                   "swish_beta": SwishBeta}
from .configuration_hf_acts import (
    SWAP_FIELD,
    HfActsLlamaConfig,
    HfActsMistralConfig,
    HfActsQwen2Config,
    HfActsQwen3Config,
    swapped_config_class,
)

logger = logging.get_logger(__name__)


def remembering(cls: type) -> type:
    """``cls`` as ACT2FN builds it: without a channel count, and keeping the count it learns in a saved buffer
    (``hf_acts_channels``, -1 until built). Models size these when built (:func:`install_model_hooks`); where that
    cannot run (a model whose inputs :func:`example_inputs` cannot make), ``from_pretrained`` has no module for the
    activation's parameters and drops them, and the buffer it does load makes the first call raise instead of
    silently starting over from the init."""

    class Remembering(cls):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.register_buffer("hf_acts_channels", torch.tensor(-1 if self.channels is None else self.channels))

        def _build_checked(self, channels: int) -> None:
            super()._build_checked(channels)
            if "hf_acts_channels" in self._buffers:
                self.hf_acts_channels.fill_(channels)

        def _materialize(self, x: torch.Tensor) -> None:
            known = self.hf_acts_channels
            if known.device.type != "meta" and int(known) >= 0:
                raise RuntimeError(
                    f"this {cls.__name__} was loaded from a checkpoint trained with {int(known)} channels, but the "
                    "model had no module for its parameters and dropped them (a stock transformers class with an "
                    "hf-acts hidden_act). Load the folder with an hf-acts config: "
                    "swapped_config_class(<Config>) / its HfActsSwapped<Model> class")
            super()._materialize(x)

    Remembering.__name__ = Remembering.__qualname__ = cls.__name__
    return Remembering


def register_act2fn_names() -> list[str]:
    """Add ``dynact_<base>``, ``swish_beta``, ``fles`` (FleS over SiLU), ``fles_<gate>`` and ``adrelu`` (tokens
    ``(B, N, C)``) to ``ACT2FN``, usable as ``hidden_act`` in configs whose MLPs take ``ACT2FN[config.hidden_act]``
    on tokens (ViT, BERT, ...; not ConvNeXt, whose activations see channels-last maps: swap those with
    ``hf_acts.replace_activations``). Channel-aware ones are built with their channels unknown; the model sizes them
    at the end of its ``__init__`` (:func:`install_model_hooks`). Never overwrites a transformers name. Returns the
    names added."""
    names = {f"dynact_{b}": (DynActivation, {"base": b}) for b in DYN_BASES}
    names["swish_beta"] = SwishBeta
    fles, adrelu = remembering(FleS), remembering(ADReLU)
    names["fles"] = fles
    names.update({f"fles_{g}": (fles, {"base": g}) for g in GATES})
    names["adrelu"] = (adrelu, {"spatial_dims": 1})
    added = [n for n in names if n not in ACT2FN]
    for n in added:
        ACT2FN[n] = names[n]
    return added


register_act2fn_names()


def convert_mlps(model: nn.Module, config) -> None:
    """Turn the gated MLPs of ``model.layers`` selected by ``config.mlp_layers`` into DynActGLU."""
    if config.mlp_variant != "dynactglu":
        return
    layers = range(len(model.layers)) if config.mlp_layers is None else config.mlp_layers
    for i in layers:
        layer = model.layers[i]
        if not isinstance(layer.mlp, DynActGLU):
            layer.mlp = DynActGLU.from_gated_mlp(layer.mlp, config.dynact_base, config.mlp_mode,
                                                 config.dynact_alpha_init, config.dynact_beta_init)


def example_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    """One small batch for a transformers model's ``main_input_name`` (and decoder tokens for an encoder-decoder),
    sized from its config (image size and channels, vocabulary), on the device of its parameters."""
    config, name = model.config, getattr(model, "main_input_name", "input_ids")
    device = next(model.parameters(), torch.empty(0)).device
    if name == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = tuple(size) if isinstance(size, list | tuple) else (size, size)
        return {name: torch.randn(1, getattr(config, "num_channels", 3), *size, device=device)}
    if name == "input_ids":
        ids = torch.randint(0, getattr(config, "vocab_size", 2), (1, 8), device=device)
        return {name: ids, "decoder_input_ids": ids} if getattr(config, "is_encoder_decoder", False) else {name: ids}
    if name == "input_values":  # raw audio (wav2vec2-style): one second at 16 kHz
        return {name: torch.randn(1, 16000, device=device)}
    if name == "input_features":  # log-mel frames (Whisper-style)
        return {name: torch.randn(1, getattr(config, "num_mel_bins", 80), 3000, device=device)}
    raise ValueError(f"no example input for {type(model).__name__}'s main input {name!r}: pass example_inputs")


def size_lazy_activations(model: nn.Module) -> None:
    """Size the activations of ``model`` built without a channel count (ACT2FN names: ``hidden_act="fles"``) with one
    forward pass on :func:`example_inputs`: on the meta device inside ``from_pretrained``, which then finds a module
    for every checkpoint key."""
    if unbuilt_activations(model):
        build_lazy(model, example_inputs(model))


def init_unloaded(module: LazyChannels) -> None:
    """Give the tensors of an hf-acts activation that ``from_pretrained`` did not load (no ``_is_hf_initialized``
    flag) the activation's own init (FleS's zero coefficient layer, dynActivation's ``alpha_init``/``beta_init``, ...)
    in place of the model's generic ``_init_weights``, so that a GELU checkpoint loaded with ``hidden_act="fles_gelu"``
    still computes what it computed."""
    if module.channels is None and module._needs_channels():
        return
    unloaded = {k: t for k, t in module.state_dict(keep_vars=True).items()
                if not getattr(t, "_is_hf_initialized", False)}
    if unloaded:
        fresh = copy.deepcopy(module)
        fresh._build_checked(module.channels or 1)  # new tensors with the init; the loaded ones are left alone
        inits = fresh.state_dict()
        with torch.no_grad():
            for key, tensor in unloaded.items():
                tensor.copy_(inits[key])


def install_model_hooks() -> bool:
    """Make every transformers model (stock classes included) size its lazily built hf-acts activations at the end of
    its ``__init__`` (``post_init``: after the generic init, before any checkpoint is loaded) and initialise the ones a
    checkpoint lacks with :func:`init_unloaded` (``_initialize_weights``). A model whose inputs cannot be made keeps
    its activations lazy (sized at the first call), with a warning. Installed once per process; False if it was."""
    cls = transformers.PreTrainedModel
    stock_post_init, stock_initialize = cls.post_init, cls._initialize_weights
    if getattr(stock_post_init, "_hf_acts", False):
        return False

    def post_init(self: cls) -> None:
        stock_post_init(self)
        try:
            size_lazy_activations(self)
        except Exception as error:  # noqa: BLE001 - an unknown architecture keeps the first-call sizing
            logger.warning(f"{type(self).__name__}: hf-acts activations built without a channel count could not be "
                           f"sized when the model was built ({error!r}); they are sized at the first call, and "
                           "from_pretrained cannot load their parameters into this class")

    def _initialize_weights(self: cls, module: nn.Module, *args: object, **kwargs: object) -> None:
        stock_initialize(self, module, *args, **kwargs)  # 5.14 adds is_custom_code; 5.10 passes the module alone
        if isinstance(module, LazyChannels):
            init_unloaded(module)

    post_init._hf_acts = _initialize_weights._hf_acts = True
    cls.post_init, cls._initialize_weights = post_init, _initialize_weights
    return True


install_model_hooks()


def apply_swaps(model: nn.Module, records: list[dict]) -> None:
    """Rebuild the activations of ``records`` (``config.hf_acts_activations``) in ``model``; a record of a task head
    is skipped on a base model."""
    base = getattr(model, "base_model", model)
    like = next(model.parameters())
    for record in records:
        if record["root"] == "model" and base is model:
            continue  # a head's activation, loaded into the bare base model
        cls = ACTIVATIONS.get(record["activation"])
        if cls is None:
            raise ValueError(f"{record['module']} holds a {record['activation']!r} activation, which needs hf-acts "
                             "installed to load (pip install hf-acts)")
        module = cls(**record["kwargs"])
        module = ChannelsLast(module) if record.get("channels_last") else module
        root = base if record["root"] == "base" else model
        root.get_submodule(record["module"])  # an AttributeError names a site this model lacks
        root.set_submodule(record["module"], module.to(device=like.device, dtype=like.dtype))


def dropped_activation_keys(model: nn.Module, keys: set[str]) -> list[str]:
    """The ``keys`` (unexpected in a load) that belong to a parameter-free module of ``model``, i.e. an activation
    that the checkpoint holds parameters for and this model would drop."""
    dropped = []
    for key in keys:
        path = key.rpartition(".")[0]
        while path:
            try:
                module = model.get_submodule(path)
                break
            except AttributeError:
                path = path.rpartition(".")[0]
        if path and next(module.parameters(), None) is None:
            dropped.append(key)
    return sorted(dropped)


_SWAPPED_MODELS: dict[type, type] = {}


def swapped_model_class(base: type) -> type:
    """``HfActsSwapped<base>``: the model class ``base`` with the activations of ``config.hf_acts_activations``
    rebuilt in ``__init__``; its ``from_pretrained`` raises where the checkpoint holds
    activation parameters this model would drop. One class per base."""
    if base not in _SWAPPED_MODELS:
        def __init__(self, config, *args, **kwargs) -> None:  # noqa: N807
            base.__init__(self, config, *args, **kwargs)
            apply_swaps(self, getattr(config, SWAP_FIELD, None) or [])

        __init__.__signature__ = inspect.signature(base.__init__)  # callers inspect it (e.g. use_mask_token)

        def from_pretrained(cls, *args, **kwargs):  # noqa: ANN001, ANN202
            with_info = kwargs.pop("output_loading_info", False)
            model, info = super(new, cls).from_pretrained(*args, output_loading_info=True, **kwargs)
            dropped = dropped_activation_keys(model, info["unexpected_keys"])
            if dropped:
                raise ValueError(f"the checkpoint holds activation parameters that {cls.__name__} has no module for "
                                 f"and would drop: {dropped[:4]}{' ...' if len(dropped) > 4 else ''}. Its config "
                                 f"records no hf-acts activation there ({SWAP_FIELD}); load the folder with the "
                                 "config it was saved with")
            return (model, info) if with_info else model

        new = type(f"HfActsSwapped{base.__name__}", (base,), {
            "__init__": __init__, "from_pretrained": classmethod(from_pretrained), "__module__": __name__,
            "config_class": swapped_config_class(base.config_class),
            "__doc__": f"{base.__name__} with the hf-acts activations its config records ({SWAP_FIELD})."})
        _SWAPPED_MODELS[base] = new
        _share_checkpoint_conversion(base, new)
    return _SWAPPED_MODELS[base]


def _share_checkpoint_conversion(base: type, new: type) -> None:
    """Give class ``new`` the weight renamings transformers applies to checkpoints of ``base`` (looked up by class
    name, then model type), so a swapped model saves and loads the base architecture's checkpoint keys and a task
    model's folder loads into the bare model."""
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )
    except ImportError:  # a transformers without conversion mappings: keys are the modules' names
        return
    conversions = (get_checkpoint_conversion_mapping(base.__name__)
                   or get_checkpoint_conversion_mapping(base.config_class.model_type))
    if conversions:
        register_checkpoint_conversion_mapping(new.__name__, conversions, overwrite=True)


def __getattr__(name: str) -> type:
    """``HfActsSwapped<Model>`` for any transformers or hf-acts model class (remote code looks classes up by name)."""
    base_name = name.removeprefix("HfActsSwapped") if name.startswith("HfActsSwapped") else None
    base = base_name and (globals().get(base_name) or getattr(transformers, base_name, None))
    if isinstance(base, type) and issubclass(base, transformers.PreTrainedModel):
        return swapped_model_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _family(name: str, config_class: type, pretrained: type, base_model: type, causal_lm: type):
    """The (PreTrainedModel, Model, ForCausalLM) classes of one family."""
    pre = type(f"HfActs{name}PreTrainedModel", (pretrained,),
               {"config_class": config_class, "__module__": __name__})

    def model_init(self, config) -> None:
        base_model.__init__(self, config)
        convert_mlps(self, config)

    def causal_init(self, config) -> None:
        causal_lm.__init__(self, config)
        self.model.__class__ = model
        convert_mlps(self.model, config)

    model = type(f"HfActs{name}Model", (pre, base_model), {"__init__": model_init, "__module__": __name__})
    causal = type(f"HfActs{name}ForCausalLM", (pre, causal_lm), {"__init__": causal_init, "__module__": __name__})
    return pre, model, causal


HfActsLlamaPreTrainedModel, HfActsLlamaModel, HfActsLlamaForCausalLM = _family(
    "Llama", HfActsLlamaConfig, LlamaPreTrainedModel, LlamaModel, LlamaForCausalLM)
HfActsMistralPreTrainedModel, HfActsMistralModel, HfActsMistralForCausalLM = _family(
    "Mistral", HfActsMistralConfig, MistralPreTrainedModel, MistralModel, MistralForCausalLM)
HfActsQwen2PreTrainedModel, HfActsQwen2Model, HfActsQwen2ForCausalLM = _family(
    "Qwen2", HfActsQwen2Config, Qwen2PreTrainedModel, Qwen2Model, Qwen2ForCausalLM)
HfActsQwen3PreTrainedModel, HfActsQwen3Model, HfActsQwen3ForCausalLM = _family(
    "Qwen3", HfActsQwen3Config, Qwen3PreTrainedModel, Qwen3Model, Qwen3ForCausalLM)

def register_0d_coefficient_conversion() -> bool:
    """Load the 0-d dynActivation coefficients of checkpoints written by hf-acts 0.1 as the shape-(1,) parameters
    they are now (FSDP2 and DeepSpeed ZeRO-3 refuse 0-d parameters): a transformers checkpoint conversion per model
    type, so that ``from_pretrained`` reshapes them instead of re-initialising them for a shape mismatch. False
    where this transformers has no conversion API."""
    try:
        from transformers.conversion_mapping import register_checkpoint_conversion_mapping
        from transformers.core_model_loading import ConversionOps, WeightConverter
    except ImportError:
        return False

    class AtLeast1d(ConversionOps):
        @property
        def reverse_op(self) -> ConversionOps:
            return self  # saving writes the (1,) shape as it is

        def convert(self, input_dict, source_patterns, target_patterns, **kwargs):  # noqa: ANN001, ANN003, ANN201
            tensors = next(iter(input_dict.values()))
            tensor = tensors[0] if isinstance(tensors, list) else tensors
            return {target_patterns[0]: tensor.reshape(1) if tensor.ndim == 0 else tensor}

    for config_class in MODELS:
        converters = [WeightConverter(f"{act}.{name}", f"{act}.{name}", operations=[AtLeast1d()])
                      for act in ("act_fn", "up_act") for name in ("alpha", "beta")]
        register_checkpoint_conversion_mapping(config_class.model_type, converters, overwrite=True)
    return True


# config class -> (Model, ForCausalLM)
MODELS = {
    HfActsLlamaConfig: (HfActsLlamaModel, HfActsLlamaForCausalLM),
    HfActsMistralConfig: (HfActsMistralModel, HfActsMistralForCausalLM),
    HfActsQwen2Config: (HfActsQwen2Model, HfActsQwen2ForCausalLM),
    HfActsQwen3Config: (HfActsQwen3Model, HfActsQwen3ForCausalLM),
}

for _config_class, (_model, _causal) in MODELS.items():
    _config_class.register_for_auto_class()
    _model.register_for_auto_class("AutoModel")
    _causal.register_for_auto_class("AutoModelForCausalLM")

register_0d_coefficient_conversion()
__all__ = [cls.__name__ for pair in MODELS.values() for cls in pair]
