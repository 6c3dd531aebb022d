"""ACIQ analytic clipping (Banner, Nahshan & Soudry 2019, "Post training 4-bit quantization
of convolutional networks for rapid-deployment").

For a symmetric clip range [-alpha, alpha] split into 2^M uniform bins, the expected squared
error of X is the clipping term plus the in-range rounding noise alpha^2 / (3 * 4^M):

* Laplace(0, b):   2 b^2 exp(-alpha / b) + alpha^2 / (3 * 4^M)
* Normal(0, s^2):  (alpha^2 + s^2) (1 - erf(alpha / (sqrt(2) s)))
                   - sqrt(2/pi) alpha s exp(-alpha^2 / (2 s^2)) + alpha^2 / (3 * 4^M)

The constants c_M = alpha*/b (Laplace) or alpha*/s (Gaussian) are found here by minimising
these expressions numerically, not typed in. The paper's noise term assumes 2^M bins across
[-alpha, alpha]; for a grid with ``steps`` steps across the clip range (2^M - 2 for the INT-b
grid, 2^M - 1 for the midrise and asymmetric grids) the noise term is (2 alpha / steps)^2 / 12,
and ``steps`` selects it.
"""

from __future__ import annotations

import math
from functools import cache

from scipy.optimize import minimize_scalar
from scipy.special import erf

PRIORS = ("gauss", "laplace")


def rounding_noise(alpha: float, bits: int, steps: int | None = None) -> float:
    """In-range uniform rounding noise (2 alpha / steps)^2 / 12; ``steps`` defaults to the
    paper's 2^bits (noise alpha^2 / (3 * 4^bits))."""
    steps = 2**bits if steps is None else steps
    return (2.0 * alpha / steps) ** 2 / 12.0


def expected_mse(alpha: float, bits: int, prior: str, steps: int | None = None) -> float:
    """Banner et al.'s expected squared error for unit scale (b = 1 or sigma = 1)."""
    if prior == "laplace":
        clipping = 2.0 * math.exp(-alpha)
    elif prior == "gauss":
        clipping = (alpha * alpha + 1.0) * (1.0 - erf(alpha / math.sqrt(2.0))) - math.sqrt(
            2.0 / math.pi
        ) * alpha * math.exp(-alpha * alpha / 2.0)
    else:
        raise ValueError(f"prior={prior!r} is not allowed; allowed: {', '.join(PRIORS)}")
    return clipping + rounding_noise(alpha, bits, steps)


@cache
def aciq_constant(bits: int, prior: str, steps: int | None = None) -> float:
    """alpha* / b (Laplace) or alpha* / sigma (Gaussian) minimising :func:`expected_mse`
    (``steps``: see the module doc; default the paper's 2^bits); cached."""
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r} is not allowed; allowed: {', '.join(PRIORS)}")
    if not (isinstance(bits, int) and 1 <= bits <= 16):
        raise ValueError(f"bits={bits!r} is not allowed; allowed: 1..16")
    upper = 8.0 + 2.0 * bits if prior == "laplace" else 4.0 + bits
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r} is not allowed; allowed: a positive integer")
    result = minimize_scalar(
        lambda a: expected_mse(a, bits, prior, steps), bounds=(1e-3, upper), method="bounded", options={"xatol": 1e-9}
    )
    return float(result.x)


def _density(x, prior: str):
    import numpy as np

    if prior == "laplace":
        return 0.5 * np.exp(-np.abs(x))
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def grid_expected_mse(alpha: float, bits: int, prior: str, grid: str = "int") -> float:
    """Exact expected squared error (unit b or sigma) of a symmetric grid clipped at alpha,
    by trapezoidal integration on [-60, 60]: ``int`` (levels q * alpha / (2^(bits-1) - 1),
    q in [-2^(bits-1), 2^(bits-1) - 1]) or ``midrise`` (levels -alpha + k * 2 alpha / (2^bits - 1)).
    Written here independently of :func:`qd_models.quant.core.fake_quantize` (numpy).

    Banner et al.'s expression approximates it (its noise term assumes 2^bits bins of width
    2 alpha / 2^bits); the two optima differ by a few % at 2-4 bits."""
    import numpy as np

    x = np.linspace(-60.0, 60.0, 2_400_001)
    if grid == "int":
        half = 2 ** (bits - 1)
        step = alpha / (half - 1)
        reconstructed = np.clip(np.round(x / step), -half, half - 1) * step
    elif grid == "midrise":
        top = 2**bits - 1
        step = 2.0 * alpha / top
        reconstructed = np.clip(np.round((x + alpha) / step), 0, top) * step - alpha
    else:
        raise ValueError(f"grid={grid!r} is not allowed; allowed: int, midrise")
    return float(np.trapezoid((reconstructed - x) ** 2 * _density(x, prior), x))


@cache
def grid_optimal_alpha(bits: int, prior: str, grid: str) -> float:
    """alpha / b (Laplace) or alpha / sigma (Gaussian) minimising :func:`grid_expected_mse`; cached."""
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r} is not allowed; allowed: {', '.join(PRIORS)}")
    guess = aciq_constant(bits, prior)
    result = minimize_scalar(
        lambda a: grid_expected_mse(a, bits, prior, grid), bounds=(0.5 * guess, 1.5 * guess), method="bounded",
        options={"xatol": 1e-5},
    )
    return float(result.x)
