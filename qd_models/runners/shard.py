"""``qd-sweep --shard K/N``: the deterministic share of a sweep's configs that one of N processes
runs into a shared output folder (a Slurm job array, several GPUs of a node, several machines on
one filesystem). The baseline goes to shard 1; the configs are dealt out in grid order."""

from __future__ import annotations

import re
from dataclasses import dataclass

from qd_models.config import Mechanism
from qd_models.runners.grid import SweepItem


def is_baseline(item: SweepItem) -> bool:
    """The ``method=none`` config that fidelity compares with (not a scan's)."""
    return item.config.mechanism == Mechanism.NONE and item.scan is None


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, value: str) -> Shard:
        """``"K/N"`` with 1 <= K <= N (``ValueError`` naming the value otherwise)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ValueError(f"--shard={value} is not allowed; allowed: K/N with integers 1 <= K <= N, e.g. 1/4")
        return cls(int(match[1]), int(match[2]))

    def select(self, items: list[SweepItem]) -> list[SweepItem]:
        """This shard's items, in run order: the baseline first (shard 1), then every N-th of the
        other configs in grid order, so the N shards partition the grid whatever N is."""
        ordered = [item for item in items if is_baseline(item)] + [item for item in items if not is_baseline(item)]
        return [item for position, item in enumerate(ordered) if position % self.count == self.index - 1]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
