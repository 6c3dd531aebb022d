"""What a perplexity score is, checked against direct forward passes that do not use lm-eval.

A rolling document must be scored as exactly ``[BOS] + tokenizer.encode(text,
add_special_tokens=False)``: one BOS as context, every text token scored once, log-probs summed
in float32 or wider whatever the model dtype. The tokenizer here prepends ``<bos>`` itself, as
Gemma's does, which is what made lm-eval 0.4.13 score ``<bos>`` after ``<bos>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference_passes import direct_doc_loglikelihoods

from qd_tasks.corpus import load_corpus

LANGS = ["en", "he"]


def _samples(output: Path, task: str) -> dict[str, float]:
    """doc_id -> log-likelihood from lm-eval's ``samples_<task>_*.jsonl``."""
    (path,) = sorted(output.rglob(f"samples_{task}_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["doc"]["doc_id"]: row["bits_per_byte"][0] for row in rows}


def _texts(lang: str) -> dict[str, str]:
    return {record["doc_id"]: record["text"] for record in load_corpus("eval", langs=[lang])}


def _load(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.integration
def test_bos_adding_tokenizer_is_scored_once_through_the_real_cli(tiny_model_dir, lm_eval_cli, tmp_path):
    model_dir = tiny_model_dir("llama", add_bos=True)
    tasks = ",".join(f"qd_multilingual_ppl_{lang}" for lang in LANGS)
    common = ["--tasks", tasks, "--device", "cpu", "--log_samples", "--batch_size", "4"]
    lm_eval_cli(["--model", "qd-hf", "--model_args", f"pretrained={model_dir},dtype=float32", *common], tmp_path / "qd")
    lm_eval_cli(["--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32", *common], tmp_path / "hf")
    model, tokenizer = _load(model_dir)
    for lang in LANGS:
        task = f"qd_multilingual_ppl_{lang}"
        texts = _texts(lang)
        expected = dict(zip(texts, direct_doc_loglikelihoods(model, tokenizer, list(texts.values()))))
        scored = _samples(tmp_path / "qd", task)
        assert scored.keys() == expected.keys()
        for doc_id, value in scored.items():
            assert value == pytest.approx(expected[doc_id], rel=1e-4), doc_id
        # lm-eval's own hf scores <bos> after <bos> as one more token: the bug this guards against
        stock = _samples(tmp_path / "hf", task)
        assert all(stock[d] < expected[d] - 1.0 for d in expected)


def test_hf_with_add_bos_token_false_is_the_matching_baseline(tiny_model_dir, evaluate_in_process):
    model_dir = tiny_model_dir("llama", add_bos=True)
    tasks = [f"qd_multilingual_ppl_{lang}" for lang in LANGS]
    qd = evaluate_in_process("qd-hf", f"pretrained={model_dir},dtype=float32", tasks)["results"]
    hf = evaluate_in_process("hf", f"pretrained={model_dir},dtype=float32,add_bos_token=False,softmax_dtype=float32", tasks)["results"]
    for task in tasks:
        assert qd[task]["bits_per_byte,none"] == pytest.approx(hf[task]["bits_per_byte,none"], rel=1e-9)


def test_bf16_scores_are_summed_in_float32_and_keep_the_degradation(tiny_model_dir, evaluate_in_process):
    """In bf16, HFLM's default sums bf16 log-probs (``-1192.0`` for baseline and RTN W4 alike)."""
    model_dir = tiny_model_dir("llama", add_bos=True)
    task = "qd_multilingual_ppl_en"
    bpb = {}
    for dtype in ("bfloat16", "float32"):
        for method in ("none", "rtn"):
            results = evaluate_in_process("qd-hf", f"pretrained={model_dir},dtype={dtype},method={method},bits=4"
                                          if method != "none" else f"pretrained={model_dir},dtype={dtype}", [task],
                                          log_samples=True)
            bpb[dtype, method] = results["results"][task]["bits_per_byte,none"]
            if method == "none" and dtype == "bfloat16":
                samples = {s["doc"]["doc_id"]: s["bits_per_byte"][0] for s in results["samples"][task]}
    assert bpb["bfloat16", "rtn"] != bpb["bfloat16", "none"]
    d_bf16 = bpb["bfloat16", "rtn"] / bpb["bfloat16", "none"] - 1
    d_fp32 = bpb["float32", "rtn"] / bpb["float32", "none"] - 1
    # a random tiny model degrades by a fraction of a percent; bf16 weights move it by < 0.05 pp
    assert d_fp32 != 0 and d_bf16 == pytest.approx(d_fp32, abs=5e-4)
    model, tokenizer = _load(model_dir, torch.bfloat16)
    texts = _texts("en")
    for doc_id, expected in zip(texts, direct_doc_loglikelihoods(model, tokenizer, list(texts.values()))):
        assert samples[doc_id] == pytest.approx(expected, rel=1e-4)


def test_rolling_documents_are_batched_longest_first_and_returned_in_request_order(tiny_model_dir):
    """Scores equal a direct forward pass in request order, whatever the batching; the model sees
    batches of length-sorted documents: padded tokens = sum over batches of size x longest, computed
    here from the sorted lengths (lm-eval's request order pads more)."""
    from lm_eval.api.instance import Instance

    from qd_models.qd_hf import QDHFLM

    model_dir = tiny_model_dir("llama", add_bos=True)
    texts = [text for lang in LANGS for text in _texts(lang).values()]
    texts = texts[::2] + texts[1::2]  # lengths in no particular order
    requests = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    lm = QDHFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=3)
    model, tokenizer = _load(model_dir)
    expected = direct_doc_loglikelihoods(model, tokenizer, texts)
    call = lm._model_call
    padded = []
    lm._model_call = lambda inps, **kw: padded.append(inps.numel()) or call(inps, **kw)
    by_sort = {}
    for sort in (True, False):
        padded.clear()
        lm.sort_rolling_by_length = sort
        scores = lm.loglikelihood_rolling(requests, disable_tqdm=True)
        assert scores == pytest.approx(expected, rel=1e-4)
        by_sort[sort] = sum(padded)
    lengths = sorted((len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts), reverse=True)
    assert by_sort[True] == sum(len(lengths[i:i + 3]) * lengths[i] for i in range(0, len(lengths), 3))
    assert by_sort[True] < by_sort[False]
