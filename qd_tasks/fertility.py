"""Tokenizer fertility, one rule for ``qd-diagnose`` and ``qd-analyze`` (standard library only).

Tokens: the tokenizer's ids of the text without special tokens. Words: maximal runs of
non-whitespace characters, whitespace in the Unicode sense (``len(text.split())``). lm-eval's
own word count behind ``word_perplexity`` (``re.split(r"\\s+", text)``) counts one more word per
leading or trailing whitespace run; the bundled corpora have none.

Scripts written without spaces between words (zh, ja, th, ...) have no whitespace words, so a
per-word fertility is meaningless there: ``tokens_per_word`` is left empty for a language whose
task does not score ``word_perplexity`` (the task generators decide that by script,
:func:`qd_tasks.languages.whitespace_words_for`). ``tokens_per_byte`` (per UTF-8 byte) is
reported beside it for every language and is the one that compares across scripts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

FERTILITY_FIELDS = ("n_docs", "n_bytes", "n_tokens", "n_words", "tokens_per_byte", "tokens_per_word")


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` by a Hugging Face tokenizer, special tokens left out."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_words(text: str) -> int:
    """Whitespace-separated words of ``text`` (Unicode whitespace; none for an empty text)."""
    return len(text.split())


def fertility(texts: Iterable[str], n_tokens: int, has_words: bool) -> dict:
    """Fertility of one language over its documents ``texts`` with ``n_tokens`` tokens in all.

    ``has_words``: whether the language separates words by spaces (else ``n_words`` and
    ``tokens_per_word`` are None). Returns ``{field: value}`` for :data:`FERTILITY_FIELDS`
    (``tokens_per_byte`` is NaN without bytes, ``tokens_per_word`` None without words).
    """
    texts = list(texts)
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    n_words = sum(count_words(text) for text in texts) if has_words else None
    return {
        "n_docs": len(texts), "n_bytes": n_bytes, "n_tokens": n_tokens, "n_words": n_words,
        "tokens_per_byte": n_tokens / n_bytes if n_bytes else math.nan,
        "tokens_per_word": n_tokens / n_words if n_words else None,
    }
