"""qd_models.scan: which modules each scan config quantizes, and the degradation CSVs."""

from __future__ import annotations

import csv
import json
import math

import pytest

from qd_models.engine import quantize_
from qd_models.model_layout import block_linears, meta_model, module_type
from qd_models.runners.scan import CSV_COLUMNS, run_scan, scan_items
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
    blocks = block_linears(meta_model(AutoConfig.from_pretrained(model_dir)))
    assert blocks == block_linears(_loaded(model_dir))  # same names as the real load
    assert sorted(blocks) == [0, 1]
    for kinds in blocks.values():
        assert kinds["attention"] and kinds["mlp"] and not kinds["other"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scan_items_quantize_exactly_the_intended_modules(arch, tiny_model_dir):
    model_dir = tiny_model_dir(arch)
    blocks = block_linears(_loaded(model_dir))
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


# one llama.cpp role per linear of a block, written out per architecture
BLOCK_ROLES = {
    "llama": {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"},
    "gpt2": {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"},
    "bloom": {"query_key_value": "attn_qkv", "self_attention.dense": "attn_output",
              "dense_h_to_4h": "ffn_up", "dense_4h_to_h": "ffn_down"},
}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
def test_layout_roles_agree_with_the_parts_of_each_block(arch, tiny_model_dir):
    """Each block linear's llama.cpp role is the one written above for its name's tail, and an
    ``attn_*`` role lies in the attention part, an ``ffn_*`` role in the MLP part."""
    from qd_models.model_layout import llama_cpp_role

    blocks = block_linears(_loaded(tiny_model_dir(arch)))
    for kinds in blocks.values():
        names = [name for part in ("attention", "mlp") for name in kinds[part]]
        got = {}
        for name in names:
            tail = next(t for t in BLOCK_ROLES[arch] if name.endswith("." + t))
            got[tail] = llama_cpp_role(name)
            part = "attention" if name in kinds["attention"] else "mlp"
            assert got[tail].startswith("attn_" if part == "attention" else "ffn_"), name
        assert got == BLOCK_ROLES[arch]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
def test_tied_embeddings_is_one_shared_storage(arch, tiny_model_dir):
    from qd_models.model_layout import input_embedding, output_embedding, tied_embeddings

    model = _loaded(tiny_model_dir(arch))
    shared = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied_embeddings(model) is shared and shared is (arch != "llama")  # the tiny Llama has an untied head
    assert output_embedding(model) is model.lm_head and input_embedding(model) is model.get_input_embeddings()


def test_meta_model_of_an_unbuildable_config_is_none_and_the_scan_refuses_in_one_line(tmp_path):
    """A config AutoModelForCausalLM cannot build (T5 has no causal-LM class): no module tree,
    and qd-scan says so before anything is evaluated or written."""
    from transformers import T5Config

    T5Config(d_model=8, num_layers=1, num_heads=1, d_ff=8, d_kv=8, vocab_size=16).save_pretrained(tmp_path / "t5")
    assert meta_model(T5Config(d_model=8, num_layers=1, num_heads=1, d_ff=8, d_kv=8, vocab_size=16)) is None
    out = tmp_path / "out"
    settings = EvalSettings(tasks=("qd_multilingual_ppl",), output_path=str(out), model_args=f"pretrained={tmp_path / 't5'}")
    with pytest.raises(ValueError, match=r"^model_args=pretrained=.*: the model's module tree cannot be built without its weights; allowed: "):
        run_scan(settings, "quantize_one", ("block",), QUANT)
    assert not out.exists()


def test_scan_builds_its_meta_model_with_trust_remote_code(tiny_model_dir, tmp_path, monkeypatch):
    from qd_models.runners import scan

    calls = []
    monkeypatch.setattr(scan, "meta_model", lambda hf_config, trust: calls.append(trust))  # None: the scan stops there
    for flag in ("", ",trust_remote_code=True"):
        settings = EvalSettings(tasks=("qd_multilingual_ppl",), output_path=str(tmp_path),
                                model_args=f"pretrained={tiny_model_dir('llama')}{flag}")
        with pytest.raises(ValueError, match="module tree cannot be built"):
            run_scan(settings, "quantize_one", ("block",), QUANT)
    assert calls == [False, True]


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
