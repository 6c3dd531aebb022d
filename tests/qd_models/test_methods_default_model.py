"""GPTQ and AWQ on the Gemma-3-270M default model (slow: a few minutes on CPU).

Calibration: one UDHR article per language of the 8 evaluated languages (``calib_data=udhr``,
never an evaluated text), to keep the test short; the main job uses four.
"""

from __future__ import annotations

import pytest

TASKS = [f"qd_multilingual_ppl_{lang}" for lang in ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")]
_MEAN_BPB: dict[str, float] = {}


@pytest.fixture
def mean_bits_per_byte(evaluate_in_process):
    """Mean bits/byte over the 8 languages of a qd-hf config (each config evaluated once per session)."""
    def run(args: str) -> float:
        if args not in _MEAN_BPB:
            results = evaluate_in_process("qd-hf", args, TASKS)
            _MEAN_BPB[args] = sum(results["results"][task]["bits_per_byte,none"] for task in TASKS) / len(TASKS)
        return _MEAN_BPB[args]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_w4_g128_degrades_less_than_rtn(method, mean_bits_per_byte):
    base = mean_bits_per_byte("method=none")
    rtn = mean_bits_per_byte("method=rtn,bits=4,granularity=group,group_size=128")
    calibrated = mean_bits_per_byte(f"method={method},bits=4,group_size=128,calib_data=udhr,calib_samples=1")
    assert base < calibrated < rtn, (base, calibrated, rtn)
