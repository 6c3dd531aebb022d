"""qd_models.runners.sweep: one loaded model, many configs, same numbers as separate qd-hf runs,
atomic per-config folders, resume after a crash."""

from __future__ import annotations

import fcntl
import json

import pytest

from qd_models.runners.grid import build_items, expand_grid, make_item
from qd_models.runners.store import COMPLETE_MARKER, LOCK_DIR, TMP_PREFIX
from qd_models.runners.sweep import EvalSettings, Sweep, build_parser, combos_from_args
from qd_tasks.cli_errors import UserInputError

TASKS = ("qd_multilingual_ppl",)
LIMIT = 2
BATCH = 4


def _settings(model_dir, out, **kw) -> EvalSettings:
    return EvalSettings(
        tasks=TASKS, output_path=str(out), model_args=f"pretrained={model_dir}", limit=LIMIT,
        batch_size=BATCH, device="cpu", **kw,
    )


def _bits_per_byte(results: dict) -> dict[str, float]:
    return {task: values["bits_per_byte,none"] for task, values in results["results"].items() if "bits_per_byte,none" in values}


def _results_file(folder):
    files = sorted(folder.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


GRID = [
    {"method": "rtn", "bits": 3, "granularity": "tensor"},
    {"method": "aciq", "bits": 4, "granularity": "group", "group_size": 32},
    {"method": "rtn", "bits": 4, "keep_top": 1.0, "keep_layers": [1]},
    {"method": "laaciq", "bits": 3, "calib_mode": "mean", "calib_samples": 2},  # calibration pass per config
    {"method": "nf4"},  # bitsandbytes: a fresh load in the same process
]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sweep_matches_separate_qd_hf_runs(arch, tiny_model_dir, evaluate_in_process, tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))  # calibration statistics cache
    model_dir = tiny_model_dir(arch)
    items = build_items(GRID)
    outcomes = Sweep(_settings(model_dir, tmp_path / "runs", log_samples=True)).run(items)
    assert [o.status for o in outcomes] == ["done"] * 6
    assert outcomes[-1].item.config.mechanism == "bnb"
    assert outcomes[0].item.config.method == "none"
    bpb_by_method = {}
    for outcome in outcomes:
        saved = _results_file(outcome.folder)
        model_args = outcome.item.model_args(f"pretrained={model_dir}")
        assert saved["config"]["model"] == "qd-hf"
        assert saved["config"]["model_args"] == model_args
        alone = evaluate_in_process("qd-hf", model_args, list(TASKS), limit=LIMIT, batch_size=BATCH)
        assert set(_bits_per_byte(saved)) == set(_bits_per_byte(alone)) and len(_bits_per_byte(alone)) == 9  # 8 languages + group
        for task, value in _bits_per_byte(alone).items():
            assert _bits_per_byte(saved)[task] == pytest.approx(value, rel=1e-6, abs=1e-9)
        qd_saved, qd_alone = saved["config"]["quant_disparity"], alone["config"]["quant_disparity"]
        assert qd_saved["quant_config"] == qd_alone["quant_config"]
        assert qd_saved["quant_totals"] == qd_alone["quant_totals"]
        calib_saved, calib_alone = ((qd["quant_report"] or {}).get("calibration") for qd in (qd_saved, qd_alone))
        if calib_alone is not None:  # laaciq: the standalone run hits the cache the sweep filled,
            # whose key hashes every parameter -> the sweep calibrated on the original weights
            assert calib_saved["from_cache"] is False and calib_alone["from_cache"] is True
            drop = ("from_cache", "seconds")
            assert {k: v for k, v in calib_saved.items() if k not in drop} == {k: v for k, v in calib_alone.items() if k not in drop}
        assert list((outcome.folder).rglob("samples_qd_multilingual_ppl_*.jsonl"))
        bpb_by_method[outcome.item.label] = sum(_bits_per_byte(saved).values())
    # 3-bit per-tensor RTN must actually change the model (else the comparison above is vacuous)
    assert bpb_by_method["rtn-w3-tensor"] != pytest.approx(bpb_by_method["baseline"], rel=1e-6)


def test_restore_gives_back_the_loaded_weights(tiny_model_dir, tmp_path):
    import torch

    sweep = Sweep(_settings(tiny_model_dir("llama"), tmp_path))
    baseline = make_item({"method": "none"})
    before = {k: v.clone() for k, v in sweep.apply(baseline).model.state_dict().items()}
    for combo in GRID[:3]:
        quantized = sweep.apply(make_item(combo)).model.state_dict()
        assert any(not torch.equal(quantized[k], before[k]) for k in before)
    after = sweep.apply(baseline)
    assert after.quant_report is None and after.quant_config.method == "none"
    for name, tensor in after.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_rerun_skips_complete_configs_without_loading(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("llama")
    items = build_items(GRID[:1])
    first = Sweep(_settings(model_dir, tmp_path)).run(items)
    files = {o.folder: _results_file(o.folder) for o in first}
    again = Sweep(_settings(model_dir, tmp_path))
    second = again.run(items)
    assert [o.status for o in second] == ["skipped", "skipped"]
    assert again._lm is None  # nothing to run -> the model was never loaded
    for outcome in second:
        assert outcome.results == files[outcome.folder]
    # different eval settings -> different folders, nothing reused
    other = Sweep(_settings(model_dir, tmp_path, num_fewshot=0))
    assert all(not other.is_complete(item) for item in items)
    assert all(not Sweep(_settings(model_dir, tmp_path, log_samples=True)).is_complete(item) for item in items)


def test_stale_configs_rerun_after_a_code_or_calibration_data_change(tmp_path, monkeypatch):
    from qd_models.runners import sweep as sweep_module

    data = tmp_path / "calib.jsonl"
    data.write_text('{"lang": "en", "text": "one"}\n', encoding="utf-8")
    item = build_items([{"method": "laaciq", "calib_data": str(data)}], baseline=False)[0]
    sweep = Sweep(_settings("unused-model", tmp_path / "out"))
    name = sweep.folder_name(item)
    data.write_text('{"lang": "en", "text": "two"}\n', encoding="utf-8")
    assert sweep.folder_name(item) != name  # same path, new content
    changed = sweep.folder_name(item)
    monkeypatch.setattr(sweep_module, "code_fingerprint", lambda: "a code fix")
    assert sweep.folder_name(item) != changed
    assert sweep.identity(item)["code"] == "a code fix"


def test_interrupted_config_leaves_nothing_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    from lm_eval.loggers import EvaluationTracker

    model_dir = tiny_model_dir("llama")
    items = build_items(GRID[:2])
    real_save = EvaluationTracker.save_results_samples
    calls = {"n": 0}

    def save_then_interrupt(self, task_name, samples):
        real_save(self, task_name=task_name, samples=samples)
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # baseline wrote its 8 languages; 3rd language of config 2
            raise KeyboardInterrupt

    monkeypatch.setattr(EvaluationTracker, "save_results_samples", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Sweep(_settings(model_dir, tmp_path, log_samples=True)).run(items)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_DIR)
    sweep = Sweep(_settings(model_dir, tmp_path, log_samples=True))
    assert names == [sweep.folder_name(items[0])]  # no half-written folder, no temp folder
    assert (tmp_path / names[0] / COMPLETE_MARKER).is_file()
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())

    monkeypatch.setattr(EvaluationTracker, "save_results_samples", real_save)
    (tmp_path / f"{TMP_PREFIX}killed-config" / "partial").mkdir(parents=True)  # as after `kill -9`
    outcomes = sweep.run(items)
    assert not (tmp_path / f"{TMP_PREFIX}killed-config").exists()
    assert [o.status for o in outcomes] == ["skipped", "done", "done"]
    assert len(list(outcomes[1].folder.rglob("samples_*.jsonl"))) == 8


def test_a_config_another_sweep_is_writing_fails_fast(tiny_model_dir, tmp_path):
    sweep = Sweep(_settings(tiny_model_dir("llama"), tmp_path))
    baseline = sweep.folder_name(build_items([])[0])
    (tmp_path / LOCK_DIR).mkdir()
    with open(tmp_path / LOCK_DIR / f"{baseline}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(UserInputError, match=f"another qd-sweep is writing {baseline} in "):
            sweep.run(build_items([]))
    assert not (tmp_path / baseline).exists()


def test_model_dependent_errors_before_loading(tiny_model_dir, tmp_path):
    sweep = Sweep(_settings(tiny_model_dir("llama"), tmp_path))
    with pytest.raises(ValueError, match=r"keep_layers=\[5\] is out of range; allowed: block indices 0..1"):
        sweep.run(build_items([{"method": "rtn", "keep_layers": [5]}]))
    assert sweep._lm is None
    assert not list(tmp_path.iterdir())


def test_grid_expansion_and_validation(tmp_path):
    combos = expand_grid({"method": ["rtn", "nf4", "none"], "bits": [4, 3], "granularity": "channel"})
    assert combos == [
        {"method": "rtn", "bits": 4, "granularity": "channel"},
        {"method": "rtn", "bits": 3, "granularity": "channel"},
        {"method": "nf4"},
        {"method": "none"},
    ]
    items = build_items(combos)  # baseline deduplicated with the explicit none, bnb last
    assert [item.label for item in items] == ["baseline", "rtn-w4", "rtn-w3", "nf4-w4"]  # the labels of qd-analyze's reports
    assert items[1].qd_arg_string == "method=rtn,bits=4,granularity=channel"
    assert make_item({"method": "rtn", "keep_layers": [0, 3]}).qd_arg_string == "method=rtn,keep_layers=0;3"
    # same resolved config given two ways -> one item
    assert len(build_items([{"method": "rtn"}, {"method": "rtn", "bits": 4}], baseline=False)) == 1

    with pytest.raises(ValueError, match=r"grid key\(s\) \['bitz'\] are not quantization args; allowed:"):
        make_item({"method": "rtn", "bitz": 4})
    with pytest.raises(ValueError, match="bits=9 is not allowed for method=rtn"):
        build_items([{"method": "rtn", "bits": 9}])
    with pytest.raises(ValueError, match="model_args method=rtn is not allowed in a sweep"):
        EvalSettings(tasks=TASKS, output_path=str(tmp_path), model_args="pretrained=x,method=rtn")

    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  method: [rtn, aciq]\n  bits: [4]\nconfigs:\n  - {method: rtn, bits: 3, keep_top: 5}\n")
    args = build_parser().parse_args(["--grid", str(grid), "--tasks", "t", "--output_path", "o"])
    assert combos_from_args(args) == [
        {"method": "rtn", "bits": 4}, {"method": "aciq", "bits": 4}, {"method": "rtn", "bits": 3, "keep_top": 5},
    ]
    grid.write_text("methods: [rtn]\n")
    with pytest.raises(ValueError, match="allowed: a YAML mapping with keys grid and/or configs"):
        combos_from_args(args)
    args = build_parser().parse_args(["--bits", "4", "--tasks", "t", "--output_path", "o"])
    with pytest.raises(ValueError, match="bits given without --methods"):
        combos_from_args(args)


def test_cli_sweep_dry_run_and_analyze(tiny_model_dir, tmp_path, capsys):
    from qd_models.sweep import main

    common = ["--methods", "rtn", "--bits", "3", "--tasks", "qd_multilingual_ppl", "--limit", "1", "--batch_size", "4",
              "--device", "cpu", "--model_args", f"pretrained={tiny_model_dir('llama')}", "--output_path", str(tmp_path / "runs")]
    assert main(common + ["--dry_run"]) == 0
    assert [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()] == ["to run", "to run"]
    assert main(common + ["--log_samples", "--analyze", str(tmp_path / "report")]) == 0
    assert "rtn-w3" in (tmp_path / "report" / "report.md").read_text()
    capsys.readouterr()
    assert main(common + ["--log_samples", "--dry_run"]) == 0
    assert [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()] == ["complete", "complete"]
    assert main(common + ["--dry_run"]) == 0  # without --log_samples the outputs differ: not reused
    assert [line.split("\t")[2] for line in capsys.readouterr().out.splitlines()] == ["to run", "to run"]


def test_default_model_output_folder_is_named_after_the_model(tiny_model_dir, tmp_path, monkeypatch):
    import qd_models.default_model
    import qd_models.qd_hf

    model_dir = tiny_model_dir("llama")  # stands in for the embedded default model
    monkeypatch.setattr(qd_models.default_model, "default_model_path", lambda: model_dir)
    monkeypatch.setattr(qd_models.qd_hf, "default_model_path", lambda: model_dir)
    settings = EvalSettings(tasks=TASKS, output_path=str(tmp_path), limit=1, batch_size=BATCH, device="cpu")
    (outcome,) = Sweep(settings).run(build_items([], baseline=True))
    (results_file,) = outcome.folder.rglob("results_*.json")
    assert results_file.parent.name == model_dir.name  # not lm-eval's random id
    saved = json.loads(results_file.read_text())
    assert saved["config"]["model_args"] == "method=none" and saved["model_name"] == model_dir.name
