"""Calibration draws (``calib_seed``): which texts a draw takes, its validation, its place in the run
identity (label, cache key) and ``qd-sweep``'s expansion of a config into draws; two GPTQ draws on a
tiny model give different weights, the same draw identical ones."""

from __future__ import annotations

import pytest

from qd_models.calibration.sources import draw_texts, load_calibration_texts
from qd_models.config import parse_qd_args
from qd_models.run_record import config_draw, config_family, config_label
from qd_models.runners.grid import expand_draws
from qd_tasks.corpus import load_corpus

GPTQ = {"method": "gptq", "bits": "3", "group_size": "16", "calib_langs": "en;he", "calib_samples": "2"}


def _bundled(lang: str) -> list[str]:
    return [record["text"] for record in load_corpus("calibration", langs=[lang])]


def test_unseeded_selection_is_the_first_texts_and_a_seed_draws_a_reproducible_subset():
    texts = _bundled("en")
    config, _ = parse_qd_args(dict(GPTQ))
    assert load_calibration_texts(config)["en"] == texts[:2]  # today's selection, unchanged
    drawn = {seed: load_calibration_texts(parse_qd_args({**GPTQ, "calib_seed": str(seed)})[0]) for seed in range(12)}
    for seed, by_lang in drawn.items():
        for lang, group in by_lang.items():
            assert len(group) == 2 and len(set(group)) == 2 and set(group) <= set(_bundled(lang))
        assert by_lang == load_calibration_texts(parse_qd_args({**GPTQ, "calib_seed": str(seed)})[0])  # same seed, same draw
    assert len({tuple(by_lang["en"]) for by_lang in drawn.values()}) > 6  # different seeds draw different texts
    assert any(by_lang["en"] != texts[:2] for by_lang in drawn.values())
    # a language's draw does not depend on the other languages calibrated
    alone = load_calibration_texts(parse_qd_args({**GPTQ, "calib_langs": "he", "calib_seed": "3"})[0])
    assert alone["he"] == drawn[3]["he"]
    # without calib_samples a draw is every text, in a seeded order
    everything = draw_texts(texts, None, 5, "en")
    assert sorted(everything) == sorted(texts) and everything != texts


@pytest.mark.parametrize("args, message", [
    ({**GPTQ, "calib_seed": "-1"}, "calib_seed=-1 is not allowed; allowed: an integer >= 0"),
    ({**GPTQ, "calib_seed": "x"}, "calib_seed='x' is not allowed; allowed: an integer"),
    ({**GPTQ, "calib_seed": True}, "calib_seed=True is not allowed; allowed: an integer"),
    ({"method": "rtn", "calib_seed": "0"}, "calib_seed=0 is not allowed with method=rtn"),
    ({**GPTQ, "bits": "16", "calib_seed": "0"}, "calib_seed=0 is not allowed with method=gptq"),
    ({"method": "gguf", "calib_seed": "0"}, "calib_seed=0 is not allowed with method=gguf"),
])
def test_bad_calib_seed_is_one_line(args, message):
    with pytest.raises(ValueError) as err:
        parse_qd_args(dict(args))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_draws_share_label_and_family_and_differ_in_draw_and_cache_key():
    from qd_models.calibration.cache import calibration_key

    plain = parse_qd_args(dict(GPTQ))[0].to_dict()
    seeded = parse_qd_args({**GPTQ, "calib_seed": "4"})[0].to_dict()
    assert seeded["calib_seed"] == 4 and plain["calib_seed"] is None  # recorded in the results' quant config
    assert config_label(seeded) == config_label(plain) == "gptq-w3-group-g16-calib_langs=en+he-calib_samples=2"
    assert config_family(seeded) == config_family(plain)
    assert (config_draw(seeded), config_draw(plain)) == (4, None)
    tokens = {"en": [[1, 2, 3]]}
    unseeded = calibration_key("model", tokens, ["a"])
    assert calibration_key("model", tokens, ["a"], None) == unseeded
    assert len({unseeded, calibration_key("model", tokens, ["a"], 0), calibration_key("model", tokens, ["a"], 1)}) == 3


def test_expand_draws_grid_entry_flag_and_refusals():
    rtn, gptq = {"method": "rtn", "bits": 4}, {"method": "gptq", "bits": 4, "group_size": 16}
    assert expand_draws([rtn, {**gptq, "calib_draws": 3}]) == [rtn] + [{**gptq, "calib_seed": seed} for seed in range(3)]
    assert expand_draws([{"method": "none"}, rtn, gptq], 2) == [{"method": "none"}, rtn, {**gptq, "calib_seed": 0}, {**gptq, "calib_seed": 1}]
    assert expand_draws([rtn, gptq]) == [rtn, gptq]  # no draws asked: unchanged
    for combos, draws, message in [
        ([{**rtn, "calib_draws": 2}], None, "calib_draws=2 is not allowed with rtn-w4 (no calibration texts)"),
        ([{**gptq, "calib_seed": 1, "calib_draws": 2}], None, "calib_draws=2 is not allowed with gptq-w4-group-g16 (a calib_seed of its own)"),
        ([{**gptq, "calib_draws": 0}], None, "calib_draws=0 is not allowed; allowed: an integer >= 1"),
        ([gptq], 0, "--calib_draws=0 is not allowed; allowed: an integer >= 1"),
        ([rtn, {"method": "nf4"}], 3, "--calib_draws=3 is not allowed here: no config of the sweep reads calibration texts"),
    ]:
        with pytest.raises(ValueError) as err:
            expand_draws(combos, draws)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sweep_dry_run_lists_one_folder_per_draw(tiny_model_dir, tmp_path, capsys):
    from qd_models.sweep import main

    grid = tmp_path / "grid.yaml"
    grid.write_text("configs:\n  - {method: rtn, bits: 4}\n  - {method: gptq, bits: 4, group_size: 16, calib_samples: 2, calib_draws: 2}\n")
    common = ["--grid", str(grid), "--tasks", "qd_multilingual_ppl_en", "--output_path", str(tmp_path / "out"),
              "--model_args", f"pretrained={tiny_model_dir('llama')}", "--dry_run"]
    assert main(common) == 0
    lines = capsys.readouterr().out.splitlines()
    gptq = [line for line in lines if line.startswith("gptq-w4-group-g16-calib_samples=2-")]
    assert len(lines) == 4 and len(gptq) == 2 and len({line.split("\t")[0] for line in gptq}) == 2
    assert sorted("calib_seed=0" in line for line in gptq) == [False, True] and any("calib_seed=1" in line for line in gptq)
    assert main(common + ["--calib_draws", "0"]) == 2
    assert "qd-sweep: error: --calib_draws=0 is not allowed" in capsys.readouterr().err


def test_two_gptq_draws_give_different_weights_and_one_draw_identical_weights(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from qd_models.qd_hf import QDHFLM

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    model = str(tiny_model_dir("llama"))
    texts = {seed: load_calibration_texts(parse_qd_args({**GPTQ, "calib_seed": str(seed)})[0]) for seed in (0, 1)}
    assert texts[0] != texts[1]  # the two draws calibrate on different texts

    def weights(seed: int) -> dict[str, torch.Tensor]:
        lm = QDHFLM(pretrained=model, device="cpu", dtype="float32", **GPTQ, calib_seed=str(seed))
        assert lm.quant_config.calib_seed == seed
        return {name: p.detach().clone() for name, p in lm.model.named_parameters() if p.ndim == 2 and "proj" in name}

    first, again, other = weights(0), weights(0), weights(1)
    assert first and all(torch.equal(first[name], again[name]) for name in first)
    changed = [name for name in first if not torch.equal(first[name], other[name])]
    assert len(changed) == len(first)  # every quantized projection moved with the calibration texts
