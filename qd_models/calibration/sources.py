"""Calibration sources: the bundled calibration split, ``calib_data=udhr`` (UDHR articles outside
the ``qd_udhr8_ppl`` subset) or a user JSONL; the texts per language, and the leakage check
against the evaluation corpora. Cheap (no model, no torch): called before weights load."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from qd_models.config import INPUTS
from qd_tasks.corpus import corpus_path, read_corpus_file

if TYPE_CHECKING:
    from qd_models.config import QuantConfig

logger = logging.getLogger(__name__)


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


def calibration_records(calib_data: str | None, top_up: bool = False) -> tuple[list[dict], str]:
    """The one place the calibration source is chosen: ``(records {lang, text, ...}, name)``
    from ``calib_data`` (a JSONL path, ``udhr``: :func:`udhr_calibration_records`) or, unset,
    the bundled calibration split (the documented default mix: every language it holds), followed,
    with ``top_up``, by :func:`udhr_calibration_records` (the default mix of :func:`draws_to_token_target`)."""
    if calib_data == UDHR_SOURCE:
        return udhr_calibration_records(), UDHR_SOURCE
    path = Path(calib_data) if calib_data else corpus_path("calibration")
    try:
        records = read_corpus_file(path)
    except ValueError as err:
        raise ValueError(f"calib_data={str(path)!r} is not usable ({err}); allowed: {UDHR_SOURCE} (the bundled UDHR articles, lowercase) or a JSONL file with fields lang, text") from None
    if top_up and not calib_data:
        return records + udhr_calibration_records(), f"{path} + {UDHR_SOURCE}"
    return records, str(path)


def draws_to_token_target(config: QuantConfig) -> bool:
    """The ``inputs`` calibration (GPTQ, AWQ) from a built-in source with ``calib_samples`` unset:
    texts are drawn until :func:`qd_models.calibration.sufficiency.target_tokens` (8 x the
    largest input dim) is reached, from the bundled split followed by the UDHR articles
    ``qd_udhr8_ppl`` does not evaluate (unset ``calib_data``) or from those articles
    (``calib_data=udhr``). An explicit ``calib_samples`` or a user JSONL keeps the first
    ``calib_samples`` texts per language (all when unset) of that source only."""
    return INPUTS in config.calibration_passes and config.calib_samples is None and config.calib_data in (None, UDHR_SOURCE)


def calibration_source_name(config: QuantConfig) -> str:
    """The source as the report names it (no machine paths)."""
    if config.calib_data:
        return config.calib_data
    return f"bundled calibration split + {UDHR_SOURCE}" if draws_to_token_target(config) else "bundled calibration split"


def evaluation_texts() -> set[str]:
    """Every text the bundled evaluation tasks score (bundled eval corpus, ``qd_udhr8_ppl``)."""
    return {record["text"] for record in read_corpus_file(corpus_path("eval"))} | udhr_evaluation_texts()


def load_calibration_texts(config: QuantConfig) -> dict[str, list[str]]:
    """``{lang: [text, ...]}`` for ``config.calib_langs`` (default: every language of the
    source, in file order) from :func:`calibration_records`, ``calib_samples`` texts per language
    chosen by :func:`draw_texts` (``calib_seed`` unset: the first ones; all when ``calib_samples`` is unset;
    :func:`draws_to_token_target`: the candidates in drawn order, cut to the token target once the
    tokenizer is loaded). One-line ``ValueError`` for an unreadable or empty file or a language it
    lacks. Warns when a text also occurs in an evaluation corpus (leakage)."""
    records, path = calibration_records(config.calib_data, top_up=draws_to_token_target(config))
    by_lang: dict[str, list[str]] = {}
    for record in records:
        by_lang.setdefault(record["lang"], []).append(record["text"])
    langs = list(config.calib_langs) or list(by_lang)
    missing = [lang for lang in langs if lang not in by_lang]
    if missing:
        raise ValueError(f"calib_langs={';'.join(missing)} not in calib_data={path!r}; allowed: {', '.join(by_lang)}")
    texts = {lang: draw_texts(by_lang[lang], config.calib_samples, config.calib_seed, lang) for lang in langs}
    eval_texts = evaluation_texts()
    leaked = sum(text in eval_texts for group in texts.values() for text in group)
    if leaked:
        logger.warning("calibration leakage: %d calibration texts from %s also occur in the qd eval corpus", leaked, path)
    return texts


def draw_texts(texts: list[str], samples: int | None, seed: int | None, lang: str) -> list[str]:
    """One language's calibration texts. ``seed`` unset: the first ``samples`` texts (all when
    unset) in source order. ``seed`` set (``calib_seed``): ``min(samples, len(texts))`` texts drawn
    without replacement, in the drawn order, by a generator seeded with the seed and the language
    (a language's draw does not depend on which other languages are calibrated). Tokens are not
    subsampled: each drawn text is used whole, cut to ``max_length`` as in evaluation."""
    if seed is None:
        return texts[:samples]
    count = len(texts) if samples is None else min(samples, len(texts))
    return random.Random(f"qd-calibration|{seed}|{lang}").sample(texts, count)
