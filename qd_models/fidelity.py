"""Fidelity of a quantized model to its baseline on rolling (perplexity) documents.

Per scored token t of a document (p = baseline, q = quantized next-token distribution):

* ``KL_t`` = KL(p ‖ q) over the partition {the baseline's top-k tokens, one tail bucket holding
  the rest}: ``sum_{i in topk} p_i ln(p_i/q_i) + P_tail ln(P_tail/Q_tail)``. Merging tokens into
  one bucket never increases a KL (data-processing inequality), so this is a lower bound of the
  exact KL, equal to it when k covers the vocabulary.
* ``agree_t``: argmax q == argmax p ("same top token"). ``dp_t`` = q(true) − p(true).

The baseline pass stores per position only the top-k log-probs + ids, the tail log-mass, the
argmax, the true token's log-prob and id (``fidelity_base_<task>__<run>.npz``); a quantized pass
computes its log-probs at those ids and its own tail mass on the model's device and writes
per-position KL/agree/Δp (``fidelity_<task>__<tag>__<run>.npz``). ``<run>`` hashes the whole run
identity (model with its weight fingerprint, scoring, quant config, task, documents), so runs that
share a ``fidelity_out`` never overwrite each other's files. Both files carry ``meta`` (JSON): that
identity, so a baseline of other weights or other scoring args is refused, and ``qd-analyze``
checks each file against the results that list it.

Hooked into :class:`qd_models.qd_hf.QDHFLM`: :meth:`FidelityRecorder.plan` lists lm-eval's
rolling windows per (task, doc), :meth:`expect` checks each batch of windows lm-eval scores, and
:meth:`observe` finds each window's row in the logits of ``_model_call`` (lm-eval reorders and
deduplicates rows; a causal row whose prefix equals the window's input gives its logits).
Data-parallel (``padded``): each rank records its own documents, skips the requests and windows
lm-eval repeats to give every rank as many as the others, and rank 0 writes the union.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_TOPK = 32
FORMAT_VERSION = 1
FIDELITY_ARGS = ("fidelity_out", "fidelity_baseline", "fidelity_topk")
BASE_PREFIX = "fidelity_base_"
METRICS_PREFIX = "fidelity_"
IDENTITY_CONFIG_SKIP = ("_name_or_path", "quantization_config", "torch_dtype", "dtype", "transformers_version")


def baseline_file(task: str, run: str) -> str:
    return f"{BASE_PREFIX}{task}__{run}.npz"


def metrics_file(task: str, tag: str, run: str) -> str:
    return f"{METRICS_PREFIX}{task}__{tag}__{run}.npz"


def run_hash(meta: dict) -> str:
    """10 hex of the run identity in a file's ``meta``: identity, role, quant config, task, documents."""
    keys = ("role", "identity", "quant_config", "task", "doc_keys_sha1")
    return hashlib.sha1(json.dumps({k: meta.get(k) for k in keys}, sort_keys=True, default=str).encode()).hexdigest()[:10]


class FidelityFileError(ValueError):
    """A fidelity file that cannot be read (truncated, empty, not an ``.npz``, no ``meta``)."""


# ----------------------------------------------------------------------------- math (torch)


def tail_log_mass_(logp, ids):
    """log of the probability mass outside ``ids`` per row: logp (n, V) float32 log-probs,
    **overwritten** (masked in place: no (n, V) copy); ids (n, k). Returns (n,) float32, -inf when
    ``ids`` covers the vocabulary."""
    return logp.scatter_(-1, ids.long(), float("-inf")).logsumexp(-1)


def baseline_summary(logp, targets, topk: int) -> dict:
    """What the baseline keeps per position. logp: (n, V) float32 log-probs (overwritten);
    targets: (n,) ids.

    Returns tensors top_lp (n, k) and top_ids (n, k) (k = min(topk, V), sorted descending),
    tail_lp (n,) log of the mass outside the top-k (-inf when k = V), argmax (n,), true_lp (n,).
    """
    import torch

    top_lp, top_ids = logp.topk(min(topk, logp.shape[-1]), dim=-1)
    summary = {
        "top_lp": top_lp,
        "top_ids": top_ids,
        "argmax": logp.argmax(-1),
        "true_lp": logp.gather(-1, targets[:, None].long())[:, 0],
        "token_ids": targets.to(torch.int64),
    }
    summary["tail_lp"] = tail_log_mass_(logp, top_ids)
    return summary


def compare_with_baseline(logq, base: dict) -> dict:
    """Per-position fidelity of ``logq`` (n, V) float32 log-probs (overwritten) against a baseline
    summary (tensors as from :func:`baseline_summary`, on logq's device).

    Returns kl (n,) float64 (top-k + tail bucket, inf when q puts 0 where p does not), agree (n,)
    bool, dp (n,) float64 = q(true) − p(true), base_tail (n,) float64 = the baseline's tail mass.
    """
    import torch

    top_ids = base["top_ids"].long()
    p_lp = base["top_lp"].double()
    q_lp = logq.gather(-1, top_ids).double()
    true_q = logq.gather(-1, base["token_ids"].long()[:, None])[:, 0].double()
    agree = logq.argmax(-1) == base["argmax"].long()
    q_tail = tail_log_mass_(logq, top_ids).double()
    p_tail_lp = base["tail_lp"].double()
    p, p_tail = p_lp.exp(), p_tail_lp.exp()
    kl = torch.where(p > 0, p * (p_lp - q_lp), 0.0).sum(-1) + torch.where(p_tail > 0, p_tail * (p_tail_lp - q_tail), 0.0)
    return {"kl": kl, "agree": agree, "dp": true_q.exp() - base["true_lp"].double().exp(), "base_tail": p_tail}


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FidelitySettings:
    """``fidelity_*`` model args of ``qd-hf``: ``out`` folder for the sidecar files, ``baseline``
    folder of a stored baseline (compare mode; without it: store mode), ``topk`` (store mode)."""

    out: str | None = None
    baseline: str | None = None
    topk: int = DEFAULT_TOPK

    @property
    def mode(self) -> str:
        return "compare" if self.baseline else "store"


def parse_fidelity_args(args: dict, is_baseline_method: bool) -> FidelitySettings | None:
    """Validate the ``fidelity_*`` args (``ValueError`` naming the arg); None when none given."""
    if not any(args.get(name) is not None for name in FIDELITY_ARGS):
        return None
    out, baseline, topk = args.get("fidelity_out"), args.get("fidelity_baseline"), args.get("fidelity_topk")
    if out is None:
        raise ValueError("fidelity_out is missing; allowed: fidelity_out=DIR (where the fidelity files are written) with any fidelity_* arg")
    if baseline is not None:
        if topk is not None:
            raise ValueError("fidelity_topk with fidelity_baseline is not allowed; allowed: fidelity_topk when storing a baseline (k comes from it)")
        files = sorted(Path(str(baseline)).glob(f"{BASE_PREFIX}*.npz"))
        if not files:
            raise ValueError(f"fidelity_baseline={baseline} holds no {BASE_PREFIX}<task>.npz; allowed: the fidelity_out folder of a method=none run")
        for file in files:  # a truncated or empty file is named before the model loads
            try:
                read_meta(file)
            except FidelityFileError as err:
                raise ValueError(f"fidelity_baseline={baseline}: {err}; allowed: the complete files of a method=none run (re-run it)") from None
    elif not is_baseline_method:
        raise ValueError("fidelity_out without fidelity_baseline is only allowed with method=none; allowed: add fidelity_baseline=DIR of a stored baseline")
    try:
        k = DEFAULT_TOPK if topk is None else int(topk)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or (topk is not None and str(topk).strip() != str(k)):
        raise ValueError(f"fidelity_topk={topk!r} is not allowed; allowed: an integer >= 1")
    return FidelitySettings(str(out), None if baseline is None else str(baseline), k)


def model_identity(pretrained, revision, hf_config, scoring: dict, weights: str | None) -> dict:
    """What a baseline must share with a compared run: model name, revision, architecture
    config (hash, without the path, dtype and quantization entries), the weights' fingerprint
    (:func:`qd_models.model_identity.model_fingerprint`) and the scoring args."""
    name = str(pretrained)
    if Path(name).exists():
        name = Path(name).resolve().name
    config = {k: v for k, v in hf_config.to_dict().items() if k not in IDENTITY_CONFIG_SKIP}
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"model": name, "revision": revision or "main", "model_config_sha1": digest, "weights": weights, "scoring": dict(scoring)}


def identity_mismatch(stored: dict, current: dict) -> str | None:
    """A one-line description of the first difference between two identities, else None."""
    flat_s = {**{k: v for k, v in stored.items() if k != "scoring"}, **stored.get("scoring", {})}
    flat_c = {**{k: v for k, v in current.items() if k != "scoring"}, **current.get("scoring", {})}
    for key in sorted(set(flat_s) | set(flat_c)):
        if flat_s.get(key) != flat_c.get(key):
            return f"{key}={flat_s.get(key)!r} in the baseline, {key}={flat_c.get(key)!r} in this run"
    return None


# ----------------------------------------------------------------------------- recorder


@dataclass
class _Doc:
    task: str
    doc_id: int
    doc_key: str
    lang: str
    n_bytes: int
    n_tokens: int
    parts: list = field(default_factory=list)  # (start, {name: np.ndarray}) per window


@dataclass
class _Window:
    doc: _Doc | None  # None: a padding window (scored, not recorded)
    start: int
    context: list
    continuation: list


class FidelityRecorder:
    """Collects per-position fidelity data during ``loglikelihood_rolling`` (see module doc).

    mode ``store``: keep the baseline summary (``topk``); mode ``compare``: compare with the
    baseline files in ``baseline_dir``. ``identity``: :func:`model_identity` of this run; ``tag``
    names compare files (one per config), ``quant_config`` (its dict) is stored in their ``meta``.
    Files go to ``out_dir`` when :meth:`write` is called.
    """

    def __init__(self, mode: str, out_dir, identity: dict, topk: int = DEFAULT_TOPK, baseline_dir=None, tag: str = "",
                 quant_config: dict | None = None):
        self.mode, self.out_dir, self.identity, self.topk = mode, Path(out_dir), identity, topk
        self.tag = re.sub(r"[^A-Za-z0-9._=+-]+", "_", tag) or "run"
        self.quant_config = json.loads(json.dumps(quant_config or {}, default=str))
        self.baseline_dir = None if baseline_dir is None else Path(baseline_dir)
        self._baselines: dict[str, dict] = {}
        self._baseline_files: dict[str, list[Path]] = {}
        self.docs: dict[tuple[str, int], _Doc] = {}
        self.files: dict[str, str] = {}
        self._plan: list[_Window] = []
        self._padding: _Window | None = None
        self.pending: list[_Window] = []
        self._done: list[bool] = []
        if mode == "compare":
            self.check_baseline()
        elif mode != "store":
            raise ValueError(f"mode={mode!r} is not allowed; allowed: store, compare")

    # -- baseline files ------------------------------------------------------------------
    def check_baseline(self) -> None:
        """Keep the baseline files of this model (same weights) and scoring; refuse (``ValueError``,
        one line) a folder holding none, naming the first difference."""
        files = sorted(self.baseline_dir.glob(f"{BASE_PREFIX}*.npz"))
        if not files:
            raise ValueError(f"fidelity_baseline={self.baseline_dir} holds no {BASE_PREFIX}<task>.npz; allowed: the fidelity_out folder of a method=none run")
        problem = None
        for file in files:
            try:
                meta = read_meta(file)
            except FidelityFileError as err:
                raise ValueError(f"fidelity_baseline={self.baseline_dir}: {err}; allowed: the complete files of a method=none run (re-run it)") from None
            mismatch = identity_mismatch(meta.get("identity", {}), self.identity)
            if mismatch:
                problem = problem or mismatch
                continue
            self.topk = int(meta.get("topk", self.topk))
            self._baseline_files.setdefault(str(meta.get("task")), []).append(file)
        if not self._baseline_files:
            raise ValueError(f"fidelity_baseline={self.baseline_dir} does not match this run ({problem}); allowed: a baseline of the same model and scoring args")

    def _baseline(self, task: str) -> dict:
        """The baseline arrays of ``task``: of the matching files, the first holding every planned document."""
        if task not in self._baselines:
            files = self._baseline_files.get(task)
            if not files:
                raise ValueError(f"fidelity_baseline={self.baseline_dir} has no {BASE_PREFIX}{task}__*.npz of this model; allowed: a baseline evaluated on task {task}")
            needed = {doc_id for (name, doc_id) in self.docs if name == task}
            chosen = None
            for file in files:
                with np.load(file, allow_pickle=False) as data:
                    if needed <= set(map(int, data["doc_ids"])):
                        chosen = file
                        break
            file = chosen or files[0]  # none covers them: the missing document is named below
            with np.load(file, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "meta"}
            arrays["index"] = {int(d): i for i, d in enumerate(arrays["doc_ids"])}
            self._baselines[task] = arrays
        return self._baselines[task]

    # -- hooks ---------------------------------------------------------------------------
    def plan(self, requests, tok_encode, prefix_token_id: int, max_length: int, padded: bool = False) -> None:
        """Windows of every rolling request, in lm-eval's order (``HFLM.loglikelihood_rolling``).
        ``padded`` (a data-parallel rank): a repeated request, and after the last window copies of
        the first one, are lm-eval's padding: scored, not recorded."""
        from lm_eval import utils

        self._plan, planned = [], set()
        for req in requests:
            (string,) = req.args
            tokens = tok_encode(string)
            doc = req.doc if isinstance(req.doc, dict) else {}
            entry = _Doc(str(req.task_name), int(req.doc_id), str(doc.get("doc_id", req.doc_id)),
                         doc.get("lang") if isinstance(doc.get("lang"), str) else "", len(string.encode("utf-8")), len(tokens))
            if padded and (entry.task, entry.doc_id) in planned:
                entry = None
            else:
                planned.add((entry.task, entry.doc_id))
                self.docs[(entry.task, entry.doc_id)] = entry
            start = 0
            for context, continuation in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=tokens, prefix_token=prefix_token_id, max_seq_len=max_length, context_len=1)):
                self._plan.append(_Window(entry, start, list(context), list(continuation)))
                start += len(continuation)
        self._padding = _Window(None, 0, self._plan[0].context, self._plan[0].continuation) if padded and self._plan else None
        self._plan.reverse()  # pop() from the end = lm-eval's order

    def expect(self, windows) -> None:
        """The next batch lm-eval scores: ``windows`` = (None, context, continuation) tuples."""
        self.pending, self._done = [], []
        for _, context, continuation in windows:
            planned = self._plan.pop() if self._plan else self._padding
            if planned is None or planned.context != list(context) or planned.continuation != list(continuation):
                raise RuntimeError("fidelity: lm-eval scored a rolling window in an unexpected order; fidelity needs lm-eval 0.4.13's loglikelihood_rolling")
            self.pending.append(planned)
            self._done.append(planned.doc is None)

    def observe(self, inps, logits, max_length: int) -> None:
        """Process every pending window whose input is a row (prefix) of ``inps`` (B, L);
        logits: (B, L, V) from the model for those rows (read only)."""
        import torch
        import torch.nn.functional as F

        for i, window in enumerate(self.pending):
            if self._done[i]:
                continue
            inp = (window.context + window.continuation)[-(max_length + 1):][:-1]
            if len(inp) > inps.shape[1]:
                continue
            ref = torch.tensor(inp, dtype=inps.dtype, device=inps.device)
            match = (inps[:, : len(inp)] == ref).all(-1).nonzero()
            if len(match) == 0:
                continue
            self._done[i] = True
            row, n = int(match[0, 0]), len(window.continuation)
            with torch.no_grad():
                logp = F.log_softmax(logits[row, len(inp) - n: len(inp)], dim=-1, dtype=torch.float32)  # (n, V), a new tensor
                targets = torch.tensor(window.continuation, device=logp.device)
                if self.mode == "store":
                    result = baseline_summary(logp, targets, self.topk)
                else:
                    base = self._baseline_slice(window, logp.device)
                    if not torch.equal(base["token_ids"].long(), targets):
                        raise ValueError(f"fidelity_baseline={self.baseline_dir}: task {window.doc.task} has other tokens than the baseline; allowed: a baseline of the same task version and tokenizer")
                    result = compare_with_baseline(logp, base)
            window.doc.parts.append((window.start, {name: value.cpu().numpy() for name, value in result.items()}))

    def _baseline_slice(self, window: _Window, device) -> dict:
        """The baseline summary of ``window``'s positions, on ``device``."""
        import torch

        base = self._baseline(window.doc.task)
        index = base["index"].get(window.doc.doc_id)
        if index is None:
            raise ValueError(f"fidelity_baseline={self.baseline_dir} lacks doc {window.doc.doc_id} of {window.doc.task}; allowed: a baseline evaluated on every document (same --limit or more)")
        lo = int(base["offsets"][index]) + window.start
        hi = lo + len(window.continuation)
        if hi > int(base["offsets"][index + 1]):
            raise ValueError(f"fidelity_baseline={self.baseline_dir}: doc {window.doc.doc_id} of {window.doc.task} has more tokens than in the baseline; allowed: a baseline of the same task version and tokenizer")
        return {name: torch.from_numpy(base[name][lo:hi]).to(device) for name in ("top_lp", "top_ids", "tail_lp", "argmax", "true_lp", "token_ids")}

    def check_done(self) -> None:
        if not all(self._done):
            raise RuntimeError("fidelity: a rolling window's logits were not seen in _model_call; fidelity needs lm-eval 0.4.13's HFLM")
        self.pending, self._done = [], []

    # -- output --------------------------------------------------------------------------
    def write(self, gather=None) -> dict[str, str]:
        """Write one file per task to ``out_dir``, named by the run identity (module doc); return
        {task: file name}. A file of that name that belongs to another run is refused (one line)
        before any is written; an unreadable one is replaced with a warning. ``gather``
        (data-parallel): list of docs -> every rank's lists on rank 0, ``None`` elsewhere; only
        rank 0 writes."""
        docs_here = list(self.docs.values())
        if gather is not None:
            gathered = gather(docs_here)
            if gathered is None:
                return {}
            docs_here = [doc for rank_docs in gathered for doc in rank_docs]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        by_task: dict[str, list[_Doc]] = {}
        for doc in docs_here:
            by_task.setdefault(doc.task, []).append(doc)
        staged = []
        for task, docs in sorted(by_task.items()):
            docs.sort(key=lambda d: d.doc_id)
            arrays = {}
            for doc in docs:
                if sum(len(part["agree" if self.mode == "compare" else "argmax"]) for _, part in doc.parts) != doc.n_tokens:
                    raise RuntimeError(f"fidelity: doc {doc.doc_id} of {task} was not scored completely")
            names = next((list(doc.parts[0][1]) for doc in docs if doc.parts), [])
            for name in names:
                arrays[name] = np.concatenate([part[name] for doc in docs for _, part in sorted(doc.parts, key=lambda p: p[0])])
            if self.mode == "store":
                for name in ("top_ids", "argmax", "token_ids"):
                    if name in arrays:
                        arrays[name] = arrays[name].astype(np.int32)
            arrays.update(
                doc_ids=np.array([d.doc_id for d in docs], dtype=np.int64),
                doc_keys=np.array([d.doc_key for d in docs], dtype=str),
                langs=np.array([d.lang for d in docs], dtype=str),
                n_bytes=np.array([d.n_bytes for d in docs], dtype=np.int64),
                offsets=np.concatenate([[0], np.cumsum([d.n_tokens for d in docs])]).astype(np.int64),
            )
            meta = {"format": FORMAT_VERSION, "role": "baseline" if self.mode == "store" else "compare", "task": task,
                    "topk": int(arrays["top_lp"].shape[1]) if "top_lp" in arrays else self.topk, "identity": self.identity,
                    "quant_config": self.quant_config, "n_docs": len(docs),
                    "doc_keys_sha1": hashlib.sha1(json.dumps([[d.doc_id, d.doc_key] for d in docs]).encode()).hexdigest()}
            run = run_hash(meta)
            name = baseline_file(task, run) if self.mode == "store" else metrics_file(task, self.tag, run)
            self._check_replaceable(self.out_dir / name, run)
            staged.append((task, name, meta, arrays))
        for task, name, meta, arrays in staged:
            tmp = self.out_dir / f".{name}.tmp.npz"
            np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
            tmp.replace(self.out_dir / name)
            self.files[task] = name
        return dict(self.files)

    def _check_replaceable(self, path: Path, run: str) -> None:
        """``ValueError`` when ``path`` holds the file of another run."""
        if not path.exists():
            return
        try:
            other = run_hash(read_meta(path))
        except FidelityFileError as err:
            logger.warning("qd-hf fidelity: replacing %s", err)
            return
        if other != run:
            raise ValueError(f"fidelity_out={self.out_dir}: {path.name} belongs to another run; allowed: another fidelity_out folder, or remove that file")

    def info(self) -> dict:
        """The ``quant_disparity.fidelity`` block of results["config"]."""
        return {"role": "baseline" if self.mode == "store" else "compare", "topk": self.topk, "files": dict(self.files),
                "format": FORMAT_VERSION}


def read_meta(path) -> dict:
    """The ``meta`` JSON of a fidelity file; :class:`FidelityFileError` naming the file when it
    cannot be read (truncated, empty, not an ``.npz``, no ``meta``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise FidelityFileError(f"{path} is not a readable fidelity file ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty'})") from None
    if not isinstance(meta, dict):
        raise FidelityFileError(f"{path} is not a readable fidelity file (its meta is not a JSON object)")
    return meta
