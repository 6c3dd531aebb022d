"""The bundled corpora (``eval`` and ``calibration`` splits) and JSONL corpus reading.

A corpus is a JSONL file with one document per line: ``lang`` and ``text`` (required),
``doc_id`` and ``source`` (optional; filled in as ``<lang>-<n>`` and the file name).
Only :func:`load_task_dataset` imports ``datasets``; the rest is standard library.
"""

from __future__ import annotations

import json
from pathlib import Path

from qd_tasks.languages import is_language_code

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("eval", "calibration")
REQUIRED_FIELDS = ("lang", "text")


def corpus_path(split: str = "eval") -> Path:
    """Path of the bundled JSONL for ``split`` (``"eval"`` or ``"calibration"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return DATA_DIR / f"{split}.jsonl"


def _check_record(record, path: Path, line_number: int) -> None:
    where = f"{path}:{line_number}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with fields {', '.join(REQUIRED_FIELDS)}")
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)} (required: {', '.join(REQUIRED_FIELDS)})")
    if not is_language_code(record["lang"]):
        raise ValueError(
            f"{where}: lang must be a language code like en, en-US, pt_BR, zh-Hant or kea_Latn "
            f"(lowercase language, Titlecase script, uppercase region), got {record['lang']!r}"
        )
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    for name in ("doc_id", "source"):
        if name in record and not isinstance(record[name], str):
            raise ValueError(f"{where}: {name} must be a string, got {type(record[name]).__name__}")
    for name in ("text", "doc_id", "source"):
        if isinstance(record.get(name), str) and not _encodes_as_utf8(record[name]):
            raise ValueError(f"{where}: {name} is not valid UTF-8 (lone surrogate); allowed: text without \\ud800-\\udfff escapes")


def _encodes_as_utf8(text: str) -> bool:
    """False for a string holding a lone surrogate (a JSON ``\\ud800`` escape): it has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_corpus_file(path: str | Path) -> list[dict]:
    """Validated records ``{lang, doc_id, text, source}`` of a JSONL corpus, in file order.

    Blank lines are skipped. Raises a one-line ``ValueError`` naming the file and line for
    invalid UTF-8 or JSON, a lone surrogate escape, a missing or empty field, a ``lang`` that is not a language code
    (:data:`qd_tasks.languages.LANG_CODE`), a duplicate ``doc_id``, or a file with no records.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus file {path} does not exist")
    records: list[dict] = []
    seen_ids: set[str] = set()
    counts: dict[str, int] = {}
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid UTF-8 (byte {error.start + 1} of the line); allowed: UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({error.msg})") from None
            _check_record(record, path, line_number)
            lang = record["lang"]
            doc_id = record.get("doc_id", f"{lang}-{counts.get(lang, 0)}")
            if doc_id in seen_ids:
                raise ValueError(f"{path}:{line_number}: duplicate doc_id {doc_id!r}")
            seen_ids.add(doc_id)
            counts[lang] = counts.get(lang, 0) + 1
            records.append(
                {"lang": lang, "doc_id": doc_id, "text": record["text"], "source": record.get("source", path.name)}
            )
    if not records:
        raise ValueError(f"corpus file {path} has no records (expected JSON lines with fields {', '.join(REQUIRED_FIELDS)})")
    return records


def _filter_langs(records: list[dict], langs, origin: str) -> list[dict]:
    if langs is None:
        return records
    langs = [langs] if isinstance(langs, str) else list(langs)
    available = sorted({record["lang"] for record in records})
    unknown = [lang for lang in langs if lang not in available]
    if unknown:
        raise ValueError(f"langs must be among {', '.join(available)} for {origin}, got {', '.join(unknown)}")
    return [record for record in records if record["lang"] in langs]


def load_corpus(split: str = "eval", langs=None) -> list[dict]:
    """Records ``{lang, doc_id, text, source}`` of a bundled split, optionally only ``langs``."""
    return _filter_langs(read_corpus_file(corpus_path(split)), langs, f"split {split!r}")


def load_task_dataset(corpus_split=None, corpus_file=None, corpus_lang=None, **metadata):
    """``custom_dataset`` hook for the task YAMLs: a ``DatasetDict`` with one ``test`` split.

    Exactly one of ``corpus_split`` (a bundled split) or ``corpus_file`` (an absolute JSONL
    path) selects the corpus; ``corpus_lang`` keeps one language. lm-eval passes the task
    metadata and the model arguments as extra keywords; they are ignored.
    """
    import datasets

    if (corpus_split is None) == (corpus_file is None):
        raise ValueError("dataset_kwargs must set exactly one of corpus_split (eval, calibration) or corpus_file")
    if corpus_split is not None:
        records, origin = read_corpus_file(corpus_path(corpus_split)), f"split {corpus_split!r}"
    else:
        records, origin = read_corpus_file(corpus_file), str(corpus_file)
    if corpus_lang is not None:
        records = _filter_langs(records, [corpus_lang], origin)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})
