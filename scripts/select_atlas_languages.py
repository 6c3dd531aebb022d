"""Print the atlas selection (``qd_tasks.atlas``): one TSV row per language and a summary on stderr.

    python scripts/select_atlas_languages.py > atlas_languages.tsv

The rule itself lives in ``qd_tasks/atlas.py`` (deterministic: the same corpus gives the same
rows); ``scripts/generate_tasks.py`` turns the selection into ``qd_tasks/udhr_atlas_ppl/``.
"""

from __future__ import annotations

import collections
import sys

from qd_tasks.atlas import ATLAS_ARTICLES, atlas_languages

COLUMNS = ("key", "name", "iso639_3", "script", "family", "joshi_class", "chosen_by")


def main() -> int:
    chosen = atlas_languages()
    print("\t".join(COLUMNS))
    for lang in sorted(chosen, key=lambda lang: lang.key):
        print("\t".join("" if getattr(lang, column) is None else str(getattr(lang, column)) for column in COLUMNS))
    families = collections.Counter(lang.family for lang in chosen)
    print(f"{len(chosen)} languages, {len({lang.script for lang in chosen})} scripts, {len(families)} families "
          f"({', '.join(f'{name} {count}' for name, count in families.most_common(6))}, ...), "
          f"{sum(lang.joshi_class is not None for lang in chosen)} with a Joshi class; articles {', '.join(ATLAS_ARTICLES)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
