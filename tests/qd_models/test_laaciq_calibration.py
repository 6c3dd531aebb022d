"""Calibration pass (qd_models.calibration): statistics, hooks, cache, argument checks."""

from __future__ import annotations

import json

import pytest
import torch

from qd_models.calibration import collect_activation_stats, load_calibration_texts, stats_cache_dir
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_
from qd_models.targets import quantization_targets

TEXTS = {"en": ["The cat sat on the mat.", "Quantization is lossy.", "Hi"],
         "he": ["שלום עולם", "החתול ישב על השטיח והסתכל החוצה."]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration"


@pytest.fixture
def llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir("llama")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _config(**kwargs):
    return parse_qd_args({"method": "laaciq", **kwargs})[0]


def _reference_moments(model, tokenizer, texts, name):
    """E[x^2] of ``name``'s input over the text positions of ``[BOS] + text`` (the BOS position,
    identical in every sequence, is not counted), one unpadded text at a time, full forward pass."""
    module = dict(model.named_modules())[name]
    rows = []
    handle = module.register_forward_pre_hook(lambda m, args: rows.append(args[0].detach()[0, 1:]))
    try:
        with torch.no_grad():
            for text in texts:
                ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
                model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    stacked = torch.cat(rows).double()
    return stacked.square().mean(0), stacked.shape[0]


def test_moments_match_unbatched_reference_and_hooks_are_removed(llama, cache):
    model, tokenizer = llama
    names = quantization_targets(model, _config())
    stats = collect_activation_stats(model, tokenizer, TEXTS, names, batch_size=2, progress=False)
    assert "lm_head" not in names and stats.stopped_before == "lm_head"
    for lang_index, lang in enumerate(TEXTS):
        for name in (names[0], names[-1]):  # first attention projection, last MLP projection
            expected, tokens = _reference_moments(model, tokenizer, TEXTS[lang], name)
            torch.testing.assert_close(stats.second_moments[name][lang_index], expected, rtol=1e-4, atol=1e-7)
            assert stats.tokens[lang] == tokens
    assert all(not module._forward_pre_hooks for module in model.modules())


def test_hooks_removed_when_forward_fails(llama, cache, monkeypatch):
    model, tokenizer = llama

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.model, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        collect_activation_stats(model, tokenizer, TEXTS, quantization_targets(model, _config()), progress=False)
    assert all(not module._forward_pre_hooks for module in model.modules())
    assert not cache.exists()


def test_cache_hit_miss_and_invalidation(llama, cache):
    model, tokenizer = llama
    names = quantization_targets(model, _config())
    first = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert not first.from_cache and (stats_cache_dir() / f"{first.key}.pt").is_file()
    assert stats_cache_dir() == cache
    again = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert again.from_cache and again.key == first.key and again.tokens == first.tokens
    for name in names:
        torch.testing.assert_close(again.second_moments[name], first.second_moments[name], rtol=0, atol=0)

    other_texts = {**TEXTS, "he": TEXTS["he"][:1]}  # calibration data changed
    assert not collect_activation_stats(model, tokenizer, other_texts, names, progress=False).from_cache
    fewer = collect_activation_stats(model, tokenizer, TEXTS, names[:-1], progress=False)  # modules changed
    assert not fewer.from_cache and fewer.key != first.key
    shorter = collect_activation_stats(model, tokenizer, TEXTS, names, max_length=4, progress=False)  # tokens changed
    assert not shorter.from_cache
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3  # weights changed
    changed = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert not changed.from_cache and changed.key != first.key
    assert len(list(cache.glob("*.pt"))) == 5


def test_load_calibration_texts_defaults_samples_and_errors(tmp_path):
    texts = load_calibration_texts(_config())
    assert list(texts) == ["en", "de", "he", "sw"] and all(len(group) == 10 for group in texts.values())
    assert [len(g) for g in load_calibration_texts(_config(calib_samples=3, calib_langs="sw;he")).values()] == [3, 3]
    checks = [
        ({"calib_langs": "he;yo"}, "calib_langs=yo"),
        ({"calib_data": str(tmp_path / "missing.jsonl")}, "calib_data="),
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    checks.append(({"calib_data": str(empty)}, "calib_data="))
    for kwargs, needle in checks:
        with pytest.raises(ValueError) as err:
            load_calibration_texts(_config(**kwargs))
        assert needle in str(err.value) and "\n" not in str(err.value) and "allowed" in str(err.value)


def test_user_calibration_file_and_leakage_warning(tmp_path, caplog):
    from qd_tasks.corpus import load_corpus

    leaked = load_corpus("eval", langs=["yo"])[0]["text"]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"lang": "yo", "text": leaked}, {"lang": "xx", "text": "abc"}]) + "\n")
    with caplog.at_level("WARNING"):
        texts = load_calibration_texts(_config(calib_data=str(path)))
    assert texts == {"yo": [leaked], "xx": ["abc"]}
    assert "leakage" in caplog.text


@pytest.mark.parametrize("kwargs,needle", [
    ({"method": "laaciq", "calib_mode": "median"}, "calib_mode"),
    ({"method": "laaciq", "calib_mode": "target", "calib_langs": "en;he"}, "calib_langs"),
    ({"method": "laaciq", "calib_samples": "0"}, "calib_samples"),
    ({"method": "mse", "calib_langs": "en"}, "calib_langs"),
    ({"method": "rtn", "keep_top": "1", "keep_by": "activation", "keep_top_scope": "global"}, "keep_top_scope"),
    ({"method": "laaciq", "calib_langs": "e n"}, "calib_langs"),
])
def test_bad_arguments_are_one_line_errors(kwargs, needle):
    with pytest.raises(ValueError) as err:
        parse_qd_args(kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_qd_hf_checks_calibration_data_before_loading_weights(tiny_model_dir, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from qd_models.qd_hf import QDHFLM

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights loaded before the calibration data was checked")

    monkeypatch.setattr(HFLM, "__init__", must_not_load)
    with pytest.raises(ValueError, match="calib_langs=yo"):
        QDHFLM(pretrained=str(tiny_model_dir("llama")), method="laaciq", calib_langs="yo")


def test_quantize_requires_stats_and_keep_by_activation_uses_them(llama, cache):
    model, tokenizer = llama
    config = parse_qd_args({"method": "rtn", "keep_top": "5", "keep_by": "activation"})[0]
    with pytest.raises(ValueError, match="act_stats"):
        quantize_(model, config)
    names = quantization_targets(model, config)
    stats = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    name = names[0]
    original = dict(model.named_modules())[name].weight.detach().clone()
    report = quantize_(model, config, act_stats=stats)
    layer = next(layer for layer in report["layers"] if layer["name"] == name)
    assert layer["kept_fraction"] == pytest.approx(0.05, abs=1e-3)
    from qd_models.quant.weighted import normalise_second_moments

    scores = original.abs() * normalise_second_moments(stats.inputs(name))[0].mean(1).sqrt()
    top = scores.reshape(-1).topk(round(0.05 * scores.numel())).indices
    by_magnitude = original.abs().reshape(-1).topk(top.numel()).indices
    assert set(top.tolist()) != set(by_magnitude.tolist())  # the activation ranking matters here
    quantized = dict(model.named_modules())[name].weight.detach().reshape(-1)
    torch.testing.assert_close(quantized[top], original.reshape(-1)[top], rtol=0, atol=0)  # kept exactly
    assert set(report["calibration"]["per_language"]) == {"en", "he"}


@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_minimax_report_worst_language_never_above_mean_on_calibration_data(llama, cache, granularity):
    """``<=`` per layer holds by construction (minimax falls back to ``mean``'s ratios): a
    regression test. The strict ``<`` over the layers' sum is the informative check."""
    from qd_models.engine import restore_

    model, tokenizer = llama
    extra = {"granularity": granularity, "group_size": "16"} if granularity == "group" else {}
    reports = {}
    for mode in ("mean", "minimax"):
        config = _config(calib_mode=mode, bits="3", **extra)
        stats = collect_activation_stats(model, tokenizer, TEXTS, quantization_targets(model, config), progress=False)
        originals: dict = {}
        reports[mode] = quantize_(model, config, originals_for_restore=originals, act_stats=stats)
        restore_(model, originals)
    worst = {mode: [max(layer["calibration"]["weighted_rel_error"].values()) for layer in report["layers"]]
             for mode, report in reports.items()}
    assert all(mm <= m * (1 + 1e-6) for mm, m in zip(worst["minimax"], worst["mean"]))
    assert sum(worst["minimax"]) < sum(worst["mean"])
