"""Write ``qd_tasks/data/udhr_families.tsv``: the Glottolog top-level family of every ISO 639-3
code in the bundled UDHR corpus (deterministic).

    git clone https://github.com/glottolog/glottolog-cldf && git -C glottolog-cldf checkout v5.1
    python scripts/make_language_families.py --languages glottolog-cldf/cldf/languages.csv
    python scripts/make_language_families.py --languages .../languages.csv --check   # exit 1 if the committed file differs

Source: Glottolog 5.1 as CLDF (Hammarström, Forkel, Haspelmath & Bank 2024, Max Planck Institute
for Evolutionary Anthropology, https://glottolog.org, CC BY 4.0), table ``cldf/languages.csv``
(columns ``ISO639P3code``, ``Glottocode``, ``Family_ID``, ``Name``). Family = the name of the row
whose ID is the language's ``Family_ID``; a language without one is an isolate, written
``isolate``. An ISO code Glottolog does not list (``und``, a retired or macrolanguage code) is left
out (family unknown).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from qd_tasks.families import FAMILIES_PATH, HEADER_LINES
from qd_tasks.udhr import udhr_languages


def family_rows(languages_csv: Path) -> list[tuple[str, str, str]]:
    """(iso639_3, glottocode, family) for each UDHR ISO code Glottolog lists, sorted by code."""
    with open(languages_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_id = {row["ID"]: row for row in rows}
    by_iso = {row["ISO639P3code"]: row for row in rows if row["ISO639P3code"]}
    out = []
    for iso in sorted({meta["iso639_3"] for meta in udhr_languages().values()}):
        row = by_iso.get(iso)
        if row is None:
            continue
        family = by_id[row["Family_ID"]]["Name"] if row["Family_ID"] else "isolate"
        out.append((iso, row["Glottocode"], family))
    return out


def render(rows: list[tuple[str, str, str]]) -> str:
    lines = [*(f"# {line}" for line in HEADER_LINES), "iso639_3\tglottocode\tfamily"]
    return "\n".join(lines + ["\t".join(row) for row in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", required=True, type=Path, help="Glottolog 5.1 CLDF cldf/languages.csv")
    parser.add_argument("--check", action="store_true", help="compare with the committed file; write nothing")
    args = parser.parse_args(argv)
    if not args.languages.is_file():
        print(f"--languages must be Glottolog's cldf/languages.csv, got {args.languages} (not a file)", file=sys.stderr)
        return 2
    rows = family_rows(args.languages)
    text = render(rows)
    if args.check:
        same = FAMILIES_PATH.is_file() and FAMILIES_PATH.read_text(encoding="utf-8") == text
        print("udhr_families.tsv up to date" if same else "udhr_families.tsv differs from the generator")
        return 0 if same else 1
    FAMILIES_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {FAMILIES_PATH.name}: {len(rows)} ISO codes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
