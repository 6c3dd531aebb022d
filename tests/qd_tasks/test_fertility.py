"""qd_tasks.fertility: the one word/token/byte rule of qd-diagnose and qd-analyze, against
counts written out by hand and a regex that shares no code with it."""

from __future__ import annotations

import math
import re

import pytest

from qd_tasks.fertility import FERTILITY_FIELDS, count_tokens, count_words, fertility

# (text, words by hand, UTF-8 bytes by hand)
CASES = {
    "en": ("The cat  sat.\n", 3, 14),
    "he": ("שלום עולם", 2, 9 * 2 - 1),  # 8 letters of 2 bytes + 1 space
    "de": ("Grüße\taus\u00a0Berlin", 3, 19),  # tab and no-break space separate words; ü, ß: 2 bytes each
    "ar": ("  مرحبا بالعالم  ", 2, 5 + 5 * 2 + 7 * 2),  # 5 spaces, 12 letters of 2 bytes
    "zh": ("你好，世界。", 1, 6 * 3),  # no spaces between words: one "word"
    "ja": ("こんにちは\u3000世界", 2, 7 * 3 + 3),  # ideographic space (3 bytes) is Unicode whitespace
    "empty": ("", 0, 0),
}


@pytest.mark.parametrize("lang", sorted(CASES))
def test_words_and_bytes_match_hand_counts_and_a_regex(lang):
    text, words, n_bytes = CASES[lang]
    assert count_words(text) == words == len(re.findall(r"[^\s]+", text))
    row = fertility([text], n_tokens=6, has_words=True)
    assert tuple(row) == FERTILITY_FIELDS
    assert row["n_docs"] == 1 and row["n_bytes"] == n_bytes and row["n_words"] == words
    if n_bytes:
        assert row["tokens_per_byte"] == pytest.approx(6 / n_bytes)
    else:
        assert math.isnan(row["tokens_per_byte"]) and row["tokens_per_word"] is None


def test_languages_without_words_get_no_per_word_fertility():
    texts = [CASES["zh"][0], CASES["ja"][0]]
    row = fertility(texts, n_tokens=9, has_words=False)
    assert row["n_docs"] == 2 and row["n_bytes"] == 18 + 24 and row["n_words"] is None and row["tokens_per_word"] is None
    assert row["tokens_per_byte"] == pytest.approx(9 / 42)
    spaced = fertility([CASES["he"][0], CASES["en"][0]], n_tokens=10, has_words=True)
    assert spaced["n_words"] == 5 and spaced["tokens_per_word"] == pytest.approx(10 / 5)


def test_count_tokens_leaves_special_tokens_out():
    seen = []

    def tokenizer(text, add_special_tokens):
        seen.append(add_special_tokens)
        return {"input_ids": list(text.encode("utf-8"))}

    assert count_tokens(tokenizer, CASES["he"][0]) == 17 and seen == [False]
