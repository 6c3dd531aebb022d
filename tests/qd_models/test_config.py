"""Argument parsing and validation of the qd quantization config (no torch needed but for the registry check)."""

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


def test_family_options_are_one_typed_object_and_flat_in_the_record():
    from qd_models.config import QD_ARGS, AWQOptions, GGUFOptions, GPTQOptions

    config = parse_qd_args({"method": "gptq", "damp": "0.1", "act_order": "true"})[0]
    assert config.options == GPTQOptions(damp=0.1, act_order=True, gptq_block=128)  # CLI strings typed, defaults filled in
    record = config.to_dict()
    assert (record["damp"], record["act_order"], record["gptq_block"]) == (0.1, True, 128)
    assert all(record[name] is None for name in ("awq_grid", "awq_clip", "awq_scope", "gguf_type"))  # other families' options
    assert "options" not in record and list(record) == list(QD_ARGS)
    for name in ("damp", "act_order", "gptq_block", "awq_grid", "awq_clip", "awq_scope", "gguf_type"):
        assert QD_ARGS.count(name) == 1  # each option argument declared once
    assert parse_qd_args({"method": "awq"})[0].options == AWQOptions(awq_grid=20, awq_clip=False, awq_scope="linear")
    assert parse_qd_args({"method": "gguf", "gguf_type": "Q5_K_M"})[0].options == GGUFOptions(gguf_type="q5_k_m")
    assert parse_qd_args({"method": "rtn"})[0].options is None and QuantConfig().options is None


def test_options_given_as_an_object_equal_the_flat_arguments():
    from qd_models.config import GGUFOptions, GPTQOptions

    flat = parse_qd_args({"method": "gptq", "bits": "3", "damp": "0.05"})[0]
    assert QuantConfig(method="gptq", bits=3, options=GPTQOptions(damp=0.05)) == flat
    with pytest.raises(ValueError) as err:
        QuantConfig(method="gptq", options=GGUFOptions())
    assert str(err.value) == "options=GGUFOptions is not allowed with method=gptq; allowed: GPTQOptions"
    with pytest.raises(ValueError) as err:
        GPTQOptions(damp=0.0)
    assert str(err.value) == "damp=0.0 is not allowed; allowed: a number in (0, 1]"


@pytest.mark.parametrize("args, passes", [
    ({"method": "none"}, ()),
    ({"method": "rtn"}, ()),
    ({"method": "nf4"}, ()),
    ({"method": "laaciq"}, ("stats",)),
    ({"method": "rtn", "keep_top": 1, "keep_by": "activation"}, ("stats",)),
    ({"method": "gptq"}, ("inputs",)),
    ({"method": "awq", "calib_langs": "he"}, ("inputs",)),
    ({"method": "gptq", "bits": 16}, ()),  # identity: nothing to calibrate
    ({"method": "gguf"}, ()),
    ({"method": "gguf", "calib_langs": "he"}, ("stats",)),  # importance matrix
])
def test_calibration_passes_is_the_one_calibration_predicate(args, passes):
    assert parse_qd_args(args)[0].calibration_passes == passes


def test_messages_that_list_methods_are_built_from_the_registry_unchanged():
    with pytest.raises(ValueError) as err:
        parse_qd_args({"method": "rtn", "calib_seed": 1})
    assert str(err.value) == ("calib_seed=1 is not allowed with method=rtn (this config reads no calibration texts); allowed with "
                              "method=gptq|awq|laaciq (bits < 16), keep_by=activation or method=gguf with calib_* arguments")
    with pytest.raises(ValueError) as err:
        parse_qd_args({"method": "nf4", "clip": "gauss"})
    assert str(err.value) == "clip not allowed with method=nf4; allowed with methods: rtn, aciq, mse, laaciq, gptq, awq, gguf"
    with pytest.raises(ValueError) as err:
        parse_qd_args({"method": "rtn", "calib_langs": "he"})
    assert str(err.value) == "calib_langs not allowed with method=rtn; allowed with method=laaciq|gptq|awq or keep_by=activation"
    with pytest.raises(ValueError) as err:
        parse_qd_args({"method": "gguf", "awq_grid": 3})
    assert str(err.value) == "awq_grid not allowed with method=gguf; allowed with method=awq"


def test_the_registry_is_consistent_for_every_method():
    """Each fake-quant method has a Quantizer (torch side) and no other does; a method's ``bits_option``
    is one of its own options; option arguments belong to one family each."""
    from qd_models.config import OPTION_ARGS, Mechanism
    from qd_models.methods import QUANTIZERS

    assert set(QUANTIZERS) == {method for method, spec in METHODS.items() if spec.mechanism == Mechanism.FAKE}
    for spec in METHODS.values():
        assert spec.bits_option is None or spec.bits_option in spec.option_names
        assert spec.fixed_bits is None or spec.mechanism == Mechanism.BNB
    assert len(OPTION_ARGS) == len(set(OPTION_ARGS)) == 7
