"""One label per config (qd_models.run_record): expected labels written by hand."""

import pytest

from qd_models.config import parse_qd_args
from qd_models.run_record import config_family, config_label, run_id, slug


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
