"""The language table: coverage, the resource rule, FLORES+ codes and light imports."""

import subprocess
import sys

import pytest

from qd_tasks.corpus import load_corpus
from qd_tasks.languages import LANGUAGES, get_language, resource_level, whitespace_words_for

EVAL_LANGS = ["en", "de", "fr", "zh", "ar", "he", "sw", "yo"]


def test_covers_the_corpus_languages_and_more():
    corpus_langs = {record["lang"] for record in load_corpus("eval")} | {r["lang"] for r in load_corpus("calibration")}
    assert corpus_langs <= set(LANGUAGES)
    assert len(LANGUAGES) >= 30


@pytest.mark.parametrize("joshi_class, expected", [(0, "low"), (3, "low"), (4, "high"), (5, "high")])
def test_resource_rule(joshi_class, expected):
    assert resource_level(joshi_class) == expected


def test_resource_rule_rejects_bad_class():
    with pytest.raises(ValueError, match="0-5"):
        resource_level(6)


def test_eval_language_classes():
    classes = {code: LANGUAGES[code].joshi_class for code in EVAL_LANGS}
    assert classes == {"en": 5, "de": 5, "fr": 5, "zh": 5, "ar": 5, "he": 3, "sw": 2, "yo": 2}
    assert [code for code in EVAL_LANGS if LANGUAGES[code].resource == "low"] == ["he", "sw", "yo"]


def test_records_are_consistent():
    for code, record in LANGUAGES.items():
        assert record.code == code and len(code) == 2
        iso3, script = record.flores_code.split("_")
        assert len(iso3) == 3 and script == record.script and len(script) == 4
        assert record.source.startswith("Joshi et al. 2020")
        assert record.as_dict()["resource"] == record.resource


def test_whitespace_words():
    assert [code for code in EVAL_LANGS if not LANGUAGES[code].whitespace_words] == ["zh"]
    assert not any(LANGUAGES[code].whitespace_words for code in ("ja", "th", "my", "km", "vi"))
    assert whitespace_words_for("swh_Latn") and not whitespace_words_for("cmn_Hans")
    assert not whitespace_words_for("lao_Laoo") and whitespace_words_for("kea_Latn")  # not in the table: by script


def test_lookup_by_either_code_and_one_line_error():
    assert get_language("swh_Latn") is get_language("sw")
    with pytest.raises(ValueError) as error:
        get_language("xx")
    assert "\n" not in str(error.value) and "en, de" in str(error.value)


@pytest.mark.integration
def test_import_is_light():
    code = "import sys, qd_tasks, qd_tasks.languages, qd_tasks.metrics; print(sorted(m for m in ('torch', 'lm_eval', 'datasets', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
