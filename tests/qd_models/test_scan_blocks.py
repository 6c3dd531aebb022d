"""qd_models.scan: which modules each scan config quantizes, and the degradation CSVs."""

from __future__ import annotations

import csv
import json
import math

import pytest

from qd_models.engine import quantize_
from qd_models.runners.scan import CSV_COLUMNS, block_modules, meta_model, module_type, run_scan, scan_items
from qd_models.runners.sweep import EvalSettings
from qd_tasks.languages import split_task_name

QUANT = {"method": "rtn", "bits": 3}


def _loaded(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir)


def _quantized_names(model, item) -> set[str]:
    report = quantize_(model, item.config)
    return {layer["name"] for layer in report["layers"] if layer["status"] == "quantized"}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
def test_meta_model_lists_every_block_module(arch, tiny_model_dir):
    from transformers import AutoConfig

    model_dir = tiny_model_dir(arch)
    blocks = block_modules(meta_model(AutoConfig.from_pretrained(model_dir)))
    assert blocks == block_modules(_loaded(model_dir))  # same names as the real load
    assert sorted(blocks) == [0, 1]
    for kinds in blocks.values():
        assert kinds["attention"] and kinds["mlp"] and not kinds["other"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scan_items_quantize_exactly_the_intended_modules(arch, tiny_model_dir):
    model_dir = tiny_model_dir(arch)
    blocks = block_modules(_loaded(model_dir))
    for mode in ("quantize_one", "protect_one"):
        items = scan_items(blocks, mode, ("block", "attention", "mlp"), QUANT)
        assert len(items) == 2 * 3
        for item in items:
            _, block, *kind = item.scan.split(":")
            block = int(block)
            in_unit = {
                n for k, names in blocks[block].items() if (not kind or k == kind[0]) for n in names
            }
            every = {n for kinds in blocks.values() for names in kinds.values() for n in names}
            expected = in_unit if mode == "quantize_one" else every - in_unit
            assert _quantized_names(_loaded(model_dir), item) == expected, item.scan


def test_module_type_names():
    assert module_type("model.layers.3.self_attn.q_proj") == "attention"
    assert module_type("transformer.h.0.attn.c_attn") == "attention"
    assert module_type("transformer.h.0.self_attention.query_key_value") == "attention"
    assert module_type("model.layers.3.mlp.down_proj") == "mlp"
    assert module_type("model.layers.3.attn_norm") is None  # a component must match exactly


def test_scan_rejects_bad_arguments_before_loading(tiny_model_dir):
    blocks = {0: {"attention": ["a"], "mlp": ["m"], "other": []}}
    with pytest.raises(ValueError, match="mode='one' is not allowed; allowed: quantize_one, protect_one"):
        scan_items(blocks, "one", ("block",), QUANT)
    with pytest.raises(ValueError, match=r"modules=\['head'\] is not allowed"):
        scan_items(blocks, "quantize_one", ("head",), QUANT)
    with pytest.raises(ValueError, match="keep_layers is not allowed in a scan"):
        scan_items(blocks, "quantize_one", ("block",), {**QUANT, "keep_layers": [0]})


@pytest.fixture(scope="module")
def protect_one_scan(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scan")
    settings = EvalSettings(tasks=("qd_multilingual_ppl",), output_path=str(out), model_args=f"pretrained={tiny_model_dir('gpt2')}",
                            limit=2, batch_size=4, device="cpu")
    return run_scan(settings, "protect_one", ("block", "mlp"), {"method": "rtn", "bits": 2})


def test_run_scan_writes_consistent_csvs(protect_one_scan):
    outcomes, paths = protect_one_scan
    assert [p.name for p in paths] == ["scan_protect_one_block.csv", "scan_protect_one_mlp.csv"]
    assert len(outcomes) == 1 + 2 * 2
    base = next(o for o in outcomes if o.item.scan is None).results["results"]
    by_label = {o.item.scan: o for o in outcomes if o.item.scan}
    for path in paths:
        rows = list(csv.DictReader(path.open()))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert len(rows) == 2 * 8  # blocks x languages
        for row in rows:
            label = f"protect_one:{row['block']}" + ("" if row["module"] == "block" else f":{row['module']}")
            saved = json.loads(next(by_label[label].folder.rglob("results_*.json")).read_text())
            assert saved["config"]["quant_disparity"]["quant_config"]["scan"] == label
            task = f"qd_multilingual_ppl_{row['lang']}"
            bpb, ref = saved["results"][task]["bits_per_byte,none"], base[task]["bits_per_byte,none"]
            assert float(row["bits_per_byte"]) == pytest.approx(bpb, rel=1e-12)
            assert float(row["rel_degradation"]) == pytest.approx(bpb / ref - 1, rel=1e-9, abs=1e-15)
            assert float(row["abs_degradation"]) == pytest.approx(bpb - ref, rel=1e-9, abs=1e-15)
            assert math.isfinite(float(row["degradation"]))
    # 2-bit RTN of all but one block must move bits/byte somewhere (else the rows are vacuous)
    rows = list(csv.DictReader(paths[0].open()))
    assert max(abs(float(r["abs_degradation"])) for r in rows) > 1e-4


def test_scan_csv_is_what_qd_analyze_reads(protect_one_scan):
    from analysis.sensitivity_scan import read_scan_csv, scan_pivot

    for path in protect_one_scan[1]:
        pivot = scan_pivot(read_scan_csv(str(path)))
        assert pivot.shape == (2, 8)  # blocks x languages, one heatmap per module type


def test_task_language_from_name_or_doc():
    assert split_task_name("qd_multilingual_ppl_he") == ("qd_multilingual_ppl", "he")
    assert split_task_name("qd_flores_ppl_zh_Hans") == ("qd_flores_ppl", "zh_Hans")
    assert split_task_name("qd_multilingual_ppl_he", {"lang": "yo"}) == ("qd_multilingual_ppl", "yo")
    assert split_task_name("wikitext") == ("wikitext", "wikitext")
