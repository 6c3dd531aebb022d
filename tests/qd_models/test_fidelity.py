"""Fidelity to the baseline (qd_models.fidelity): per-token KL over the stored top-k + tail
bucket, same-top-token, Δp of the true token, checked against full-vocabulary distributions from
direct forward passes that do not use lm-eval or qd-hf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qd_tasks.corpus import load_corpus

TASKS = ["qd_multilingual_ppl_en", "qd_multilingual_ppl_he"]
LIMIT = 3


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _fidelity_files(folder: Path, prefix: str) -> dict[str, dict]:
    """task -> arrays of its fidelity file (exactly one per task)."""
    out = {}
    for task in TASKS:
        (path,) = sorted(folder.glob(f"{prefix}{task}*.npz"))
        with np.load(path) as data:
            out[task] = {name: data[name] for name in data.files}
    return out


def _texts(task: str) -> dict[str, str]:
    lang = task.rsplit("_", 1)[1]
    return {record["doc_id"]: record["text"] for record in load_corpus("eval", langs=[lang])}


def _full_logprobs(model, tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, V) float64 next-token log-probs of [BOS] + text tokens and the (T,) text tokens."""
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    ids = torch.tensor([[tokenizer.bos_token_id, *tokens]])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].double()
    return torch.log_softmax(logits, dim=-1), torch.tensor(tokens)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, qd_task_manager, tmp_path_factory):
    """A stored baseline (k = 512 > vocabulary 259), an rtn w3 run saving its quantized weights,
    and a method=none run, both compared with the baseline."""
    from lm_eval import simple_evaluate

    def evaluate_in_process(model, model_args, tasks, **kwargs):
        return simple_evaluate(model=model, model_args=model_args, tasks=tasks, task_manager=qd_task_manager, device="cpu", batch_size=4, **kwargs)

    model_dir = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("fidelity")
    common = f"pretrained={model_dir},dtype=float32"
    base = evaluate_in_process("qd-hf", f"{common},fidelity_out={root / 'base'},fidelity_topk=512", TASKS, limit=LIMIT, log_samples=True)
    quant = evaluate_in_process("qd-hf", f"{common},method=rtn,bits=3,save_to={root / 'rtn_model'},fidelity_out={root / 'rtn'},"
                                f"fidelity_baseline={root / 'base'}", TASKS, limit=LIMIT)
    same = evaluate_in_process("qd-hf", f"{common},fidelity_out={root / 'none'},fidelity_baseline={root / 'base'}", TASKS, limit=LIMIT)
    return {"model_dir": model_dir, "root": root, "base": base, "quant": quant, "same": same}


def test_topk_kl_agreement_and_dp_equal_brute_force_when_k_covers_the_vocabulary(runs):
    base_model, tokenizer = _load(runs["model_dir"])
    quant_model, _ = _load(runs["root"] / "rtn_model")
    stored = _fidelity_files(runs["root"] / "rtn", "fidelity_")
    base_files = _fidelity_files(runs["root"] / "base", "fidelity_base_")
    assert runs["quant"]["config"]["quant_disparity"]["fidelity"]["role"] == "compare"
    checked_near_ties = 0
    for task in TASKS:
        data, texts = stored[task], _texts(task)
        assert base_files[task]["top_lp"].shape[1] == 259  # the whole vocabulary: no tail
        assert len(data["doc_ids"]) == LIMIT
        for i, key in enumerate(data["doc_keys"]):
            lo, hi = data["offsets"][i], data["offsets"][i + 1]
            lp, tokens = _full_logprobs(base_model, tokenizer, texts[str(key)])
            lq, _ = _full_logprobs(quant_model, tokenizer, texts[str(key)])
            assert hi - lo == len(tokens) and data["n_bytes"][i] == len(texts[str(key)].encode("utf-8"))
            kl = (lp.exp() * (lp - lq)).sum(-1).numpy()
            assert kl.max() > 1e-4  # the quantized copy differs
            np.testing.assert_allclose(data["kl"][lo:hi], kl, rtol=0, atol=1e-6)
            assert abs(data["kl"][lo:hi].sum() - kl.sum()) < 1e-6 * len(kl)
            true_q, true_p = (logp.gather(1, tokens[:, None])[:, 0].exp().numpy() for logp in (lq, lp))
            np.testing.assert_allclose(data["dp"][lo:hi], true_q - true_p, rtol=0, atol=1e-6)
            agree = (lq.argmax(-1) == lp.argmax(-1)).numpy()
            top_p, top_q = lp.topk(2, dim=-1).values, lq.topk(2, dim=-1).values
            clear = ((top_p[:, 0] - top_p[:, 1]) > 1e-5) & ((top_q[:, 0] - top_q[:, 1]) > 1e-5)
            checked_near_ties += int((~clear).sum())
            np.testing.assert_array_equal(data["agree"][lo:hi][clear.numpy()], agree[clear.numpy()])
            assert 0 < agree.mean() < 1
    assert checked_near_ties < 10


def test_method_none_against_its_own_baseline_is_kl_zero_and_full_agreement(runs):
    stored = _fidelity_files(runs["root"] / "none", "fidelity_")
    for task in TASKS:
        data = stored[task]
        assert data["kl"].size > 100
        assert np.all(data["kl"] == 0.0) and np.all(data["agree"]) and np.all(data["dp"] == 0.0)


def test_baseline_true_token_logprobs_sum_to_lm_eval_loglikelihoods(runs):
    stored = _fidelity_files(runs["root"] / "base", "fidelity_base_")
    for task in TASKS:
        data = stored[task]
        by_doc = {int(d): data["true_lp"][data["offsets"][i]:data["offsets"][i + 1]].astype(float).sum() for i, d in enumerate(data["doc_ids"])}
        for sample in runs["base"]["samples"][task]:
            assert by_doc[sample["doc_id"]] == pytest.approx(sample["bits_per_byte"][0], abs=1e-4)


def test_rolling_windows_and_reordered_batches_map_to_the_right_positions(tiny_model_dir, evaluate_in_process, tmp_path):
    """max_length=40 splits each document into many windows, lm-eval reorders them by length
    and batches 3 at a time; the stored per-token log-probs still sum to lm-eval's scores, and a
    method=none comparison is exactly 0."""
    common = f"pretrained={tiny_model_dir('gpt2')},dtype=float32,max_length=40"
    base = evaluate_in_process("qd-hf", f"{common},fidelity_out={tmp_path / 'base'}", TASKS, limit=LIMIT, log_samples=True, batch_size=3)
    stored = _fidelity_files(tmp_path / "base", "fidelity_base_")
    for task in TASKS:
        data = stored[task]
        assert data["top_lp"].shape[1] == 32 and np.all(np.diff(data["top_lp"], axis=1) <= 0)
        assert np.all(data["argmax"] == data["top_ids"][:, 0])
        sums = {int(d): data["true_lp"][data["offsets"][i]:data["offsets"][i + 1]].astype(float).sum() for i, d in enumerate(data["doc_ids"])}
        for sample in base["samples"][task]:
            assert sums[sample["doc_id"]] == pytest.approx(sample["bits_per_byte"][0], abs=1e-4)
        # tail mass + top-k mass = 1
        total = np.logaddexp(np.logaddexp.reduce(data["top_lp"].astype(float), axis=1), data["tail_lp"].astype(float))
        np.testing.assert_allclose(total, 0.0, atol=1e-5)
    evaluate_in_process("qd-hf", f"{common},fidelity_out={tmp_path / 'same'},fidelity_baseline={tmp_path / 'base'}", TASKS, limit=LIMIT, batch_size=3)
    for data in _fidelity_files(tmp_path / "same", "fidelity_").values():
        assert np.all(data["kl"] == 0.0) and np.all(data["agree"])


@pytest.mark.parametrize("change", ["dtype=bfloat16", "softmax_dtype=float64", "revision=v2", "other_model"])
def test_mismatched_baseline_is_refused_in_one_line(change, runs, tiny_model_dir):
    from qd_models.qd_hf import QDHFLM

    pretrained = tiny_model_dir("gpt2") if change == "other_model" else runs["model_dir"]
    kwargs = {"pretrained": str(pretrained), "dtype": "float32", "device": "cpu", "method": "rtn", "bits": 4,
              "fidelity_out": str(runs["root"] / "x"), "fidelity_baseline": str(runs["root"] / "base")}
    if change != "other_model":
        name, value = change.split("=")
        kwargs[name] = value
    with pytest.raises(ValueError, match="fidelity_baseline=.* does not match this run") as err:
        QDHFLM(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"fidelity_topk": "0", "fidelity_out": "x"}, "fidelity_topk='0' is not allowed"),
        ({"fidelity_topk": "4"}, "fidelity_out is missing"),
        ({"fidelity_out": "x", "method": "rtn"}, "only allowed with method=none"),
        ({"fidelity_out": "x", "fidelity_baseline": "/nonexistent"}, "holds no fidelity_base_"),
    ],
)
def test_bad_fidelity_args_fail_before_loading(args, message):
    from qd_models.qd_hf import QDHFLM

    with pytest.raises(ValueError, match=message):
        QDHFLM(pretrained="/nonexistent-model", device="cpu", **args)


def test_kl_with_a_tail_bucket_is_a_lower_bound_and_matches_a_hand_computation():
    """Direct check of the formula on a 6-token distribution with k = 2 (one tail bucket)."""
    from qd_models.fidelity import baseline_summary, compare_with_baseline

    p = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.35, 0.2, 0.05, 0.1, 0.05]], dtype=torch.float64)
    target = torch.tensor([2])
    base = baseline_summary(p.log().float(), target, topk=2)
    out = compare_with_baseline(q.log().float(), base)
    p_tail, q_tail = 0.3, 0.4
    expected = 0.5 * np.log(0.5 / 0.25) + 0.2 * np.log(0.2 / 0.35) + p_tail * np.log(p_tail / q_tail)
    exact = float((p * (p / q).log()).sum())
    assert out["kl"].item() == pytest.approx(expected, abs=1e-6)
    assert expected < exact
    assert out["agree"].item() is False and out["dp"].item() == pytest.approx(0.2 - 0.1, abs=1e-6)
    assert out["base_tail"].item() == pytest.approx(p_tail, abs=1e-6)


def test_results_record_the_fidelity_files(runs):
    info = runs["quant"]["config"]["quant_disparity"]["fidelity"]
    assert set(info["files"]) == set(TASKS) and info["topk"] == 259
    for name in info["files"].values():
        meta = json.loads(str(np.load(runs["root"] / "rtn" / name)["meta"]))
        assert meta["role"] == "compare" and meta["identity"]["scoring"]["softmax_dtype"] == "float32"
        assert meta["identity"]["model"] == Path(runs["model_dir"]).resolve().name and meta["identity"]["revision"] == "main"
    assert all(name.startswith(f"fidelity_{task}__rtn-") for task, name in info["files"].items())


def test_identity_carries_the_folder_name_and_revision_and_each_config_its_own_compare_files(runs, tmp_path):
    """A local folder loads with ``revision=`` given; the identity a recorder stores has the
    folder's name and that revision. Compare files are named per config: equal configs share a
    name, configs that differ in any setting do not."""
    from qd_models.config import parse_qd_args
    from qd_models.qd_hf import QDHFLM

    lm = QDHFLM(pretrained=str(runs["model_dir"]), dtype="float32", device="cpu", revision="v2", fidelity_out=str(tmp_path))
    identity = lm.fidelity.identity
    assert identity["model"] == Path(runs["model_dir"]).resolve().name and identity["revision"] == "v2"
    assert identity["scoring"]["revision"] == "v2"
    tags = [lm.fidelity_recorder("store", tmp_path, 32, None, parse_qd_args(dict(args))[0]).tag
            for args in ({"method": "rtn", "bits": "3"}, {"method": "rtn", "bits": "4"}, {"method": "rtn", "bits": "3"},
                         {"method": "rtn", "bits": "3", "granularity": "tensor"})]
    assert tags[0] == tags[2] and len({tags[0], tags[1], tags[3]}) == 3
    assert all(tag.startswith("rtn-") for tag in tags)


def test_sweep_fidelity_flag_and_the_analysis_report(tiny_model_dir, tmp_path, capsys):
    """qd-sweep --fidelity: the baseline folder holds the top-k files, every other config (a fake-quant
    one on the shared model, nf4 on a fresh load) its per-position results; qd-analyze reports them
    per language next to D_L, equal to sums computed here from the files."""
    from analysis.report import analyze, write_outputs
    from qd_models.sweep import main

    runs, report = tmp_path / "runs", tmp_path / "report"
    common = ["--tasks", ",".join(TASKS), "--output_path", str(runs), "--model_args", f"pretrained={tiny_model_dir('llama')}",
              "--limit", "3", "--device", "cpu", "--batch_size", "4", "--log_samples"]
    assert main([*common, "--methods", "rtn", "--bits", "3", "--fidelity", "--no_baseline"]) == 2
    assert "--fidelity with --no_baseline is not allowed" in capsys.readouterr().err
    assert main([*common, "--methods", "rtn,nf4", "--bits", "3", "--fidelity", "--fidelity_topk", "8"]) == 0
    (base_dir,) = runs.glob("baseline-*")
    assert sorted(p.name.split("__")[0] for p in base_dir.glob("fidelity_base_*.npz")) == sorted(f"fidelity_base_{t}" for t in TASKS)
    (first_base,) = base_dir.glob(f"fidelity_base_{TASKS[0]}__*.npz")  # named by the run identity
    assert np.load(first_base)["top_lp"].shape[1] == 8
    expected = {}
    for label in ("rtn-w3", "nf4-w4"):  # sweep folders are named by the report's label
        (folder,) = runs.glob(f"{label}-*")
        for task in TASKS:
            (path,) = folder.glob(f"fidelity_{task}__*.npz")
            data = np.load(path)
            assert data["kl"].min() >= -1e-6 and data["kl"].sum() > 0  # float32 rounding where both distributions nearly agree
            expected[label, task.rsplit("_", 1)[1]] = (data["kl"].sum() / (data["offsets"][-1]), data["kl"].sum() / data["n_bytes"].sum(),
                                                       data["agree"].mean(), np.quantile(data["dp"], 0.5, method="inverted_cdf"))
    analysis = analyze([runs])
    table = analysis.fidelity.table
    assert len(table) == len(expected)
    for r in table.itertuples():
        kl_tok, kl_byte, agree, dp_median = expected[r.label, r.lang]
        assert r.kl_per_token == pytest.approx(kl_tok, rel=1e-9) and r.kl_per_byte == pytest.approx(kl_byte, rel=1e-9)
        assert r.same_top_token == pytest.approx(agree, rel=1e-9) and r.dp_p50 == pytest.approx(dp_median, rel=1e-9)
        assert r.kl_per_token_ci_low <= r.kl_per_token <= r.kl_per_token_ci_high
        assert np.isfinite(r.degradation) and r.topk == 8
    write_outputs(analysis, report)
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "## Fidelity to the baseline (per token)" in text and (report / "figures" / "fidelity_qd_multilingual_ppl.png").is_file()
    header = (report / "tables" / "fidelity.csv").read_text().splitlines()[0].split(",")
    assert {"kl_per_token", "kl_per_byte", "same_top_token", "dp_p1", "degradation"} <= set(header)


def test_weighted_quantiles_equal_numpy_on_repeated_values():
    from analysis.fidelity import weighted_quantiles

    rng = np.random.default_rng(0)
    for _ in range(50):
        values = np.sort(rng.normal(size=rng.integers(1, 40)))
        weights = rng.integers(0, 4, size=values.size)
        if weights.sum() == 0:
            continue
        qs = np.array([0.01, 0.05, 0.5, 0.95, 0.99])
        np.testing.assert_array_equal(weighted_quantiles(values, weights, qs), np.quantile(np.repeat(values, weights), qs, method="inverted_cdf"))


TOPK_GAP = 0.30
"""Stated gap of the top-32 + tail bound on the default model (rtn w4, 2 documents each of en and
sw): exact − bound <= 30 % of the exact KL. Measured once: exact 256.6 nats, bound 189.0 (gap 26 %):
a 270M model spreads much of its mass beyond its top 32 tokens."""


@pytest.mark.slow
def test_topk_bound_gap_on_the_default_model(qd_task_manager, tmp_path):
    """Gemma-3-270M (vocabulary 262,144), k = 32: the stored bound never exceeds the exact KL from
    full-vocabulary forward passes, and the per-token mean gap is within TOPK_GAP of it."""
    from lm_eval import simple_evaluate

    from qd_models.default_model import default_model_path

    model_dir = default_model_path()
    common = f"pretrained={model_dir},dtype=float32"
    tasks = ["qd_multilingual_ppl_en", "qd_multilingual_ppl_sw"]
    kw = {"tasks": tasks, "task_manager": qd_task_manager, "device": "cpu", "batch_size": 1, "limit": 2}
    simple_evaluate(model="qd-hf", model_args=f"{common},fidelity_out={tmp_path / 'base'}", **kw)
    simple_evaluate(model="qd-hf", model_args=f"{common},method=rtn,bits=4,save_to={tmp_path / 'q'},fidelity_out={tmp_path / 'rtn'},"
                    f"fidelity_baseline={tmp_path / 'base'}", **kw)
    base_model, tokenizer = _load(model_dir)
    quant_model, _ = _load(tmp_path / "q")
    exact_total, bound_total = 0.0, 0.0
    for task in tasks:
        (path,) = sorted((tmp_path / "rtn").glob(f"fidelity_{task}__*.npz"))
        data, texts = np.load(path), _texts(task)
        for i, key in enumerate(data["doc_keys"]):
            lo, hi = data["offsets"][i], data["offsets"][i + 1]
            lp, _ = _full_logprobs(base_model, tokenizer, texts[str(key)])
            lq, _ = _full_logprobs(quant_model, tokenizer, texts[str(key)])
            exact = (lp.exp() * (lp - lq)).sum(-1).numpy()
            assert np.all(data["kl"][lo:hi] <= exact + 1e-5)
            exact_total, bound_total = exact_total + exact.sum(), bound_total + data["kl"][lo:hi].sum()
    print(f"default model, k=32: exact KL {exact_total:.4f}, bound {bound_total:.4f}, gap {(exact_total - bound_total) / exact_total:.2%}")
    assert 0 <= exact_total - bound_total <= TOPK_GAP * exact_total
