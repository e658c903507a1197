"""dynActGLU: a SwiGLU MLP whose gate activation is a dynActivation (project definition)."""

from __future__ import annotations

import torch
from torch import nn

from .dynactivation import DynActivation, use_op

try:
    from hf_acts.ops import direct, pointwise  # absolute: transformers copies relative imports beside the file
except ImportError:  # a copy beside a checkpoint (trust_remote_code) without hf-acts installed: the plain formula
    direct = pointwise = None

MODES = ("gate", "both")


class DynActGLU(nn.Module):
    """``down(act(gate(x)) * up(x))`` with ``act = DynActivation(base)`` (default ``silu``).

    The dynActivation abstract names dynActGLU but does not define it; this is the project's
    definition. At init ``act`` is exactly the base, so the block equals SwiGLU (or GeGLU with
    ``base="gelu_tanh"``) and a pretrained gated MLP converted to it gives identical outputs.
    ``mode="both"`` also applies a dynActivation initialised to the identity
    (``alpha = beta = 1``) to the up branch. Projection names follow Llama (``gate_proj``,
    ``up_proj``, ``down_proj``, ``act_fn``) so state-dict keys are unchanged by a conversion.
    Input: any shape ``(..., hidden_size)``. With ``mode="gate"`` the product ``act(gate) * up`` is the fused op
    ``hf_acts::dynact_glu`` (saves only the gate and up pre-activations; the backward recomputes).
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
        self._build_activations(base, alpha_init, beta_init)

    def _build_activations(self, base: str, alpha_init: float, beta_init: float) -> None:
        self.act_fn = DynActivation(base, alpha_init=alpha_init, beta_init=beta_init)
        if self.mode == "both":  # identity at init: alpha = beta = 1
            self.up_act = DynActivation(base, alpha_init=1.0, beta_init=1.0)

    @classmethod
    def from_gated_mlp(
        cls, mlp: nn.Module, base: str = "silu", mode: str = "gate", alpha_init: float = 1.0, beta_init: float = 0.0
    ) -> DynActGLU:
        """A DynActGLU that *shares* the projections of an existing gated MLP (LlamaMLP-style
        ``gate_proj``/``up_proj``/``down_proj``): no copy, same state-dict keys, plus alpha/beta."""
        projs = {n: getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")}
        missing = [n for n, p in projs.items() if not isinstance(p, nn.Linear)]
        if missing:
            raise ValueError(f"expected a gated MLP with nn.Linear gate_proj, up_proj and down_proj (LlamaMLP-style); "
                             f"{type(mlp).__name__} lacks {missing}")
        gate = projs["gate_proj"]
        with torch.device("meta"):  # projections are replaced below: allocate nothing for them
            new = cls(gate.in_features, gate.out_features, base, mode, gate.bias is not None, alpha_init, beta_init)
        for name, proj in projs.items():
            setattr(new, name, proj)
        new._build_activations(base, alpha_init, beta_init)  # real (not meta) alpha/beta
        return new.to(device=gate.weight.device, dtype=gate.weight.dtype)

    def gated(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """``act(gate) * up`` from the projections' outputs (``mode="gate"``: the op ``hf_acts::dynact_glu``, one
        pass per direction)."""
        if self.mode == "gate" and use_op(gate):
            act = self.act_fn
            return direct.run(pointwise.dynact_glu, gate, up, act.alpha, act.beta, act.base)
        if self.mode == "both":
            up = self.up_act(up)
        return self.act_fn(gate) * up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gated(self.gate_proj(x), self.up_proj(x)))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
