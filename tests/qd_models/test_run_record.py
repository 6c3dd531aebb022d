"""One label per config (qd_models.run_record): expected labels written by hand."""

import json
from pathlib import Path

import pytest

from qd_models.config import parse_qd_args
from qd_models.run_record import config_family, config_label, label_fields, qd_block, run_id, run_labels, slug

FIXTURE_RUNS = Path(__file__).parents[1] / "fixtures" / "analysis"


def resolved(**args) -> dict:
    return parse_qd_args(args)[0].to_dict()


@pytest.mark.parametrize("args,label,family", [
    ({"method": "none"}, "baseline", "baseline"),
    ({"method": "rtn", "bits": 4}, "rtn-w4", "rtn"),
    ({"method": "rtn", "bits": 4, "granularity": "channel", "symmetric": "true"}, "rtn-w4", "rtn"),  # defaults given explicitly
    ({"method": "rtn", "bits": 3, "granularity": "tensor"}, "rtn-w3-tensor", "rtn-tensor"),
    ({"method": "rtn", "bits": 4, "granularity": "group"}, "rtn-w4-group-g128", "rtn-group-g128"),
    ({"method": "gptq", "bits": 3}, "gptq-w3", "gptq"),  # group 128 is gptq's default
    ({"method": "gptq", "bits": 3, "group_size": 64}, "gptq-w3-group-g64", "gptq-group-g64"),
    ({"method": "aciq", "bits": 4, "clip": "gauss"}, "aciq-w4-clip=gauss", "aciq-clip=gauss"),
    ({"method": "rtn", "bits": 3, "keep_top": 1}, "rtn-w3-keep_top=1.0", "rtn-keep_top=1.0"),  # keep_by/scope defaults hidden
    ({"method": "rtn", "bits": 3, "keep_top": 1, "keep_top_scope": "global"}, "rtn-w3-keep_top=1.0-keep_top_scope=global",
     "rtn-keep_top=1.0-keep_top_scope=global"),
    ({"method": "rtn", "bits": 4, "symmetric": "false", "keep_layers": "0;3"}, "rtn-w4-symmetric=false-keep_layers=0+3",
     "rtn-symmetric=false-keep_layers=0+3"),
    ({"method": "laaciq", "bits": 3, "calib_mode": "target", "calib_langs": "he"}, "laaciq-w3-calib_mode=target-calib_langs=he",
     "laaciq-calib_mode=target-calib_langs=he"),
    ({"method": "laaciq", "bits": 4, "calib_mode": "mean"}, "laaciq-w4", "laaciq"),
    ({"method": "gguf"}, "gguf-q4_k_m", "gguf"),
    ({"method": "gguf", "gguf_type": "q5_k_m", "calib_langs": "he"}, "gguf-q5_k_m-calib_langs=he",
     "gguf-calib_langs=he"),  # calib_mode=pooled is derived, not shown
    ({"method": "nf4"}, "nf4-w4", "nf4"),
])
def test_labels_show_method_bits_and_settings_that_differ_from_their_default(args, label, family):
    config = resolved(**args)
    assert config_label(config) == label and config_family(config) == family


def test_labels_of_recorded_configs_from_outside_the_package():
    assert config_label({"method": "gptq", "bits": 3, "saved_model": True}) == "gptq-w3"  # a model saved by another quantizer
    assert config_label({"method": "hf-bnb", "bits": 4}) == "hf-bnb-w4"
    assert config_label({"method": "rtn", "bits": 4}) == "rtn-w4"  # fields missing from a hand-written record are not shown
    calib = resolved(method="rtn", bits=4, keep_top=1, keep_by="activation", calib_data="/somewhere/my_texts.jsonl")
    assert config_label(calib) == "rtn-w4-keep_top=1.0-keep_by=activation-calib_data=my_texts.jsonl"  # no machine path
    scanned = {**resolved(method="rtn", bits=4, keep_layers="0;2"), "scan": "quantize_one:1"}
    assert config_label(scanned) == "rtn-w4-scan=quantize_one:1"  # the scan stands for the keep_layers it set


def test_run_id_shortens_lm_eval_model_path_folders():
    assert run_id(("rtn-w4-0123456789", "__home__me__models__tiny", "results_2026")) == "rtn-w4-0123456789/tiny/results_2026"
    assert run_id(("a", "results_x")) == "a/results_x"


def test_slug_keeps_the_given_characters_strips_and_truncates():
    assert slug("rtn-w4 calib_langs=en;he/x+y") == "rtn-w4_calib_langs=en_he_x+y"  # sweep folders: the defaults
    assert slug("__a b=c+d.e__", keep="._-", strip=True) == "a_b_c_d.e"
    assert slug("__a b=c+d.e__", keep="._+-", strip=True) == "a_b_c+d.e"
    assert slug("x" * 130) == "x" * 120 and slug("_ab_", limit=2, strip=True) == "ab" and slug("_ab_", limit=2) == "_a"


def test_run_labels_are_read_from_the_block_when_it_stores_them_for_its_config():
    config = resolved(method="rtn", bits=3, granularity="tensor")
    block = {"quant_config": config, **label_fields(config)}
    assert (block["config_label"], block["config_family"]) == ("rtn-w3-tensor", "rtn-tensor")
    assert run_labels(dict(config), block) == ("rtn-w3-tensor", "rtn-tensor")
    stored = {**block, "config_label": "as-recorded", "config_family": "family-as-recorded"}
    assert run_labels(dict(config), stored) == ("as-recorded", "family-as-recorded")  # read, not recomputed
    saved = {"method": "gptq", "bits": 3, "saved_model": True}  # a saved model's config replaces the block's: computed
    assert run_labels(saved, stored) == ("gptq-w3", "gptq")
    assert run_labels(config, {"quant_config": config}) == ("rtn-w3-tensor", "rtn-tensor")  # written before labels were stored
    assert run_labels({"method": "hf-bnb", "bits": 4}) == ("hf-bnb-w4", "hf-bnb")


def test_old_fixture_results_without_stored_labels_get_the_labels_their_sweep_folders_were_named_by():
    files = sorted((FIXTURE_RUNS / "runs").glob("*/*/results_*.json"))
    assert len(files) == 3
    for file in files:
        block = qd_block(json.loads(file.read_text(encoding="utf-8")))
        assert "config_label" not in block and "config_family" not in block
        folder_label = file.parents[1].name.rsplit("-", 1)[0]  # <label>-<hash>, written by qd-sweep when the run was made
        label, family = run_labels(dict(block["quant_config"]), block)
        assert label == folder_label and family == {"baseline": "baseline", "rtn-w3": "rtn", "rtn-w4": "rtn"}[folder_label]
