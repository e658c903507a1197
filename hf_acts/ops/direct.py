"""The registered ops' autograd and their eager fast path.

:func:`register` gives an op its autograd (its backward op on the saved inputs: every op saves its inputs, FleS also
its small intermediates, and its backward recomputes the rest) and records its kernels by device (C++ on the CPU,
Triton or cuBLAS on CUDA). :func:`run` then calls those kernels directly in eager mode, under a plain
``autograd.Function`` where a gradient is needed: a custom op's dispatch and autograd wrapper cost ~50 us per call and
~80 us per forward + backward on the project's CPU VM for a four-argument op (``scripts/bench_call_overhead.py``),
~0.8 ms for ADReLU's fifteen arguments (``torch.library`` fills in its defaults on every call), and for FleS ~0.2 ms
(forward) and ~0.4 ms (its twelve-argument backward) at ViT-Tiny's (16, 197, 768) (session 21): more than the kernels
themselves on small maps. The op itself still runs inside ``torch.compile`` and ``torch.jit.trace`` (which record
ops, and would record a direct call's output as a constant) and for tensor subclasses (DTensor, ...), which dispatch
through it.

Signatures: an op takes its tensors first, then non-tensor arguments; its backward takes ``(grad, *tensors, *rest)``
and returns the gradients of the tensors. An op registered with ``saves_outputs`` (FleS) returns its output followed
by intermediates that its backward takes after the tensors, ``(grad, *tensors, *intermediates, *rest)``: they are
saved, not differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.library import CustomOpDef

# op -> its kernels by device type (forward, backward), its number of tensor arguments, whether it saves outputs
KERNELS: dict[CustomOpDef, tuple[dict[str, Callable], dict[str, Callable], int, bool]] = {}
PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def _save(ctx: Any, inputs: tuple, intermediates: tuple = ()) -> None:
    """Save the tensor inputs (and a ``saves_outputs`` op's intermediates) for the backward, which recomputes the
    rest."""
    tensors = [a for a in inputs if isinstance(a, Tensor)]
    ctx.save_for_backward(*tensors, *intermediates)
    ctx.extra = inputs[len(tensors):]


def _input_grads(ctx: Any, grads: tuple | list) -> tuple[Tensor | None, ...]:
    return *grads, *(None for _ in ctx.extra)


def register(op: CustomOpDef, backward_op: CustomOpDef, forward: dict[str, Callable],
             backward: dict[str, Callable], saves_outputs: bool = False) -> None:
    """``op``'s autograd (``backward_op`` on the saved inputs, and with ``saves_outputs`` the intermediates the op
    returns after its output) and its eager fast path: ``forward`` and ``backward``, the kernels behind ``op`` and
    ``backward_op`` by device type."""
    count = _tensor_count(op)

    def setup(ctx: Any, inputs: tuple, output: Any) -> None:
        _save(ctx, inputs, output[1:] if saves_outputs else ())

    op.register_autograd(
        lambda ctx, grad, *unused: _input_grads(ctx, backward_op(grad, *ctx.saved_tensors, *ctx.extra)),
        setup_context=setup)
    KERNELS[op] = (forward, backward, count, saves_outputs)


def _tensor_count(op: CustomOpDef) -> int:
    """The number of tensor arguments of ``op``, read once from its schema rather than on every call; they must come
    first (the signature convention above)."""
    kinds = [isinstance(a.type, torch._C.TensorType) for a in op._opoverload._schema.arguments]
    count = sum(kinds)
    if not all(kinds[:count]):
        raise TypeError(f"{op._qualname}: an op with an eager fast path takes its tensors first")
    return count


class _Direct(torch.autograd.Function):
    """An op's own forward and backward kernels under a plain ``autograd.Function``: the same arithmetic as the op
    and its registered autograd, without the dispatcher and ``torch.library``'s autograd wrapper around each call."""

    @staticmethod
    def forward(ctx, op: CustomOpDef, *args: Any) -> Any:  # noqa: ANN001
        forward, backward, _, saves_outputs = KERNELS[op]
        device = args[0].device.type
        ctx.backward = backward[device]
        out = forward[device](*args)
        _save(ctx, args, out[1:] if saves_outputs else ())
        if saves_outputs:
            ctx.mark_non_differentiable(*out[1:])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor, *unused: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        if torch.is_grad_enabled() and any(t.requires_grad for t in ctx.saved_tensors):  # create_graph=True
            raise RuntimeError("hf-acts' fused kernels have no second derivative (a gradient penalty, "
                               "create_graph=True); run the plain formulas there: "
                               "hf_acts.ops.dispatch.plain_formulas() or HF_ACTS_FUSED=0")
        return None, *_input_grads(ctx, ctx.backward(grad, *ctx.saved_tensors, *ctx.extra))


def run(op: CustomOpDef, *args: Any) -> Any:
    """``op(*args)`` in eager mode without its dispatch: the op's forward kernel directly where no autograd is needed
    (``torch.inference_mode`` / ``no_grad``, or nothing requires grad), else its kernels under :class:`_Direct`; the
    op itself under ``torch.compile``, ``torch.jit.trace``, for tensor subclasses and on devices it has no kernel
    for."""
    forward_kernels, _, count, _ = KERNELS[op]
    tensors = args[:count]
    forward = forward_kernels.get("cpu" if args[0].is_cpu else args[0].device.type)  # .is_cpu: no device string
    if (forward is None or torch.compiler.is_compiling() or torch.jit.is_tracing()
            or any(type(t) not in PLAIN_TYPES for t in tensors)):
        return op(*args)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _Direct.apply(op, *args)
    return forward(*args)
