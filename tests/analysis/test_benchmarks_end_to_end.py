"""A belebele-format local task (tests/fixtures/benchmarks/belebele_mini: lm-eval's belebele template,
8 parallel items in each of en, de, he, sw, zh) through the real ``lm_eval`` CLI with ``hf`` and
``qd-hf`` (method=none; rtn at 2 bits), then ``qd-analyze``: the paired table is checked against a
computation from the samples files that shares no code with the analysis (json + numpy + scipy), and
every per-choice log-likelihood against a direct forward pass of the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from analysis.cli import main

TASKS = Path(__file__).parents[1] / "fixtures" / "benchmarks" / "belebele_mini"
LANGS = {"eng_Latn": "en", "deu_Latn": "de", "heb_Hebr": "he", "swh_Latn": "sw", "zho_Hans": "zh"}
N_RESAMPLES = 400
RANDOM_STATE = 7


@pytest.fixture(scope="module")
def runs(tiny_model_dir, lm_eval_cli, tmp_path_factory):
    """Three lm-eval runs of the fixture group on a tiny Llama whose tokenizer adds <bos>."""
    model = tiny_model_dir("llama", add_bos=True)
    out = tmp_path_factory.mktemp("bench-runs")
    common = ["--include_path", str(TASKS), "--tasks", "qdbench_belebele", "--device", "cpu", "--log_samples", "--batch_size", "8"]
    lm_eval_cli(["--model", "hf", "--model_args", f"pretrained={model},dtype=float32", *common], out / "hf")
    lm_eval_cli(["--model", "qd-hf", "--model_args", f"pretrained={model},dtype=float32,method=none", *common], out / "none")
    lm_eval_cli(["--model", "qd-hf", "--model_args", f"pretrained={model},dtype=float32,method=rtn,bits=2", *common], out / "rtn")
    return model, out


def _samples(folder: Path, code: str) -> list[dict]:
    (path,) = sorted(folder.rglob(f"samples_qdbench_belebele_{code}_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(rows, key=lambda row: row["doc_id"])


def _correct(rows: list[dict]) -> np.ndarray:
    """1.0 where the highest-log-likelihood choice is the target (recomputed from resps, not from "acc")."""
    lls = [[float(resp[0][0]) for resp in row["resps"]] for row in rows]
    return np.array([float(np.argmax(ll) == int(row["target"])) for ll, row in zip(lls, rows)])


@pytest.mark.integration
def test_paired_table_matches_independent_computation(runs, tmp_path):
    _, out = runs
    report = tmp_path / "report"
    assert main([str(out), "--out", str(report), "--n-resamples", str(N_RESAMPLES), "--random-state", str(RANDOM_STATE)]) == 0
    table = pd.read_csv(report / "tables" / "benchmarks.csv", keep_default_na=False, na_values=[""])
    acc = table[table.metric == "acc"].set_index("lang")
    assert sorted(acc.index) == sorted(LANGS.values()) and set(acc.suite) == {"qdbench_belebele"}
    stem = {name: next((out / name).rglob("results_*.json")).stem for name in ("none", "rtn")}
    assert all(q.endswith(stem["rtn"]) for q in acc.quant_id)
    assert all(b.endswith(stem["none"]) for b in acc.base_id)  # qd-hf's own method=none run preferred over hf
    total_flips = 0
    for code, lang in LANGS.items():
        base_rows, quant_rows = _samples(out / "none", code), _samples(out / "rtn", code)
        assert [r["doc_hash"] for r in base_rows] == [r["doc_hash"] for r in quant_rows]
        base, quant = _correct(base_rows), _correct(quant_rows)
        assert base.tolist() == [r["acc"] for r in base_rows]  # lm-eval's own per-item acc agrees
        b, c = int(((base == 1) & (quant == 0)).sum()), int(((base == 0) & (quant == 1)).sum())
        row = acc.loc[lang]
        assert row.n_items == 8 and bool(row.paired)
        assert row.base == pytest.approx(base.mean()) and row.quant == pytest.approx(quant.mean())
        assert row.delta == pytest.approx(quant.mean() - base.mean())
        assert (row.right_to_wrong, row.wrong_to_right) == (b, c)
        assert row.mcnemar_p == pytest.approx(1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue)
        ref = sps.bootstrap((quant - base,), np.mean, n_resamples=N_RESAMPLES, method="percentile",
                            rng=np.random.default_rng([RANDOM_STATE, int(row.bootstrap_seed)]))
        assert (row.ci_low, row.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
        total_flips += b + c
    assert total_flips > 0, "2-bit RTN flipped no item: the test would not see a wrong pairing"
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "### rtn-w2 — qdbench_belebele — acc" in text and "McNemar p" in text and "right→wrong" in text
    assert (report / "figures" / "benchmark_qdbench_belebele_acc_rtn-w2.png").stat().st_size > 10_000


@pytest.mark.integration
def test_qd_hf_none_equals_hf_item_by_item(runs):
    _, out = runs
    for code in LANGS:
        hf, none = _samples(out / "hf", code), _samples(out / "none", code)
        assert [r["doc_hash"] for r in hf] == [r["doc_hash"] for r in none]
        for a, b in zip(hf, none):
            assert [float(x[0][0]) for x in a["resps"]] == pytest.approx([float(x[0][0]) for x in b["resps"]], abs=1e-5)
            assert a["acc"] == b["acc"] and a["acc_norm"] == b["acc_norm"]


@pytest.mark.integration
def test_per_choice_loglikelihoods_equal_a_direct_pass(runs):
    """Multiple-choice requests keep the tokenizer's default special tokens (one <bos>, like hf):
    sum of log p(choice tokens | <bos> + context) from a direct float32 forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out = runs
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    checked = 0
    for code in LANGS:
        for row in _samples(out / "none", code)[:3]:
            for args, resp in zip(row["arguments"].values(), row["resps"]):
                context, continuation = args["arg_0"], args["arg_1"]
                context_ids = tokenizer(context).input_ids
                ids = tokenizer(context + continuation).input_ids
                assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id and ids[:len(context_ids)] == context_ids
                with torch.no_grad():
                    logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
                positions = range(len(context_ids), len(ids))
                expected = sum(logprobs[t - 1, ids[t]].item() for t in positions)
                greedy = all(logprobs[t - 1].argmax().item() == ids[t] for t in positions)
                assert float(resp[0][0]) == pytest.approx(expected, abs=1e-4)
                assert (resp[0][1] == "True") == greedy
                checked += 1
    assert checked == len(LANGS) * 3 * 4
