"""The parallel-text view (script- and tokenizer-fair): damage per aligned document and per English
byte (``tables/parallel_view.csv``)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import many_languages
from analysis.parallel_text import parallel_view
from analysis.report.text import md_table, num, pct


@dataclass(frozen=True)
class ParallelView:
    table: pd.DataFrame
    """:func:`analysis.parallel_text.parallel_view`."""


class ParallelSection:
    name = "parallel_view"

    def compute(self, analysis) -> ParallelView:
        table, notes = parallel_view(analysis.runset, analysis.deg, analysis.tokens)
        analysis.notes.extend(notes)
        return ParallelView(table)

    def tables(self, result: ParallelView) -> dict[str, pd.DataFrame]:
        return {"parallel_view": result.table}

    def figures(self, result: ParallelView):
        return iter(())

    def markdown(self, result: ParallelView, figures) -> list[str]:
        out = ["## Parallel-text view (script- and tokenizer-fair)", ""]
        table = result.table
        if table.empty:
            return out + ["Not computed: needs --log_samples and documents aligned across languages (including en).", ""]
        out += [("Over the documents present in every language (aligned by id). Δ bits per aligned document (= per English byte "
                 "after dividing by the English bytes of the same documents) compares damage to the same content across scripts; "
                 "Δ bits/byte understates it where a script needs more bytes (byte premium). Fertility: tokens per aligned "
                 "document relative to English (needs a tokenizer)."), ""]
        shown = table[table.groupby("suite").lang.transform("nunique") < many_languages.MIN_LANGUAGES]
        if len(shown) < len(table):
            out += ["Suites with many languages: rows in tables/parallel_view.csv only.", ""]
        rows = [[r.quant_id, r.suite, r.lang, r.n_aligned, pct(r.degradation), f"{r.delta_bpb:+.4f}", f"{r.delta_bits_per_doc:+.4g}",
                 f"{r.delta_bits_per_ref_byte:+.4f}", num(r.bytes_rel_ref, 3), num(r.fertility_rel_ref, 3)]
                for r in shown.itertuples()]
        return out + [md_table(["run", "suite", "lang", "aligned docs", "D", "Δ bits/byte", "Δ bits per aligned doc", "Δ bits per English byte",
                                "bytes rel. en (byte premium)", "tokens per aligned doc rel. en (fertility)"], rows), ""]


SECTION = ParallelSection()
