"""The run record: what a ``qd-hf`` run writes into lm-eval's results, and its names.

Standard library only (with :mod:`qd_models.config`, also torch-free), so ``analysis`` reads
runs with the same names the writers use. A run's ``results["config"]`` holds lm-eval's own
fields plus one block, ``results["config"][QD_BLOCK]``, with the fields :data:`BLOCK_FIELDS`
(written by :meth:`qd_models.qd_hf.QDHFLM.get_model_info`; the quant report is stored there
only).

One label per config: :func:`config_label` names a resolved quant config (``rtn-w4``,
``rtn-w4-group-g128``, ``laaciq-w3-calib_mode=target-calib_langs=he``) by its method, bits
and every setting that differs from what :class:`qd_models.config.QuantConfig` resolves
without it; sweep folders (``<label>-<hash>``), report tables and figures all use it.
:func:`config_family` is the same label without the bits (runs of one family differ in bits
only). A run stores its label and family in its block when it is made (:func:`label_fields`);
:func:`run_labels` reads them back, and computes them only for results written before they were
stored. :func:`run_id` is a results file's stable id below the analysed folder.
"""

from __future__ import annotations

import os
import re
from typing import Any

from qd_models.config import METHODS, QD_ARGS, parse_qd_args

LM_EVAL_MODEL = "qd-hf"
"""The name ``qd-hf`` is registered under in lm-eval's model registry."""

QD_BLOCK = "quant_disparity"
"""Key of this package's block in lm-eval's ``results["config"]``."""

VERSION = "version"
MODEL_SOURCE = "model_source"
MODEL_FINGERPRINT = "model_fingerprint"
"""The weights' fingerprint (:func:`qd_models.model_identity.model_fingerprint`); in a saved model's
``quant_report.json``: the fingerprint of the model it was quantized from."""
BASELINE_NOTE = "baseline_note"
SCORING = "scoring"
QUANT_CONFIG = "quant_config"
CONFIG_LABEL = "config_label"
CONFIG_FAMILY = "config_family"
"""The run's :func:`config_label` and :func:`config_family` of its ``quant_config``, stored when it is made."""
QUANT_TOTALS = "quant_totals"
QUANT_REPORT = "quant_report"
FIDELITY = "fidelity"
RANKS = "ranks"
BLOCK_FIELDS = (VERSION, MODEL_SOURCE, MODEL_FINGERPRINT, BASELINE_NOTE, SCORING, QUANT_CONFIG, CONFIG_LABEL, CONFIG_FAMILY, QUANT_TOTALS,
                QUANT_REPORT, FIDELITY, RANKS)
"""Fields of the ``quant_disparity`` block (``fidelity`` only with fidelity on; ``ranks`` only in a
data-parallel run: world size and every rank's weight digest, checked equal)."""

SCAN = "scan"
"""Added to ``quant_config`` by a scan (``<mode>:<block>[:<module>]``); shown in labels in place of the
``keep_layers``/``keep`` the scan sets."""
SAVED_MODEL = "saved_model"
"""Added to ``quant_config`` by analysis for a model folder saved quantized (provenance, not a setting)."""

BASELINE_LABEL = "baseline"
DRAW = "calib_seed"
"""The ``quant_config`` field that names a calibration draw: runs whose configs differ only in it are draws
(replicates) of one config, with one label and family (:func:`config_draw`)."""
_NOT_SETTINGS = ("method", "bits", "group_size", "save_to", "save_overwrite", DRAW)
"""QuantConfig fields that are not label parts of their own (group_size is shown with granularity; the draw is
not part of the config)."""
BITS_OPTIONS = tuple(dict.fromkeys(spec.bits_option for spec in METHODS.values() if spec.bits_option))
"""Options that fix a method's bits (``MethodSpec.bits_option``): labels show them in place of ``w<bits>``."""
_MISSING = object()


def qd_block(results: dict) -> dict:
    """The ``quant_disparity`` block of a results dict (``{}`` for runs of other models)."""
    return (results.get("config") or {}).get(QD_BLOCK) or {}


def leaf_tasks(results: dict) -> list[str]:
    """The tasks of ``results["results"]`` that are not groups (of subtasks)."""
    groups = {name for name, subtasks in (results.get("group_subtasks") or {}).items() if subtasks}
    return [task for task in results["results"] if task not in groups]


def label_fields(quant_config: dict) -> dict[str, str]:
    """``{CONFIG_LABEL: label, CONFIG_FAMILY: family}`` of ``quant_config``, for its run's block."""
    return {CONFIG_LABEL: config_label(quant_config), CONFIG_FAMILY: config_family(quant_config)}


def run_labels(quant_config: dict, block: dict | None = None) -> tuple[str, str]:
    """``(label, family)`` of a run's ``quant_config``: those stored in its ``quant_disparity`` ``block``
    when the block records them for this config; else :func:`config_label` and :func:`config_family`
    (results written before labels were stored, a saved model's config read from its folder, other models)."""
    block = block or {}
    label, family = block.get(CONFIG_LABEL), block.get(CONFIG_FAMILY)
    if isinstance(label, str) and isinstance(family, str) and block.get(QUANT_CONFIG) == quant_config:
        return label, family
    return config_label(quant_config), config_family(quant_config)


def config_label(quant_config: dict) -> str:
    """``baseline`` for ``method=none``, else ``<method>[-w<bits>][-<setting>...]`` (a method whose bits
    an option fixes shows that option's value, ``MethodSpec.bits_option``: ``gguf-q4_k_m``): each setting
    that differs from its default, in :data:`qd_models.config.QD_ARGS` order (see the module doc)."""
    method = str(quant_config.get("method", "none"))
    if method == "none":
        return BASELINE_LABEL
    bits = quant_config.get("bits")
    parts = [method]
    settings = _setting_parts(quant_config)
    spec = METHODS.get(method)
    bits_option = spec.bits_option if spec is not None else None
    if bits_option and quant_config.get(bits_option):  # the type says more than its nominal width
        parts.append(str(quant_config[bits_option]))
        settings = [part for part in settings if not part.startswith(f"{bits_option}=")]
    elif isinstance(bits, (int, float)) and not isinstance(bits, bool):
        parts.append(f"w{bits:g}")
    return "-".join(parts + settings)


def config_draw(quant_config: dict) -> int | None:
    """The calibration draw of a run (its ``calib_seed``; ``None``: the unseeded default selection)."""
    value = quant_config.get(DRAW)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def config_family(quant_config: dict) -> str:
    """:func:`config_label` without the bits (or the option that fixes them): ``rtn``, ``rtn-group-g128``, ``gguf``, ``baseline``."""
    return config_label({k: v for k, v in quant_config.items() if k not in ("bits", *BITS_OPTIONS)})


def run_id(parts: tuple[str, ...]) -> str:
    """The id of a results file from its path parts below the analysed folder (without ``.json``):
    ``rtn-w4-7da1a4dc66/tiny-gpt2/results_2026-…``. lm-eval names its output subfolder after the
    model path (``__home__me__models__tiny``): such a part is shortened to the model's own name."""
    return "/".join(part.rsplit("__", 1)[-1] if part.startswith("__") else part for part in parts)


def slug(text: str, limit: int = 120, keep: str = "._=+-", strip: bool = False) -> str:
    """``text`` as a folder or file name: each run of characters other than ``A-Za-z0-9`` and ``keep``
    replaced by ``_`` (``strip``: then leading/trailing ``_`` removed), at most ``limit`` characters.
    Sweep folders use the defaults; ``qd-analyze``'s figure names their own ``keep`` and ``limit``."""
    name = re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", "_", text)
    return (name.strip("_") if strip else name)[:limit]


def _setting_parts(config: dict) -> list[str]:
    """Label parts of the settings that differ from their default. The default of a setting is
    read from :class:`qd_models.config.QuantConfig`: the config resolved from the method, bits and the settings
    already shown (so ``keep_by=magnitude`` is a default once ``keep_top`` is set, and
    ``group_size=128`` once ``granularity=group`` is); ``calib_data`` by its file name. A setting that cannot be given for the
    method is derived from others and not shown; a method unknown to this package (a model
    saved by another quantizer) shows its settings as recorded."""
    method = str(config.get("method"))
    args: dict[str, Any] = {"method": method}
    if METHODS.get(method) is not None and METHODS[method].bits_argument and config.get("bits") is not None:
        args["bits"] = config["bits"]
    defaults = _resolve(args) if method in METHODS else {}
    scanned = config.get(SCAN) is not None
    parts = []
    for name in QD_ARGS:
        if name in _NOT_SETTINGS or name not in config or (scanned and name in ("keep_layers", "keep")):
            continue
        value = config[name]
        if name == "granularity":
            if _same(value, defaults.get(name, _MISSING)) and _same(config.get("group_size"), defaults.get("group_size", _MISSING)):
                continue
            args.update(granularity=value, group_size=config.get("group_size"))
            defaults = _resolve(args, defaults)
            parts.append(f"group-g{config.get('group_size')}" if value == "group" else str(value))
            continue
        if _same(value, defaults.get(name, _MISSING)):
            continue
        if method in METHODS:
            later = {k: config[k] for k in QD_ARGS[QD_ARGS.index(name) + 1:] if k in config and k not in _NOT_SETTINGS}
            valid = _resolve({**args, name: value}, None) is not None or _resolve({**args, name: value, **later}, None) is not None
            if not valid:  # not a user setting for this method: derived from the others
                continue
            args[name] = value
            defaults = _resolve(args, defaults)
        parts.append(f"{name}={os.path.basename(str(value)) if name == 'calib_data' else format_arg(value, '+')}")
    if scanned:
        parts.append(f"{SCAN}={config[SCAN]}")
    return parts


def _resolve(args: dict, fallback: dict | None = _MISSING) -> dict | None:
    """``QuantConfig`` resolved from ``args`` as a dict; ``fallback`` (default ``{}``) when invalid."""
    try:
        return parse_qd_args({k: v for k, v in args.items() if v is not None})[0].to_dict()
    except ValueError:
        return {} if fallback is _MISSING else fallback


def _same(value, default) -> bool:
    """``value`` equals a known ``default`` (lists and tuples alike)."""
    return default is not _MISSING and _plain(value) == _plain(default)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def format_arg(value: Any, list_sep: str = ";") -> str:
    """A qd arg's value as ``--model_args`` takes it (lists joined with ``list_sep``, booleans lower case)."""
    if isinstance(value, (list, tuple)):
        return list_sep.join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


ROLLING_PREFIX_TEXT = "prefix+text"
"""``scoring.rolling`` of a rolling document scored as one prefix token then the text's own tokens (qd-hf
records it; an ``hf`` run with ``add_bos_token=False`` scores the same way)."""


def parse_model_args(model_args) -> dict:
    """``"pretrained=x,method=rtn,bits=4"`` (or a dict, or nothing) -> dict, typed as lm-eval types
    ``--model_args`` (lm-eval imported only when called)."""
    if isinstance(model_args, dict):
        return dict(model_args)
    if not model_args:
        return {}
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(str(model_args))
