"""transformers' own common model tests (``ModelTesterMixin``) on every transformers class hf-acts registers: the
swapped ViT / ConvNeXt / BERT classes and the dynActGLU causal-LM family, each with a small model tester of ours.

The mixin decides some inputs by class name (labels for classification heads, ...) through transformers' name
tables; :func:`_known_names` adds the hf-acts classes beside their base classes there for the duration of this module,
as transformers would list a native model. Skips are the ones transformers' own test of the base model makes, with
its reason."""

import unittest

import pytest
import torch
from transformers import BertConfig, ConvNextConfig, ViTConfig
from transformers.models.auto import modeling_auto
from transformers_common import common_tests

import hf_acts  # noqa: F401  (registers the families)
from hf_acts.integrations.transformers.configuration_hf_acts import CONFIGS, swapped_config_class
from hf_acts.integrations.transformers.modeling_hf_acts import _SWAPPED_MODELS, MODELS

common = common_tests()
floats_tensor, ids_tensor = common.floats_tensor, common.ids_tensor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _known_names():
    """hf-acts class names beside their base classes in transformers' name tables (model type -> class name)."""
    classes = {c.__name__: _base_class(c).__name__ for c in (*_SWAPPED_MODELS.values(), *sum(MODELS.values(), ()))}
    added = []
    for table in (getattr(modeling_auto, n) for n in dir(modeling_auto) if n.endswith("_MAPPING_NAMES")):
        if not isinstance(table, dict):
            continue
        for name, base in classes.items():
            model_type = next((t for t, b in table.items() if b == base), None)
            key = f"hf_acts_{model_type}_{name}"  # one key per class: several hf-acts classes share a base class
            if model_type is not None and key not in table:
                table[key] = name
                added.append((table, key))
    yield
    for table, key in added:
        table.pop(key, None)


def _base_class(cls: type) -> type:
    """The transformers class an hf-acts class extends."""
    return next(c for c in cls.__mro__ if c.__module__.startswith("transformers.models."))


def _records(num_layers: int, module: str, activation: str, kwargs: dict) -> list[dict]:
    return [{"module": module.format(i), "root": "base", "activation": activation, "kwargs": kwargs,
             "channels_last": False} for i in range(num_layers)]


class _Tester:
    """What the mixin asks of a model tester: a config, inputs, and the shapes it checks against."""

    batch_size, is_training = 4, True

    def __init__(self, parent: unittest.TestCase) -> None:
        self.parent = parent

    def prepare_config_and_inputs_for_common(self) -> tuple:
        return self.get_config(), self.inputs()


class ViTTester(_Tester):
    """ViT with FleS (over GELU) in every MLP, recorded as a swap."""

    image_size, patch_size, num_channels, intermediate_size = 16, 4, 3, 37
    num_hidden_layers, hidden_size, num_attention_heads = 2, 32, 4
    mask_length = (16 // 4) ** 2  # patches
    seq_length = mask_length + 1  # and the class token
    num_masks = seq_length // 2  # masked image modeling: half the tokens

    def get_config(self):  # noqa: ANN201
        return swapped_config_class(ViTConfig)(
            image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size, encoder_stride=self.patch_size, num_labels=3,
            hf_acts_activations=_records(self.num_hidden_layers, "layers.{}.mlp.activation_fn", "fles",
                                         {"channels": self.intermediate_size, "base": "gelu"}))

    def inputs(self) -> dict:
        return {"pixel_values": floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])}


class ConvNextTester(_Tester):
    """ConvNeXt with ADReLU in its last stage (channels-last sites) and FleS in the one before."""

    image_size, num_channels, hidden_sizes, depths = 32, 3, [8, 16, 32, 32], [1, 1, 1, 1]

    def get_config(self):  # noqa: ANN201
        records = [
            {"module": "encoder.stages.2.layers.0.act", "root": "base", "activation": "fles",
             "kwargs": {"channels": 128, "base": "gelu"}, "channels_last": True},
            {"module": "encoder.stages.3.layers.0.act", "root": "base", "activation": "adrelu",
             "kwargs": {"channels": 128}, "channels_last": True},
        ]
        return swapped_config_class(ConvNextConfig)(
            image_size=self.image_size, num_channels=self.num_channels, hidden_sizes=self.hidden_sizes,
            depths=self.depths, num_labels=3, out_features=["stage2", "stage3", "stage4"],
            hf_acts_activations=records)

    def inputs(self) -> dict:
        return {"pixel_values": floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])}


class BertTester(_Tester):
    """BERT with a per-tensor dynActivation (over GELU) in every intermediate layer."""

    seq_length, vocab_size, intermediate_size, num_choices = 7, 99, 37, 4
    num_hidden_layers, hidden_size, num_attention_heads = 2, 32, 4

    def get_config(self):  # noqa: ANN201
        return swapped_config_class(BertConfig)(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=64, type_vocab_size=2,
            hf_acts_activations=_records(self.num_hidden_layers, "encoder.layer.{}.intermediate.intermediate_act_fn",
                                         "dynactivation", {"base": "gelu", "alpha_init": 1.2, "beta_init": 0.1}))

    def inputs(self) -> dict:
        ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        return {"input_ids": ids, "token_type_ids": ids_tensor([self.batch_size, self.seq_length], 2),
                "attention_mask": torch.ones_like(ids)}


class LMTester(_Tester):
    """A dynActGLU causal LM of the hf-acts family (Llama or Qwen3 base)."""

    seq_length, vocab_size, intermediate_size = 7, 99, 37
    num_hidden_layers, hidden_size, num_attention_heads = 2, 32, 4

    def __init__(self, parent: unittest.TestCase, family: str, mode: str) -> None:
        super().__init__(parent)
        self.family, self.mode = family, mode

    def get_config(self):  # noqa: ANN201
        return CONFIGS[self.family](
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=2,
            intermediate_size=self.intermediate_size, max_position_embeddings=64, head_dim=8,
            mlp_variant="dynactglu", mlp_mode=self.mode, dynact_alpha_init=1.2, dynact_beta_init=0.1, pad_token_id=0)

    def inputs(self) -> dict:
        ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _classes(config_class: type) -> tuple:
    return tuple(s for b, s in _SWAPPED_MODELS.items() if b.config_class is config_class)


class _Common(common.ModelTesterMixin):
    # transformers' generate tests live in a test folder its sdist does not ship (see tests/transformers_common.py)
    all_generative_model_classes = ()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):  # noqa: ANN001, ANN202
        """The mixin's inputs, plus the language-modelling labels its training tests need (as transformers' own
        testers of these heads add them)."""
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        name = model_class.__name__
        if return_labels and name.endswith(("ForCausalLM", "ForMaskedLM", "LMHeadModel", "ForPreTraining")):
            inputs["labels"] = inputs_dict["input_ids"].clone()
        if return_labels and name.endswith("ForPreTraining"):
            inputs["next_sentence_label"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs


class VisionCommon(_Common):
    @unittest.skip(reason="vision models take pixel_values, no inputs_embeds (as in transformers' own tests)")
    def test_inputs_embeds(self) -> None:
        pass

    @unittest.skip(reason="vision models have no input embedding matrix to resize (as in transformers' own tests)")
    def test_model_get_set_embeddings(self) -> None:
        pass


class HfActsViTTest(VisionCommon, unittest.TestCase):
    all_model_classes = _classes(ViTConfig)
    test_resize_embeddings = False

    def setUp(self) -> None:
        self.model_tester = ViTTester(self)


class HfActsConvNextTest(VisionCommon, unittest.TestCase):
    all_model_classes = _classes(ConvNextConfig)
    test_resize_embeddings = False
    has_attentions = False

    def setUp(self) -> None:
        self.model_tester = ConvNextTester(self)

    @unittest.skip(reason="ConvNeXt has no feed-forward chunking (as in transformers' own tests)")
    def test_feed_forward_chunking(self) -> None:
        pass

    def test_hidden_states_output(self) -> None:
        """ConvNeXt's hidden states are (B, C, H, W) maps, one per stage plus the stem's (the mixin's version
        expects token sequences; transformers' own ConvNeXt test replaces it the same way)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        stem = self.model_tester.image_size // 4
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            with torch.no_grad():
                states = model(**self._prepare_for_class(inputs, model_class), output_hidden_states=True).hidden_states
            self.assertEqual(len(states), len(config.depths) + 1)
            self.assertEqual(list(states[0].shape[-2:]), [stem, stem])


class HfActsBertTest(_Common, unittest.TestCase):
    all_model_classes = _classes(BertConfig)

    def setUp(self) -> None:
        self.model_tester = BertTester(self)


class HfActsLlamaTest(_Common, unittest.TestCase):
    """``mlp_mode="both"``: dynActivations on the gate and the up branch."""

    all_model_classes = MODELS[CONFIGS["llama"]]

    def setUp(self) -> None:
        self.model_tester = LMTester(self, "llama", "both")

    def test_reverse_loading_mapping(self) -> None:
        """The family's conversion reshapes the 0-d coefficients of old checkpoints and renames no key: the case the
        mixin's ``check_keys_were_modified=False`` is for."""
        super().test_reverse_loading_mapping(check_keys_were_modified=False)


class HfActsQwen3Test(_Common, unittest.TestCase):
    """``mlp_mode="gate"`` (the default): the fused gate product."""

    all_model_classes = MODELS[CONFIGS["qwen3"]]

    def setUp(self) -> None:
        self.model_tester = LMTester(self, "qwen3", "gate")

    @unittest.skip(reason="the family's conversion also names the up-branch coefficients, which a gate-only model "
                          "lacks; HfActsLlamaTest runs this check with both branches")
    def test_reverse_loading_mapping(self) -> None:
        pass



