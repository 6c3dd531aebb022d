"""Least-squares regression with unit-level inference (the units are languages).

Pure maths on a design matrix ``X`` (n units, p columns, column 0 the intercept) and an outcome
``y`` (n,): coefficients, the F statistic of a set of columns, a Freedman–Lane permutation p of
that F (residuals of the model without the columns permuted over units), a bootstrap over units
and leave-one-unit-out coefficients. Every random draw comes from ``random_state``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.linalg import solve_triangular


def _orthonormal_basis(X) -> tuple[np.ndarray, np.ndarray]:
    """Thin QR of X (n, p); ValueError when a diagonal of R vanishes (rank-deficient design)."""
    q, r = np.linalg.qr(np.asarray(X, dtype=float))
    diagonal = np.abs(np.diag(r))
    if diagonal.size and diagonal.min() <= 1e-10 * max(diagonal.max(), 1.0):
        raise ValueError(f"design of {X.shape[0]} units and {X.shape[1]} columns is rank-deficient")
    return q, r


def _rss(q, Y) -> np.ndarray:
    """Residual sum of squares of Y (n,) or (n, m) after projecting out the columns of q (n, p)."""
    resid = Y - q @ (q.T @ Y)
    return np.sum(resid**2, axis=0)


def ols(X, Y) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and residual sum of squares of Y on X (QR).

    X: (n, p) of full column rank; Y: (n,) or (n, m). Returns coef (p,) or (p, m) and rss () or (m,).
    Raises ValueError when X is rank-deficient.
    """
    Y = np.asarray(Y, dtype=float)
    q, r = _orthonormal_basis(X)
    return solve_triangular(r, q.T @ Y), _rss(q, Y)


def f_statistic(X, columns, Y) -> np.ndarray:
    """F of dropping ``columns`` (indices into X's columns) from the model: ((RSS_reduced − RSS_full)/k) / (RSS_full/(n − p)).

    Y: (n,) or (n, m) -> () or (m,). NaN when n ≤ p.
    """
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    n, p = X.shape
    keep = [j for j in range(p) if j not in set(columns)]
    rss_full = _rss(_orthonormal_basis(X)[0], Y)
    rss_reduced = _rss(_orthonormal_basis(X[:, keep])[0], Y)
    if n <= p:
        return np.full(np.shape(rss_full), math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((rss_reduced - rss_full) / len(columns)) / (rss_full / (n - p))


def permutation_p(X, columns, y, n_resamples: int = 2000, random_state: int = 0, max_exact: int = 5040) -> dict:
    """Freedman–Lane permutation test of ``columns``: p of F under permuted units.

    The model without ``columns`` gives fitted values and residuals; each permutation π of the n
    units gives y* = fitted + residuals[π] and its F. Every permutation is enumerated when
    n! ≤ ``max_exact`` (p = share with F* ≥ F, ties within 1e-12, identity included), otherwise
    ``n_resamples`` seeded permutations (p = (1 + hits) / (1 + n_resamples)).
    Returns f, p, n_permutations, method.
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n = X.shape[0]
    keep = [j for j in range(X.shape[1]) if j not in set(columns)]
    coef_reduced, _ = ols(X[:, keep], y)
    fitted = X[:, keep] @ coef_reduced
    resid = y - fitted
    observed = float(f_statistic(X, columns, y))
    if math.factorial(n) <= max_exact:
        perms = np.array(list(itertools.permutations(range(n))))
        method = "exact"
    else:
        rng = np.random.default_rng(random_state)
        perms = np.argsort(rng.random((n_resamples, n)), axis=1)  # one uniform permutation per row
        method = f"Freedman–Lane, {n_resamples} permutations of languages, random_state={random_state}"
    ystar = fitted[:, None] + resid[perms].T
    hits = int(np.sum(f_statistic(X, columns, ystar) >= observed - 1e-12))
    p = hits / len(perms) if method == "exact" else (1 + hits) / (1 + n_resamples)
    return {"f": observed, "p": float(p), "n_permutations": len(perms), "method": method}


def bootstrap_coefficients(X, y, n_resamples: int = 2000, random_state: int = 0, confidence: float = 0.95) -> dict:
    """Percentile intervals of the coefficients over resampled units (rows with replacement).

    Resamples whose design is rank-deficient (a level left out) are skipped and counted.
    Returns low (p,), high (p,), n_used, n_skipped.
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n, p = X.shape
    rng = np.random.default_rng(random_state)
    draws = []
    for _ in range(n_resamples):
        rows = rng.integers(n, size=n)
        try:
            draws.append(ols(X[rows], y[rows])[0])
        except ValueError:  # a level left out of this resample
            continue
    if not draws:
        return {"low": np.full(p, math.nan), "high": np.full(p, math.nan), "n_used": 0, "n_skipped": n_resamples}
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.array(draws), [alpha, 1.0 - alpha], axis=0)
    return {"low": low, "high": high, "n_used": len(draws), "n_skipped": n_resamples - len(draws)}


def leave_one_out(X, y) -> np.ndarray:
    """(n, p) coefficients with unit i left out (NaN rows where the design without i is rank-deficient)."""
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n, p = X.shape
    out = np.full((n, p), math.nan)
    for i in range(n):
        try:
            out[i] = ols(X[np.arange(n) != i], y[np.arange(n) != i])[0]
        except ValueError:  # the design without unit i is rank-deficient
            continue
    return out
