"""Per-language activation statistics for LA-ACIQ (``method=laaciq``, ``keep_by=activation``).

:func:`load_calibration_texts` reads and checks the calibration JSONL (cheap, no model; call it
before loading weights). :func:`collect_activation_stats` runs each language's texts through
the model once (length-sorted batches, right padding, progress bar) with forward pre-hooks on
the quantization targets and accumulates, over the text tokens of each language, s_l[j] =
E[x_j^2] of every target's input channel j (hooks are removed in ``finally``). Each sequence is
scored as in evaluation: the prefix token (BOS, else EOS) then the text's own tokens
(``add_special_tokens=False``); the prefix position is run but not counted: its activations are
the same in every sequence of every language (causal attention sees only itself there), so it
would only dilute the language differences. When the
output head is not a target, a pre-hook on it stops the forward pass before the logits
(the head is the most expensive matmul of small multilingual models; nothing after it is
needed).

Statistics are cached under ``cache_dir()/calibration/<key>.pt``; ``key`` hashes the model
(class, config, and every parameter's name, shape, dtype, sum and sum of squares), the token
ids of every calibration batch (so the tokenizer, texts, ``calib_samples`` and
``max_length`` are covered), the target module names and :data:`STATS_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qd_tasks.corpus import corpus_path, read_corpus_file

from .config import QuantConfig
from .default_model import cache_dir

logger = logging.getLogger(__name__)

STATS_VERSION = 2
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 512
FINGERPRINT_CHUNK = 1 << 22


UDHR_SOURCE = "udhr"
"""``calib_data=udhr``: the UDHR articles outside the ``qd_udhr8_ppl`` evaluation subset."""


def udhr_calibration_records() -> list[dict]:
    """UDHR articles of the 8 default languages that ``qd_udhr8_ppl`` does not evaluate: the
    corpus is split by article id, so no article is in both calibration and evaluation (the full
    ``qd_udhr_ppl`` suite evaluates every article and overlaps them)."""
    from qd_tasks import udhr

    held_out = set(udhr.UDHR8_ARTICLES)
    return [record for record in udhr.load_udhr(udhr.DEFAULT_LANGS) if record["doc_id"] not in held_out]


def udhr_evaluation_texts() -> set[str]:
    """Texts ``qd_udhr8_ppl`` evaluates."""
    from qd_tasks import udhr

    return {record["text"] for record in udhr.load_udhr(udhr.DEFAULT_LANGS, udhr.UDHR8_ARTICLES)}


def calibration_records(calib_data: str | None) -> tuple[list[dict], str]:
    """The one place the calibration source is chosen: ``(records {lang, text, ...}, name)``
    from ``calib_data`` (a JSONL path, ``udhr``: :func:`udhr_calibration_records`) or, unset,
    the bundled calibration split (the documented default mix: every language it holds)."""
    if calib_data == UDHR_SOURCE:
        return udhr_calibration_records(), UDHR_SOURCE
    path = Path(calib_data) if calib_data else corpus_path("calibration")
    try:
        return read_corpus_file(path), str(path)
    except ValueError as err:
        raise ValueError(f"calib_data={str(path)!r} is not usable ({err}); allowed: a JSONL file with fields lang, text") from None


def evaluation_texts() -> set[str]:
    """Every text the bundled evaluation tasks score (bundled eval corpus, ``qd_udhr8_ppl``)."""
    return {record["text"] for record in read_corpus_file(corpus_path("eval"))} | udhr_evaluation_texts()


def load_calibration_texts(config: QuantConfig) -> dict[str, list[str]]:
    """``{lang: [text, ...]}`` for ``config.calib_langs`` (default: every language of the
    source, in file order) from :func:`calibration_records`, the first ``calib_samples`` texts
    per language. One-line ``ValueError`` for an unreadable or empty file or a language it
    lacks. Warns when a text also occurs in an evaluation corpus (leakage)."""
    records, path = calibration_records(config.calib_data)
    by_lang: dict[str, list[str]] = {}
    for record in records:
        by_lang.setdefault(record["lang"], []).append(record["text"])
    langs = list(config.calib_langs) or list(by_lang)
    missing = [lang for lang in langs if lang not in by_lang]
    if missing:
        raise ValueError(f"calib_langs={';'.join(missing)} not in calib_data={path!r}; allowed: {', '.join(by_lang)}")
    texts = {lang: by_lang[lang][: config.calib_samples] for lang in langs}
    eval_texts = evaluation_texts()
    leaked = sum(text in eval_texts for group in texts.values() for text in group)
    if leaked:
        logger.warning("calibration leakage: %d calibration texts from %s also occur in the qd eval corpus", leaked, path)
    return texts


@dataclass
class ActivationStats:
    """Per-language input second moments of the quantization targets.

    ``second_moments[name]``: float64 ``[L, in]``, row l = E[x_j^2] over language ``langs[l]``'s
    tokens; ``tokens[lang]``: token count; ``key``: the cache key; ``from_cache``/``seconds``:
    whether it was loaded and how long collecting or loading took.
    """

    langs: tuple[str, ...]
    tokens: dict[str, int]
    second_moments: dict[str, torch.Tensor]
    key: str = ""
    from_cache: bool = False
    seconds: float = 0.0
    source: str = ""
    stopped_before: str | None = None

    def select_langs(self, langs: tuple[str, ...] = ()) -> tuple[str, ...]:
        """``langs`` (all collected languages when empty), checked against the collected ones."""
        missing = [lang for lang in langs if lang not in self.langs]
        if missing:
            raise ValueError(f"calib_langs={';'.join(missing)} has no activation statistics; allowed: {', '.join(self.langs)}")
        return tuple(langs) or self.langs

    def inputs(self, name: str, langs: tuple[str, ...] = ()) -> torch.Tensor:
        """float32 ``[in, L]`` second moments of module ``name``'s input for ``langs``
        (default: all collected languages)."""
        if name not in self.second_moments:
            raise ValueError(f"no activation statistics for module {name!r}; allowed: {len(self.second_moments)} calibrated modules")
        rows = [self.langs.index(lang) for lang in self.select_langs(langs)]
        return self.second_moments[name][rows].t().float()

    def to_dict(self) -> dict:
        """Cache payload (tensors, lists, strings, ints: loadable with ``weights_only``)."""
        return {"version": STATS_VERSION, "langs": list(self.langs), "tokens": dict(self.tokens),
                "second_moments": dict(self.second_moments), "stopped_before": self.stopped_before}


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model class, its config (minus its path) and each parameter's name,
    shape, dtype, float64 sum and sum of squares."""
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict()
        cfg.pop("_name_or_path", None)
        digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            total = square = 0.0
            for chunk in param.detach().reshape(-1).split(FINGERPRINT_CHUNK):  # no full float64 copy
                chunk = chunk.double()
                total, square = total + float(chunk.sum()), square + float(chunk.square().sum())
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{total!r}|{square!r}".encode())
    return digest.hexdigest()


def default_prefix_id(tokenizer) -> int:
    """lm-eval's default prefix token: BOS, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tokenize_texts(tokenizer, texts: dict[str, list[str]], max_length: int, prefix_id: int | None = None) -> dict[str, list[list[int]]]:
    """``[prefix] + text tokens`` per text (no other special tokens), cut to ``max_length``."""
    prefix = default_prefix_id(tokenizer) if prefix_id is None else prefix_id
    return {lang: [[prefix, *tokenizer(text, add_special_tokens=False)["input_ids"]][:max_length] for text in group]
            for lang, group in texts.items()}


def calibration_key(fingerprint: str, token_ids: dict[str, list[list[int]]], module_names: list[str]) -> str:
    payload = json.dumps({"version": STATS_VERSION, "model": fingerprint, "tokens": token_ids, "modules": module_names})
    return hashlib.sha256(payload.encode()).hexdigest()


def stats_cache_dir() -> Path:
    return cache_dir() / "calibration"


class _StopForward(Exception):
    """Raised by the head's pre-hook: everything needed has been computed."""


def _batches(sequences: list[list[int]], batch_size: int, pad_id: int):
    """Length-sorted right-padded batches: (input_ids ``[B, T]``, attention_mask ``[B, T]``,
    counted ``[B, T]``: the mask without the prefix position)."""
    ordered = sorted(sequences, key=len, reverse=True)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = len(chunk[0])
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        counted = mask.clone()
        counted[:, 0] = 0
        yield ids, mask, counted


def _accumulate(model, modules: dict[str, nn.Module], token_ids, batch_size: int, pad_id: int, stop_at, progress: bool):
    """Run the forward passes with hooks; return (sums ``{name: [L, in]}``, token counts)."""
    from tqdm import tqdm

    langs = list(token_ids)
    sums: dict[str, torch.Tensor] = {}
    current = {"lang": 0, "rows": None}

    def make_hook(name: str):
        def hook(module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] != current["rows"].shape[0]:
                raise ValueError(f"module {name!r} input has {flat.shape[0]} rows for {current['rows'].shape[0]} tokens; allowed: token-wise layers")
            sq = flat[current["rows"]].double().square_().sum(0)
            if name not in sums:
                sums[name] = torch.zeros(len(langs), sq.shape[0], dtype=torch.float64)
            sums[name][current["lang"]] += sq.cpu()
        return hook

    def stop(module, args):
        raise _StopForward

    handles = []
    counts = {lang: 0 for lang in langs}
    total = sum(-(-len(seqs) // batch_size) for seqs in token_ids.values())
    device = next(model.parameters()).device
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(name)))
        if stop_at is not None:
            handles.append(stop_at.register_forward_pre_hook(stop))
        with torch.inference_mode(), tqdm(total=total, desc="qd calibration", disable=not progress) as bar:
            for index, lang in enumerate(langs):
                current["lang"] = index
                for ids, mask, counted in _batches(token_ids[lang], batch_size, pad_id):
                    current["rows"] = counted.reshape(-1).bool().to(device)
                    counts[lang] += int(counted.sum())
                    try:
                        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                    except _StopForward:
                        pass
                    bar.update(1)
    finally:
        for handle in handles:
            handle.remove()
    return sums, counts


def collect_activation_stats(
    model: nn.Module,
    tokenizer,
    texts: dict[str, list[str]],
    module_names: list[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: bool = True,
    use_cache: bool = True,
    source: str = "",
    prefix_id: int | None = None,
) -> ActivationStats:
    """Per-language E[x_j^2] of the inputs of ``module_names`` (module doc), from the disk
    cache when the key matches. ``texts``: ``{lang: [text, ...]}`` (every list non-empty);
    ``prefix_id``: the evaluation's prefix token (default: :func:`default_prefix_id`)."""
    empty = [lang for lang, group in texts.items() if not group]
    if not texts or empty:
        raise ValueError(f"calibration texts are empty for {', '.join(empty) or 'every language'}; allowed: at least one text per calibration language")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size={batch_size}, max_length={max_length} are not allowed; allowed: positive integers")
    start = time.perf_counter()
    named = dict(model.named_modules())
    unknown = [name for name in module_names if name not in named]
    if unknown:
        raise ValueError(f"module_names contains {unknown[0]!r}, not a module of the model; allowed: names from model.named_modules()")
    token_ids = tokenize_texts(tokenizer, texts, max_length, prefix_id)
    key = calibration_key(model_fingerprint(model), token_ids, list(module_names))
    path = stats_cache_dir() / f"{key}.pt"
    cached = _read_cache(path) if use_cache and path.is_file() else None
    if cached is not None:
        stats = ActivationStats(tuple(cached["langs"]), cached["tokens"], cached["second_moments"], key=key,
                                from_cache=True, source=source, stopped_before=cached["stopped_before"])
        stats.seconds = time.perf_counter() - start
        logger.info("qd calibration: statistics loaded from %s", path)
        return stats
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_is_target = head is not None and any(named[name] is head for name in module_names)
    stop_at = None if head is None or head_is_target else head
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        sums, counts = _accumulate(model, {name: named[name] for name in module_names}, token_ids, batch_size, pad_id, stop_at, progress)
    finally:
        model.train(was_training)
    never = [name for name in module_names if name not in sums]
    if never:
        raise ValueError(f"module {never[0]!r} was never called during calibration; allowed: modules on the forward path before the output head")
    denominators = torch.tensor([max(counts[lang], 1) for lang in token_ids], dtype=torch.float64).unsqueeze(1)
    moments = {name: sums[name] / denominators for name in module_names}
    stopped_before = next((n for n, m in named.items() if m is stop_at), None) if stop_at is not None else None
    stats = ActivationStats(tuple(token_ids), counts, moments, key=key, source=source, stopped_before=stopped_before)
    if use_cache:
        _write_atomic(stats.to_dict(), path)
    stats.seconds = time.perf_counter() - start
    logger.info("qd calibration: %s tokens per language, %d modules, %.1f s", counts, len(module_names), stats.seconds)
    return stats


def _read_cache(path: Path) -> dict | None:
    """A cache entry, or ``None`` (a miss, logged naming the file) when it cannot be read or
    lacks a field; the recomputed statistics then replace it atomically."""
    try:
        payload = torch.load(path, weights_only=True)
        if not isinstance(payload, dict) or any(name not in payload for name in ("langs", "tokens", "second_moments", "stopped_before")):
            raise ValueError("missing fields")
        return payload
    except Exception as err:  # noqa: BLE001 - any unreadable entry (truncated zip, pickle error, ...) is a miss
        logger.warning("qd calibration: cache file %s is unreadable (%s); recomputing and replacing it", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def _write_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def layer_calibration_report(weight: torch.Tensor, quantized: torch.Tensor, inputs: torch.Tensor, degenerate: torch.Tensor,
                             langs: tuple[str, ...]) -> dict:
    """Per-language figures of one quantized layer: ``weighted_rel_error`` (see
    :func:`qd_models.quant.weighted.language_errors`), ``activation_weighted_kurtosis`` (see
    :func:`qd_models.quant.weighted.activation_weighted_kurtosis`) and the languages whose
    statistics were degenerate (all zero or non-finite; weighted as plain MSE).
    ``weight``/``quantized`` ``[out, in]``, ``inputs`` normalised ``[in, L]``."""
    from .quant.weighted import activation_weighted_kurtosis, language_errors

    errors = language_errors(weight, quantized, inputs).tolist()
    kurtosis = activation_weighted_kurtosis(weight, inputs).tolist()
    return {
        "weighted_rel_error": dict(zip(langs, errors)),
        "activation_weighted_kurtosis": dict(zip(langs, kurtosis)),
        "degenerate_langs": [lang for lang, flag in zip(langs, degenerate.tolist()) if flag],
    }


def calibration_report(stats: ActivationStats, config: QuantConfig, layers: list[dict]) -> dict:
    """The report's ``calibration`` block. ``per_language[lang]``: ``tokens`` (calibration
    tokens), ``activation_weighted_kurtosis`` and ``weighted_rel_error`` (unweighted means over
    the quantized layers of the per-layer values; non-finite layer values are skipped and
    counted in ``nonfinite_layers``) and ``weighted_rel_error_max`` (worst layer)."""
    langs = stats.select_langs(config.calib_langs)
    per_layer = [layer["calibration"] for layer in layers if "calibration" in layer]
    per_language = {}
    for lang in langs:
        kurt = [v for v in (c["activation_weighted_kurtosis"][lang] for c in per_layer) if math.isfinite(v)]
        errs = [v for v in (c["weighted_rel_error"][lang] for c in per_layer) if math.isfinite(v)]
        per_language[lang] = {
            "tokens": int(stats.tokens[lang]),
            "activation_weighted_kurtosis": sum(kurt) / len(kurt) if kurt else float("nan"),
            "weighted_rel_error": sum(errs) / len(errs) if errs else float("nan"),
            "weighted_rel_error_max": max(errs) if errs else float("nan"),
            "nonfinite_layers": len(per_layer) - min(len(kurt), len(errs)),
        }
    return {
        "mode": config.calib_mode,
        "langs": list(langs),
        "source": stats.source,
        "samples_per_language": config.calib_samples,
        "cache_key": stats.key,
        "from_cache": stats.from_cache,
        "seconds": stats.seconds,
        "stopped_before": stats.stopped_before,
        "layers": len(per_layer),
        "per_language": per_language,
    }


@dataclass
class CalibrationBatches:
    """Tokenized calibration texts for the ``inputs`` calibration (GPTQ, AWQ): ``token_ids``
    ``{lang: [[prefix, tokens...], ...]}``, ``tokens[lang]`` counted positions (text tokens,
    not the prefix), the source's description and the padding id."""

    token_ids: dict[str, list[list[int]]]
    tokens: dict[str, int]
    source: str = ""
    pad_id: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    passes: int = 0
    seconds: float = 0.0

    @classmethod
    def from_texts(cls, tokenizer, texts: dict[str, list[str]], source: str = "", prefix_id: int | None = None,
                   max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = DEFAULT_BATCH_SIZE) -> CalibrationBatches:
        empty = [lang for lang, group in texts.items() if not group]
        if not texts or empty:
            raise ValueError(f"calibration texts are empty for {', '.join(empty) or 'every language'}; allowed: at least one text per calibration language")
        token_ids = tokenize_texts(tokenizer, texts, max_length, prefix_id)
        tokens = {lang: sum(len(seq) - 1 for seq in seqs) for lang, seqs in token_ids.items()}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(token_ids, tokens, source, pad_id, batch_size)

    def report(self) -> dict:
        """The quant report's ``calibration`` block for the ``inputs`` calibration."""
        return {"kind": "inputs", "langs": list(self.token_ids), "source": self.source,
                "samples_per_language": {lang: len(seqs) for lang, seqs in self.token_ids.items()},
                "per_language": {lang: {"tokens": count} for lang, count in self.tokens.items()},
                "weighting": "each language's tokens carry equal total weight", "forward_passes": self.passes,
                "seconds": self.seconds}


def collect_input_grams(model: nn.Module, batches: CalibrationBatches, module_names: list[str], stop_after: str | None = None,
                        progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (E[x x^T] float64 [in, in], E|x| float64 [in])}`` of the inputs of
    ``module_names`` over the calibration texts, on the model's device, each language's tokens
    weighted 1 / (n_lang * L) (equal total weight per language; prefix and padding positions not
    counted). The forward pass is cut by an exception from a forward hook on ``stop_after`` (the
    block holding the modules; ``None``: before the output head, unless it is in
    ``module_names``), so block k costs a pass through blocks 0..k: a model of n blocks costs
    about n^2 / 2 block evaluations per calibration batch (caching each block's output hidden
    states would make it n, at the memory of all calibration hidden states)."""
    from tqdm import tqdm

    named = dict(model.named_modules())
    device = next(model.parameters()).device
    langs = [lang for lang, count in batches.tokens.items() if count > 0]
    if not langs:
        raise ValueError("calibration texts have no tokens after the prefix; allowed: non-empty texts")
    sums: dict[str, list[torch.Tensor]] = {}
    current: dict = {"rows": None, "weight": 0.0}

    def make_hook(name: str):
        def hook(module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] != current["rows"].shape[0]:
                raise ValueError(f"module {name!r} input has {flat.shape[0]} rows for {current['rows'].shape[0]} tokens; allowed: token-wise layers")
            rows = flat[current["rows"]].double()
            if name not in sums:
                sums[name] = [torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device),
                              torch.zeros(rows.shape[1], dtype=torch.float64, device=rows.device)]
            sums[name][0].addmm_(rows.t(), rows, alpha=current["weight"])
            sums[name][1].add_(rows.abs().sum(0), alpha=current["weight"])
        return hook

    def stop(*args):
        raise _StopForward

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    handles = []
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for name in module_names:
            handles.append(named[name].register_forward_pre_hook(make_hook(name)))
        if stop_after is not None:
            handles.append(named[stop_after].register_forward_hook(stop))
        elif head is not None and not any(named[name] is head for name in module_names):
            handles.append(head.register_forward_pre_hook(stop))
        total = sum(-(-len(batches.token_ids[lang]) // batches.batch_size) for lang in langs)
        with torch.inference_mode(), tqdm(total=total, desc="qd calibration (inputs)", disable=not progress) as bar:
            for lang in langs:
                current["weight"] = 1.0 / (batches.tokens[lang] * len(langs))
                for ids, mask, counted in _batches(batches.token_ids[lang], batches.batch_size, batches.pad_id):
                    current["rows"] = counted.reshape(-1).bool().to(device)
                    try:
                        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                    except _StopForward:
                        pass
                    bar.update(1)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    batches.passes += 1
    batches.seconds += time.perf_counter() - start
    never = [name for name in module_names if name not in sums]
    if never:
        raise ValueError(f"module {never[0]!r} was never called during calibration; allowed: modules on the forward path before the output head")
    return {name: (gram, mean_abs) for name, (gram, mean_abs) in sums.items()}
