"""Language families (Glottolog 5.1 top-level families) of the UDHR corpus' ISO 639-3 codes.

``qd_tasks/data/udhr_families.tsv`` is written by ``scripts/make_language_families.py`` from
Glottolog 5.1's CLDF ``languages.csv`` (Hammarström, Forkel, Haspelmath & Bank 2024,
https://glottolog.org, CC BY 4.0). ``isolate`` marks a language without a family; a code
Glottolog does not list has no entry (family unknown). Standard library only.
"""

from __future__ import annotations

import functools
from pathlib import Path

FAMILIES_PATH = Path(__file__).resolve().parent / "data" / "udhr_families.tsv"
HEADER_LINES = (
    "Glottolog 5.1 top-level family per ISO 639-3 code of the bundled UDHR corpus.",
    "Source: Hammarström, Forkel, Haspelmath & Bank 2024, Glottolog 5.1, https://glottolog.org,",
    "CLDF table cldf/languages.csv of https://github.com/glottolog/glottolog-cldf (tag v5.1); CC BY 4.0.",
    "Written by scripts/make_language_families.py; 'isolate' = no family.",
)
ISOLATE = "isolate"


@functools.lru_cache(maxsize=1)
def language_families() -> dict[str, str]:
    """{iso639_3: Glottolog family name (or ``isolate``)}."""
    out = {}
    with open(FAMILIES_PATH, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or line.startswith("iso639_3\t") or not line.strip():
                continue
            iso, _glottocode, family = line.rstrip("\n").split("\t")
            out[iso] = family
    return out


def language_family(iso639_3: str) -> str | None:
    """The Glottolog family of an ISO 639-3 code, ``isolate``, or None when Glottolog does not list it."""
    return language_families().get(iso639_3)
