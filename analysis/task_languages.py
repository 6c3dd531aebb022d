"""Which language a standard lm-eval benchmark task measures: ``belebele_heb_Hebr`` -> (belebele, he).

A table of rules (:data:`TASK_RULES`): each rule is a full-match regex over the task name with a
``code`` group (the task's language code) and optionally ``suite``/``variant`` groups, the suite
name it reports under, and the kind of code it carries. Codes are normalised by
:func:`normalize_language`: ISO 639-1 codes as they are (``jp`` -> ``ja``); FLORES-style
``xxx_Scrp`` codes to the ISO 639-1 code of ``qd_tasks.languages`` when that language and script
are known there (``heb_Hebr`` -> ``he``, ``zho_Hans`` -> ``zh``), else kept (``arb_Latn``,
``zho_Hant``: a romanised or traditional-script variant is not the same test language);
ISO 639-3 codes (afrixnli's ``swa``) to ISO 639-1 where known.

Users add mappings with :func:`register_task_language` (for the session) or
``qd-analyze --task-lang-map FILE.json`` (:func:`load_task_language_map`): ``{"my_task": "sw", "re:mybench_(.*)": {"lang": "\\\\1", "suite": "mybench"}}``.
User mappings are tried before the built-in table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from qd_tasks.languages import BY_FLORES_CODE, LANGUAGES, is_language_code


@dataclass(frozen=True)
class TaskRule:
    """``pattern`` full-matches a task name; ``suite`` may use ``{variant}`` from the match."""

    pattern: re.Pattern
    suite: str


def _rule(pattern: str, suite: str) -> TaskRule:
    return TaskRule(re.compile(pattern), suite)


_FLORES = r"(?P<code>[a-z]{3}_[A-Z][a-z]{3})"
_ISO1 = r"(?P<code>[a-z]{2})"
_GLOBAL_MMLU_CATEGORIES = "business|humanities|medical|other|social_sciences|stem"

TASK_RULES: tuple[TaskRule, ...] = (
    _rule(rf"belebele_{_FLORES}", "belebele"),
    _rule(rf"xnli_{_ISO1}", "xnli"),
    _rule(rf"xcopa_{_ISO1}", "xcopa"),
    _rule(rf"xstorycloze_{_ISO1}", "xstorycloze"),
    _rule(rf"xwinograd_{_ISO1}", "xwinograd"),
    _rule(rf"(?:paws|pawsx)_{_ISO1}", "pawsx"),
    _rule(rf"mgsm_(?P<variant>direct|native_cot|en_cot)_{_ISO1}", "mgsm_{variant}"),
    _rule(r"global_mmlu_full_(?P<code>[a-z]{2,3})_\w+", "global_mmlu_full"),
    _rule(rf"global_mmlu_(?P<code>[a-z]{{2,3}})(?:_(?:{_GLOBAL_MMLU_CATEGORIES}))?", "global_mmlu"),
    _rule(rf"m_mmlu_{_ISO1}", "m_mmlu"),
    _rule(rf"arc_{_ISO1}", "arc_multilingual"),
    _rule(rf"hellaswag_{_ISO1}", "hellaswag_multilingual"),
    _rule(rf"truthfulqa_{_ISO1}_(?P<variant>mc1|mc2)", "truthfulqa_multilingual_{variant}"),
    _rule(rf"lambada_openai_mt_{_ISO1}", "lambada_multilingual"),
    _rule(rf"xquad_{_ISO1}", "xquad"),
    _rule(r"(?P<variant>afrixnli|afrimmlu|afrimgsm|afrimgsm_cot)_(?P<code>[a-z]{3})_(?P<prompt>prompt_\d+)", "{variant}_{prompt}"),
    # Any task ending in a FLORES-style code (belebele-format local tasks, flores-based suites).
    _rule(rf"(?P<suite>\w+?)_{_FLORES}", "{suite}"),
)
"""Built-in rules, tried in order (the first full match wins)."""

LANGUAGE_ALIASES = {"jp": "ja", "iw": "he", "in": "id"}
"""Non-standard two-letter codes used by task names -> ISO 639-1 (xwinograd_jp)."""

ISO3_ALIASES = {"zho": "zh", "cmn": "zh", "arb": "ar", "ara": "ar", "swa": "sw", "swh": "sw", "fas": "fa", "pes": "fa",
                "msa": "ms", "zsm": "ms", "est": "et", "ekk": "et", "lvs": "lv", "npi": "ne", "nep": "ne"}
"""ISO 639-3 macrolanguage / individual-language codes used by benchmarks -> ISO 639-1, for the
languages ``qd_tasks.languages`` knows (others are kept as given)."""

UserRule = tuple[re.Pattern, str, "str | None"]
_USER_RULES: list[UserRule] = []


def normalize_language(code: str) -> str:
    """Task language code -> the analysis' language code (see the module doc)."""
    if re.fullmatch(r"[a-z]{2}", code):
        return LANGUAGE_ALIASES.get(code, code)
    match = re.fullmatch(r"(?P<iso3>[a-z]{3})(?:_(?P<script>[A-Z][a-z]{3}))?", code)
    if not match:
        return code
    if code in BY_FLORES_CODE:
        return BY_FLORES_CODE[code].code
    iso1 = ISO3_ALIASES.get(match["iso3"]) or next(
        (record.code for record in LANGUAGES.values() if record.flores_code.split("_")[0] == match["iso3"]), None)
    if iso1 is None or iso1 not in LANGUAGES:
        return code
    if match["script"] and match["script"] != LANGUAGES[iso1].script:
        return code  # e.g. arb_Latn (romanised Arabic), zho_Hant: not the language's usual script
    return iso1


def task_language(task: str, extra_rules: list[UserRule] | tuple = ()) -> tuple[str, str] | None:
    """(suite, language) of a benchmark task, or None when no rule matches. Tried in order:
    ``extra_rules`` (from :func:`load_task_language_map`), registered rules, the built-in table."""
    for pattern, lang, suite in [*extra_rules, *_USER_RULES]:
        match = pattern.fullmatch(task)
        if match:
            code = match.expand(lang)
            if not is_language_code(code):
                raise ValueError(f"--task-lang-map: {pattern.pattern!r} gives task {task} the language {code!r}, which is not a "
                                 "language code; allowed: codes like sw, heb_Hebr, pt-BR (qd_tasks.languages.LANG_CODE)")
            return (match.expand(suite) if suite else task), normalize_language(code)
    for rule in TASK_RULES:
        match = rule.pattern.fullmatch(task)
        if match:
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            return rule.suite.format(**groups), normalize_language(groups["code"])
    return None


def register_task_language(task: str, lang: str, suite: str | None = None) -> None:
    """Map a task name (or ``re:<regex>``, full match; ``lang``/``suite`` may use ``\\1``) to a
    language for every later analysis; ``suite`` defaults to the task name. Checked before the built-in table."""
    _USER_RULES.insert(0, user_rule(task, lang, suite))


def user_rule(task: str, lang: str, suite: str | None = None) -> UserRule:
    """A validated (pattern, lang, suite) rule; see :func:`register_task_language`."""
    if not isinstance(lang, str) or not lang:
        raise ValueError(f"--task-lang-map: language for {task!r} must be a non-empty string like 'sw' or 'heb_Hebr', got {lang!r}")
    if suite is not None and (not isinstance(suite, str) or not suite):
        raise ValueError(f"--task-lang-map: suite for {task!r} must be a non-empty string, got {suite!r}")
    try:
        pattern = re.compile(task[3:]) if task.startswith("re:") else re.compile(re.escape(task))
    except re.error as err:
        raise ValueError(f"--task-lang-map: {task!r} is not a valid regex ({err}); allowed: a task name or re:<regex>") from None
    names = {index: name for name, index in pattern.groupindex.items()}
    empty = re.compile("".join(f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, pattern.groups + 1)))
    for field, template in (("language", lang), ("suite", suite)):
        try:  # the same groups, all matching "": checks every group reference of the template
            expanded = empty.fullmatch("").expand(template) if template is not None else None
        except (re.error, IndexError) as err:
            raise ValueError(f"--task-lang-map: {field} {template!r} for {task!r} is not allowed ({err}); "
                             f"allowed: text whose group references exist in the pattern ({pattern.groups} groups)") from None
        if field == "language" and expanded == template and not is_language_code(template):
            raise ValueError(f"--task-lang-map: language {template!r} for {task!r} is not a language code; allowed: codes like "
                             "sw, heb_Hebr, pt-BR (qd_tasks.languages.LANG_CODE)")
    return pattern, lang, suite


def clear_user_task_languages() -> None:
    """Forget every mapping added by :func:`register_task_language`."""
    _USER_RULES.clear()


def load_task_language_map(path: str | Path) -> list[UserRule]:
    """The rules of a JSON object ``{task or "re:<regex>": lang | {"lang": ..., "suite": ...}}`` (pass
    them to :func:`task_language`). Bad files raise ``ValueError`` naming ``--task-lang-map``."""
    allowed = 'allowed: a JSON object {"task_or_re:regex": "lang" or {"lang": "...", "suite": "..."}}'
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"--task-lang-map={path}: cannot read ({err.strerror or err}); {allowed}") from None
    except ValueError as err:
        raise ValueError(f"--task-lang-map={path}: not valid JSON ({err}); {allowed}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--task-lang-map={path}: not a non-empty JSON object; {allowed}")
    entries = []
    for task, value in data.items():
        if isinstance(value, dict) and set(value) <= {"lang", "suite"}:
            entries.append((task, value.get("lang"), value.get("suite")))
        elif isinstance(value, str):
            entries.append((task, value, None))
        else:
            raise ValueError(f"--task-lang-map={path}: entry {task!r} = {value!r}; {allowed}")
    return [user_rule(task, lang, suite) for task, lang, suite in entries]
