"""The op layer: one registered ``torch.library`` op per fused activation, each with a CPU implementation (the C++
kernels in ``hf_acts/csrc``), a CUDA implementation (Triton, ``triton_*.py`` here), a fake implementation for
``torch.compile`` / meta tensors, and its autograd. The modules in :mod:`hf_acts.activations` call the ops and
keep the plain formulas as reference and fallback; :mod:`hf_acts.ops.dispatch` decides which runs where.

=========================  ==============================================  =====================================
op                         what it computes                                used by
=========================  ==============================================  =====================================
``hf_acts::dynact``        ``base(x) (alpha - beta) + beta x``             :class:`~hf_acts.DynActivation`
``hf_acts::dynact_glu``    ``dynact(gate) * up``                           :class:`~hf_acts.DynActGLU` (``gate``)
``hf_acts::swish_beta``    ``x sigmoid(beta x)``                           :class:`~hf_acts.SwishBeta`
``hf_acts::fles``          statistics, coefficient MLP, ``phi(x)``         :class:`~hf_acts.FleS`
``hf_acts::adrelu``        ``max(x, tau)``, ``tau = f(x)`` (Eqs. 1-6)      :class:`~hf_acts.ADReLU`
=========================  ==============================================  =====================================

Each has a ``*_backward`` op, so ``torch.compile(fullgraph=True)`` traces both directions. :mod:`hf_acts.ops.direct`
registers the autograd of those that save only their inputs (all but ``fles``, which saves its small intermediates)
and runs their kernels without the dispatcher in eager mode.
"""

from . import adrelu, direct, dispatch, fles, pointwise

__all__ = ["adrelu", "direct", "dispatch", "fles", "pointwise"]
