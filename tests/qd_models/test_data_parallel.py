"""Data-parallel ``qd-hf`` (two CPU processes, gloo, launched by ``accelerate launch``): the same
per-document log-likelihoods and fidelity arrays as one process for a calibrated method, and every
rank holding bit-identical quantized weights (digests recorded in ``quant_disparity.ranks``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qd_models.data_parallel import check_rank_agreement, weight_digest

TASK = "qd_multilingual_ppl"
LIMIT = 3  # 3 documents per language on 2 ranks: lm-eval pads rank 1 with repeated requests
GPTQ = "method=gptq,bits=4,granularity=group,group_size=32"
BATCH = 1  # each window scored alone in both runs: same shapes, so the same float sums


def _reference_digest(model) -> str:
    """sha256 of every parameter and buffer (name|shape|dtype| then raw bytes), written here."""
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(bytes(tensor.detach().numpy().tobytes()))
    return digest.hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _doc_loglikelihoods(samples: dict[str, list[dict]]) -> dict[tuple[str, str], float]:
    """{(task, doc id): summed log-likelihood} from lm-eval's logged samples."""
    return {(task, str(s["doc"]["doc_id"])): float(s["resps"][0][0]) for task, rows in samples.items() for s in rows}


def _samples_from_files(folder: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for file in folder.rglob("samples_*.jsonl"):
        task = file.name.removeprefix("samples_").rsplit("_", 1)[0]
        out[task] = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    return out


@pytest.mark.integration
def test_two_cpu_processes_match_one_for_gptq_with_fidelity(tiny_model_dir, tmp_path, qd_task_manager, monkeypatch):
    from lm_eval import simple_evaluate

    from qd_models.qd_hf import QDHFLM

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tiny_model_dir("llama")
    common = {"tasks": [TASK], "limit": LIMIT, "task_manager": qd_task_manager}
    base_dir = tmp_path / "fidelity_base"
    baseline = QDHFLM(pretrained=str(model_dir), method="none", fidelity_out=str(base_dir), device="cpu", batch_size=4)
    simple_evaluate(model=baseline, **common)
    del baseline

    two_dir, two_out = tmp_path / "fidelity_two", tmp_path / "two"
    model_args = f"pretrained={model_dir},{GPTQ},fidelity_baseline={base_dir},fidelity_out={two_dir}"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(_free_port()), "-m", "lm_eval", "--model", "qd-hf", "--model_args", model_args,
           "--tasks", TASK, "--limit", str(LIMIT), "--batch_size", str(BATCH), "--log_samples", "--output_path", str(two_out)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    two = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    one_dir = tmp_path / "fidelity_one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched rank: GPTQ's float sums depend on the thread count
    try:
        quantized = QDHFLM(pretrained=str(model_dir), **dict(kv.split("=") for kv in GPTQ.split(",")),
                           fidelity_baseline=str(base_dir), fidelity_out=str(one_dir), device="cpu", batch_size=BATCH)
        one = simple_evaluate(model=quantized, log_samples=True, **common)
    finally:
        torch.set_num_threads(threads)
    one_digest = _reference_digest(quantized.model)
    output, _ = two.communicate(timeout=600)
    assert two.returncode == 0, output[-4000:]

    # both ranks ran (not one process twice), each scoring its share of the documents
    assert "on rank 1" in output and "on rank 0" in output
    (results_file,) = two_out.rglob("results_*.json")
    block = json.loads(results_file.read_text())["config"]["quant_disparity"]
    assert block["ranks"]["world_size"] == 2
    assert block["ranks"]["weights_sha256"] == [one_digest, one_digest]  # same GPTQ weights as one process
    assert "ranks" not in one["config"]["quant_disparity"]

    lls_one, lls_two = _doc_loglikelihoods(one["samples"]), _doc_loglikelihoods(_samples_from_files(two_out))
    assert len(lls_one) == 8 * LIMIT and lls_two.keys() == lls_one.keys()
    for key, value in lls_one.items():
        assert lls_two[key] == value, key  # bit-identical: same weights, same shapes, one thread each

    files = sorted(one_dir.glob("fidelity_*.npz"))
    assert len(files) == 8 and sorted(p.name for p in two_dir.glob("fidelity_*.npz")) == [p.name for p in files]
    for file in files:
        with np.load(file) as a, np.load(two_dir / file.name) as b:
            assert sorted(a.files) == sorted(b.files)
            assert len(a["doc_ids"]) == LIMIT
            for name in a.files:
                if name == "meta":
                    assert json.loads(str(a[name])) == json.loads(str(b[name]))
                else:
                    np.testing.assert_array_equal(b[name], a[name], err_msg=f"{file.name}:{name}")
    assert np.asarray(np.load(files[0])["kl"]).max() > 0  # gptq changed the model: the comparison is not vacuous


def test_weight_digest_sees_one_bit_and_the_agreement_check_names_the_rank(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    before = weight_digest(model)
    assert before == _reference_digest(model)
    with torch.no_grad():
        weight = model.model.layers[0].mlp.up_proj.weight
        weight.view(torch.int32)[0, 0] ^= 1  # one ulp of one weight
    after = weight_digest(model)
    assert after != before and after == _reference_digest(model)

    record = check_rank_agreement([before, before, before])
    assert record == {"world_size": 3, "weights_sha256": [before] * 3, "weights_agree": True}
    with pytest.raises(RuntimeError, match=rf"rank 0: {before[:12]}, rank 2: {after[:12]}") as err:
        check_rank_agreement([before, before, after])
    assert "\n" not in str(err.value)
