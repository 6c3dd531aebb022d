"""What ``QDHFLM`` checks before loading and records after, without evaluating: the ``pretrained``
path rule, the default model and its note, the scoring record, ``save_to`` (refusals, the saved
report's model source), a model object passed as ``pretrained``, and the tokenizer default
outside rolling scoring."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from qd_models.default_model import DEFAULT_MODEL_NOTE


@pytest.mark.parametrize(("pretrained", "refused"), [
    ("/nonexistent-qd-model", True),
    ("./nonexistent-qd-model", True),
    ("../nonexistent-qd-model", True),
    ("~/nonexistent-qd-model", True),
    ("a/b/nonexistent-qd-model", True),  # more than one "/": a path, not a hub id
    ("org/nonexistent-qd-model", False),  # a hub id: resolved by transformers, not here
    ("nonexistent-qd-model", False),
])
def test_pretrained_written_as_a_missing_path_is_refused_in_one_line(pretrained, refused):
    from qd_models.qd_hf import check_pretrained_path

    if not refused:
        assert check_pretrained_path(pretrained) is None
        return
    with pytest.raises(ValueError) as err:
        check_pretrained_path(pretrained)
    assert str(err.value).startswith(f"pretrained={pretrained} does not exist; allowed:") and "\n" not in str(err.value)


def test_qd_hf_applies_the_path_rule_before_loading(monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from qd_models.qd_hf import QDHFLM

    def no_loading(*args, **kwargs):
        raise AssertionError("HFLM started loading")

    monkeypatch.setattr(HFLM, "__init__", no_loading)
    with pytest.raises(ValueError, match=r"^pretrained=\./nonexistent-qd-model does not exist; allowed:"):
        QDHFLM(pretrained="./nonexistent-qd-model", device="cpu")


def test_existing_paths_and_model_objects_pass_the_path_rule(tmp_path):
    from qd_models.qd_hf import check_pretrained_path

    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for pretrained in (str(nested), str(tmp_path), object()):
        assert check_pretrained_path(pretrained) is None


def test_without_pretrained_the_default_model_is_loaded_and_noted(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """The default model's folder (a stand-in here: a tiny model with the default model's marker
    file), the lm_eval CLI's device default (cuda when available, else cpu) and the baseline note
    in the log and the results block."""
    from qd_models import qd_hf
    from qd_models.default_model import _MARKER

    folder = tmp_path / "default"
    shutil.copytree(tiny_model_dir("llama"), folder)
    (folder / _MARKER).write_text("{}")
    monkeypatch.setattr(qd_hf, "default_model_path", lambda: folder)
    caplog.set_level(logging.WARNING, logger="qd_models.qd_hf")
    lm = qd_hf.QDHFLM(dtype="float32")
    assert lm.pretrained == str(folder) and str(lm.device) == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert [r.getMessage() for r in caplog.records if r.name == "qd_models.qd_hf"] == [f"qd-hf: {DEFAULT_MODEL_NOTE}"]
    block = lm.get_model_info()["quant_disparity"]
    assert block["baseline_note"] == DEFAULT_MODEL_NOTE and block["model_source"] == str(folder)
    assert block["quant_report"] is None and block["quant_totals"] is None and "fidelity" not in block


def test_scoring_record_save_overwrite_and_the_saved_report(tiny_model_dir, tmp_path, caplog):
    """A user model (no note), ``dtype`` given as a torch dtype (recorded as its string), RTN W4
    saved over a non-empty folder with ``save_overwrite=true``; the saved report names the model
    folder it came from, as the results block does."""
    from qd_models.qd_hf import QDHFLM

    model_dir = str(tiny_model_dir("llama", add_bos=True))
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old.txt").write_text("replaced")
    caplog.set_level(logging.INFO, logger="qd_models.qd_hf")
    lm = QDHFLM(pretrained=model_dir, device="cpu", dtype=torch.float32, method="rtn", bits=4, save_to=str(target), save_overwrite="true")
    assert lm.model_note is None
    assert lm.scoring == {"dtype": "torch.float32", "add_bos_token": None, "max_length": None, "revision": None,
                          "prefix_token_id": 1, "softmax_dtype": "float32", "trust_remote_code": None, "rolling": "prefix+text"}
    saved = json.loads((target / "quant_report.json").read_text())
    assert saved["model_source"] == model_dir and saved["totals"] == lm.quant_report["totals"]
    assert not (target / "old.txt").exists()
    assert f"qd-hf: quantized model saved to {target}" in [r.getMessage() for r in caplog.records if r.name == "qd_models.qd_hf"]
    block = lm.get_model_info()["quant_disparity"]
    assert block["baseline_note"] is None and block["model_source"] == model_dir
    # every linear weight of the 2 decoder blocks: q, o (64x64), k, v (2 of 4 heads: 32x64), gate, up, down (64x128)
    assert block["quant_totals"]["params_quantized"] == 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128) and block["quant_report"]["totals"] == block["quant_totals"]
    # outside rolling scoring the tokenizer's own default holds: this one prepends <bos> (id 1)
    assert lm.tok_encode("ab")[0] == 1 and lm.tok_encode("ab", add_special_tokens=False)[0] != 1
    assert lm.tok_encode("abcd", left_truncate_len=2) == lm.tok_encode("abcd")[-2:] and len(lm.tok_encode("abcd")) == 5


@pytest.mark.parametrize(("extra", "message"), [
    ({"save_to": "MODEL"}, "is the source model folder"),
    ({"granularity": "group", "group_size": "48"}, "group_size=48 does not divide hidden_size=64"),
    ({"keep_layers": "2"}, r"keep_layers=\[2\] is out of range"),
])
def test_model_dependent_errors_come_before_loading_weights(extra, message, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from qd_models.qd_hf import QDHFLM

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    model_dir = str(tiny_model_dir("llama"))
    kwargs = {name: model_dir if value == "MODEL" else value for name, value in extra.items()}
    with pytest.raises(ValueError, match=message) as err:
        QDHFLM(pretrained=model_dir, device="cpu", method="rtn", bits=4, **kwargs)
    assert "\n" not in str(err.value)


def test_a_model_object_as_pretrained_is_quantized_and_saved_without_a_source(tiny_model_dir, tmp_path):
    """``pretrained`` may be a loaded model (programmatic use): no path checks on it, and the
    saved report and results record no model source."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.qd_hf import QDHFLM

    model_dir = tiny_model_dir("llama")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    lm = QDHFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), device="cpu", method="rtn", bits=3,
                save_to=str(tmp_path / "saved"))
    assert lm.model is model and not torch.equal(model.model.layers[0].mlp.down_proj.weight, before)
    assert json.loads((tmp_path / "saved" / "quant_report.json").read_text())["model_source"] is None
    assert lm.model_note is None and lm.get_model_info()["quant_disparity"]["model_source"] is None


def test_fidelity_needs_a_causal_model_and_rolling_state_is_reset(tiny_model_dir, tmp_path):
    """With ``fidelity_out``, rolling scoring on a seq2seq model is refused in one line (several
    processes are allowed since data-parallel fidelity: ``test_data_parallel.py``); afterwards the
    tokenizer's default (a <bos>) holds again."""
    from qd_models.qd_hf import QDHFLM

    lm = QDHFLM(pretrained=str(tiny_model_dir("llama", add_bos=True)), device="cpu", fidelity_out=str(tmp_path))
    kept = lm.backend
    lm.backend = "seq2seq"
    with pytest.raises(ValueError, match=r"^fidelity_\* is not allowed here; allowed: a causal model$"):
        lm.loglikelihood_rolling([])
    lm.backend = kept
    assert lm.tok_encode("ab")[0] == 1


def test_seq2seq_model_calls_pass_the_encoder_mask_and_labels(tmp_path):
    """A tiny random T5 (byte tokenizer): qd-hf's logits for (input ids, encoder mask, labels)
    equal a direct forward pass of the same model."""
    from transformers import T5Config, T5ForConditionalGeneration

    from qd_models.qd_hf import QDHFLM
    from qd_models.tiny_models import BYTE_VOCAB_SIZE, build_byte_tokenizer

    torch.manual_seed(0)
    config = T5Config(vocab_size=BYTE_VOCAB_SIZE, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
                      pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    build_byte_tokenizer().save_pretrained(tmp_path)
    lm = QDHFLM(pretrained=str(tmp_path), device="cpu", dtype="float32")
    assert lm.backend == "seq2seq"
    inps, labels = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]]), torch.tensor([[12, 13], [14, 15]])
    mask = (inps != 0).long()
    direct = T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = direct(input_ids=inps, attention_mask=mask, labels=labels).logits
    torch.testing.assert_close(lm._model_call(inps, attn_mask=mask, labels=labels), expected, rtol=0, atol=1e-6)
