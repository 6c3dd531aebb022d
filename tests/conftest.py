"""Shared fixtures: tiny random HF models (GPT-2/Conv1D, Llama, BLOOM) with a byte tokenizer.

Every model is built from a config with a fixed seed and saved to a session temp folder, so
tests can pass its path to ``lm_eval`` exactly as a user passes a hub id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qd_models.tiny_models import save_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(arch, add_bos=False)`` -> path of a saved tiny random model (gpt2 | llama |
    bloom); ``add_bos``: its tokenizer prepends ``<bos>`` like Gemma's."""
    made: dict[tuple[str, bool], Path] = {}

    def get(arch: str = "llama", add_bos: bool = False) -> Path:
        if (arch, add_bos) not in made:
            made[arch, add_bos] = save_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}{'-bos' if add_bos else ''}"), add_bos=add_bos)
        return made[arch, add_bos]

    return get


def run_lm_eval(args: list[str], output_path: Path, timeout: int = 600) -> dict:
    """Run the real ``lm_eval`` CLI in a subprocess; return the parsed results JSON."""
    cmd = [sys.executable, "-m", "lm_eval", *args, "--output_path", str(output_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"lm_eval failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results = sorted(Path(output_path).rglob("results_*.json"))
    assert results, f"no results JSON under {output_path}:\n{proc.stderr[-2000:]}"
    return json.loads(results[-1].read_text())


@pytest.fixture(scope="session")
def lm_eval_cli():
    return run_lm_eval


@pytest.fixture(scope="session")
def qd_task_manager():
    """A TaskManager over the qd tasks only (indexing all of lm-eval's YAMLs is slow)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)


@pytest.fixture
def evaluate_in_process(qd_task_manager):
    """``evaluate_in_process(model, model_args, tasks, **kw)`` -> lm-eval results dict."""
    from lm_eval import simple_evaluate

    def run(model: str, model_args: str, tasks: list[str], **kwargs) -> dict:
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("batch_size", 4)
        return simple_evaluate(
            model=model, model_args=model_args, tasks=tasks, task_manager=qd_task_manager, **kwargs
        )

    return run
