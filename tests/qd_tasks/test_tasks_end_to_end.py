"""Real ``lm_eval`` CLI runs of the qd suites on a tiny random GPT-2, checked against a direct computation."""

import json
import math
import subprocess
import sys

import pytest
from reference_passes import direct_doc_loglikelihoods

from qd_tasks.corpus import load_corpus
from qd_tasks.make_tasks import make_tasks

EVAL_LANGS = ["en", "de", "fr", "zh", "ar", "he", "sw", "yo"]


def direct_loglikelihoods(model_dir, texts):
    """Sum of log p(byte-token | <bos>, previous tokens) per text, computed with transformers directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert all(len(tokenizer(t, add_special_tokens=False).input_ids) == len(t.encode("utf-8")) for t in texts)  # one token per byte
    return direct_doc_loglikelihoods(model, tokenizer, texts)


@pytest.mark.integration
def test_multilingual_group_on_random_model(tiny_model_dir, lm_eval_cli, tmp_path):
    model_dir = tiny_model_dir("gpt2")
    output = lm_eval_cli(
        ["--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
         "--tasks", "qd_multilingual_ppl", "--device", "cpu"],
        tmp_path / "out",
    )
    results = output["results"]
    per_lang_bpb = []
    for lang in EVAL_LANGS:
        row = results[f"qd_multilingual_ppl_{lang}"]
        texts = [record["text"] for record in load_corpus("eval", langs=[lang])]
        n_bytes = sum(len(text.encode("utf-8")) for text in texts)
        expected_bpb = -sum(direct_loglikelihoods(model_dir, texts)) / n_bytes / math.log(2)
        assert row["bits_per_byte,none"] == pytest.approx(expected_bpb, rel=1e-4)
        assert row["byte_perplexity,none"] == pytest.approx(2 ** expected_bpb, rel=1e-3)
        # A random model over 259 tokens is close to uniform: about log2(259) = 8.02 bits per byte.
        assert 7.5 < row["bits_per_byte,none"] < 8.6
        word_ppl = row.get("word_perplexity,none")
        if lang == "zh":
            assert word_ppl is None
        else:
            assert word_ppl == math.inf or word_ppl > 1.0
        per_lang_bpb.append(row["bits_per_byte,none"])
    group_bpb = results["qd_multilingual_ppl"]["bits_per_byte,none"]
    assert group_bpb == pytest.approx(sum(per_lang_bpb) / len(per_lang_bpb), rel=1e-9)  # unweighted mean


@pytest.mark.integration
def test_user_corpus_round_trip(tiny_model_dir, lm_eval_cli, tmp_path, monkeypatch):
    corpus = tmp_path / "mine.jsonl"
    lines = [
        {"lang": "en", "text": "The quick brown fox jumps over the lazy dog."},
        {"lang": "en", "text": "Pack my box with five dozen liquor jugs.", "doc_id": "pangram-2"},
        {"lang": "zh", "text": "我能吞下玻璃而不伤身体。", "source": "test"},
        # One 162-byte "word": about 162 * 8 bits = 900 nats per word, past exp's limit of ~709.78.
        {"lang": "de", "text": "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft" * 2},
    ]
    corpus.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    written = make_tasks(corpus, "mycorpus", tmp_path / "tasks")
    assert {path.name for path in written} == {
        "mycorpus.jsonl", "_mycorpus_template_yaml", "_mycorpus.yaml", "mycorpus_en.yaml", "mycorpus_zh.yaml",
        "mycorpus_de.yaml",
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the YAMLs must not depend on the working directory
    model_dir = tiny_model_dir("gpt2")
    results = lm_eval_cli(
        ["--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
         "--include_path", str(tmp_path / "tasks"), "--tasks", "mycorpus", "--device", "cpu"],
        tmp_path / "out",
    )["results"]
    texts = [line["text"] for line in lines[:2]]
    expected = -sum(direct_loglikelihoods(model_dir, texts)) / sum(len(t.encode()) for t in texts) / math.log(2)
    assert results["mycorpus_en"]["bits_per_byte,none"] == pytest.approx(expected, rel=1e-4)
    assert "word_perplexity,none" in results["mycorpus_en"]
    assert "word_perplexity,none" not in results["mycorpus_zh"]
    assert results["mycorpus_de"]["word_perplexity,none"] == math.inf  # stock aggregation raises OverflowError here
    assert math.isfinite(results["mycorpus_de"]["byte_perplexity,none"])
    assert "mycorpus" in results


@pytest.mark.integration
def test_make_tasks_cli_errors_are_one_line(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"lang": "en", "text": "fine"}\n{"lang": "en", "text": broken}\n', encoding="utf-8")
    command = [sys.executable, "-m", "qd_tasks.make_tasks", str(corpus), "--name", "bad", "--out", str(tmp_path / "t")]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2
    last_line = proc.stderr.strip().splitlines()[-1]
    assert "bad.jsonl:2: invalid JSON" in last_line
    assert not (tmp_path / "t").exists()  # nothing written before validation
    proc = subprocess.run([*command[:5], "Bad-Name", "--out", str(tmp_path / "t")], capture_output=True, text=True)
    assert proc.returncode == 2 and "name must be lowercase" in proc.stderr
