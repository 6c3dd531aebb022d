"""`qd-hf` through the real lm_eval CLI on tiny random models.

What ``QDHFLM`` checks before loading and records after, without evaluating: the ``pretrained``
path rule, the default model and its note, the scoring record, ``save_to`` (refusals, the saved
report's model source), a model object passed as ``pretrained``, and the tokenizer default
outside rolling scoring.

``save_to`` through the real ``lm_eval`` command (issue 19): the folder is replaced by
``qd_tasks.folder_swap.replace_folder`` — a link stays a link, a failed swap leaves the folder as it
was, and a folder holding the source model is refused before loading."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qd_models.default_model import DEFAULT_MODEL_NOTE
from qd_models.qd_hf import QDHFLM

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def _bpb(results: dict, lang: str) -> float:
    return results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"]


@pytest.mark.integration
def test_cli_method_none_equals_plain_hf(tiny_model_dir, lm_eval_cli, tmp_path):
    """The real CLI in subprocesses, as a user runs it."""
    path = tiny_model_dir("llama")
    common = ["--tasks", "qd_multilingual_ppl", "--device", "cpu", "--batch_size", "4"]
    hf = lm_eval_cli(["--model", "hf", "--model_args", f"pretrained={path}", *common], tmp_path / "hf")
    qd = lm_eval_cli(
        ["--model", "qd-hf", "--model_args", f"pretrained={path},method=none", *common], tmp_path / "qd"
    )
    _assert_same_metrics(hf, qd)
    block = qd["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == "none"
    assert block["baseline_note"] is None  # a user model, not the dequantized-GGUF default


@pytest.mark.parametrize("arch", ["gpt2", "bloom"])
def test_method_none_equals_plain_hf_in_process(arch, tiny_model_dir, evaluate_in_process):
    path = tiny_model_dir(arch)
    hf = evaluate_in_process("hf", f"pretrained={path}", ["qd_multilingual_ppl"])
    qd = evaluate_in_process("qd-hf", f"pretrained={path},method=none", ["qd_multilingual_ppl"])
    _assert_same_metrics(hf, qd)
    # a random byte-level model: about 8 bits per byte, finite, on every language
    assert all(math.isfinite(_bpb(qd, lang)) and 4 < _bpb(qd, lang) < 12 for lang in LANGS)


def _assert_same_metrics(hf: dict, qd: dict) -> None:
    """Equal up to float32 round-off of differently padded batches (qd-hf batches documents longest
    first): perplexities, exp(mean negative log-likelihood), are compared by their logarithm, as the
    log-likelihood metrics are (a random model's word perplexity is ~1e28: exp amplifies round-off)."""
    for lang in LANGS:
        task = f"qd_multilingual_ppl_{lang}"
        for metric, value in hf["results"][task].items():
            if isinstance(value, float):
                got = qd["results"][task][metric]
                if "perplexity" in metric:
                    got, value = math.log(got), math.log(value)
                assert got == pytest.approx(value, rel=1e-6, abs=1e-6), (task, metric)


def test_random_model_finishes_group_with_word_perplexity(tiny_model_dir, evaluate_in_process):
    results = evaluate_in_process(
        "qd-hf", f"pretrained={tiny_model_dir('gpt2')}", ["qd_multilingual_ppl"], limit=2
    )
    en = results["results"]["qd_multilingual_ppl_en"]
    assert en["word_perplexity,none"] > 1  # a number or inf, never a crash
    assert "word_perplexity,none" not in results["results"]["qd_multilingual_ppl_zh"]


def test_unknown_method_fails_before_loading(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ValueError) as err:
        QDHFLM(pretrained=str(missing), method="hqq")
    message = str(err.value)
    assert "\n" not in message and "method" in message and "rtn" in message


@pytest.mark.integration
def test_cli_bad_argument_is_one_line_nonzero_exit(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "qd-hf", "--model_args",
         f"pretrained={tiny_model_dir('llama')},method=rtn,bits=9", "--tasks", "qd_multilingual_ppl_en",
         "--device", "cpu", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "bits" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()  # no half-written outputs


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


COMMON = ["--tasks", "qd_multilingual_ppl_en", "--limit", "1", "--device", "cpu"]

# lm_eval with os.rename failing once, for the move of the staged folder onto the save target (the
# second rename of the swap: the old folder is already aside)
FAILING_SECOND_RENAME = """
import os, runpy, sys
target, real_rename, failed = sys.argv.pop(1), os.rename, []
def rename(src, dst):
    if not failed and os.path.basename(os.fspath(src)).startswith(".") and os.fspath(dst) == target:
        failed.append(src)
        raise OSError("injected: the second rename fails")
    real_rename(src, dst)
os.rename = rename
sys.argv[0] = "lm_eval"
runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)
"""


def lm_eval(*args: str, prefix: tuple[str, ...] = ("-m", "lm_eval")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *prefix, *args, *COMMON], capture_output=True, text=True, timeout=600)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.integration
def test_save_to_parent_of_the_source_is_refused_before_loading(tiny_model_dir, tmp_path):
    source = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_model_dir("llama"), source)  # the source folder lies inside save_to's folder
    before = files(source)
    proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={source},method=rtn,save_to={tmp_path / 'models'},save_overwrite=true",
                   "--output_path", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith(
        f"save_to={tmp_path / 'models'} holds the input {source}; allowed: a folder outside the inputs")
    assert "Loading" not in proc.stderr and not (tmp_path / "out").exists()
    assert files(source) == before and sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest.mark.integration
def test_save_to_through_a_link_and_a_failed_swap(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    real = tmp_path / "store" / "saved"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("an earlier save")
    links = tmp_path / "links"
    links.mkdir()
    (links / "saved").symlink_to(real)
    args = f"pretrained={model},method=rtn,bits=4,save_to={links / 'saved'},save_overwrite=true"
    # the second rename fails: the old folder is put back, nothing hidden is left
    failed = lm_eval("--model", "qd-hf", "--model_args", args, "--output_path", str(tmp_path / "out1"),
                     prefix=("-c", FAILING_SECOND_RENAME, str(real)))
    assert failed.returncode != 0 and "injected: the second rename fails" in failed.stderr
    assert files(real) == {"old.txt": b"an earlier save"}
    assert sorted(p.name for p in real.parent.iterdir()) == ["saved"] and sorted(p.name for p in links.iterdir()) == ["saved"]
    # through the link: the link stays a link to the same folder, which now holds the quantized model only
    saved = lm_eval("--model", "qd-hf", "--model_args", args, "--output_path", str(tmp_path / "out2"))
    assert saved.returncode == 0, saved.stderr[-3000:]
    assert (links / "saved").is_symlink() and os.readlink(links / "saved") == str(real)
    assert {"config.json", "model.safetensors", "quant_report.json"} <= set(files(real)) and "old.txt" not in files(real)
    assert sorted(p.name for p in real.parent.iterdir()) == ["saved"] and sorted(p.name for p in links.iterdir()) == ["saved"]
