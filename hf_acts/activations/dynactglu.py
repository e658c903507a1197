"""dynActGLU: a SwiGLU MLP whose gate activation is a dynActivation (project definition)."""

from __future__ import annotations

import torch
from torch import nn

from .dynactivation import DynActivation

MODES = ("gate", "both")


class DynActGLU(nn.Module):
    """``down(act(gate(x)) * up(x))`` with ``act = DynActivation(base)`` (default ``silu``).

    The dynActivation abstract names dynActGLU but does not define it; this is the project's
    definition. At init ``act`` is exactly the base, so the block equals SwiGLU (or GeGLU with
    ``base="gelu_tanh"``) and a pretrained gated MLP converted to it gives identical outputs.
    ``mode="both"`` also applies a dynActivation initialised to the identity
    (``alpha = beta = 1``) to the up branch. Projection names follow Llama (``gate_proj``,
    ``up_proj``, ``down_proj``, ``act_fn``) so state-dict keys are unchanged by a conversion.
    Input: any shape ``(..., hidden_size)``.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        base: str = "silu",
        mode: str = "gate",
        bias: bool = False,
        alpha_init: float = 1.0,
        beta_init: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.mode = mode
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = DynActivation(base, alpha_init=alpha_init, beta_init=beta_init)
        if mode == "both":
            self.up_act = DynActivation(base, alpha_init=1.0, beta_init=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x)
        if self.mode == "both":
            up = self.up_act(up)
        return self.down_proj(self.act_fn(self.gate_proj(x)) * up)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
