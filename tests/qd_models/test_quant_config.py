"""Argument parsing and validation of the qd quantization config (no torch needed)."""

import pytest

from qd_models.config import METHODS, QuantConfig, parse_qd_args


def test_cli_strings_are_typed_and_rest_passes_through():
    config, rest = parse_qd_args(
        {"pretrained": "x", "method": "aciq", "bits": "3", "symmetric": "false", "clip": "laplace",
         "keep_top": "0.5", "keep_layers": "0;11", "keep": "re:.*mlp.*", "dtype": "float32"}
    )
    assert rest == {"pretrained": "x", "dtype": "float32"}
    assert (config.method, config.bits, config.symmetric, config.clip) == ("aciq", 3, False, "laplace")
    assert config.keep_top == 0.5 and config.keep_by == "magnitude" and config.keep_top_scope == "layer"
    assert config.keep_layers == (0, 11) and config.keep == ("re:.*mlp.*",)


def test_defaults_resolve_per_method():
    assert QuantConfig().to_dict()["granularity"] is None  # method none: nothing quantized
    rtn = parse_qd_args({"method": "rtn"})[0]
    assert (rtn.bits, rtn.granularity, rtn.symmetric, rtn.clip, rtn.group_size) == (4, "channel", True, "none", None)
    assert parse_qd_args({"method": "aciq"})[0].clip == "auto"
    assert parse_qd_args({"method": "rtn", "granularity": "group"})[0].group_size == 128
    assert parse_qd_args({"method": None})[0].method == "none"  # lm-eval turns "none" into None
    assert parse_qd_args({"method": "nf4"})[0].bits == 4
    assert parse_qd_args({"keep_layers": [0, 11], "method": "rtn"})[0].keep_layers == (0, 11)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"method": "hqq"}, "method"),
        ({"method": "rtn", "bits": 0}, "bits"),
        ({"method": "rtn", "bits": 1}, "bits"),
        ({"method": "rtn", "bits": 9}, "bits"),
        ({"method": "rtn", "bits": 15}, "bits"),
        ({"method": "rtn", "bits": 17}, "bits"),
        ({"method": "rtn", "bits": "four"}, "bits"),
        ({"method": "rtn", "granularity": "row"}, "granularity"),
        ({"method": "rtn", "granularity": "group", "group_size": 0}, "group_size"),
        ({"method": "rtn", "granularity": "group", "group_size": -8}, "group_size"),
        ({"method": "rtn", "group_size": 64}, "group_size"),
        ({"method": "rtn", "keep_top": 101}, "keep_top"),
        ({"method": "rtn", "keep_top": -1}, "keep_top"),
        ({"method": "aciq", "clip": "cauchy"}, "clip"),
        ({"method": "rtn", "clip": "gauss"}, "clip"),
        ({"method": "rtn", "keep_top": 1, "keep_by": "gradient"}, "keep_by"),
        ({"method": "rtn", "keep_by": "magnitude"}, "keep_by"),
        ({"method": "rtn", "symmetric": "maybe"}, "symmetric"),
        ({"method": "rtn", "keep": "re:(("}, "keep"),
        ({"method": "rtn", "keep_layers": "-1"}, "keep_layers"),
        ({"method": "nf4", "clip": "gauss"}, "clip"),
        ({"method": "nf4", "keep_top": 1}, "keep_top"),
        ({"method": "int8", "bits": 4}, "bits"),
        ({"method": "fp4", "granularity": "group"}, "granularity"),
        ({"method": "none", "bits": 4}, "bits"),
    ],
)
def test_bad_arguments_raise_one_line_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError) as err:
        parse_qd_args(kwargs)
    message = str(err.value)
    assert "\n" not in message and name in message and "allowed" in message


def test_config_is_frozen_and_methods_listed_in_errors():
    config = parse_qd_args({"method": "rtn"})[0]
    with pytest.raises(AttributeError):
        config.bits = 3
    with pytest.raises(ValueError) as err:
        parse_qd_args({"method": "bogus"})
    assert all(name in str(err.value) for name in METHODS)
