import timm
import torch

import hf_acts
from hf_acts import param_groups_weight_decay, replace_activations


def test_activation_parameters_have_no_weight_decay():
    model = timm.create_model("resnet18", num_classes=3)
    x = torch.randn(1, 3, 32, 32)
    replace_activations(model, "adrelu", target="relu", select=r"^layer4\.1", example_inputs=x)
    replace_activations(model, "dynactivation", target="relu", select=r"^layer1", example_inputs=x)
    no_decay, decay = param_groups_weight_decay(model, weight_decay=0.1, skip_1d=False)
    ids = {id(p) for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    act = model.layer4[1].act1
    assert id(act.norm.weight) in ids and id(act.norm_dw.bias) in ids  # GroupNorm affine inside ADReLU
    assert id(act.qkv.weight) not in ids  # its projections are ordinary weights
    assert id(model.layer1[0].act1.alpha) in ids and id(model.layer1[0].act1.beta) in ids
    assert id(model.fc.bias) not in ids  # skip_1d=False: only activation parameters are exempt
    assert len(ids) + len(decay["params"]) == len(list(model.parameters()))


def test_timm_convention_and_dynactglu_projections():
    model = torch.nn.Sequential(hf_acts.DynActGLU(8, 16), torch.nn.LayerNorm(8))
    no_decay, decay = param_groups_weight_decay(model, weight_decay=0.05)
    ids = {id(p) for p in no_decay["params"]}
    assert {id(model[0].act_fn.alpha), id(model[0].act_fn.beta), id(model[1].weight), id(model[1].bias)} <= ids
    assert {id(p) for p in decay["params"]} == {id(model[0].gate_proj.weight), id(model[0].up_proj.weight),
                                                id(model[0].down_proj.weight)}


def test_zero3_placeholders_are_grouped_by_their_real_rank():
    """Under DeepSpeed ZeRO-3 transformers builds models inside zero.Init: every parameter is a 1-D empty placeholder
    with its real shape in ds_shape. Read by .ndim, every weight landed in the no-decay group."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), hf_acts.DynActivation("silu"))
    for p in model.parameters():
        p.ds_shape = p.shape
        p.data = torch.empty(0)
    no_decay, decay = hf_acts.param_groups_weight_decay(model, 0.1)
    assert [p.ds_shape for p in decay["params"]] == [(4, 4)]
    assert len(no_decay["params"]) == 3  # the bias, alpha, beta


def test_model_no_weight_decay_names_are_exempt():
    """timm models name their own exemptions (a ViT's 3-D pos_embed, which skip_1d alone would decay)."""
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3)
    no_decay, decay = param_groups_weight_decay(model, weight_decay=0.1)
    assert model.pos_embed.ndim == 3 and "pos_embed" in model.no_weight_decay()
    assert id(model.pos_embed) in {id(p) for p in no_decay["params"]}
    assert id(model.pos_embed) not in {id(p) for p in decay["params"]}


def test_trainer_optimizer_takes_the_training_arguments():
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", learning_rate=3e-3, weight_decay=0.2, adam_beta1=0.8,
                             adam_beta2=0.95, adam_epsilon=1e-7, report_to=[], use_cpu=True)
    factory, kwargs = hf_acts.trainer_optimizer(args)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), hf_acts.DynActivation("silu"))
    optimizer = factory()(model, **kwargs)  # as the Trainer calls a factory: (model, **kwargs)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.8, 0.95) and optimizer.defaults["eps"] == 1e-7
    assert optimizer.defaults["lr"] == 3e-3
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.2]
    assert [len(g["params"]) for g in optimizer.param_groups] == [3, 1]  # bias, alpha, beta | weight
