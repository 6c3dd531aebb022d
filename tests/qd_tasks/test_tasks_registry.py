"""lm-eval sees the qd suites, they load with the right docs/metrics, and the generator is idempotent."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.config.task import TaskConfig
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from qd_tasks.metrics import weighted_perplexity

REPO = Path(__file__).resolve().parents[2]
EVAL_LANGS = ["en", "de", "fr", "zh", "ar", "he", "sw", "yo"]


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager()


def test_groups_and_subtasks_are_registered(task_manager):
    for group in ("qd_multilingual_ppl", "qd_flores_ppl", "qd_calibration_ppl"):
        assert group in task_manager.all_groups
    for lang in EVAL_LANGS:
        assert f"qd_multilingual_ppl_{lang}" in task_manager.all_subtasks
        assert f"qd_flores_ppl_{lang}" in task_manager.all_subtasks
    assert {f"qd_calibration_ppl_{lang}" for lang in ("en", "de", "he", "sw")} <= set(task_manager.all_subtasks)


def test_multilingual_group_loads_docs_and_metrics(task_manager):
    loaded = task_manager.load(["qd_multilingual_ppl"])
    tasks = loaded["tasks"]
    assert sorted(tasks) == sorted(f"qd_multilingual_ppl_{lang}" for lang in EVAL_LANGS)
    for lang in EVAL_LANGS:
        task = tasks[f"qd_multilingual_ppl_{lang}"]
        docs = list(task.test_docs())
        assert len(docs) == 5 and {doc["lang"] for doc in docs} == {lang}
        assert all(doc["source"] for doc in docs)
        assert task.OUTPUT_TYPE == "loglikelihood_rolling"
        assert task.doc_to_target(docs[0]) == docs[0]["text"]
        metrics = set(task.aggregation())
        expected = {"bits_per_byte", "byte_perplexity"} | ({"word_perplexity"} if lang != "zh" else set())
        assert metrics == expected
        assert task.aggregation()["byte_perplexity"] is weighted_perplexity


def test_flores_configs_resolve_offline(task_manager):
    expected_codes = {"en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "zh": "cmn_Hans",
                      "ar": "arb_Arab", "he": "heb_Hebr", "sw": "swh_Latn", "yo": "yor_Latn"}
    for lang, code in expected_codes.items():
        entry = task_manager.task_index[f"qd_flores_ppl_{lang}"]
        config = TaskConfig(**load_yaml(entry.yaml_path, resolve_func=True))  # no dataset download
        assert (config.dataset_path, config.dataset_name, config.test_split) == ("openlanguagedata/flores_plus", code, "devtest")
        assert config.output_type == "loglikelihood_rolling" and config.doc_to_target == "text"
        aggregations = {m["metric"]: m["aggregation"] for m in config.metric_list}
        assert ("word_perplexity" in aggregations) == (lang != "zh")
        assert aggregations["byte_perplexity"] is weighted_perplexity
    group = load_yaml(task_manager.task_index["qd_flores_ppl"].yaml_path)
    assert group["task"] == [f"qd_flores_ppl_{lang}" for lang in expected_codes]


@pytest.mark.integration
def test_committed_yamls_equal_generator_output():
    proc = subprocess.run([sys.executable, "scripts/generate_tasks.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generator_adds_any_flores_language():
    generator = runpy.run_path(str(REPO / "scripts" / "generate_tasks.py"))
    files = generator["flores_suite"](["xho_Latn", "kea_Latn", "lao_Laoo"])
    assert "qd_flores_ppl_xh.yaml" in files  # known language: ISO 639-1 suffix
    assert "dataset_name: kea_Latn" in files["qd_flores_ppl_kea_Latn.yaml"]  # unknown: FLORES+ code suffix
    assert "word_perplexity" not in files["qd_flores_ppl_lao_Laoo.yaml"]  # Lao script: no word spaces
    with pytest.raises(ValueError, match="--flores-lang must be a FLORES"):
        generator["flores_codes"](["xhosa"])
