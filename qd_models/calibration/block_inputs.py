"""One-pass sequential calibration: each transformer block runs on its cached inputs.

GPTQ and AWQ need, for block k, the inputs of block k's linears with blocks < k already quantized.
Re-running blocks 0..k for block k costs n(n+1)/2 block evaluations per calibration batch for n
blocks. :class:`BlockInputs` keeps every batch's hidden states at the input of the next block to
calibrate instead: 2n - 1 block evaluations (each block once with hooks to collect its Gram
matrices, and, once quantized, once more to turn its inputs into the next block's, as GPTQ's
reference and llm-compressor's propagation pass do; the last block needs no second run). The Gram
matrices are those of the full-model passes: the block computes the same operations on the same
tensors, batch by batch in the same order.

Lifecycle (a context manager; :func:`qd_models.engine.quantize_` opens it around the walk):

1. capture (on the first :meth:`BlockInputs.grams`): one forward pass per calibration batch in
   which every block's ``forward`` is replaced by a stub that records its arguments (the hidden
   states ``[B, T, D]`` reaching the first block, and each block's own positional and keyword
   arguments as the model computed them: attention mask(s), position ids, rotary tables, ALiBi
   slopes, cache position ...; Gemma-3's sliding-window and global layers each keep their own
   mask and rotary table) and returns its input, shaped as the block's own output (a tensor, or a
   tuple as BLOOM's blocks return: learnt by running the first block called once on the first
   batch); a pre-hook on the output head ends the pass. Stubs and hook are removed in ``finally``.
2. :meth:`BlockInputs.grams` ``(block, names)``: blocks before ``block`` not yet run are run in
   their current (quantized) state, their outputs replacing their inputs batch by batch; then
   forward pre-hooks on ``names`` accumulate (:func:`qd_models.calibration.activations.gram_hook`),
   ``block`` runs on every batch, hooks off in ``finally``, the sums are returned.
3. ``close()`` (``__exit__``): the cached tensors are dropped and the spill folder removed.

Memory: hidden states stay on the device the first block received them on while their total is
within ``$QD_CALIB_MEMORY_GB`` GiB (default :data:`DEFAULT_MEMORY_GB`); batches beyond it are
written to a temporary folder (Python's ``tempfile``: ``$TMPDIR``) and loaded back to that device
when used. The blocks' other arguments (per batch one mask / rotary table per layer type, shared by
the blocks) stay in memory. The weights do not depend on the budget.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn

from qd_models.calibration.activations import (
    CalibrationBatches,
    _batches,
    _StopForward,
    check_all_called,
    gram_hook,
    language_weights,
)
from qd_models.model_layout import output_embedding

MEMORY_ENV = "QD_CALIB_MEMORY_GB"
DEFAULT_MEMORY_GB = 4.0


def calibration_memory_budget() -> int:
    """Bytes of calibration hidden states kept in memory: ``$QD_CALIB_MEMORY_GB`` GiB (default
    :data:`DEFAULT_MEMORY_GB`); ``ValueError`` for anything but a finite number >= 0."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MEMORY_GB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib >= 0):
        raise ValueError(f"{MEMORY_ENV}={raw} is not allowed; allowed: a number of GiB >= 0 (default {DEFAULT_MEMORY_GB:g})")
    return int(gib * 2**30)


@dataclass
class _Call:
    """One block's arguments in one batch besides the hidden states; ``hidden_kw``: the hidden
    states came as ``hidden_states=`` (else as the first positional argument)."""

    args: tuple
    kwargs: dict
    hidden_kw: bool


@dataclass
class _Batch:
    """One calibration batch: its language index, counted positions ``rows`` ``[B*T]`` bool,
    each block's arguments, and the hidden states ``[B, T, D]`` at the next block to run
    (``hidden``, or the file ``path`` when spilled; ``device``: where they are used)."""

    lang: int
    rows: torch.Tensor
    calls: dict[str, _Call]
    hidden: torch.Tensor | None
    device: torch.device
    path: str | None = None


class BlockInputs:
    """Cached block inputs of ``batches`` for ``model`` (module doc). ``blocks``: candidate block
    module names (those the forward pass calls are used, in call order)."""

    def __init__(self, model: nn.Module, batches: CalibrationBatches, blocks: list[str]):
        self.model, self.calib, self.candidates = model, batches, list(blocks)
        self.order: list[str] = []
        self.position = 0  # index in ``order`` of the block whose inputs the cache holds
        self._batches: list[_Batch] = []
        self._spill: tempfile.TemporaryDirectory | None = None
        self._captured = False

    def __enter__(self) -> BlockInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._batches = []
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    def grams(self, block: str, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (E[x x^T] float64 [in, in], E|x| float64 [in])}`` of the inputs of ``names``
        (modules of ``block``), weighted as :func:`qd_models.calibration.collect_input_grams`,
        with every block before ``block`` in its current state."""
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                if not self._captured:
                    self._capture()
                if block not in self.order:
                    raise ValueError(f"block {block!r} was never called during calibration; allowed: blocks on the forward path before the output head")
                index = self.order.index(block)
                if index < self.position:
                    raise ValueError(f"block {block!r} requested after block {self.order[self.position]!r}; allowed: blocks in forward order")
                while self.position < index:
                    self._run(self.order[self.position], None)
                    self.position += 1
                sums = self._collect(block, names)
        finally:
            self.model.train(was_training)
            self.calib.seconds += time.perf_counter() - start
        return check_all_called(names, sums)

    def _collect(self, block: str, names: list[str]) -> dict:
        """Hooks on ``names``, ``block`` run on every batch, hooks off in ``finally``."""
        sums: dict[str, list[torch.Tensor]] = {}
        current: dict = {"lang": 0, "rows": None}
        _, weights = language_weights(self.calib)
        handles = []
        try:
            for name in names:
                handles.append(self.model.get_submodule(name).register_forward_pre_hook(gram_hook(name, sums, current, weights)))
            self._run(block, current)
        finally:
            for handle in handles:
                handle.remove()
        return sums

    def _run(self, block_name: str, current: dict | None) -> None:
        """``block_name`` on every batch: with ``current`` (the hooks' state) set per batch, or,
        when ``None``, its outputs stored as the next block's inputs."""
        block = self.model.get_submodule(block_name)
        for batch in self._batches:
            call = batch.calls[block_name]
            hidden = batch.hidden if batch.path is None else torch.load(batch.path, map_location=batch.device, weights_only=True)
            if current is not None:
                current["lang"], current["rows"] = batch.lang, batch.rows
            if call.hidden_kw:
                out = block(*call.args, hidden_states=hidden, **call.kwargs)
            else:
                out = block(hidden, *call.args, **call.kwargs)
            if current is None:
                self._store(batch, out[0] if isinstance(out, (tuple, list)) else out)
        self.calib.block_evaluations += 1

    def _store(self, batch: _Batch, hidden: torch.Tensor) -> None:
        batch.device = hidden.device
        if batch.path is None:
            batch.hidden = hidden
        else:
            torch.save(hidden.cpu(), batch.path)

    def _capture(self) -> None:
        """Step 1 of the module doc: every batch's first hidden states and each block's arguments."""
        langs, _ = language_weights(self.calib)
        named = dict(self.model.named_modules())
        recorded: dict[str, _Call] = {}
        first: list[torch.Tensor] = []
        template: list = []  # a real block output: a tensor, or a tuple whose first item is the hidden states

        def stub_for(name: str, forward):
            def stub(*args, **kwargs):
                if name in recorded:
                    raise ValueError(f"block {name!r} is called twice in one forward pass; allowed: models that call each block once")
                hidden_kw = not args
                if hidden_kw and "hidden_states" not in kwargs:
                    raise ValueError(f"block {name!r} is called without hidden states; allowed: blocks taking them first or as hidden_states=")
                if not template:
                    template.append(forward(*args, **kwargs))
                hidden = kwargs.pop("hidden_states") if hidden_kw else args[0]
                if not recorded:
                    first.append(hidden)
                recorded[name] = _Call(tuple(args[0 if hidden_kw else 1:]), kwargs, hidden_kw)
                return (hidden, *template[0][1:]) if isinstance(template[0], (tuple, list)) else hidden
            return stub

        def stop(*args):
            raise _StopForward

        head = output_embedding(self.model)
        saved = {name: named[name].__dict__.get("forward") for name in self.candidates}
        handle = head.register_forward_pre_hook(stop) if head is not None else None
        budget, kept = calibration_memory_budget(), 0
        device = next(self.model.parameters()).device
        self._captured = True
        try:
            for name in self.candidates:
                named[name].forward = stub_for(name, named[name].forward)
            for index, lang in enumerate(langs):
                for ids, mask, counted in _batches(self.calib.token_ids[lang], self.calib.batch_size, self.calib.pad_id):
                    recorded.clear()
                    first.clear()
                    try:
                        self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                    except _StopForward:
                        pass
                    if not self._batches:
                        self.order = list(recorded)
                    if list(recorded) != self.order or not first:
                        raise ValueError("calibration batches call different blocks or none; allowed: models that call the same blocks in the same order")
                    batch = _Batch(index, counted.reshape(-1).bool().to(device), dict(recorded), first[0], first[0].device)
                    size = first[0].numel() * first[0].element_size()
                    if kept + size > budget:
                        self._spill_batch(batch)
                    else:
                        kept += size
                    self._batches.append(batch)
        finally:
            for name, forward in saved.items():
                if forward is None:
                    named[name].__dict__.pop("forward", None)
                else:
                    named[name].forward = forward
            if handle is not None:
                handle.remove()
        self.calib.passes += 1

    def _spill_batch(self, batch: _Batch) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="qd-calibration-")
        batch.path = os.path.join(self._spill.name, f"batch{len(self._batches)}.pt")
        torch.save(batch.hidden.cpu(), batch.path)
        batch.hidden = None
        self.calib.spilled_batches += 1
