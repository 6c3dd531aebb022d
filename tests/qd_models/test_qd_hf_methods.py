"""Every quantization method end to end through lm-eval on tiny random models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

FIXTURE_TASKS = Path(__file__).parents[1] / "fixtures" / "tasks"


def _bpb(results: dict, lang: str) -> float:
    return results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"]


@pytest.mark.integration
def test_cli_rtn_on_gpt2_conv1d_writes_report_beside_results(tiny_model_dir, lm_eval_cli, tmp_path):
    path = tiny_model_dir("gpt2")
    out = tmp_path / "out"
    results = lm_eval_cli(
        ["--model", "qd-hf", "--model_args", f"pretrained={path},method=rtn,bits=3",
         "--tasks", "qd_multilingual_ppl_en,qd_multilingual_ppl_sw", "--device", "cpu"],
        out,
    )
    block = results["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == "rtn" and block["quant_config"]["bits"] == 3
    assert (block["config_label"], block["config_family"]) == ("rtn-w3", "rtn")  # stored when the run is made
    report = block["quant_report"]
    conv1d = [layer for layer in report["layers"] if layer["kind"] == "conv1d"]
    assert conv1d and all(layer["status"] == "quantized" for layer in conv1d)
    assert block["quant_totals"]["params_quantized"] == sum(layer["numel"] for layer in conv1d)
    assert "transformer.wte.weight" in {s["name"] for s in report["skipped"]}
    assert report["totals"] == block["quant_totals"] and not list(out.rglob("quant_report_*.json"))  # stored once: in the results


@pytest.mark.parametrize(
    "arch,args",
    [
        ("llama", "method=aciq,bits=4,clip=auto"),
        ("bloom", "method=mse,bits=4,granularity=group,group_size=32"),
        ("llama", "method=rtn,bits=4,keep_top=5,keep_layers=[1]"),
        ("llama", "method=nf4"),
        ("llama", "method=fp4"),
        ("bloom", "method=int8"),
    ],
)
def test_method_runs_and_changes_the_model(arch, args, tiny_model_dir, evaluate_in_process):
    path = tiny_model_dir(arch)
    tasks = ["qd_multilingual_ppl_en", "qd_multilingual_ppl_yo"]
    base = evaluate_in_process("qd-hf", f"pretrained={path}", tasks, limit=2)
    quant = evaluate_in_process("qd-hf", f"pretrained={path},{args}", tasks, limit=2)
    block = quant["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == args.split(",")[0].split("=")[1]
    assert block["quant_totals"]["effective_bits_per_weight"] < 32  # float32 originals
    for lang in ("en", "yo"):
        assert math.isfinite(_bpb(quant, lang))
        assert _bpb(quant, lang) != _bpb(base, lang)  # the weights really changed


def test_standard_tasks_run_quantized(tiny_model_dir, qd_task_manager):
    """Any lm-eval task works with a quantized model: a multiple-choice and a generate_until YAML."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(FIXTURE_TASKS))
    results = simple_evaluate(
        model="qd-hf", model_args=f"pretrained={tiny_model_dir('llama')},method=rtn,bits=4",
        tasks=["qd_test_local_mc", "qd_test_local_gen"], task_manager=manager, device="cpu",
    )
    assert 0.0 <= results["results"]["qd_test_local_mc"]["acc,none"] <= 1.0
    assert results["results"]["qd_test_local_gen"]["exact_match,none"] >= 0.0
    assert results["n-samples"]["qd_test_local_mc"]["effective"] == 3
    assert results["config"]["quant_disparity"]["quant_config"]["bits"] == 4


def test_comma_lists_survive_lm_eval_arg_parser():
    """`keep_layers=0,11` as the README writes it, through lm-eval's own --model_args parser."""
    from lm_eval.utils import simple_parse_args_string

    from qd_models.config import parse_qd_args

    parsed = simple_parse_args_string("pretrained=x,method=rtn,keep_layers=0,11,bits=3,keep=re:.*mlp.*,re:.*o_proj")
    config, rest = parse_qd_args(parsed)
    assert config.keep_layers == (0, 11) and config.bits == 3
    assert config.keep == ("re:.*mlp.*", "re:.*o_proj")
    assert rest == {"pretrained": "x"}
