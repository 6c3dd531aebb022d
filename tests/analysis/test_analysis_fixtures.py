"""The analysis on genuine ``qd-sweep`` / ``qd-hf`` output (tests/fixtures/analysis/make_fixtures.py).

The fixture runs are checked against what the engine reports for the same tiny model quantized
here, and against the per-document scores read here straight from lm-eval's samples files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import analysis

FIXTURES = Path(__file__).parents[1] / "fixtures" / "analysis"
LANGS = ("en", "de", "he", "sw", "yo")


@pytest.fixture(scope="module")
def runs():
    return analysis.load_runs([FIXTURES / "runs"])


def _fresh_report(tmp_path, bits: int) -> dict:
    """``quantize_`` on the fixture's model, rebuilt: tiny GPT-2, seed 0, float32."""
    from transformers import AutoModelForCausalLM

    from qd_models.config import parse_qd_args
    from qd_models.engine import quantize_
    from qd_models.tiny_models import save_tiny_model

    path = save_tiny_model("gpt2", tmp_path / f"tiny-gpt2-{bits}", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return quantize_(model, parse_qd_args({"method": "rtn", "bits": bits})[0])


def test_fixture_runs_are_qd_hf_output_with_the_scoring_record(runs):
    assert len(runs.runs) == 3 and runs.problems == []
    for run in runs.runs.values():
        results = json.loads(run.path.read_text())
        block = results["config"]["quant_disparity"]
        assert results["config"]["model"] == "qd-hf" and block["model_source"] == "tiny-gpt2"
        assert block["scoring"]["rolling"] == "prefix+text" and block["scoring"]["softmax_dtype"] == "float32"
        assert block["scoring"]["dtype"] == "float32"
        assert not any(str(c["metadata"]["config_source"]).startswith("/") for c in results["configs"].values())


@pytest.mark.parametrize("bits", [4, 3])
def test_weight_error_and_effective_bits_equal_the_engine_report(runs, tmp_path, bits):
    report = _fresh_report(tmp_path, bits)
    (run,) = [r for r in runs.runs.values() if r.bits == bits]
    assert run.effective_bits_per_weight == pytest.approx(report["totals"]["effective_bits_per_weight"], rel=1e-12)
    assert run.quant_totals == report["totals"]
    mse = analysis.weight_mse(runs).set_index("run_id").loc[run.run_id]
    layers = [layer for layer in report["layers"] if layer["status"] == "quantized"]
    assert mse.n_layers == len(layers) == 8  # 2 blocks x (c_attn, c_proj, c_fc, mlp.c_proj)
    assert mse.mean_rel_mse == pytest.approx(sum(layer["rel_mse"] for layer in layers) / len(layers), rel=1e-9)
    # effective bits by hand: 4/3-bit codes + one 16-bit scale per output channel, per quantized weight
    rows = sum(layer["shape"][1] for layer in layers)  # Conv1D weights are [in, out]
    n = sum(layer["numel"] for layer in layers)
    assert run.effective_bits_per_weight == pytest.approx(bits + 16 * rows / n, rel=1e-12)


def _samples(folder: Path, lang: str) -> dict[str, float]:
    (path,) = folder.rglob(f"samples_qd_multilingual_ppl_{lang}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["doc"]["doc_id"]: row["bits_per_byte"][0] for row in rows}


def test_a_limited_run_is_paired_on_the_common_documents_only():
    """``--limit 3`` quantized run vs the full baseline: every language compares its first 3
    documents; degradation = sum NLL_q / sum NLL_b - 1 over those, from the samples files."""
    (base_dir,) = [p for p in (FIXTURES / "runs").iterdir() if p.name.startswith("baseline-")]
    runset = analysis.load_runs([base_dir, FIXTURES / "runs_limit"])
    deg = analysis.degradation(runset, n_resamples=50)
    table = deg.table.set_index("lang")
    assert sorted(table.index) == sorted(LANGS) and (table.n_docs == 3).all()
    for lang in LANGS:
        base, quant = _samples(base_dir, lang), _samples(FIXTURES / "runs_limit", lang)
        assert len(base) == 5 and len(quant) == 3 and set(quant) < set(base)
        expected = sum(quant.values()) / sum(base[d] for d in quant) - 1
        assert table.loc[lang, "degradation"] == pytest.approx(expected, rel=1e-12)
        assert any(f"{lang}: only 3 of 3/5 docs in common" in p for p in deg.problems)
        full = sum(quant.values()) / sum(base.values()) - 1  # pairing all five would be wrong
        assert not math.isclose(table.loc[lang, "degradation"], full, rel_tol=1e-3)
