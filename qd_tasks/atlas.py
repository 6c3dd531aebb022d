"""The atlas selection: which UDHR declarations and articles ``qd_udhr_atlas_ppl`` evaluates (standard library only).

A fixed rule over the bundled corpus (``qd_tasks/data/udhr.jsonl.gz``) and the Glottolog families
(:mod:`qd_tasks.families`), no randomness and no hand-picked list:

1. **Candidates**: one declaration per ISO 639-3 code that has every article of
   :data:`ATLAS_ARTICLES`, a known script and a Glottolog family (not ``Artificial Language``):
   the project's canonical declaration (:data:`qd_tasks.languages.LANGUAGES` key) when there is
   one, else the declaration whose key sorts first.
2. **Project languages**: every candidate with a Joshi class (:mod:`qd_tasks.languages`).
3. **Scripts**: for each non-Latin script, candidates in :func:`stable_order` until the script
   has :data:`PER_SCRIPT` languages (or runs out).
4. **Families**: the remaining candidates round-robin over Glottolog families (families by
   number of candidates, largest first, ties by name; within a family :func:`stable_order`)
   until :data:`ATLAS_SIZE` languages.

:func:`stable_order` sorts by the SHA-256 of the declaration key, a fixed pseudo-random order
that does not depend on a seed or on Python's hash. Articles: the five short articles of
``qd_udhr8_ppl`` (never calibration articles: ``calib_data=udhr`` uses other articles).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from qd_tasks.families import language_family
from qd_tasks.languages import LANGUAGES
from qd_tasks.udhr import UDHR8_ARTICLES, load_udhr, udhr_languages

ATLAS_SUITE = "qd_udhr_atlas_ppl"
ATLAS_ARTICLES = UDHR8_ARTICLES
ATLAS_SIZE = 120
PER_SCRIPT = 4
EXCLUDED_FAMILIES = frozenset({"Artificial Language"})
LATIN = "Latn"


@dataclass(frozen=True)
class AtlasLanguage:
    """One selected declaration: key (task suffix), name, ISO 639-3, script, family, Joshi class (None: unknown), step that chose it."""

    key: str
    name: str
    iso639_3: str
    script: str
    family: str
    joshi_class: int | None
    chosen_by: str


def stable_order(keys) -> list[str]:
    """``keys`` sorted by SHA-256 of the key (a fixed pseudo-random order)."""
    return sorted(keys, key=lambda key: hashlib.sha256(key.encode("utf-8")).hexdigest())


def candidates() -> dict[str, AtlasLanguage]:
    """Step 1: {key: record} of the candidate declarations, one per ISO 639-3 code."""
    meta = udhr_languages()
    articles = set(ATLAS_ARTICLES)
    has_articles: dict[str, set] = {}
    for record in load_udhr(doc_ids=list(ATLAS_ARTICLES)):
        has_articles.setdefault(record["lang"], set()).add(record["doc_id"])
    by_iso: dict[str, list[str]] = {}
    for key, entry in meta.items():
        family = language_family(entry["iso639_3"])
        if has_articles.get(key) != articles or not entry["script"] or family is None or family in EXCLUDED_FAMILIES:
            continue
        by_iso.setdefault(entry["iso639_3"], []).append(key)
    out = {}
    for iso, keys in sorted(by_iso.items()):
        key = next((k for k in keys if k in LANGUAGES), min(keys))
        known = LANGUAGES.get(key)
        out[key] = AtlasLanguage(key, meta[key]["name"], iso, meta[key]["script"], language_family(iso),
                                 known.joshi_class if known else None, "")
    return out


@functools.lru_cache(maxsize=1)
def atlas_languages() -> tuple[AtlasLanguage, ...]:
    """The selected declarations in selection order (steps 2-4), ``chosen_by`` naming the step."""
    pool = candidates()
    chosen: dict[str, str] = {key: "project language" for key in sorted(pool) if pool[key].joshi_class is not None}
    scripts = sorted({lang.script for lang in pool.values()} - {LATIN})
    for script in scripts:
        have = sum(pool[key].script == script for key in chosen)
        for key in stable_order(k for k, lang in pool.items() if lang.script == script and k not in chosen):
            if have >= PER_SCRIPT:
                break
            chosen[key], have = f"script {script}", have + 1
    families: dict[str, list[str]] = {}
    for key in stable_order(k for k in pool if k not in chosen):
        families.setdefault(pool[key].family, []).append(key)
    queue = sorted(families.items(), key=lambda item: (-len(item[1]), item[0]))
    while len(chosen) < ATLAS_SIZE and any(keys for _, keys in queue):
        for family, keys in queue:
            if keys and len(chosen) < ATLAS_SIZE:
                chosen[keys.pop(0)] = f"family {family}"
    return tuple(AtlasLanguage(**{**pool[key].__dict__, "chosen_by": step}) for key, step in chosen.items())
