"""Coverage of the combined (calibration draws x documents) CI by simulation with a known truth.

Each simulated data set: n documents with baseline NLL b_i, and R calibration draws of a config whose
NLL is q_ri = b_i (1 + theta + u_i + v_r + e_ri): u_i a document effect shared by every draw (the
same evaluation documents), v_r the draw's effect, e_ri noise. The truth is D = theta (the mean over
the population of draws and documents). For a paired difference, config A (theta_a, R draws) and B
(theta_b, S draws) share the documents and their effects u_i; the truth is theta_a - theta_b. Prints
the share of data sets whose 95 % interval covers the truth (a config without calibration, like RTN,
has no draw effect; a calibrated config run once has one that no interval can see), for the analysis' scheme (draws, then the
documents they share: :func:`analysis.replicate_stats.replicate_bootstrap`) and, for comparison, the
nested scheme that resamples documents separately within each picked draw.

    python scripts/coverage_calibration_draws.py [--datasets 400] [--resamples 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from analysis.replicate_stats import quantile_interval, replicate_bootstrap


def simulate(rng, n_docs, draws, thetas, sd_doc, sd_draws, sd_noise):
    base = rng.uniform(50, 400, n_docs)
    doc_effect = rng.normal(0, sd_doc, n_docs)
    quant = [base * (1 + theta + doc_effect + rng.normal(0, sd_draw, (r, 1)) + rng.normal(0, sd_noise, (r, n_docs)))
             for theta, r, sd_draw in zip(thetas, draws, sd_draws)]
    return quant, base


def nested_interval(quant, base, coefficients, n_resamples, rng):
    """Draws resampled, then documents resampled independently for every picked draw."""
    n = base.size
    total = np.zeros(n_resamples)
    for c, q in zip(coefficients, quant):
        r = q.shape[0]
        rows = rng.integers(r, size=(n_resamples, r))
        docs = rng.integers(n, size=(n_resamples, r, n))
        d = q[rows[..., None], docs].sum(-1) / base[docs].sum(-1) - 1.0
        total += c * d.mean(axis=1)
    return quantile_interval(total)


def coverage(label, thetas, draws, coefficients, args, rng, deterministic=()):
    """``deterministic``: indices of configs without calibration (no draw effect, e.g. RTN)."""
    truth = float(np.dot(coefficients, thetas))
    hits = {"draws then shared documents (analysis)": 0, "nested documents per draw": 0}
    for dataset in range(args.datasets):
        sd_draws = [0.0 if k in deterministic else args.sd_draw for k in range(len(draws))]
        quant, base = simulate(rng, args.docs, draws, thetas, args.sd_doc, sd_draws, args.sd_noise)
        values, _ = replicate_bootstrap(quant, base, coefficients, args.resamples, [args.seed, dataset], max_exact=0)
        low, high = quantile_interval(values)
        hits["draws then shared documents (analysis)"] += low <= truth <= high
        low, high = nested_interval(quant, base, coefficients, args.resamples, rng)
        hits["nested documents per draw"] += low <= truth <= high
    for scheme, count in hits.items():
        print(f"{label:38s} {scheme:40s} coverage {count / args.datasets:6.1%} of {args.datasets} (nominal 95 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--sd_doc", type=float, default=0.05)
    parser.add_argument("--sd_draw", type=float, default=0.03)
    parser.add_argument("--sd_noise", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.docs} documents; SD of document effect {args.sd_doc}, draw effect {args.sd_draw}, noise {args.sd_noise}")
    for draws in (3, 5, 10):
        coverage(f"one config, {draws} draws", [0.15], [draws], [1.0], args, rng)
    coverage("A (5 draws) - B (5 draws)", [0.15, 0.12], [5, 5], [1.0, -1.0], args, rng)
    coverage("A (5 draws) - B (RTN: deterministic)", [0.15, 0.12], [5, 1], [1.0, -1.0], args, rng, deterministic=(1,))
    coverage("A (5 draws) - B (calibrated, 1 draw)", [0.15, 0.12], [5, 1], [1.0, -1.0], args, rng)


if __name__ == "__main__":
    main()
