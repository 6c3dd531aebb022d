"""ACIQ's error expressions against independent computations: scipy quadrature over every
quantization cell (scipy.stats densities) and the textbook uniform rounding noise Δ²/12."""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from qd_models.quant import aciq_constant, expected_mse, grid_expected_mse, grid_optimal_alpha
from qd_models.quant.aciq import rounding_noise

DENSITY = {"gauss": stats.norm.pdf, "laplace": stats.laplace.pdf}


def cell_integral_mse(levels: np.ndarray, prior: str) -> float:
    """E[(X - Q(X))^2] for nearest-level rounding onto sorted ``levels`` (the outer cells extend
    to ±inf), one quadrature per cell."""
    pdf = DENSITY[prior]
    edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
    return sum(integrate.quad(lambda x, c=c: (x - c) ** 2 * pdf(x), lo, hi, epsabs=1e-13, epsrel=1e-11)[0]
               for c, lo, hi in zip(levels, edges[:-1], edges[1:]))


def clipping_mse(alpha: float, prior: str) -> float:
    """E[(|X| - alpha)^2; |X| > alpha] by quadrature."""
    pdf = DENSITY[prior]
    return 2 * integrate.quad(lambda x: (x - alpha) ** 2 * pdf(x), alpha, np.inf, epsabs=1e-14)[0]


@pytest.mark.parametrize("prior", ["gauss", "laplace"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_grid_expected_mse_equals_quadrature_over_the_cells(prior, bits):
    half = 2 ** (bits - 1)
    alpha = 1.7 + 0.4 * bits
    int_levels = np.arange(-half, half) * alpha / (half - 1)  # INT-b: q * alpha / (2^(b-1) - 1)
    midrise_levels = -alpha + np.arange(2**bits) * 2 * alpha / (2**bits - 1)
    assert grid_expected_mse(alpha, bits, prior, "int") == pytest.approx(cell_integral_mse(int_levels, prior), rel=1e-6)
    assert grid_expected_mse(alpha, bits, prior, "midrise") == pytest.approx(cell_integral_mse(midrise_levels, prior), rel=1e-6)


def test_grid_optimal_alpha_is_the_minimum_of_the_quadrature_error():
    for prior, bits in (("gauss", 3), ("laplace", 4)):
        half = 2 ** (bits - 1)
        alpha = grid_optimal_alpha(bits, prior, "int")
        error = cell_integral_mse(np.arange(-half, half) * alpha / (half - 1), prior)
        for other in (0.98 * alpha, 1.02 * alpha):
            assert error < cell_integral_mse(np.arange(-half, half) * other / (half - 1), prior)


@pytest.mark.parametrize("steps", [None, 6, 7, 16])
def test_rounding_noise_is_the_uniform_error_variance(steps):
    """(alpha, bits) = (1.3, 3): measured on a dense uniform sweep of [-alpha, alpha] rounded to
    ``steps`` steps (default 2^bits) of width Δ; the mean squared error is Δ²/12."""
    alpha, bits = 1.3, 3
    n = 2**bits if steps is None else steps
    delta = 2 * alpha / n
    x = np.linspace(-alpha, alpha, 2_000_001)
    q = -alpha + delta / 2 + np.clip(np.floor((x + alpha) / delta), 0, n - 1) * delta  # cell midpoints
    assert rounding_noise(alpha, bits, steps) == pytest.approx(np.mean((x - q) ** 2), rel=1e-4)


@pytest.mark.parametrize("prior", ["gauss", "laplace"])
@pytest.mark.parametrize("steps", [None, 6])
def test_expected_mse_is_clipping_plus_rounding_noise(prior, steps):
    alpha, bits = 2.2, 3
    noise = (2 * alpha / (2**bits if steps is None else steps)) ** 2 / 12
    assert expected_mse(alpha, bits, prior, steps) == pytest.approx(clipping_mse(alpha, prior) + noise, rel=1e-9)


def test_aciq_constant_with_steps_minimises_the_expression_with_those_steps():
    for prior in ("gauss", "laplace"):
        c = aciq_constant(3, prior, 6)
        best = optimize.minimize_scalar(lambda a, p=prior: clipping_mse(a, p) + (2 * a / 6) ** 2 / 12,
                                        bracket=(0.5 * c, c, 1.5 * c), method="golden", tol=1e-8).x
        assert c == pytest.approx(best, rel=1e-4)
        assert not math.isclose(c, aciq_constant(3, prior), rel_tol=1e-3)


def test_laplace_constant_solves_the_stationarity_equation_up_to_16_bits():
    """d/dalpha [2 e^-alpha + alpha^2 / (3 4^b)] = 0, i.e. e^-alpha = alpha / (3 4^b), solved by
    root finding; at 16 bits the optimum (20.27) lies above the Gaussian search bracket (20)."""
    for bits in (1, 2, 8, 16):
        root = optimize.brentq(lambda a, b=bits: math.exp(-a) - a / (3 * 4.0**b), 1e-3, 60.0, xtol=1e-12)
        assert aciq_constant(bits, "laplace") == pytest.approx(root, rel=1e-7)
    assert aciq_constant(16, "laplace") > 20.2


def test_gaussian_constant_solves_the_stationarity_equation():
    """d/dalpha of the Gaussian expression: -4 (phi(alpha) - alpha Q(alpha)) + 2 alpha / (3 4^b) = 0
    (Q the normal tail), solved by root finding, at 1..7 bits."""
    for bits in range(1, 8):
        root = optimize.brentq(lambda a, b=bits: -4 * (stats.norm.pdf(a) - a * stats.norm.sf(a)) + 2 * a / (3 * 4.0**b),
                               1e-3, 20.0, xtol=1e-12)
        assert aciq_constant(bits, "gauss") == pytest.approx(root, rel=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_constants_for_a_given_number_of_steps_solve_their_stationarity_equation(steps):
    """Noise (2 alpha / steps)^2 / 12 has derivative 2 alpha / (3 steps^2); one step (two levels)
    is allowed, and its optimum (below 1) is inside the search bracket."""
    laplace = optimize.brentq(lambda a: -2 * math.exp(-a) + 2 * a / (3 * steps**2), 1e-3, 60.0, xtol=1e-12)
    gauss = optimize.brentq(lambda a: -4 * (stats.norm.pdf(a) - a * stats.norm.sf(a)) + 2 * a / (3 * steps**2), 1e-3, 20.0, xtol=1e-12)
    assert aciq_constant(1, "laplace", steps) == pytest.approx(laplace, rel=1e-7)
    assert aciq_constant(1, "gauss", steps) == pytest.approx(gauss, rel=1e-6)


def test_bits_from_1_to_16_are_allowed():
    assert aciq_constant(1, "gauss") > 0 and aciq_constant(16, "gauss") > aciq_constant(15, "gauss")
    with pytest.raises(ValueError, match=r"^bits=17 is not allowed; allowed: 1\.\.16$"):
        aciq_constant(17, "gauss")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: expected_mse(1.0, 4, "cauchy"), "prior='cauchy' is not allowed; allowed: gauss, laplace"),
        (lambda: aciq_constant(4, "cauchy"), "prior='cauchy' is not allowed; allowed: gauss, laplace"),
        (lambda: aciq_constant(0, "gauss"), "bits=0 is not allowed; allowed: 1..16"),
        (lambda: aciq_constant(4, "gauss", 0), "steps=0 is not allowed; allowed: a positive integer"),
        (lambda: grid_expected_mse(1.0, 4, "gauss", "fp"), "grid='fp' is not allowed; allowed: int, midrise"),
        (lambda: grid_optimal_alpha(4, "cauchy", "int"), "prior='cauchy' is not allowed; allowed: gauss, laplace"),
    ],
)
def test_bad_arguments_name_the_parameter_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        call()
