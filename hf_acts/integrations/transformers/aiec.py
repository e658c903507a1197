"""AIEC: activation with intrinsic-extrinsic consensus (papers/aiec.md, Eqs. 1-14, Alg. 1-2)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._base import LazyChannels

POOLS = ("avg", "cls")


class AIEC(LazyChannels):
    """Threshold activation ``TAU(x) = x if x > tau else 0`` (Eq. 1) with training-time consensus units.

    At inference (and whenever no targets are set) only the TAU runs (Alg. 2). In training, after
    :meth:`set_targets` (or :func:`hf_acts.aiec_targets` for a whole model), each forward also:

    * pools the post-activation map to ``a`` (Eq. 3; ``pool="cls"`` takes token 0 for ViTs with a
      class token, Sec. 3.4);
    * decision unit (DMU): ``p = softmax(a W^T)``, ``W in R^{K x C}`` without bias (Eq. 8),
      ``L_aux = CE(p, y)`` (Eq. 9);
    * counting unit (ACU): per class and channel, activations ``theta``, inhibitions ``eta`` and
      totals ``phi`` of the binarised ``a`` (Eqs. 4-5), counting only samples the DMU classifies
      correctly; ``v = (theta - eta) / phi`` (Eq. 6);
    * consensus gate ``G = (v <= 0) AND (W <= 0)`` for the sample's class (Eqs. 7, 10, 11),
      ``L_gate = sum_c |a_c G_c| / sum_c G_c`` (Eqs. 12-13), averaged over the batch.

    The losses are stored on the module (``aux_loss``, ``gate_loss``);
    :func:`hf_acts.aiec_loss` combines them over layers as in Eq. 14. Counters are cleared with
    :meth:`reset_counters` at each epoch start (Sec. 3.4) and are not saved in the state dict
    (project decision: they are training statistics, not model weights). In a data-parallel run
    (DDP, FSDP, ZeRO) each step's counts are summed over the ranks (one ``all_reduce`` of
    ``K (C + 1)`` int32 per AIEC layer), so every rank holds the counts of the whole global batch, as
    one process would; otherwise DDP's buffer broadcast would leave each rank with rank 0's counts
    plus its own last batch. Readings of points the
    paper leaves open, chosen from evidence (benchmarks/reproductions.md, section 6):

    * ``L_aux`` trains the decision weights only ("for learning {w^k}", Alg. 1 line 11; Table 3:
      "solely introducing L_aux has no effect", which holds only if it does not reach the
      features). ``aux_to_features=True`` lets it back-propagate into the network as well.
    * A class without counted samples (``phi = 0``, Eq. 6 is 0/0) has no intrinsic verdict: none
      of its channels is gated. ``gate_unseen=True`` reads it as ``v = 0`` (every channel with
      ``W <= 0`` gated from the first step, before any statistics exist).
    * A sample with no gated channel has ``L_gate = 0``.

    Layouts: images, tokens, vectors. ``inplace`` is accepted and ignored.
    """

    _channel_key = ("decision.weight", 1, 1)

    def __init__(
        self,
        channels: int | None = None,
        num_classes: int | None = None,
        tau: float = 0.0,
        pool: str = "avg",
        gate_unseen: bool = False,
        aux_to_features: bool = False,
        inplace: bool = False,
    ) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if tau < 0:
            raise ValueError(f"tau must be non-negative (Sec. 3.1), got {tau}")
        self.num_classes = num_classes
        self.tau = tau
        self.pool = pool
        self.gate_unseen = gate_unseen
        self.aux_to_features = aux_to_features
        super().__init__(channels)
        self.targets: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None
        self.gate_loss: torch.Tensor | None = None

    @staticmethod
    def preserving_kwargs(base: str) -> dict | None:
        """With ``tau = 0`` the forward is exactly ReLU (the losses only add gradients)."""
        return {"tau": 0.0} if base == "relu" else None

    def _needs_channels(self) -> bool:
        return self.num_classes is not None

    def _build(self, channels: int) -> None:
        if self.num_classes is None:
            return
        k = self.num_classes
        self.decision = nn.Linear(channels, k, bias=False)
        for name in ("theta", "eta", "phi"):
            self.register_buffer(name, torch.zeros(k, channels, dtype=torch.long), persistent=False)

    def set_targets(self, targets: torch.Tensor | None) -> None:
        """Class indices ``(B,)`` of the next training forward; ``None`` switches the units off."""
        self.targets = targets

    @torch.no_grad()
    def reset_counters(self) -> None:
        """Clear the ACU counters (call at the start of every epoch, Sec. 3.4)."""
        if self.num_classes is not None and self.channels is not None:
            for buf in (self.theta, self.eta, self.phi):
                buf.zero_()

    def pooled(self, y: torch.Tensor) -> torch.Tensor:
        """The channel-level activated feature ``a`` (Eq. 3), shape ``(B, C)``."""
        if y.ndim == 4:
            return y.mean((2, 3))
        if y.ndim == 3:
            return y[:, 0] if self.pool == "cls" else y.mean(1)
        return y

    def consensus_losses(self, a: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_aux, L_gate)`` for pooled features ``a`` and class indices; updates the counters."""
        # Eq. 8; L_aux trains the decision weights only (Alg. 1, line 11) unless aux_to_features
        logits = F.linear(a if self.aux_to_features else a.detach(), self.decision.weight.to(a.dtype))
        aux = F.cross_entropy(logits.float(), targets)  # Eq. 9
        with torch.no_grad():
            fired = (a > 0).long()  # Eq. 4
            counted = (logits.argmax(-1) == targets).long()[:, None]  # DMU-correct samples only
            # this step's activations (Eq. 5) per class and channel, and counted samples per class (the totals
            # phi are the same for every channel, and inhibitions eta = phi - theta); int32: at most a batch
            k, c = self.phi.shape
            step = torch.zeros((k, c + 1), dtype=torch.int32, device=self.phi.device)
            step.index_add_(0, targets, torch.cat([fired * counted, counted], 1).int())
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(step)  # data parallel: every rank counts the whole global batch
            fired_step, total_step = step[:, :c], step[:, c:]
            self.theta += fired_step
            self.eta += total_step - fired_step
            self.phi += total_step
            v = (self.theta - self.eta) / self.phi.clamp_min(1)  # Eq. 6
            intrinsic = v <= 0  # Eq. 7
            if not self.gate_unseen:  # no counted sample of the class yet: no intrinsic verdict
                intrinsic &= self.phi > 0
            gate = (intrinsic & (self.decision.weight <= 0))[targets].to(a.dtype)  # Eqs. 10, 11
        gated = (a * gate).abs().sum(-1)  # Eqs. 12-13: ||a_c G_c||_2 of a scalar is |a_c G_c|
        return aux, (gated / gate.sum(-1).clamp_min(1)).mean().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript: the inference path (Alg. 2), the threshold only
            return torch.where(x > self.tau, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = torch.where(x > self.tau, x, torch.zeros((), dtype=x.dtype, device=x.device))  # Eq. 1
        if self.training and self.targets is not None:
            if self.num_classes is None:
                raise ValueError("AIEC needs num_classes to compute its training losses")
            self.aux_loss, self.gate_loss = self.consensus_losses(self.pooled(y), self.targets)
        return y

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, num_classes={self.num_classes}, tau={self.tau}, pool={self.pool!r}, "
                f"gate_unseen={self.gate_unseen}, aux_to_features={self.aux_to_features}")


def aiec_modules(model: nn.Module) -> list[AIEC]:
    return [m for m in model.modules() if isinstance(m, AIEC)]


@contextmanager
def aiec_targets(model: nn.Module, targets: torch.Tensor) -> Iterator[list[AIEC]]:
    """Give every AIEC module of ``model`` the batch's class indices for one training forward."""
    mods = aiec_modules(model)
    for m in mods:
        m.set_targets(targets)
    try:
        yield mods
    finally:
        for m in mods:
            m.set_targets(None)


def aiec_loss(model: nn.Module, lambda_aux: float = 1.0, lambda_gate: float = 200.0) -> torch.Tensor:
    """``lambda_aux * mean_n L_aux^n + lambda_gate * mean_n L_gate^n`` over the AIEC layers (Eq. 14).

    Add it to the task loss. Defaults are Appendix A.1's. Consumes the stored losses, so a
    forward without targets cannot reuse stale ones; 0 when no layer computed losses.
    """
    mods = [m for m in aiec_modules(model) if m.aux_loss is not None]
    if not mods:
        return torch.zeros(())
    aux = torch.stack([m.aux_loss for m in mods]).mean()
    gate = torch.stack([m.gate_loss for m in mods]).mean()
    for m in mods:
        m.aux_loss = m.gate_loss = None
    return lambda_aux * aux + lambda_gate * gate


def reset_aiec_counters(model: nn.Module) -> None:
    """Clear the counters of every AIEC module (at the start of each epoch)."""
    for m in aiec_modules(model):
        m.reset_counters()


def attach_aiec_loss(model: nn.Module, lambda_aux: float = 1.0, lambda_gate: float = 200.0) -> list[RemovableHandle]:
    """Train AIEC inside a model that takes ``labels=`` and returns its loss (transformers task models, so Trainer,
    PEFT and any loop that calls the model with labels): in training, a call's ``labels`` are the targets of every AIEC
    module, and the loss it returns gains :func:`aiec_loss` (Eq. 14), as if the model's own loss were Eq. 14's total.
    Returns the two hook handles (``handle.remove()`` detaches)."""
    mods = aiec_modules(model)

    def set_targets(module: nn.Module, args: tuple, kwargs: dict) -> None:
        labels = kwargs.get("labels")
        for m in mods:
            m.set_targets(labels if module.training else None)

    def add_loss(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        counted = any(m.targets is not None for m in mods)
        for m in mods:
            m.set_targets(None)
        if not counted or output is None:  # no labels, eval mode, or the forward raised
            return output
        loss = output[0] if isinstance(output, tuple) else output.get("loss") if isinstance(output, Mapping) else None
        if not isinstance(loss, torch.Tensor):
            raise ValueError(f"attach_aiec_loss: {type(model).__name__} returned no loss for its labels; call a task "
                             "model (e.g. ...ForImageClassification) or use aiec_targets / aiec_loss in your loop")
        total = loss + aiec_loss(model, lambda_aux, lambda_gate).to(loss.device, loss.dtype)
        if isinstance(output, tuple):  # return_dict=False: the loss comes first
            return (total, *output[1:])
        output["loss"] = total
        return output

    return [model.register_forward_pre_hook(set_targets, with_kwargs=True),
            model.register_forward_hook(add_loss, with_kwargs=True, always_call=True)]
