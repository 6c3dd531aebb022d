"""Is the ``inputs`` calibration (GPTQ, AWQ) enough? The default token target, the balanced text
selection that meets it, the warning below :data:`WARN_TOKENS_PER_INPUT_DIM`, and each layer's
Gram matrix (its Hessian up to a factor) numerical rank and condition number.

A layer with ``in`` input channels has an ``[in, in]`` Gram matrix H = E[x x^T] of rank at most
the number of calibration tokens: with fewer tokens than ``in`` it is singular, and GPTQ's
inverse and AWQ's error estimate rest on its damping. The default target is
:data:`TARGET_TOKENS_PER_INPUT_DIM` x the largest input dim of the quantized layers.
"""

from __future__ import annotations

import logging
import math

import torch

from qd_models.calibration.activations import DEFAULT_MAX_LENGTH, tokenize_texts

logger = logging.getLogger(__name__)

TARGET_TOKENS_PER_INPUT_DIM = 8
"""Default calibration size (``calib_samples`` unset): this many tokens per input dim of the widest layer."""
WARN_TOKENS_PER_INPUT_DIM = 4
"""Fewer calibration tokens than this many per input dim of the widest layer: one warning line."""


def target_tokens(largest_input_dim: int) -> int:
    """Default number of calibration tokens for a model whose widest quantized layer has
    ``largest_input_dim`` inputs."""
    return TARGET_TOKENS_PER_INPUT_DIM * largest_input_dim


def texts_for_token_target(token_counts: dict[str, list[int]], target: int) -> dict[str, int]:
    """How many leading texts of each language to take so that the total token count reaches
    ``target`` with the languages as balanced as the source allows: the next text is always that
    of the language with the fewest tokens so far that still has texts (ties: the first language
    in ``token_counts`` order). ``token_counts[lang]``: each text's token count, in source order.
    Every language gets at least one text; all texts when the source has fewer tokens than
    ``target``."""
    taken = {lang: min(1, len(counts)) for lang, counts in token_counts.items()}
    tokens = {lang: sum(counts[:taken[lang]]) for lang, counts in token_counts.items()}
    while sum(tokens.values()) < target:
        open_langs = [lang for lang, counts in token_counts.items() if taken[lang] < len(counts)]
        if not open_langs:
            break
        lang = min(open_langs, key=lambda name: tokens[name])
        tokens[lang] += token_counts[lang][taken[lang]]
        taken[lang] += 1
    return taken


def texts_to_token_target(tokenizer, texts: dict[str, list[str]], target: int, prefix_id: int | None = None,
                          max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, list[str]]:
    """The leading texts of each language that reach ``target`` tokens (:func:`texts_for_token_target`),
    counted as the calibration counts them (text tokens after the prefix, cut at ``max_length``)."""
    token_ids = tokenize_texts(tokenizer, texts, max_length, prefix_id)
    taken = texts_for_token_target({lang: [len(seq) - 1 for seq in seqs] for lang, seqs in token_ids.items()}, target)
    return {lang: group[: taken[lang]] for lang, group in texts.items()}


def calibration_texts_for_model(texts: dict[str, list[str]], config, model, tokenizer, prefix_id: int | None = None) -> dict[str, list[str]]:
    """``texts`` from :func:`qd_models.calibration.load_calibration_texts`, cut to
    :func:`target_tokens` of ``model``'s widest quantized layer when
    :func:`qd_models.calibration.sources.draws_to_token_target` (else unchanged)."""
    from qd_models.calibration.sources import draws_to_token_target
    from qd_models.targets import largest_input_dim

    if not draws_to_token_target(config):
        return texts
    return texts_to_token_target(tokenizer, texts, target_tokens(largest_input_dim(model, config)), prefix_id)


def warn_if_few_tokens(tokens: int, largest_input_dim: int) -> bool:
    """Log one warning line when ``tokens`` < :data:`WARN_TOKENS_PER_INPUT_DIM` x
    ``largest_input_dim``; return whether it did."""
    if largest_input_dim <= 0 or tokens >= WARN_TOKENS_PER_INPUT_DIM * largest_input_dim:
        return False
    logger.warning("qd calibration: %d calibration tokens = %.2f per input dim of the widest quantized layer (%d inputs), "
                   "below %d: its Hessian is (nearly) rank-deficient; use more texts (calib_samples unset draws %d x the dim)",
                   tokens, tokens / largest_input_dim, largest_input_dim, WARN_TOKENS_PER_INPUT_DIM, TARGET_TOKENS_PER_INPUT_DIM)
    return True


def gram_rank_condition(gram: torch.Tensor) -> tuple[int, float]:
    """Numerical rank and 2-norm condition number of a symmetric PSD Gram matrix ``[in, in]``,
    at the precision it is stored in (float32 for what GPTQ/AWQ receive): singular values
    |eigenvalues| (computed in float64), rank = count above numpy's default tolerance
    sigma_max * in * eps(dtype) (``np.linalg.matrix_rank``), condition sigma_max / sigma_min,
    ``inf`` when the rank is below ``in`` (``np.linalg.cond`` then returns a huge or infinite number)."""
    if gram.numel() == 0:
        return 0, math.inf
    if not bool(torch.isfinite(gram).all()):
        return 0, math.nan  # a non-finite Gram matrix: reported, not raised
    sigma = torch.linalg.eigvalsh(gram.double()).abs()
    top = float(sigma.max())
    tolerance = top * gram.shape[0] * torch.finfo(gram.dtype).eps
    rank = int((sigma > tolerance).sum())
    condition = top / float(sigma.min()) if rank == gram.shape[0] else math.inf
    return rank, condition


class GramReport:
    """Per-layer ``calib_tokens_per_input_dim``, ``gram_rank``, ``gram_rank_deficient`` (rank below
    the input dim), ``gram_condition`` (module doc);
    layers reading the same input (q/k/v, gate/up: equal Gram matrices, checked) are computed once."""

    def __init__(self, tokens: int):
        self.tokens = tokens
        self._last: tuple[torch.Tensor, tuple[int, float]] | None = None

    def __call__(self, gram: torch.Tensor) -> dict:
        if self._last is not None and self._last[0].shape == gram.shape and torch.equal(self._last[0], gram):
            rank, condition = self._last[1]
        else:
            rank, condition = gram_rank_condition(gram)
            self._last = (gram, (rank, condition))
        return {"calib_tokens_per_input_dim": self.tokens / gram.shape[0], "gram_rank": rank,
                "gram_rank_deficient": rank < gram.shape[0], "gram_condition": condition}


def sufficiency_summary(layers: list[dict], tokens: int, largest_input_dim: int) -> dict:
    """The calibration block's summary over the layers' :class:`GramReport` entries: ``tokens``
    (all languages), ``largest_input_dim``, ``tokens_per_largest_input_dim``, ``gram_layers``,
    ``rank_deficient_layers`` (rank below the input dim) and ``max_gram_condition``."""
    entries = [layer for layer in layers if "gram_rank" in layer]
    conditions = [layer["gram_condition"] for layer in entries]
    return {
        "tokens": tokens,
        "largest_input_dim": largest_input_dim,
        "tokens_per_largest_input_dim": tokens / largest_input_dim if largest_input_dim else math.nan,
        "gram_layers": len(entries),
        "rank_deficient_layers": sum(layer["gram_rank_deficient"] for layer in entries),
        "max_gram_condition": max(conditions) if conditions else math.nan,
    }
