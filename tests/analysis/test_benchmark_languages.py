"""Benchmark task name -> (suite, language): the built-in table, lm-eval's own installed task YAMLs,
and the user extension (``--task-lang-map``, ``register_task_language``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis.task_languages import (
    clear_user_task_languages,
    load_task_language_map,
    normalize_language,
    register_task_language,
    task_language,
)

EXPECTED = {
    "belebele_heb_Hebr": ("belebele", "he"),
    "belebele_swh_Latn": ("belebele", "sw"),
    "belebele_zho_Hans": ("belebele", "zh"),
    "belebele_zho_Hant": ("belebele", "zho_Hant"),  # traditional script: not the zh of our tasks
    "belebele_arb_Arab": ("belebele", "ar"),
    "belebele_arb_Latn": ("belebele", "arb_Latn"),  # romanised Arabic is a different test
    "belebele_hin_Latn": ("belebele", "hin_Latn"),
    "belebele_pes_Arab": ("belebele", "fa"),
    "belebele_yor_Latn": ("belebele", "yo"),
    "belebele_kea_Latn": ("belebele", "kea_Latn"),  # unknown to qd_tasks: FLORES code kept
    "xnli_sw": ("xnli", "sw"),
    "xcopa_sw": ("xcopa", "sw"),
    "xcopa_qu": ("xcopa", "qu"),
    "xstorycloze_sw": ("xstorycloze", "sw"),
    "xwinograd_zh": ("xwinograd", "zh"),
    "xwinograd_jp": ("xwinograd", "ja"),
    "paws_fr": ("pawsx", "fr"),
    "pawsx_fr": ("pawsx", "fr"),
    "mgsm_direct_sw": ("mgsm_direct", "sw"),
    "mgsm_native_cot_te": ("mgsm_native_cot", "te"),
    "mgsm_en_cot_bn": ("mgsm_en_cot", "bn"),
    "global_mmlu_full_he_anatomy": ("global_mmlu_full", "he"),
    "global_mmlu_full_fil_world_religions": ("global_mmlu_full", "fil"),
    "global_mmlu_sw_stem": ("global_mmlu", "sw"),
    "global_mmlu_yo": ("global_mmlu", "yo"),
    "m_mmlu_de": ("m_mmlu", "de"),
    "arc_hy": ("arc_multilingual", "hy"),
    "hellaswag_ar": ("hellaswag_multilingual", "ar"),
    "truthfulqa_de_mc2": ("truthfulqa_multilingual_mc2", "de"),
    "afrixnli_swa_prompt_1": ("afrixnli_prompt_1", "sw"),
    "afrixnli_yor_prompt_3": ("afrixnli_prompt_3", "yo"),
    "lambada_openai_mt_de": ("lambada_multilingual", "de"),
    "qdbench_belebele_heb_Hebr": ("qdbench_belebele", "he"),  # any <suite>_<FLORES code>
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_builtin_table(task):
    assert task_language(task) == EXPECTED[task]


@pytest.mark.parametrize("task", ["hellaswag", "arc_easy", "arc_challenge", "mmlu_anatomy", "piqa", "gsm8k", "xnli"])
def test_english_or_unmarked_tasks_are_not_guessed(task):
    assert task_language(task) is None


def test_normalize_language_codes():
    assert normalize_language("he") == "he"
    assert normalize_language("jp") == "ja"
    assert normalize_language("heb_Hebr") == "he"
    assert normalize_language("cmn_Hans") == "zh"
    assert normalize_language("swa") == "sw"
    assert normalize_language("zho_Hant") == "zho_Hant"
    assert normalize_language("xyz") == "xyz"


def _installed_tasks(folder: str) -> dict[str, dict]:
    """{task: {"dataset_name": ...}} from the installed lm-eval task YAMLs (file text, no TaskManager)."""
    import lm_eval

    out = {}
    for path in sorted((Path(lm_eval.__file__).parent / "tasks" / folder).rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        task = re.search(r"^task:\s*(\S+)\s*$", text, re.MULTILINE)
        if task:
            name = re.search(r"^dataset_name:\s*(\S+)\s*$", text, re.MULTILINE)
            out[task.group(1)] = {"dataset_name": name.group(1) if name else None, "file": path.name}
    return out


def test_installed_belebele_yamls_resolve_to_their_languages():
    tasks = _installed_tasks("belebele")
    assert len(tasks) >= 120
    langs = {}
    for task, info in tasks.items():
        assert info["file"] == f"{task}.yaml"
        assert info["dataset_name"] == task.removeprefix("belebele_")  # the task's name says which FLORES data it reads
        suite, lang = task_language(task)
        assert suite == "belebele"
        langs[task] = lang
    assert len(set(langs.values())) == len(langs), "two belebele tasks mapped to one language"
    for task, (_, lang) in EXPECTED.items():
        if task.startswith("belebele_"):
            assert langs[task] == lang
    assert langs["belebele_eng_Latn"] == "en" and langs["belebele_deu_Latn"] == "de" and langs["belebele_fra_Latn"] == "fr"


def test_installed_xnli_and_other_yamls_resolve_to_their_languages():
    xnli = _installed_tasks("xnli")
    assert len(xnli) == 15
    for task, info in xnli.items():
        assert task_language(task) == ("xnli", info["dataset_name"])  # xnli's dataset_name is the ISO 639-1 code
    expected_suites = {"xcopa": "xcopa", "xstorycloze": "xstorycloze", "xwinograd": "xwinograd", "paws-x": "pawsx"}
    for folder, suite in expected_suites.items():
        tasks = _installed_tasks(folder)
        assert tasks, folder
        mapped = {task: task_language(task) for task in tasks}
        assert all(m is not None and m[0] == suite for m in mapped.values()), mapped
        assert len({m[1] for m in mapped.values()}) == len(mapped)
    mgsm = {task: task_language(task) for task in _installed_tasks("mgsm")}
    assert mgsm["mgsm_direct_sw"] == ("mgsm_direct", "sw") and mgsm["mgsm_native_cot_zh"] == ("mgsm_native_cot", "zh")
    assert all(m is not None for m in mgsm.values())


def test_user_map_file_and_registration(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"my_reading_test": "sw", "re:mybench_(..)_v2": {"lang": "\\1", "suite": "mybench"}}))
    rules = load_task_language_map(path)
    assert task_language("my_reading_test", rules) == ("my_reading_test", "sw")
    assert task_language("mybench_he_v2", rules) == ("mybench", "he")
    assert task_language("xnli_sw", rules) == ("xnli", "sw")
    overriding = load_task_language_map(_write(tmp_path / "o.json", {"xnli_sw": {"lang": "swh_Latn", "suite": "xnli-custom"}}))
    assert task_language("xnli_sw", overriding) == ("xnli-custom", "sw")  # user rules win; codes normalised
    try:
        register_task_language("my_other_task", "yo")
        assert task_language("my_other_task") == ("my_other_task", "yo")
    finally:
        clear_user_task_languages()
    assert task_language("my_other_task") is None


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("content", ["{not json", "[]", "{}", '{"t": 3}', '{"t": {"language": "sw"}}', '{"re:(": "sw"}', '{"t": ""}'])
def test_bad_map_file_is_one_line_error(tmp_path, content, capsys):
    from analysis.cli import main

    runs = tmp_path / "runs"
    runs.mkdir()
    code = main([str(runs), "--out", str(tmp_path / "out"), "--task-lang-map", str(_write(tmp_path / "m.json", content))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--task-lang-map" in err[0] and "Traceback" not in err[0]
