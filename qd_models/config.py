"""Quantization configs resolved from flat ``--model_args`` scalars.

PLACEHOLDER INTERFACE (to be completed by the engine work): ``parse_qd_args`` pops the
qd-specific keys from the lm-eval model kwargs, validates them and returns a frozen config
plus the remaining kwargs for ``HFLM``.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("none",)


@dataclass(frozen=True)
class QuantConfig:
    method: str = "none"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not allowed; allowed: {', '.join(METHODS)}")


QD_ARGS = ("method",)


def parse_qd_args(kwargs: dict) -> tuple[QuantConfig, dict]:
    """Split lm-eval model kwargs into (QuantConfig, remaining HFLM kwargs)."""
    rest = dict(kwargs)
    qd = {k: rest.pop(k) for k in QD_ARGS if k in rest}
    return QuantConfig(**qd), rest
