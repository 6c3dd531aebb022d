"""Tokenizer fertility of the logged task documents: tokens per byte and per word of every
(suite, language), by the rule of :mod:`qd_tasks.fertility` (the one ``qd-diagnose`` uses)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.loading import RunSet
from qd_tasks import fertility as fertility_rule


def load_tokenizer(path: str):
    """A ``text -> number of tokens`` function (:func:`qd_tasks.fertility.count_tokens`) from a local tokenizer folder (lazy import)."""
    if not Path(path).is_dir():
        raise ValueError(f"tokenizer={path!r} is not a local folder; allowed: a folder with tokenizer files (e.g. the model's)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return lambda text: fertility_rule.count_tokens(tokenizer, text)


def doc_token_counts(runset: RunSet, count_tokens) -> pd.DataFrame:
    """Tokens of every logged task document: one row per (suite, lang, doc_id) with n_tokens, n_bytes, n_words, text."""
    docs = runset.docs.drop_duplicates(["suite", "lang", "doc_id"])
    return docs.assign(n_tokens=[count_tokens(text) for text in docs.text])


FERTILITY_COLUMNS = ["suite", "lang", "n_docs", "n_tokens", "n_bytes", "n_words", "tokens_per_byte", "tokens_per_word"]


def fertility(runset: RunSet, count_tokens, tokens: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tokens per byte and per word of every (suite, lang) over the logged task docs, by the
    rule of :mod:`qd_tasks.fertility` (the one ``qd-diagnose`` uses).

    count_tokens: ``text -> int`` (or ``tokens``, the :func:`doc_token_counts` table). A language
    has words when its task scored ``word_perplexity`` for every document (lm-eval logged a word
    count); otherwise (e.g. zh) n_words and tokens_per_word are NaN. One row per (suite, lang).
    """
    docs = doc_token_counts(runset, count_tokens) if tokens is None else tokens
    rows = [{"suite": suite, "lang": lang, **fertility_rule.fertility(block.text, int(block.n_tokens.sum()), bool(block.n_words.notna().all()))}
            for (suite, lang), block in docs.groupby(["suite", "lang"], sort=True)]
    out = pd.DataFrame(rows, columns=FERTILITY_COLUMNS)
    return out.astype({"n_words": float, "tokens_per_word": float})


def runs_fertility(runset: RunSet, tokenizer: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """(fertility per language, per-document token counts, notes) with ``tokenizer``, else the runs'
    model when it is one local folder; an empty table and ``None`` when skipped (the notes say why)."""
    if runset.docs.empty:
        return pd.DataFrame(), None, ["No samples files: fertility needs the task documents from --log_samples; skipped."]
    if tokenizer is None:
        local = sorted({run.model_path for run in runset.runs.values() if run.model_path and Path(run.model_path).is_dir()})
        if len(local) != 1:
            return pd.DataFrame(), None, ["Fertility skipped: pass --tokenizer PATH (the runs' models are not one local folder)."]
        tokenizer = local[0]
    try:
        count = load_tokenizer(tokenizer)
    except (OSError, ValueError) as err:
        return pd.DataFrame(), None, [f"Fertility skipped: tokenizer {tokenizer!r} could not be loaded ({err})."]
    tokens = doc_token_counts(runset, count)
    return fertility(runset, count, tokens), tokens, [f"Fertility computed with the tokenizer {Path(tokenizer).name}."]
