"""The calibration passes: texts tokenized as in evaluation, forward pre-hooks on the targets
(removed in ``finally``), per-language input second moments (:func:`collect_activation_stats`,
cached) and per-block input Gram matrices (:func:`collect_input_grams`), and their reports."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from qd_models.calibration.cache import STATS_VERSION, calibration_key, model_key, read_cache, stats_cache_dir, write_atomic
from qd_models.model_layout import output_embedding

if TYPE_CHECKING:
    from qd_models.config import QuantConfig

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 512


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


def default_prefix_id(tokenizer) -> int:
    """lm-eval's default prefix token: BOS, else EOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tokenize_texts(tokenizer, texts: dict[str, list[str]], max_length: int, prefix_id: int | None = None) -> dict[str, list[list[int]]]:
    """``[prefix] + text tokens`` per text (no other special tokens), cut to ``max_length``."""
    prefix = default_prefix_id(tokenizer) if prefix_id is None else prefix_id
    return {lang: [[prefix, *tokenizer(text, add_special_tokens=False)["input_ids"]][:max_length] for text in group]
            for lang, group in texts.items()}


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


def _counted_rows(name: str, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A hooked module's input ``x`` ``[B, T, in]`` at the counted positions: ``[n_counted, in]``
    (``rows``: ``[B*T]`` bool); ``ValueError`` for a module whose input is not token-wise."""
    flat = x.detach().reshape(-1, x.shape[-1])
    if flat.shape[0] != rows.shape[0]:
        raise ValueError(f"module {name!r} input has {flat.shape[0]} rows for {rows.shape[0]} tokens; allowed: token-wise layers")
    return flat[rows]


def _forward_passes(model, token_ids: dict[str, list[list[int]]], langs: list[str], batch_size: int, pad_id: int,
                    current: dict, desc: str, progress: bool) -> dict[str, int]:
    """One forward pass per length-sorted batch of each language of ``langs`` (inference mode,
    progress bar; a :class:`_StopForward` from a hook ends a pass). Before each pass
    ``current["lang"]`` is the language's index and ``current["rows"]`` the ``[B*T]`` bool mask of
    counted positions, on the model's device. Returns the counted tokens per language."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    counts = {lang: 0 for lang in langs}
    total = sum(-(-len(token_ids[lang]) // batch_size) for lang in langs)
    with torch.inference_mode(), tqdm(total=total, desc=desc, disable=not progress) as bar:
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
    return counts


def _accumulate(model, modules: dict[str, nn.Module], token_ids, batch_size: int, pad_id: int, stop_at, progress: bool):
    """Run the forward passes with hooks; return (sums ``{name: [L, in]}``, token counts)."""
    langs = list(token_ids)
    sums: dict[str, torch.Tensor] = {}
    current = {"lang": 0, "rows": None}

    def make_hook(name: str):
        def hook(module, args):
            sq = _counted_rows(name, args[0], current["rows"]).double().square_().sum(0)
            if name not in sums:
                sums[name] = torch.zeros(len(langs), sq.shape[0], dtype=torch.float64)
            sums[name][current["lang"]] += sq.cpu()
        return hook

    def stop(module, args):
        raise _StopForward

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(name)))
        if stop_at is not None:
            handles.append(stop_at.register_forward_pre_hook(stop))
        counts = _forward_passes(model, token_ids, langs, batch_size, pad_id, current, "qd calibration", progress)
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
    seed: int | None = None,
) -> ActivationStats:
    """Per-language E[x_j^2] of the inputs of ``module_names`` (module doc), from the disk
    cache when the key matches. ``texts``: ``{lang: [text, ...]}`` (every list non-empty);
    ``prefix_id``: the evaluation's prefix token (default: :func:`default_prefix_id`); ``seed``: the
    ``calib_seed`` that drew ``texts`` (part of the cache key)."""
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
    key = calibration_key(model_key(model), token_ids, list(module_names), seed)
    path = stats_cache_dir() / f"{key}.pt"
    cached = read_cache(path) if use_cache and path.is_file() else None
    if cached is not None:
        stats = ActivationStats(tuple(cached["langs"]), cached["tokens"], cached["second_moments"], key=key,
                                from_cache=True, source=source, stopped_before=cached["stopped_before"])
        stats.seconds = time.perf_counter() - start
        logger.info("qd calibration: statistics loaded from %s", path)
        return stats
    head = output_embedding(model)
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
        write_atomic(stats.to_dict(), path)
    stats.seconds = time.perf_counter() - start
    logger.info("qd calibration: %s tokens per language, %d modules, %.1f s", counts, len(module_names), stats.seconds)
    return stats


def layer_calibration_report(weight: torch.Tensor, quantized: torch.Tensor, inputs: torch.Tensor, degenerate: torch.Tensor,
                             langs: tuple[str, ...]) -> dict:
    """Per-language figures of one quantized layer: ``weighted_rel_error`` (see
    :func:`qd_models.quant.weighted.language_errors`), ``activation_weighted_kurtosis`` (see
    :func:`qd_models.quant.weighted.activation_weighted_kurtosis`) and the languages whose
    statistics were degenerate (all zero or non-finite; weighted as plain MSE).
    ``weight``/``quantized`` ``[out, in]``, ``inputs`` normalised ``[in, L]``."""
    from qd_models.quant.weighted import activation_weighted_kurtosis, language_errors

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
        "calib_seed": config.calib_seed,
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
    not the prefix), the source's description and the padding id. Counters: ``passes`` model
    forward passes (a capture of the blocks' inputs, or a full pass), ``block_evaluations`` runs of
    one block over every batch (:class:`qd_models.calibration.BlockInputs`), ``spilled_batches``
    batches whose hidden states went to disk, ``seconds`` time spent."""

    token_ids: dict[str, list[list[int]]]
    tokens: dict[str, int]
    source: str = ""
    pad_id: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    passes: int = 0
    seconds: float = 0.0
    block_evaluations: int = 0
    spilled_batches: int = 0

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
                "block_evaluations": self.block_evaluations, "spilled_batches": self.spilled_batches, "seconds": self.seconds}


def language_weights(batches: CalibrationBatches) -> tuple[list[str], list[float]]:
    """The calibration languages with tokens and each one's per-token weight 1 / (n_lang * L)."""
    langs = [lang for lang, count in batches.tokens.items() if count > 0]
    if not langs:
        raise ValueError("calibration texts have no tokens after the prefix; allowed: non-empty texts")
    return langs, [1.0 / (batches.tokens[lang] * len(langs)) for lang in langs]


def gram_hook(name: str, sums: dict[str, list[torch.Tensor]], current: dict, weights: list[float]):
    """A forward pre-hook adding module ``name``'s counted inputs ``x`` ``[n, in]`` (float64) to
    ``sums[name] = [sum w x x^T [in, in], sum w |x| [in]]`` on the input's device, w =
    ``weights[current["lang"]]``, rows chosen by ``current["rows"]`` (``[B*T]`` bool)."""
    def hook(module, args):
        rows = _counted_rows(name, args[0], current["rows"]).double()
        weight = weights[current["lang"]]
        if name not in sums:
            sums[name] = [torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device),
                          torch.zeros(rows.shape[1], dtype=torch.float64, device=rows.device)]
        sums[name][0].addmm_(rows.t(), rows, alpha=weight)
        sums[name][1].add_(rows.abs().sum(0), alpha=weight)
    return hook


def check_all_called(module_names: list[str], sums: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (E[x x^T], E|x|)}`` from :func:`gram_hook`'s sums; ``ValueError`` naming a module
    that was never called."""
    never = [name for name in module_names if name not in sums]
    if never:
        raise ValueError(f"module {never[0]!r} was never called during calibration; allowed: modules on the forward path before the output head")
    return {name: (gram, mean_abs) for name, (gram, mean_abs) in sums.items()}


def collect_input_grams(model: nn.Module, batches: CalibrationBatches, module_names: list[str], stop_after: str | None = None,
                        progress: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (E[x x^T] float64 [in, in], E|x| float64 [in])}`` of the inputs of
    ``module_names`` over the calibration texts, on the model's device, each language's tokens
    weighted 1 / (n_lang * L) (equal total weight per language; prefix and padding positions not
    counted), from full-model forward passes. The pass is cut by an exception from a forward hook
    on ``stop_after`` (a block holding the modules; ``None``: before the output head, unless it is
    in ``module_names``). The engine uses it for targets outside the transformer blocks (e.g. a
    quantized head); block targets go through :class:`qd_models.calibration.BlockInputs`, which
    runs each block once on cached inputs instead of re-running blocks 0..k for block k."""
    named = dict(model.named_modules())
    langs, weights = language_weights(batches)
    sums: dict[str, list[torch.Tensor]] = {}
    current: dict = {"lang": 0, "rows": None}

    def stop(*args):
        raise _StopForward

    head = output_embedding(model)
    handles = []
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for name in module_names:
            handles.append(named[name].register_forward_pre_hook(gram_hook(name, sums, current, weights)))
        if stop_after is not None:
            handles.append(named[stop_after].register_forward_hook(stop))
        elif head is not None and not any(named[name] is head for name in module_names):
            handles.append(head.register_forward_pre_hook(stop))
        _forward_passes(model, batches.token_ids, langs, batches.batch_size, batches.pad_id, current, "qd calibration (inputs)", progress)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    batches.passes += 1
    batches.seconds += time.perf_counter() - start
    return check_all_called(module_names, sums)
