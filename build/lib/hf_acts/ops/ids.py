"""Kernel ids shared by the C++ kernels (``hf_acts/csrc``) and the Triton kernels (no torch or triton import, so
that the kernel repository built by :mod:`hf_acts.kernel_hub` can carry this file as it is)."""

# csrc/pointwise.cpp and triton_pointwise.py: dynActivation with each base, then Swish-beta
POINTWISE_OPS = {"relu": 0, "leaky_relu": 1, "silu": 2, "gelu": 3, "gelu_tanh": 4, "mish": 5, "swish_beta": 6}
# csrc/fles.cpp and triton_fles.py: FleS's rho, sigmoid (base SiLU) or the normal CDF (base GELU)
FLES_GATES = {"silu": 0, "gelu": 1}
