"""``qd-hf``'s calibration pass (``QDHFLM.apply_quantization``) on a tiny byte-level model: the
calibration texts are read once, tokenized as evaluation scores them (``prefix_token_id`` then
the text's own tokens, one token per UTF-8 byte), and the report records the source; a sweep's
call without texts loads them itself."""

from __future__ import annotations

import pytest

from qd_models.config import parse_qd_args
from qd_tasks.corpus import load_corpus

LANGS = ("en", "he")
SAMPLES = 2
PREFIX = 2  # <eos>: not the tokenizer's BOS (1), which is the calibration's default prefix
CALIB = {"calib_langs": "en;he", "calib_samples": str(SAMPLES)}


def _texts() -> dict[str, list[str]]:
    """The first SAMPLES texts per language of the bundled calibration split, read here."""
    return {lang: [record["text"] for record in load_corpus("calibration", langs=[lang])][:SAMPLES] for lang in LANGS}


@pytest.fixture
def tokenized(monkeypatch, tmp_path):
    """Every ``tokenize_texts`` result of the calibration pass (``{lang: [[ids...], ...]}``), in
    call order; the statistics cache goes to a fresh folder."""
    from qd_models.calibration import activations

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    seen = []
    original = activations.tokenize_texts

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(activations, "tokenize_texts", recording)
    return seen


def _expected_ids(tokenizer) -> dict[str, list[list[int]]]:
    return {lang: [[PREFIX, *tokenizer(text, add_special_tokens=False).input_ids] for text in group] for lang, group in _texts().items()}


@pytest.mark.parametrize("args", [{"method": "laaciq"}, {"method": "gptq", "group_size": "16"}])
def test_sweep_style_call_loads_the_texts_and_tokenizes_them_as_evaluation(args, tiny_model_dir, tokenized, caplog):
    """A method=none model (``quant_report`` None), then ``apply_quantization(config)`` without
    texts, as qd-sweep calls it: the calibration sequences are ``[prefix_token_id] + text bytes``,
    each language's token count is its texts' UTF-8 byte count, and the log names the config."""
    import logging

    from qd_models.qd_hf import QDHFLM

    caplog.set_level(logging.INFO, logger="qd_models.qd_hf")

    lm = QDHFLM(pretrained=str(tiny_model_dir("llama", add_bos=True)), device="cpu", dtype="float32", prefix_token_id=PREFIX)
    assert lm.quant_report is None and lm.quant_config.method == "none"
    config, _ = parse_qd_args({**args, "bits": "3", **CALIB})
    lm.apply_quantization(config)
    assert tokenized == [_expected_ids(lm.tokenizer)]
    calibration = lm.quant_report["calibration"]
    assert calibration["source"] == "bundled calibration split" and calibration["langs"] == list(LANGS)
    for lang, group in _texts().items():
        assert calibration["per_language"][lang]["tokens"] == sum(len(text.encode("utf-8")) for text in group) > 0
    logged = [r.getMessage() for r in caplog.records if r.name == "qd_models.qd_hf" and r.getMessage().startswith("qd-hf quantization: ")]
    assert len(logged) == 1 and f"method={args['method']} bits=3" in logged[0]


def test_calibration_texts_are_read_once_and_a_user_source_is_recorded(tiny_model_dir, tokenized, monkeypatch, tmp_path):
    """``calib_data=FILE``: read once (checked before loading, reused for the pass), recorded as the source."""
    import json

    from qd_models import calibration
    from qd_models.qd_hf import QDHFLM

    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"lang": lang, "text": text}) + "\n" for lang, group in _texts().items() for text in group), encoding="utf-8")
    reads = []
    original = calibration.load_calibration_texts

    def counting(config):
        reads.append(config.calib_data)
        return original(config)

    monkeypatch.setattr(calibration, "load_calibration_texts", counting)
    lm = QDHFLM(pretrained=str(tiny_model_dir("llama", add_bos=True)), device="cpu", dtype="float32", prefix_token_id=PREFIX,
                method="laaciq", bits=3, calib_data=str(data), **CALIB)
    assert reads == [str(data)]
    assert tokenized == [_expected_ids(lm.tokenizer)]
    assert lm.quant_report["calibration"]["source"] == str(data)
