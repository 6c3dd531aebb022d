"""Data-parallel evaluation (``accelerate launch`` / ``torchrun``, one process per device): the
ranks lm-eval's ``HFLM`` leaves out, and the check that every rank quantized the same weights.

Each rank loads the model, runs its own calibration and quantizes its own copy; lm-eval then
splits the documents between the ranks and gathers the results on rank 0. The results are only
those of one model if every rank's weights are bit-identical: :func:`weight_digest` hashes them,
:func:`check_rank_agreement` compares the digests gathered from every rank (a mismatch stops the
run on every rank before any document is scored).
"""

from __future__ import annotations

import hashlib


def launched_ranks(accelerator) -> tuple[int, int] | None:
    """(rank, world size) of a multi-process launch, else ``None``. lm-eval 0.4.13's ``HFLM``
    runs data-parallel only with more than one GPU on the machine (CPU processes, or one GPU per
    machine, would each evaluate every document) and numbers ranks by their local index; the
    global process index is the rank across machines too."""
    if accelerator is None or accelerator.num_processes <= 1:
        return None
    return accelerator.process_index, accelerator.num_processes


def weight_digest(model) -> str:
    """sha256 over every parameter and buffer's name, shape, dtype and bytes (copied to the CPU one
    tensor at a time): equal digests = bit-identical weights."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def all_gather_objects(obj, world_size: int) -> list:
    """``obj`` of every rank, in rank order (``torch.distributed``, initialised by accelerate)."""
    import torch.distributed as dist

    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def check_rank_agreement(digests: list[str]) -> dict:
    """The ``ranks`` record of a data-parallel run: world size and each rank's weight digest;
    ``RuntimeError`` (one line, the same on every rank) when two ranks hold different weights."""
    differing = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
    if differing:
        raise RuntimeError(
            f"data-parallel ranks quantized different weights (rank 0: {digests[0][:12]}, rank {differing[0]}: "
            f"{digests[differing[0]][:12]}); the results would mix models: run this config in one process")
    return {"world_size": len(digests), "weights_sha256": list(digests), "weights_agree": True}
