"""Run identity in qd-analyze: scoring args separate runs; copies and unfinished sweeps do not collide."""

from __future__ import annotations

import shutil

import pytest
from test_analysis_pipeline import RTN4, base_nll, scaled, write_run

import analysis
from analysis.loading import AnalysisInputError, scoring_identity
from analysis.pairing import deduplicate, pair_runs

WORSE = {"en": 1.02, "de": 1.04, "sw": 1.10, "yo": 1.20}


def test_scoring_identity_from_lm_eval_config():
    hf = scoring_identity({"model_dtype": "torch.bfloat16"}, {"pretrained": "m"}, {})
    assert hf == {"dtype": "bfloat16", "softmax_dtype": "bfloat16", "rolling": "prefix+tokenizer-default", "add_bos_token": None,
                  "max_length": None, "revision": "main", "prefix_token_id": None}
    matching = scoring_identity({"model_dtype": "torch.float32"}, {"add_bos_token": False, "softmax_dtype": "float32"}, {})
    qd = scoring_identity({"model_dtype": "torch.float32"}, {}, {"scoring": {"rolling": "prefix+text", "softmax_dtype": "float32"}})
    assert {k: v for k, v in matching.items() if k != "add_bos_token"} == {k: v for k, v in qd.items() if k != "add_bos_token"}


def test_dtype_variants_are_not_duplicates_and_pair_only_with_their_own_baseline(tmp_path):
    base = base_nll()
    for dtype, factor in (("float32", 1.0), ("bfloat16", 1.5)):
        write_run(tmp_path, f"base-{dtype}", f"2025-01-01T00-00-0{int(factor)}", scaled(base, dict.fromkeys(WORSE, factor)),
                  extra_args=f",dtype={dtype}")
        write_run(tmp_path, f"rtn-{dtype}", f"2025-01-01T00-00-0{int(factor) + 3}", scaled(base, {k: v * factor for k, v in WORSE.items()}),
                  RTN4, extra_args=f",dtype={dtype}")
    runs = analysis.load_runs([tmp_path])
    kept, problems = deduplicate(runs)
    assert len(kept) == 4 and not problems
    pairs, problems = pair_runs(runs)
    assert {(p.quant_id.split("/")[0], p.base_id.split("/")[0]) for p in pairs} == {("rtn-float32", "base-float32"), ("rtn-bfloat16", "base-bfloat16")}
    deg = analysis.degradation(runs, n_resamples=200, random_state=0)
    for row in deg.table.itertuples():  # each against its own baseline: the same relative increase
        assert row.degradation == pytest.approx(WORSE[row.lang] - 1)


def test_mismatched_scoring_is_refused_with_one_line(tmp_path):
    base = base_nll()
    write_run(tmp_path, "base", "2025-01-01T00-00-01", base, extra_args=",max_length=128")
    write_run(tmp_path, "rtn", "2025-01-01T00-00-02", scaled(base, WORSE), RTN4)
    runs = analysis.load_runs([tmp_path])
    pairs, problems = pair_runs(runs)
    assert not pairs and any("no baseline run of the same model and scoring" in p for p in problems)
    with pytest.raises(AnalysisInputError, match="scored differently") as err:
        pair_runs(runs, baseline="base/")
    assert "\n" not in str(err.value)


def test_copied_run_folder_gets_its_own_id_and_is_listed_as_duplicate(tmp_path):
    base = base_nll()
    write_run(tmp_path / "a", "base", "2025-01-01T00-00-01", base)
    write_run(tmp_path / "a", "rtn", "2025-01-01T00-00-02", scaled(base, WORSE), RTN4)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    runs = analysis.load_runs([tmp_path / "a", tmp_path / "b"])
    assert len(runs.runs) == 4 and len(set(runs.runs)) == 4
    kept, problems = deduplicate(runs)
    assert len(kept) == 2 and len(problems) == 2 and all("duplicate runs" in p for p in problems)


def test_unfinished_sweep_folders_are_not_runs(tmp_path):
    base = base_nll()
    write_run(tmp_path, "base", "2025-01-01T00-00-01", base)
    write_run(tmp_path, ".tmp-rtn-w4-0123456789", "2025-01-01T00-00-02", scaled(base, WORSE), RTN4)
    runs = analysis.load_runs([tmp_path])
    assert [run.method for run in runs.runs.values()] == ["none"]


def test_report_and_tables_carry_no_machine_paths(tmp_path):
    from analysis.cli import main

    base = base_nll()
    runs = tmp_path / "deep" / "runs"
    write_run(runs, "base", "2025-01-01T00-00-01", base, model=str(tmp_path / "models" / "tiny"))
    write_run(runs, "rtn", "2025-01-01T00-00-02", scaled(base, WORSE), RTN4, model=str(tmp_path / "models" / "tiny"), samples=False)
    (runs / "rtn" / "results_broken.json").write_text("{", encoding="utf-8")  # a problem line naming a file
    assert main([str(runs), "--out", str(tmp_path / "report"), "--n-resamples", "50"]) == 0
    written = [p for p in (tmp_path / "report").rglob("*") if p.suffix in (".md", ".csv")]
    assert written
    for path in written:
        assert str(tmp_path) not in path.read_text(encoding="utf-8"), path.name
