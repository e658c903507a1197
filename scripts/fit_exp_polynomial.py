"""The polynomial of the CPU kernels' float exp (``hf_acts/csrc/vec_math.h``): exp(r) ~ 1 + r + r^2 p(r) on the
reduced range |r| <= ln 2 / 2, p of degree 4, fitted for the smallest largest relative error (Lawson's iteratively
reweighted least squares), then rounded to float32.

    python scripts/fit_exp_polynomial.py

Prints the coefficients (constant term first) and the largest relative error of the float32 evaluation over the range,
in units of 2^-23. The degree-5 Cephes polynomial the kernels used before reached the same float32 error (0.66 ulp
over the whole float range, range reduction included) with one more dependent multiply-add per exp.
"""

from __future__ import annotations

import numpy as np

DEGREE = 4


def fit(degree: int = DEGREE, iterations: int = 500) -> np.ndarray:
    half_ln2 = np.log(2) / 2
    r = np.cos(np.linspace(0, np.pi, 2001)) * half_ln2  # Chebyshev nodes
    r = r[np.abs(r) > 1e-9]
    scale = r**2 / np.exp(r)  # relative error of 1 + r + r^2 p(r)
    a = np.vander(r, degree + 1, increasing=True) * scale[:, None]
    b = (np.exp(r) - 1 - r) / np.exp(r)
    w = np.full(r.size, 1.0 / r.size)
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(a * np.sqrt(w)[:, None], b * np.sqrt(w), rcond=None)
        w = w * np.abs(a @ coef - b)
        w /= w.sum()
    return coef.astype(np.float32)


def float32_error_ulps(coef: np.ndarray) -> float:
    r = np.linspace(-np.log(2) / 2, np.log(2) / 2, 400001).astype(np.float32)
    p = np.zeros_like(r)
    for c in coef[::-1]:
        p = p * r + c
    value = (p * (r * r) + r + np.float32(1)).astype(np.float64)
    exact = np.exp(r.astype(np.float64))
    return float((np.abs(value - exact) / exact).max() / 2.0**-23)


if __name__ == "__main__":
    coef = fit()
    print("coefficients:", ", ".join(f"{c:.10e}" for c in coef))
    print(f"largest relative error, float32 evaluation: {float32_error_ulps(coef):.2f} x 2^-23")
