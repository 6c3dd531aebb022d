"""Coverage of the calibration-draw intervals by simulation with a known truth.

Each simulated data set: n documents with baseline NLL b_i ~ U(50, 400) and R calibration draws of a config
whose NLL is q_ri = b_i (1 + theta + u_i + v_r + e_ri): u_i ~ N(0, sd_doc) a document effect shared by every
draw and config (the same evaluation documents), v_r the draw's effect (SD sd_draw; normal, heavy-tailed =
Student t with 3 df, or skewed = centred exponential), e_ri ~ N(0, sd_noise) draw x document noise. The truth
is D = theta. A difference A - B shares the documents (u_i) and has independent draw sets (truth
theta_a - theta_b); a config without calibration (like RTN) has no draw effect and one run. Prints, per case,
the share of data sets whose 95 % interval covers the truth and the median interval width, for the analysis'
t interval (:func:`analysis.replicate_stats.replicate_interval`) and the percentile bootstrap it replaced
(draws, then the documents they share). A calibrated config run once gets no t interval (draw noise not
measured); the bootstrap's coverage there shows why.

    python scripts/coverage_calibration_draws.py [--datasets 2000] [--docs 5] [--sd_draw 0.03]
"""

from __future__ import annotations

import argparse

import numpy as np

from analysis.replicate_stats import replicate_interval

DRAW_EFFECTS = {
    "normal": lambda rng, size: rng.normal(0.0, 1.0, size),
    "heavy-tailed (t3)": lambda rng, size: rng.standard_t(3, size) / np.sqrt(3.0),
    "skewed (exponential)": lambda rng, size: rng.exponential(1.0, size) - 1.0,
}
"""Draw-effect distributions with mean 0 and SD 1 (scaled by ``--sd_draw``)."""


def simulate(rng, args, draws, thetas, sd_draws, draw_effect):
    """K configs: (R_k, n) per-document NLLs and the (n,) baseline NLLs."""
    base = rng.uniform(50, 400, args.docs)
    doc_effect = rng.normal(0, args.sd_doc, args.docs)
    quant = [base * (1 + theta + doc_effect + sd_draw * draw_effect(rng, (r, 1)) + rng.normal(0, args.sd_noise, (r, args.docs)))
             for theta, r, sd_draw in zip(thetas, draws, sd_draws)]
    return quant, base


def bootstrap_interval(quant, base, coefficients, n_resamples, rng, confidence=0.95):
    """The replaced scheme: per resample n shared documents, then each config's draws, with replacement;
    percentile interval of sum_k c_k * mean over picked draws of D."""
    n = base.size
    docs = rng.integers(n, size=(n_resamples, n))
    base_sums = base[docs].sum(axis=1)  # (B,)
    total = np.zeros(n_resamples)
    for c, q in zip(coefficients, quant):
        d = q[:, docs].sum(axis=-1) / base_sums - 1.0  # (R, B)
        rows = rng.integers(q.shape[0], size=(n_resamples, q.shape[0]))
        total += c * d[rows, np.arange(n_resamples)[:, None]].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return tuple(np.quantile(total, [alpha, 1.0 - alpha]))


def coverage(label, thetas, draws, coefficients, calibrated, args, rng, draw_effect) -> str:
    """One printed line: coverage and median width of both intervals over ``args.datasets`` data sets."""
    truth = float(np.dot(coefficients, thetas))
    hits = {"t": 0, "boot": 0}
    widths = {"t": [], "boot": []}
    refused = 0
    for _ in range(args.datasets):
        sd_draws = [args.sd_draw if cal else 0.0 for cal in calibrated]
        quant, base = simulate(rng, args, draws, thetas, sd_draws, draw_effect)
        interval = replicate_interval(quant, base, coefficients, calibrated)
        if np.isnan(interval.low):
            refused += 1
        else:
            hits["t"] += interval.low <= truth <= interval.high
            widths["t"].append(interval.high - interval.low)
        low, high = bootstrap_interval(quant, base, coefficients, args.resamples, rng)
        hits["boot"] += low <= truth <= high
        widths["boot"].append(high - low)
    shown = args.datasets - refused
    t_part = (f"t {hits['t'] / shown:6.1%} (width {100 * np.median(widths['t']):5.2f} pp)" if shown
              else "t   none: draw noise not measured      ")
    return f"{label:40s} {t_part}   bootstrap {hits['boot'] / args.datasets:6.1%} (width {100 * np.median(widths['boot']):5.2f} pp)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=800, help="resamples of the replaced bootstrap")
    parser.add_argument("--docs", type=int, default=5)
    parser.add_argument("--sd_doc", type=float, default=0.05)
    parser.add_argument("--sd_draw", type=float, default=0.03)
    parser.add_argument("--sd_noise", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.docs} documents, {args.datasets} data sets per case; SD of document effect {args.sd_doc}, draw effect "
          f"{args.sd_draw}, draw x document noise {args.sd_noise}; nominal 95 %")
    for name, draw_effect in DRAW_EFFECTS.items():
        print(f"draw effect: {name}")
        cases = [("RTN alone (no calibration, 1 run)", [0.12], [1], [1.0], [False])]
        cases += [(f"one config, {r} draws", [0.15], [r], [1.0], [True]) for r in (3, 5, 10)]
        cases += [(f"A ({r} draws) - B ({r} draws)", [0.15, 0.12], [r, r], [1.0, -1.0], [True, True]) for r in (3, 5)]
        cases += [(f"A ({r} draws) - RTN (no calibration)", [0.15, 0.12], [r, 1], [1.0, -1.0], [True, False]) for r in (3, 5)]
        cases += [("A (5 draws) - B (calibrated, 1 draw)", [0.15, 0.12], [5, 1], [1.0, -1.0], [True, True])]
        for case in cases:
            print("  " + coverage(*case, args, rng, draw_effect), flush=True)


if __name__ == "__main__":
    main()
