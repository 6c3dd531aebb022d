"""Where the report's tables and figures are."""

from __future__ import annotations


class FilesSection:
    name = "files"

    def compute(self, analysis) -> None:
        return None

    def tables(self, result) -> dict:
        return {}

    def figures(self, result):
        return iter(())

    def markdown(self, result, figures) -> list[str]:
        return ["## Files", "", "Tables: `tables/*.csv` (long table: `tables/long_table.csv`). Figures: `figures/*.png`."]


SECTION = FilesSection()
