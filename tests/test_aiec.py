"""AIEC: the threshold unit, the counters, the consensus gate and Eq. 14, on a case worked by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_acts import AIEC, aiec_loss, aiec_targets, reset_aiec_counters

W = torch.tensor([[1.0, -1.0, -0.5], [-1.0, 1.0, -0.2]])
X = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 3.0, 1.0], [1.0, 0.2, 2.0]])
Y = torch.tensor([0, 1, 1])


def worked_example() -> AIEC:
    m = AIEC(3, num_classes=2)
    with torch.no_grad():
        m.decision.weight.copy_(W)
    return m


def test_tau_unit():
    x = torch.randn(4, 8, 3, 3)
    assert torch.equal(AIEC()(x), F.relu(x))
    assert torch.equal(AIEC(tau=0.5)(x), torch.where(x > 0.5, x, 0.0))


def test_counters_gate_and_losses_by_hand():
    m = worked_example().train()
    m.set_targets(Y)
    y = m(X)
    a = F.relu(X)  # vectors: pooling is the identity
    # DMU logits a W^T: [1.75, -2.1], [-3.5, 2.8], [-0.2, -1.2] -> samples 0 and 1 correct, 2 wrong
    assert torch.equal(y, a)
    assert m.theta.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert m.eta.tolist() == [[0, 1, 0], [1, 0, 0]]
    assert m.phi.tolist() == [[1, 1, 1], [1, 1, 1]]
    # v = [[1,-1,1],[-1,1,1]]; G_intr = v <= 0; G_extr = W <= 0; G = [[0,1,0],[1,0,0]]
    # per-sample gate: 0/1, 0/1, |1|/1 -> mean 1/3
    assert m.gate_loss.item() == pytest.approx(1 / 3)
    logits = torch.tensor([[1.75, -2.1], [-3.5, 2.8], [-0.2, -1.2]])
    expected_aux = -sum(math.log(torch.softmax(logits[i], 0)[Y[i]].item()) for i in range(3)) / 3
    assert m.aux_loss.item() == pytest.approx(expected_aux, rel=1e-5)


def test_eq14_over_layers_and_gradients():
    model = nn.Sequential(worked_example(), nn.Identity(), worked_example()).train()
    with aiec_targets(model, Y):
        model(X)
    aux = [m.aux_loss for m in (model[0], model[2])]
    gate = [m.gate_loss for m in (model[0], model[2])]
    total = aiec_loss(model, lambda_aux=1.0, lambda_gate=200.0)
    torch.testing.assert_close(total, (aux[0] + aux[1]) / 2 + 200 * (gate[0] + gate[1]) / 2)
    total.backward()
    assert model[0].decision.weight.grad.abs().sum() > 0
    assert model[0].targets is None  # the context manager switched the units off again
    assert aiec_loss(model).item() == 0.0  # consumed


def test_no_targets_or_eval_is_threshold_only():
    m = worked_example().eval()
    m.set_targets(Y)
    m(X)
    assert m.aux_loss is None and m.phi.sum() == 0


def test_reset_counters_and_not_in_state_dict():
    m = worked_example().train()
    m.set_targets(Y)
    m(X)
    assert m.phi.sum() > 0
    reset_aiec_counters(m)
    assert m.phi.sum() == 0
    assert set(m.state_dict()) == {"decision.weight"}


def test_pooling_images_and_cls_token():
    m = AIEC(4, num_classes=3, pool="cls")
    tok = torch.randn(2, 5, 4)
    torch.testing.assert_close(m.pooled(F.relu(tok)), F.relu(tok[:, 0]))
    img = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(AIEC(4, num_classes=3).pooled(img), img.mean((2, 3)))


def test_errors():
    with pytest.raises(ValueError, match="pool"):
        AIEC(pool="max")
    with pytest.raises(ValueError, match="non-negative"):
        AIEC(tau=-1)
    m = AIEC().train()
    m.set_targets(Y)
    with pytest.raises(ValueError, match="num_classes"):
        m(X)
