"""AIEC: the threshold unit, the counters, the consensus gate and Eq. 14, on a case worked by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hf_acts
from hf_acts import AIEC, aiec_loss, aiec_targets, reset_aiec_counters

W = torch.tensor([[1.0, -1.0, -0.5], [-1.0, 1.0, -0.2]])
X = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 3.0, 1.0], [1.0, -0.2, 2.0]])  # sample 2 has a silent channel
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
    # DMU logits a W^T: [1.75, -2.1], [-3.5, 2.8], [0.0, -1.4] -> samples 0 and 1 correct, 2 wrong; sample 2's
    # silent channel 1 is not counted as an inhibition of class 1 (only DMU-correct samples count)
    assert torch.equal(y, a)
    assert m.theta.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert m.eta.tolist() == [[0, 1, 0], [1, 0, 0]]
    assert m.phi.tolist() == [[1, 1, 1], [1, 1, 1]]
    # v = [[1,-1,1],[-1,1,1]]; G_intr = v <= 0; G_extr = W <= 0; G = [[0,1,0],[1,0,0]]
    # per-sample gate: 0/1, 0/1, |1|/1 -> mean 1/3
    assert m.gate_loss.item() == pytest.approx(1 / 3)
    logits = torch.tensor([[1.75, -2.1], [-3.5, 2.8], [0.0, -1.4]])
    expected_aux = -sum(math.log(torch.softmax(logits[i], 0)[Y[i]].item()) for i in range(3)) / 3
    assert m.aux_loss.item() == pytest.approx(expected_aux, rel=1e-5)


def test_class_without_counted_samples_is_not_gated_unless_asked():
    """Eq. 6 is 0/0 for a class whose samples the DMU never got right; by default such a class has no intrinsic
    verdict (nothing gated); ``gate_unseen=True`` is the literal v := 0 reading (every W <= 0 channel gated)."""
    x, y = X[[0, 2]], torch.tensor([0, 1])  # sample 0 (class 0) is DMU-correct, sample 2 (class 1) is not
    # class 0: v = [1, -1, 1], W_0 <= 0 at channels 1, 2 -> G = [0, 1, 0]; a_0 = [2, 0, 0.5] -> gated 0
    # class 1: phi = 0; gated reading: G = W_1 <= 0 = [1, 0, 1], a = [1, 0, 2] -> (1 + 2) / 2 = 1.5
    for gate_unseen, expected in ((False, 0.0), (True, (0.0 + 1.5) / 2)):
        m = AIEC(3, num_classes=2, gate_unseen=gate_unseen).train()
        with torch.no_grad():
            m.decision.weight.copy_(W)
        m.set_targets(y)
        m(x)
        assert m.phi[1].sum() == 0
        assert m.gate_loss.item() == pytest.approx(expected)


def test_aux_loss_trains_the_decision_unit_only_unless_asked():
    """Alg. 1 line 11: L_aux is "for learning {w^k}"; with ``aux_to_features=True`` it also reaches the input."""
    for to_features in (False, True):
        m = AIEC(3, num_classes=2, aux_to_features=to_features).train()
        with torch.no_grad():
            m.decision.weight.copy_(W)
        x = X.clone().requires_grad_()
        m.set_targets(Y)
        m(x)
        m.aux_loss.backward()
        assert m.decision.weight.grad.abs().sum() > 0
        assert (x.grad is not None and bool(x.grad.abs().sum() > 0)) == to_features


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


class Classifier(nn.Module):
    """A task model as transformers writes them: ``forward(x, labels=None)`` returns its loss when given labels."""

    def __init__(self, return_dict: bool = True) -> None:
        super().__init__()
        self.act, self.head, self.return_dict = worked_example(), nn.Linear(3, 2), return_dict

    def forward(self, x, labels=None):
        logits = self.head(self.act(x))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits} if self.return_dict else (loss, logits)


@pytest.mark.parametrize("return_dict", [True, False])
def test_attach_aiec_loss_makes_the_models_loss_eq14_in_training_only(return_dict):
    model, twin = Classifier(return_dict).train(), Classifier().train()
    twin.load_state_dict(model.state_dict())
    handles = hf_acts.attach_aiec_loss(model, lambda_aux=0.5, lambda_gate=3.0)
    got = model(X, labels=Y)
    loss = got["loss"] if return_dict else got[0]
    with aiec_targets(twin, Y):  # the context-manager API on the same weights
        out = twin(X, labels=Y)
    torch.testing.assert_close(loss, out["loss"] + aiec_loss(twin, lambda_aux=0.5, lambda_gate=3.0))
    assert torch.equal(model.act.phi, twin.act.phi) and model.act.phi.sum() > 0 and model.act.targets is None
    loss.backward()
    assert model.act.decision.weight.grad.abs().sum() > 0  # L_aux reaches the decision unit

    model.eval()
    reset_aiec_counters(model)
    got = model(X, labels=Y)
    assert torch.equal(got["loss"] if return_dict else got[0], F.cross_entropy(model.head(F.relu(X)), Y))
    assert model.act.phi.sum() == 0  # eval: the threshold only
    model.train()
    assert (model(X)["logits"] if return_dict else model(X)[1]).shape == (3, 2)  # no labels: nothing to add
    for handle in handles:
        handle.remove()
    got = model(X, labels=Y)
    assert model.act.phi.sum() == 0 and (got["loss"] if return_dict else got[0]) is not None


class Bare(nn.Module):
    """A model that takes labels but returns only its features (a transformers base model)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = worked_example()

    def forward(self, x, labels=None):
        return self.act(x)


def test_attach_aiec_loss_refuses_a_model_without_a_loss():
    model = Bare().train()
    hf_acts.attach_aiec_loss(model)
    with pytest.raises(ValueError, match="Bare returned no loss for its labels"):
        model(X, labels=Y)
    assert model.act.targets is None
