"""Baseline notes and the problems list: every file problem, skipped part and flag of the analysis."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problems:
    baseline_notes: list[str]
    lines: list[str]
    """Degradation problems, then the analysis' notes, machine paths removed."""


class ProblemsSection:
    name = "problems"

    def compute(self, analysis) -> Problems:
        runset = analysis.runset
        notes = sorted({run.baseline_note for run in runset.runs.values() if run.baseline_note})
        return Problems(notes, [runset.relative(line) for line in analysis.deg.problems + analysis.notes])

    def tables(self, result: Problems) -> dict:
        return {}

    def figures(self, result: Problems):
        return iter(())

    def markdown(self, result: Problems, figures) -> list[str]:
        out = (["## Baseline notes", ""] + [f"> {note}" for note in result.baseline_notes] + [""]) if result.baseline_notes else []
        out += ["## Problems and flags", ""]
        out += [f"- {line}" for line in result.lines] if result.lines else ["None."]
        return out + [""]


SECTION = ProblemsSection()
