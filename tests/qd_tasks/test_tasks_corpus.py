"""The bundled corpora, their Python API and the JSONL validation."""

import json

import pytest

from qd_tasks.corpus import corpus_path, load_corpus, load_task_dataset, read_corpus_file


def test_bundled_splits_counts():
    eval_docs = load_corpus("eval")
    counts = {}
    for record in eval_docs:
        counts[record["lang"]] = counts.get(record["lang"], 0) + 1
    assert counts == {lang: 5 for lang in ["en", "de", "fr", "zh", "ar", "he", "sw", "yo"]}
    calibration = load_corpus("calibration", langs=["he", "sw"])
    assert len(calibration) == 20 and {r["lang"] for r in calibration} == {"he", "sw"}
    assert all(record["source"] and record["doc_id"] for record in eval_docs + calibration)
    assert corpus_path("calibration").name == "calibration.jsonl"


def test_eval_and_calibration_texts_are_disjoint():
    assert not {r["text"] for r in load_corpus("eval")} & {r["text"] for r in load_corpus("calibration")}


def test_bad_split_and_langs_are_one_line_errors():
    with pytest.raises(ValueError, match="split must be one of eval, calibration") as error:
        corpus_path("train")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="langs must be among") as error:
        load_corpus("calibration", langs=["yo"])
    assert "\n" not in str(error.value)


def _write(tmp_path, lines):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"lang": "en", "text": "ok"}', "{not json"], r"corpus.jsonl:2: invalid JSON"),
        (['{"lang": "en"}'], r":1: missing field\(s\) text"),
        (['{"text": "no language"}'], r":1: missing field\(s\) lang"),
        (['{"lang": "en", "text": "   "}'], r":1: text must be a non-empty string"),
        (['{"lang": "e n", "text": "x"}'], r":1: lang must be"),
        (['{"lang": "en", "text": "a", "doc_id": "d"}', '{"lang": "en", "text": "b", "doc_id": "d"}'], r":2: duplicate doc_id"),
        (["[1, 2]"], r":1: expected a JSON object"),
        (["", "   "], r"has no records"),
    ],
)
def test_invalid_corpus_files(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message) as error:
        read_corpus_file(_write(tmp_path, lines))
    assert "\n" not in str(error.value)


def test_optional_fields_are_filled(tmp_path):
    path = _write(tmp_path, [json.dumps({"lang": "en", "text": "a"}), "", json.dumps({"lang": "en", "text": "b", "source": "s"})])
    assert read_corpus_file(path) == [
        {"lang": "en", "doc_id": "en-0", "text": "a", "source": "corpus.jsonl"},
        {"lang": "en", "doc_id": "en-1", "text": "b", "source": "s"},
    ]


def test_task_dataset_hook_ignores_lm_eval_metadata():
    dataset = load_task_dataset(corpus_split="eval", corpus_lang="sw", version=1.0, pretrained="x", dtype="float32")
    assert list(dataset) == ["test"]
    assert dataset["test"]["lang"] == ["sw"] * 5
    assert set(dataset["test"].column_names) == {"lang", "doc_id", "text", "source"}
    with pytest.raises(ValueError, match="exactly one of corpus_split"):
        load_task_dataset(version=1.0)
