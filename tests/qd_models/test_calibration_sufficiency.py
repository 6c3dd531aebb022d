"""Calibration size: the Gram matrices' rank/condition against numpy, the warning threshold,
the default token target on a tiny model, and no calibration text among the evaluated texts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from qd_models.calibration.sufficiency import (
    GramReport,
    gram_rank_condition,
    texts_for_token_target,
    warn_if_few_tokens,
)
from qd_models.config import parse_qd_args


@pytest.mark.parametrize("tokens,dim", [(10, 24), (24, 24), (200, 24), (40, 64)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_and_condition_match_numpy(tokens, dim, dtype):
    rng = np.random.default_rng(tokens * dim)
    x = rng.standard_normal((tokens, dim)) * rng.uniform(0.1, 3.0, dim)  # uneven channel scales
    gram = x.T @ x / tokens  # built here, independently of the calibration pass
    stored = gram.astype(np.float32) if dtype == torch.float32 else gram
    rank, condition = gram_rank_condition(torch.from_numpy(stored))
    assert rank == np.linalg.matrix_rank(stored) == min(tokens, dim)
    if rank == dim:
        assert condition == pytest.approx(np.linalg.cond(stored.astype(np.float64)), rel=1e-6 if dtype == torch.float64 else 1e-3)
    else:
        assert condition == float("inf") and np.linalg.cond(stored.astype(np.float64)) > 1e6


def test_gram_report_per_layer_and_shared_inputs():
    x = torch.randn(30, 16, dtype=torch.float64)
    report = GramReport(tokens=30)
    first = report((x.T @ x).float())
    again = report((x.T @ x).float())  # the same input (e.g. k_proj after q_proj): reused
    assert first == again and first["calib_tokens_per_input_dim"] == 30 / 16 and first["gram_rank"] == 16
    low = report((x[:5].T @ x[:5]).float())
    assert low["gram_rank"] == np.linalg.matrix_rank((x[:5].T @ x[:5]).float().numpy()) == 5 and low["gram_rank_deficient"]
    assert report(torch.full((4, 4), float("nan")))["gram_rank"] == 0  # reported, not raised


@pytest.mark.parametrize("tokens,dim,warned", [(4 * 100 - 1, 100, True), (4 * 100, 100, False), (8 * 100, 100, False), (50, 100, True)])
def test_warning_fires_below_four_tokens_per_input_dim(caplog, tokens, dim, warned):
    with caplog.at_level(logging.WARNING, logger="qd_models.calibration.sufficiency"):
        assert warn_if_few_tokens(tokens, dim) is warned
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert f"{tokens} calibration tokens" in lines[0].getMessage() and f"({dim} inputs)" in lines[0].getMessage()


def test_token_target_selection_is_balanced_and_stops_at_the_target():
    counts = {"en": [5, 5, 5, 5], "he": [12, 12], "sw": [3]}
    # written out: one text each (en 5, he 12, sw 3: 20), sw exhausted; en 10 (25); en 15 (30)
    assert texts_for_token_target(counts, 30) == {"en": 3, "he": 1, "sw": 1}
    # one more token: he (12) now has the fewest of the open languages -> he 24 (42)
    assert texts_for_token_target(counts, 31) == {"en": 3, "he": 2, "sw": 1}
    assert texts_for_token_target(counts, 10**6) == {"en": 4, "he": 2, "sw": 1}  # the source lacks them: all
    assert texts_for_token_target(counts, 0) == {"en": 1, "he": 1, "sw": 1}


def test_default_calibration_meets_eight_times_the_widest_layer_and_leaks_nothing(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.calibration import DEFAULT_MAX_LENGTH, CalibrationBatches, evaluation_texts, load_calibration_texts
    from qd_models.calibration.sources import calibration_source_name
    from qd_models.calibration.sufficiency import calibration_texts_for_model
    from qd_tasks.corpus import corpus_path, read_corpus_file

    path = tiny_model_dir("llama")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    widest = max(m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head)
    for args in ({"method": "gptq"}, {"method": "awq", "calib_data": "udhr"}):
        config = parse_qd_args(dict(args))[0]
        texts = calibration_texts_for_model(load_calibration_texts(config), config, model, tokenizer)
        # counted as calibration counts them: text tokens after the prefix, sequences cut at DEFAULT_MAX_LENGTH
        tokens = sum(min(len(tokenizer(t, add_special_tokens=False)["input_ids"]), DEFAULT_MAX_LENGTH - 1)
                     for group in texts.values() for t in group)
        assert tokens == sum(CalibrationBatches.from_texts(tokenizer, texts).tokens.values()) >= 8 * widest
        assert len(texts) == 8 and not {t for group in texts.values() for t in group} & evaluation_texts()
        assert calibration_source_name(config) == ("bundled calibration split + udhr" if "calib_data" not in args else "udhr")
    bundled = {r["text"] for r in read_corpus_file(corpus_path("calibration"))}
    assert bundled <= {t for group in load_calibration_texts(parse_qd_args({"method": "gptq"})[0]).values() for t in group}
    # an explicit calib_samples keeps today's meaning: the bundled split's first N texts per language
    explicit = load_calibration_texts(parse_qd_args({"method": "gptq", "calib_samples": "2"})[0])
    assert list(explicit) == ["en", "de", "he", "sw"] and all(len(group) == 2 for group in explicit.values())
    assert calibration_texts_for_model(explicit, parse_qd_args({"method": "gptq", "calib_samples": "2"})[0], model, tokenizer) == explicit
