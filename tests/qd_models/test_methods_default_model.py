"""GPTQ and AWQ on the Gemma-3-270M default model (slow: minutes on CPU)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow
TASKS = [f"qd_multilingual_ppl_{lang}" for lang in ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")]


@pytest.fixture(scope="module")
def mean_bits_per_byte(evaluate_in_process):
    def run(args: str) -> float:
        results = evaluate_in_process("qd-hf", args, TASKS)
        values = [results["results"][task]["bits_per_byte,none"] for task in TASKS]
        return sum(values) / len(values)

    return run


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_w4_g128_degrades_less_than_rtn(method, mean_bits_per_byte):
    base = mean_bits_per_byte("method=none")
    rtn = mean_bits_per_byte("method=rtn,bits=4,granularity=group,group_size=128")
    calibrated = mean_bits_per_byte(f"method={method},bits=4,group_size=128")
    assert base < calibrated < rtn, (base, calibrated, rtn)
