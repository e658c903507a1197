"""hf-acts timm folders through transformers: AutoModelForImageClassification and the pipeline."""

import pytest
import timm
import torch
from conftest import randomize_
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

import hf_acts

LABELS = ["cat", "dog", "bird"]
CASES = ["efficientnetv2_rw_t_adrelu", "vit_tiny_patch16_224_fles", "resnet18_dynact"]


@pytest.fixture(scope="module", params=CASES)
def folder(request, tmp_path_factory):
    model = timm.create_model(request.param, num_classes=len(LABELS)).eval()
    for name in model.hf_acts_reports[0].names:
        randomize_(model.get_submodule(name), 0.05)
    path = tmp_path_factory.mktemp(request.param)
    hf_acts.save_timm_model(model, path, label_names=LABELS)
    return path, model


def test_auto_model_logits_equal_timm(folder):
    path, original = folder
    x = torch.randn(2, *original.pretrained_cfg["input_size"][:1], 64, 64)
    if original.pretrained_cfg.get("fixed_input_size"):
        x = torch.randn(2, *original.pretrained_cfg["input_size"])
    wrapped = AutoModelForImageClassification.from_pretrained(path).eval()
    reloaded = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(wrapped(pixel_values=x).logits, reloaded(x))
        assert torch.equal(reloaded(x), original(x))
    assert wrapped.config.id2label == dict(enumerate(LABELS))


def test_pipeline_returns_label_names(folder):
    path, _ = folder
    classify = pipeline("image-classification", model=str(path))
    out = classify(Image.new("RGB", (80, 60), (120, 30, 200)), top_k=3)
    assert {o["label"] for o in out} == set(LABELS)
    assert sum(o["score"] for o in out) == pytest.approx(1.0, abs=1e-4)
