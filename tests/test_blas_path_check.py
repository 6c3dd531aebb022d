"""scripts/blas_path_check.py on two hand-made report folders: every number below is worked out by hand."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
LABEL, RTN = "gptq-w4", "rtn-w4"


def _report(root: Path, draws: dict[int, dict[str, float]], spread: list[dict], comparisons: list[dict],
            rtn: dict[str, float]) -> tuple[Path, Path]:
    """``root/runs`` (one results file per draw, its seed in ``config.model_args``) and ``root/report/tables``."""
    runs, tables = root / "runs", root / "report" / "tables"
    tables.mkdir(parents=True)
    run_rows, deg_rows = [], []
    for seed, by_lang in draws.items():
        run_id = f"{LABEL}-{seed}/m/results"
        (runs / run_id).parent.mkdir(parents=True)
        (runs / f"{run_id}.json").write_text(json.dumps({"config": {"model_args": f"method=gptq,bits=4,calib_seed={seed}"}}))
        run_rows.append({"run_id": run_id, "path": f"{run_id}.json"})
        deg_rows += [{"quant_id": run_id, "label": LABEL, "suite": "s", "lang": lang, "degradation": d} for lang, d in by_lang.items()]
    run_rows.append({"run_id": "rtn/m/results", "path": "rtn/m/results.json"})  # no draw: table 0 only
    (runs / "rtn" / "m").mkdir(parents=True)
    (runs / "rtn" / "m" / "results.json").write_text(json.dumps({"config": {"model_args": "method=rtn,bits=4"}}))
    deg_rows += [{"quant_id": "rtn/m/results", "label": RTN, "suite": "s", "lang": lang, "degradation": d} for lang, d in rtn.items()]
    pd.DataFrame(run_rows).to_csv(tables / "runs.csv", index=False)
    pd.DataFrame(deg_rows).to_csv(tables / "degradation.csv", index=False)
    pd.DataFrame([{"label": LABEL, "suite": "s", **row} for row in spread]).to_csv(tables / "calibration_spread.csv", index=False)
    pd.DataFrame([{"suite": "s", "label_a": LABEL, "label_b": RTN, **row} for row in comparisons]).to_csv(
        tables / "method_comparisons.csv", index=False)
    return runs, root / "report"


def test_draw_differences_kernel_sd_inside_counts_and_claims(tmp_path):
    check = runpy.run_path(str(REPO / "scripts" / "blas_path_check.py"))
    main = _report(tmp_path / "main", {0: {"en": 0.10, "fr": 0.20}, 1: {"en": 0.14, "fr": 0.26}},
                   [{"lang": "en", "n_draws": 2, "d_mean": 0.12, "d_sd": 0.03, "d_ci_low": 0.05, "d_ci_high": 0.20},
                    {"lang": "fr", "n_draws": 2, "d_mean": 0.23, "d_sd": 0.04, "d_ci_low": 0.18, "d_ci_high": 0.30}],
                   [{"lang": "en", "difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "reading": f"{LABEL} higher D"},
                    {"lang": "fr", "difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "reading": "within method noise"}],
                   {"en": 0.30, "fr": 0.40})
    other = _report(tmp_path / "other", {0: {"en": 0.13, "fr": 0.16}},
                    [{"lang": "en", "n_draws": 1, "d_mean": 0.13, "d_sd": math.nan, "d_ci_low": 0.0, "d_ci_high": 0.3},
                     {"lang": "fr", "n_draws": 1, "d_mean": 0.16, "d_sd": math.nan, "d_ci_low": 0.0, "d_ci_high": 0.3}],
                    [{"lang": "en", "difference": -0.01, "ci_low": -0.05, "ci_high": 0.03, "reading": "within method noise"},
                     {"lang": "fr", "difference": 0.02, "ci_low": -0.01, "ci_high": 0.05, "reading": "within method noise"}],
                    {"en": 0.31, "fr": 0.37, "de": 0.5})
    single = check["single_run_differences"](*main, *other)
    assert single.label.tolist() == [RTN] and single.n_langs.tolist() == [2]  # de is in one report only
    assert single.max_abs.iloc[0] == pytest.approx(0.03) and single.mean_abs.iloc[0] == pytest.approx(0.02)  # |0.01|, |-0.03|
    table = check["draw_differences"](*main, *other)
    assert list(zip(table.lang, table.seed)) == [("en", 0), ("fr", 0)]  # draw 1 has no partner
    assert table.machine.tolist() == pytest.approx([0.03, -0.04])
    assert table.draw_sd.tolist() == pytest.approx([0.03, 0.04])
    row = check["summary"](table, main[1], other[1]).iloc[0]
    assert row.n_pairs == 2 and row.n_draws == 2 and row.n_draws_other == 1
    assert row.kernel_sd == pytest.approx(0.025)  # sqrt((0.03² + 0.04²) / 2 / 2)
    assert row.draw_sd == pytest.approx(math.sqrt(0.00125))  # sqrt((0.03² + 0.04²) / 2)
    assert (row.inside, row.n_langs) == (1, 2)  # en 0.13 in [0.05, 0.20]; fr 0.16 below 0.18
    claims = check["claims"](main[1], other[1])
    assert len(claims) == 1 and claims.lang.iloc[0] == "en"  # fr is within method noise here: not a claim
    assert not claims.same_sign.iloc[0] and claims.difference_other.iloc[0] == pytest.approx(-0.01)
    assert claims.reading_other.iloc[0] == "within method noise"
