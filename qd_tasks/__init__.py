"""lm-eval task suites for quant-disparity: ``qd_multilingual_ppl``, ``qd_calibration_ppl``, ``qd_flores_ppl``.

Light on purpose (standard library only): the corpus API and the language table.
"""

from qd_tasks.corpus import SPLITS, corpus_path, load_corpus, read_corpus_file
from qd_tasks.languages import LANGUAGES, Language, get_language

__all__ = ["LANGUAGES", "SPLITS", "Language", "corpus_path", "get_language", "load_corpus", "read_corpus_file"]
