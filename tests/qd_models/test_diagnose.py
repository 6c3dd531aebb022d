"""qd_models.diagnose: weight statistics vs scipy, fertility vs the corpus, and bit-identical
quantized weights across separate processes (what data-parallel ranks rely on)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from qd_models.runners.diagnose import diagnose, fertility_rows, layer_weight_stats, plot_fertility, plot_weight_stats, task_documents, weights_sha256


class _TwoLayers(nn.Module):
    def __init__(self, first: torch.Tensor, second: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)])
        for layer, weight in zip(self.layers, (first, second)):
            layer.weight = nn.Parameter(weight)


def test_weight_stats_match_scipy_and_counting():
    from scipy import stats

    ones = torch.ones(100, 100)
    ones[:, ::2] = -1.0  # two-point distribution: excess kurtosis exactly -2, no outliers
    spiky = ones.clone()
    spiky[3, 4] = 100.0  # one weight far beyond 6 sigma
    rows = layer_weight_stats(_TwoLayers(ones, spiky))
    assert [r["name"] for r in rows] == ["layers.0", "layers.1"] and [r["block"] for r in rows] == [0, 1]
    assert rows[0]["kurtosis"] == pytest.approx(-2.0, abs=1e-5)
    assert rows[0]["outlier_ratio_6sigma"] == 0.0
    values = spiky.flatten().double().numpy()
    assert rows[1]["kurtosis"] == pytest.approx(stats.kurtosis(values, fisher=True, bias=True), rel=1e-4)
    assert rows[1]["sigma"] == pytest.approx(values.std(), rel=1e-5)
    assert rows[1]["max_over_sigma"] == pytest.approx(abs(100.0 - values.mean()) / values.std(), rel=1e-5)
    assert rows[1]["outlier_ratio_6sigma"] == pytest.approx(1 / 10_000)


def test_fertility_of_a_byte_tokenizer_is_one_token_per_byte(tiny_model_dir):
    from transformers import AutoTokenizer

    from qd_tasks.corpus import load_corpus

    texts, word_languages = task_documents(["qd_multilingual_ppl"])
    rows = {r["lang"]: r for r in fertility_rows(texts, word_languages, AutoTokenizer.from_pretrained(tiny_model_dir("llama")))}
    corpus = load_corpus("eval")
    assert sorted(rows) == sorted({r["lang"] for r in corpus})
    for lang, row in rows.items():
        docs = [r["text"] for r in corpus if r["lang"] == lang]
        assert row["n_docs"] == len(docs)
        assert row["n_bytes"] == sum(len(t.encode("utf-8")) for t in docs)
        assert row["tokens_per_byte"] == 1.0  # no merges: one token per UTF-8 byte
    assert rows["zh"]["n_words"] is None and rows["zh"]["tokens_per_word"] is None  # Han: no word spaces
    assert word_languages == set(rows) - {"zh"}  # the tasks that score word_perplexity
    en_words = sum(len(r["text"].split()) for r in corpus if r["lang"] == "en")
    assert rows["en"]["tokens_per_word"] == pytest.approx(rows["en"]["n_bytes"] / en_words)
    fig, ax = plot_fertility(list(rows.values()))
    assert len(ax.patches) == len(rows)
    fig2, axes = plot_weight_stats(layer_weight_stats(_TwoLayers(torch.randn(8, 8), torch.randn(8, 8))))
    assert len(axes) == 2


@pytest.mark.integration
def test_quantized_weights_are_bit_identical_across_processes(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("llama")
    quant = "method=aciq,bits=3,granularity=group,group_size=32,keep_top=1"
    digests = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        cmd = [sys.executable, "-m", "qd_models.diagnose", "--model_args", f"pretrained={model_dir}", "--quant_args", quant,
               "--device", "cpu", "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        digests.append(json.loads((out / "summary.json").read_text())["weights_sha256"])
    in_process = diagnose(f"pretrained={model_dir}", [], tmp_path / "here", quant, device="cpu")
    baseline = diagnose(f"pretrained={model_dir}", [], tmp_path / "base", device="cpu")
    assert digests[0] == digests[1] == in_process["weights_sha256"]
    assert baseline["weights_sha256"] != digests[0]  # the quantization changed the weights
    rows = list(csv.DictReader((tmp_path / "here" / "weight_stats.csv").open()))
    assert {r["module"] for r in rows} == {"embedding", "attention", "mlp", "lm_head"}


def test_weights_sha256_sees_a_single_bit():
    model = _TwoLayers(torch.ones(4, 4), torch.ones(4, 4))
    before = weights_sha256(model)
    with torch.no_grad():
        model.layers[1].weight[0, 0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    assert weights_sha256(model) != before


def test_bad_arguments_fail_before_loading(tmp_path):
    with pytest.raises(ValueError, match=r"quant_args keys \['bitz'\] are not quantization args"):
        diagnose("pretrained=/nonexistent", [], tmp_path, "method=rtn,bitz=4")
    with pytest.raises(ValueError, match="model_args method is not allowed in diagnose"):
        diagnose("pretrained=/nonexistent,method=rtn", [], tmp_path)
    with pytest.raises(ValueError, match=r"bits=9 is not allowed for method=rtn"):
        diagnose("pretrained=/nonexistent", [], tmp_path, "method=rtn,bits=9")
    with pytest.raises(ValueError, match=r"tasks=\['no_such_task'\] are unknown"):
        task_documents(["no_such_task"])
