"""transformers ``Trainer`` callbacks for the methods that need more than a forward pass."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..activations.aiec import aiec_modules, attach_aiec_loss, reset_aiec_counters


class AIECCallback(TrainerCallback):
    """Train a model's AIEC activations with the Trainer (or a TRL trainer): ``callbacks=[hf_acts.AIECCallback()]``.

    The model's loss becomes Eq. 14's total, ``task loss + lambda_aux L_aux + lambda_gate L_gate``
    (:func:`~hf_acts.activations.aiec.attach_aiec_loss`: the labels the Trainer passes are the AIEC targets), and the
    class counters are cleared at every epoch start (Sec. 3.4). Defaults are Appendix A.1's."""

    def __init__(self, lambda_aux: float = 1.0, lambda_gate: float = 200.0) -> None:
        self.lambda_aux, self.lambda_gate = lambda_aux, lambda_gate
        self.handles: list = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        mods = aiec_modules(model)
        if not mods:
            raise ValueError("AIECCallback: the model has no AIEC activation")
        if any(m.num_classes is None for m in mods):
            raise ValueError("AIECCallback: an AIEC activation has no num_classes, so it cannot compute its losses; "
                             "swap with num_classes=model.config.num_labels")
        if args.label_smoothing_factor:  # the Trainer then takes the labels out of the model's inputs
            raise ValueError("AIECCallback reads the labels the model is called with; the Trainer's "
                             "label_smoothing_factor keeps them from the model: set it to 0")
        self.handles = attach_aiec_loss(model, self.lambda_aux, self.lambda_gate)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        reset_aiec_counters(model)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
