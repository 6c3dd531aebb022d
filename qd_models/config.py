"""Quantization config resolved from flat ``--model_args`` scalars.

``parse_qd_args`` pops the qd-specific keys from lm-eval's model kwargs, converts CLI
strings ("4", "true", "0;11", "[0, 11]") to typed values, validates them and returns a frozen
:class:`QuantConfig` plus the remaining kwargs for ``HFLM``. Importing this module is cheap
(no torch). Every invalid value raises a one-line ``ValueError`` naming the argument and the
allowed values, before any model is loaded.

Shaped like torchao's ``quant_api``: one common config (:class:`QuantConfig`: method, bits, grid,
keep and calibration arguments) holding one typed, validated options object per method family
(``QuantConfig.options``: :class:`GPTQOptions`, :class:`AWQOptions`, :class:`GGUFOptions`, each a
:class:`MethodOptions` whose fields are declared once with :func:`arg`: default and CLI converter;
their checks in ``__post_init__``). :data:`METHODS` is the one registry of methods: a
:class:`MethodSpec` says how a method is applied (``mechanism``), its options type, which calibration
it needs, how it is labelled and what fixes its bits; the rest of the package asks the spec (or
:attr:`QuantConfig.calibration_passes`) and names no method. The torch side of the registry (method
-> quantize-layer function and optional per-model plan) is :data:`qd_models.methods.QUANTIZERS`.

Adding a method: (1) its options type here, if it has arguments of its own (a :class:`MethodOptions`
with :func:`arg` fields and checks in ``__post_init__``); (2) ``METHODS[name] = MethodSpec(...)``;
(3) its :class:`qd_models.methods.Quantizer` in ``QUANTIZERS`` with its maths in ``qd_models/quant/``;
(4) its rows in the argument table of ``docs/methods.md``. Arguments of another family are rejected with one line
naming the methods that take them.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{name}={value!r} is not allowed; allowed: true, false")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: an integer") from None


def _to_float(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: a number") from None


def _to_str(name: str, value: Any) -> str:
    return str(value).strip().lower()


def _split(value: Any) -> list:
    """Items of a list argument: a list, or a string ``a;b``, ``a,b`` or ``[a,b]`` (lm-eval's
    CLI hands ``[en,he]`` over as that string)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):  # one number, typed by lm-eval's parser
        return [value]
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [part.strip().strip("'\"") for part in re.split(r"[;,]", text) if part.strip()]


def _to_layers(name: str, value: Any) -> tuple[int, ...]:
    return tuple(sorted({_to_int(name, part) for part in _split(value)}))


def _to_patterns(name: str, value: Any) -> tuple[str, ...]:
    patterns = tuple(str(part).strip() for part in _split(value))
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as err:
                raise ValueError(f"{name}={pattern!r} is not allowed ({err}); allowed: exact module names or re:<regex>") from None
    return patterns


def _to_langs(name: str, value: Any) -> tuple[str, ...]:
    langs = [str(part).strip() for part in _split(value)]
    if langs == [ALL_LANGS]:
        return ()
    bad = [lang for lang in langs if not re.fullmatch(r"[A-Za-z0-9_-]+", lang)]
    if bad:
        raise ValueError(f"{name}={bad[0]!r} is not allowed; allowed: language codes separated by ';' (e.g. en;de;he)")
    return tuple(dict.fromkeys(langs))


def _to_path(name: str, value: Any) -> str:
    return str(value)


def arg(default: Any, parse: Callable[[str, Any], Any]):
    """A config field declared once: its ``default`` and the converter ``parse(name, value)`` that
    types a CLI value (``"4"``, ``"true"``, ``"0;11"``) for :func:`parse_qd_args`."""
    return field(default=default, metadata={"parse": parse})


STATS = "stats"
"""Calibration pass: per-language input second moments (:class:`qd_models.calibration.ActivationStats`, one pass)."""
INPUTS = "inputs"
"""Calibration pass: each layer's input Gram matrix, collected block by block from the partly quantized
model (:mod:`qd_models.calibration`)."""
CALIBRATIONS = ("none", STATS, INPUTS)
"""What a method needs from the calibration texts (``MethodSpec.calibration``): nothing, or one of the passes."""


class Mechanism:
    """How a method is applied (``MethodSpec.mechanism``): ``NONE`` (the original model), ``FAKE`` (our
    weight-only quantize->dequantize after loading) or ``BNB`` (bitsandbytes at load time)."""

    NONE = "none"
    FAKE = "fake"
    BNB = "bnb"


@dataclass(frozen=True)
class MethodOptions:
    """A method family's own arguments: frozen dataclass fields declared with :func:`arg` (default and
    CLI converter), checked in ``__post_init__`` (one line naming the argument and what is allowed).
    Field names are flat ``--model_args`` names, unique across families."""


@dataclass(frozen=True)
class GPTQOptions(MethodOptions):
    """``method=gptq`` (Frantar et al. 2023): ``damp`` (fraction of mean diag(H) added to the
    diagonal, reference ``percdamp``), ``act_order`` (columns in decreasing diag(H) order) and
    ``gptq_block`` (columns per lazy-batch update)."""

    damp: float = arg(0.01, _to_float)
    act_order: bool = arg(False, _to_bool)
    gptq_block: int = arg(128, _to_int)

    def __post_init__(self):
        if not (0.0 < self.damp <= 1.0):
            raise ValueError(f"damp={self.damp!r} is not allowed; allowed: a number in (0, 1]")
        if not isinstance(self.act_order, bool):
            raise ValueError(f"act_order={self.act_order!r} is not allowed; allowed: true, false")
        if not (isinstance(self.gptq_block, int) and self.gptq_block > 0):
            raise ValueError(f"gptq_block={self.gptq_block!r} is not allowed; allowed: a positive integer")


MAX_AWQ_GRID = 1000
"""Largest ``awq_grid``: each exponent costs one pass over every block's calibration inputs (llm-awq uses 20)."""

AWQ_SCOPES = ("linear", "shared")
"""``awq_scope``: one AWQ scale per linear, or one per group of linears reading the same input
(q/k/v, gate/up; folded into the preceding norm where it can be: :mod:`qd_models.awq_scope`)."""


@dataclass(frozen=True)
class AWQOptions(MethodOptions):
    """``method=awq`` (Lin et al. 2024): ``awq_grid`` exponents alpha = k / awq_grid,
    k = 0..awq_grid-1 (llm-awq ``auto_scale``), ``awq_clip`` (llm-awq ``auto_clip``) and
    ``awq_scope`` (:data:`AWQ_SCOPES`)."""

    awq_grid: int = arg(20, _to_int)
    awq_clip: bool = arg(False, _to_bool)
    awq_scope: str = arg("linear", _to_str)

    def __post_init__(self):
        if not (isinstance(self.awq_grid, int) and 0 < self.awq_grid <= MAX_AWQ_GRID):
            raise ValueError(f"awq_grid={self.awq_grid!r} is not allowed; allowed: an integer in 1..{MAX_AWQ_GRID}")
        if not isinstance(self.awq_clip, bool):
            raise ValueError(f"awq_clip={self.awq_clip!r} is not allowed; allowed: true, false")
        if self.awq_scope not in AWQ_SCOPES:
            raise ValueError(f"awq_scope={self.awq_scope!r} is not allowed; allowed: {_allowed(AWQ_SCOPES)}")


GGUF_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
              "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m")
"""``method=gguf`` types: llama.cpp block types (pure: every tensor) and mixed presets (per-tensor rules,
:mod:`qd_models.quant.gguf_presets`)."""
GGUF_DEFAULT_TYPE = "q4_k_m"
GGUF_IMATRIX_MODE = "pooled"
"""``calib_mode`` recorded for ``method=gguf`` with calibration: one importance matrix, the mean x^2 over all
calibration tokens of the selected languages (token-weighted mean of the per-language moments)."""


@dataclass(frozen=True)
class GGUFOptions(MethodOptions):
    """``method=gguf`` (llama.cpp's block formats): ``gguf_type``, one of :data:`GGUF_TYPES`."""

    gguf_type: str = arg(GGUF_DEFAULT_TYPE, _to_str)

    def __post_init__(self):
        if self.gguf_type not in GGUF_TYPES:
            raise ValueError(f"gguf_type={self.gguf_type!r} is not allowed; allowed: {_allowed(GGUF_TYPES)}")


@dataclass(frozen=True)
class MethodSpec:
    """What the package needs to know about a method.

    ``mechanism``: :class:`Mechanism`; ``clips``/``default_clip``: its ``clip`` values; ``fixed_bits``:
    the bits of a format that has one width (bitsandbytes); ``calibration``: the pass it always runs
    (:data:`CALIBRATIONS`; ``optional_calibration``: a pass only when calibration arguments are given);
    ``options``: its :class:`MethodOptions` type; ``default_granularity``; ``keep_top``: whether
    ``keep_top`` is supported; ``bits_option``: the option whose value fixes the bits (a format's type:
    labels show it in place of ``w<bits>``, and ``bits`` is no argument of the method); ``resolve``: the
    family's own resolution of the shared and calibration arguments (after its own options), for a
    format that fixes bits, blocks and grid itself, in place of the fake-quant rules;
    ``load_quantization``: ``BitsAndBytesConfig`` arguments (``bnb``)."""

    mechanism: str
    clips: tuple[str, ...] = ("none",)
    default_clip: str = "none"
    fixed_bits: int | None = None
    calibration: str = "none"
    optional_calibration: bool = False
    options: type[MethodOptions] | None = None
    default_granularity: str = "channel"
    keep_top: bool = True
    bits_option: str | None = None
    resolve: Callable[[QuantConfig], None] | None = None
    load_quantization: dict[str, Any] | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        """The method's own option arguments (fields of its ``options`` type)."""
        return tuple(f.name for f in fields(self.options)) if self.options else ()

    @property
    def bits_argument(self) -> bool:
        """``bits`` is an argument of the method (fake-quant methods whose bits no option fixes)."""
        return self.mechanism == Mechanism.FAKE and self.bits_option is None

    @property
    def reads_calibration(self) -> bool:
        """The method runs a calibration pass (always, or given calibration arguments)."""
        return self.calibration != "none" or self.optional_calibration


def _resolve_gguf(config: QuantConfig) -> None:
    """``method=gguf``: the type fixes bits, blocks, grid and clip (given ones are rejected); ``bits`` is
    the nominal width of the base type (q4_k_m -> 4; real bits per weight in the report); calibration
    arguments (optional) give one importance matrix, ``calib_mode`` :data:`GGUF_IMATRIX_MODE`."""
    given = [name for name in ("bits", "granularity", "group_size", "symmetric", "grid", "clip", "keep_by", "keep_top_scope")
             if getattr(config, name) is not None]
    given += ["keep_top"] if config.keep_top else []
    if given:
        raise ValueError(f"{', '.join(given)} not allowed with method=gguf; allowed: gguf_type, keep_layers, keep, "
                         "quantize_embeddings, quantize_lm_head, kept_value_bits, calib_langs, calib_data, calib_samples")
    config._set("bits", int(config.options.gguf_type[1]))
    config._resolve_kept_value_bits()
    config._set("clip", "none")
    config._check_keep_layers()
    if config.calib_mode is not None:
        raise ValueError(f"calib_mode={config.calib_mode!r} is not allowed with method=gguf; allowed: unset (the importance "
                         "matrix is the mean x^2 over all calibration tokens of calib_langs)")
    config._check_calib_samples()
    if any(getattr(config, name) not in (None, ()) for name in CALIB_FIELDS):
        config._set("calib_mode", GGUF_IMATRIX_MODE)


METHODS: dict[str, MethodSpec] = {
    "none": MethodSpec(mechanism=Mechanism.NONE),
    "rtn": MethodSpec(mechanism=Mechanism.FAKE),
    "aciq": MethodSpec(mechanism=Mechanism.FAKE, clips=("gauss", "laplace", "auto"), default_clip="auto"),
    "mse": MethodSpec(mechanism=Mechanism.FAKE),
    "laaciq": MethodSpec(mechanism=Mechanism.FAKE, calibration=STATS),
    "gptq": MethodSpec(mechanism=Mechanism.FAKE, calibration=INPUTS, options=GPTQOptions, default_granularity="group", keep_top=False),
    "awq": MethodSpec(mechanism=Mechanism.FAKE, calibration=INPUTS, options=AWQOptions, default_granularity="group", keep_top=False),
    "gguf": MethodSpec(mechanism=Mechanism.FAKE, optional_calibration=True, options=GGUFOptions, keep_top=False,
                       bits_option="gguf_type", resolve=_resolve_gguf),
    "nf4": MethodSpec(mechanism=Mechanism.BNB, fixed_bits=4, load_quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "fp4": MethodSpec(mechanism=Mechanism.BNB, fixed_bits=4, load_quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    "int8": MethodSpec(mechanism=Mechanism.BNB, fixed_bits=8, load_quantization={"load_in_8bit": True}),
}

OPTION_TYPES: tuple[type[MethodOptions], ...] = tuple(dict.fromkeys(spec.options for spec in METHODS.values() if spec.options))
OPTION_ARGS = tuple(f.name for options in OPTION_TYPES for f in fields(options))
"""Every family's option arguments (flat ``--model_args`` names)."""

FAKE_QUANT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
GRIDS = ("int", "midrise")
"""Symmetric grids: ``int`` (AWQ/SmoothQuant INT-b, zero exact) | ``midrise`` (Banner et al.'s
analysis grid, 2^b levels ending at +-alpha, no zero); see :mod:`qd_models.quant.core`."""
KEPT_VALUE_BITS = (8, 16, 32)
"""Allowed widths at which weights left in original precision are charged (deployment dtype)."""
GRANULARITIES = ("tensor", "channel", "group")
KEEP_BY = ("magnitude", "activation")
CALIB_MODES = ("target", "mean", "minimax")
CALIB_FIELDS = ("calib_mode", "calib_langs", "calib_data", "calib_samples")
"""Arguments of the calibration pass, used by methods with a ``calibration`` and by
``keep_by=activation`` (``calib_mode`` only by ``laaciq`` and ``keep_by=activation``)."""
ALL_LANGS = "all"
"""``calib_langs=all``: every language of the calibration source (the same as unset)."""
KEEP_TOP_SCOPES = ("layer", "global")
IDENTITY_BITS = 16


def option_owners() -> dict[str, list[str]]:
    """``{family option field: [methods taking it]}`` over :data:`METHODS`."""
    owners: dict[str, list[str]] = {}
    for method, spec in METHODS.items():
        for name in spec.option_names:
            owners.setdefault(name, []).append(method)
    return owners


def calibration_passes(method: str, bits, calib_mode: str | None) -> tuple[str, ...]:
    """:attr:`QuantConfig.calibration_passes` of a resolved config's ``method``, ``bits`` and
    ``calib_mode`` (also for a stored config, which need not parse again); an unknown method: ``()``."""
    spec = METHODS.get(method)
    passes = (STATS,) if calib_mode is not None else ()
    if spec is not None and spec.mechanism == Mechanism.FAKE and spec.calibration == INPUTS and bits != IDENTITY_BITS:
        passes += (INPUTS,)
    return passes


def methods_of(mechanism: str) -> list[str]:
    """The methods applied by ``mechanism`` (:class:`Mechanism`), in :data:`METHODS` order."""
    return [method for method, spec in METHODS.items() if spec.mechanism == mechanism]


def calibrated_methods() -> tuple[str, str]:
    """``("gptq|awq|laaciq", "gguf")`` for messages: the methods that always read calibration texts
    (Gram-matrix ones first), and those that read them only given calibration arguments."""
    always = sorted((m for m, s in METHODS.items() if s.calibration != "none"), key=lambda m: METHODS[m].calibration != INPUTS)
    return "|".join(always), "|".join(m for m, s in METHODS.items() if s.optional_calibration)


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class QuantConfig:
    """Resolved, validated quantization settings (see the argument tables of ``docs/methods.md``): the arguments
    common to all methods, and the method family's own in ``options``.

    Common fields left ``None`` are resolved to their defaults for methods that use them and must
    stay ``None`` for methods that do not (e.g. ``granularity`` with ``nf4``). ``options`` is given
    as ``{option argument: value}`` (:func:`parse_qd_args`: the flat arguments; another family's are
    rejected) or as the family's options object, and resolved to the family's :class:`MethodOptions`
    (defaults filled in; ``None`` for a method without options).
    """

    method: str = arg("none", _to_str)
    bits: int | None = arg(None, _to_int)
    granularity: str | None = arg(None, _to_str)
    group_size: int | None = arg(None, _to_int)
    symmetric: bool | None = arg(None, _to_bool)
    grid: str | None = arg(None, _to_str)
    clip: str | None = arg(None, _to_str)
    keep_top: float = arg(0.0, _to_float)
    keep_top_scope: str | None = arg(None, _to_str)
    keep_by: str | None = arg(None, _to_str)
    keep_layers: tuple[int, ...] = arg((), _to_layers)
    keep: tuple[str, ...] = arg((), _to_patterns)
    quantize_embeddings: bool = arg(False, _to_bool)
    quantize_lm_head: bool = arg(False, _to_bool)
    kept_value_bits: int | None = arg(None, _to_int)
    save_to: str | None = arg(None, _to_path)
    calib_mode: str | None = arg(None, _to_str)
    calib_langs: tuple[str, ...] = arg((), _to_langs)
    calib_data: str | None = arg(None, _to_path)
    calib_samples: int | None = arg(None, _to_int)
    save_overwrite: bool = arg(False, _to_bool)
    options: MethodOptions | dict | None = None
    calib_seed: int | None = arg(None, _to_int)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not allowed; allowed: {_allowed(METHODS)}")
        spec = METHODS[self.method]
        given = self._given_options(spec)
        if spec.resolve is not None:  # a format that fixes the shared arguments itself
            self._resolve_own_options(spec, given)
            spec.resolve(self)
            self._reject_foreign_options(spec, given)
        else:
            if spec.mechanism == Mechanism.FAKE:
                self._resolve_fake(spec)
            else:
                self._reject_fake_options(spec)
            self._reject_foreign_options(spec, given)
            self._resolve_own_options(spec, given)
            self._resolve_calibration()
        self._check_calib_seed()
        for name in ("quantize_embeddings", "quantize_lm_head", "save_overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; allowed: true, false")
        for name in ("save_to", "calib_data"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name}= is empty; allowed: a path (or leave {name} out)")
        if self.save_to is not None and spec.mechanism == Mechanism.NONE:
            raise ValueError(f"save_to={self.save_to} is not allowed with method=none; allowed: a quantization method (the original model is already saved)")
        if self.save_overwrite and self.save_to is None:
            raise ValueError("save_overwrite=true is not allowed without save_to; allowed: save_to=FOLDER,save_overwrite=true")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _resolve_kept_value_bits(self) -> None:
        self._set("kept_value_bits", 16 if self.kept_value_bits is None else self.kept_value_bits)
        if self.kept_value_bits not in KEPT_VALUE_BITS:
            raise ValueError(f"kept_value_bits={self.kept_value_bits!r} is not allowed; allowed: {_allowed(KEPT_VALUE_BITS)}")

    def _check_keep_layers(self) -> None:
        if any(layer < 0 for layer in self.keep_layers):
            raise ValueError(f"keep_layers={list(self.keep_layers)} is not allowed; allowed: non-negative block indices")

    def _check_calib_samples(self) -> None:
        if self.calib_samples is not None and self.calib_samples < 1:
            raise ValueError(f"calib_samples={self.calib_samples!r} is not allowed; allowed: a positive integer (texts per language)")

    def _check_calib_seed(self) -> None:
        """``calib_seed`` (a seeded draw of the calibration texts, :func:`qd_models.calibration.sources.draw_texts`):
        an integer >= 0, only for a config that reads calibration texts."""
        if self.calib_seed is None:
            return
        if isinstance(self.calib_seed, bool) or not isinstance(self.calib_seed, int) or self.calib_seed < 0:
            raise ValueError(f"calib_seed={self.calib_seed!r} is not allowed; allowed: an integer >= 0")
        if not self.calibration_passes:
            always, optional = calibrated_methods()
            raise ValueError(f"calib_seed={self.calib_seed} is not allowed with method={self.method} (this config reads no calibration "
                             f"texts); allowed with method={always} (bits < 16), keep_by=activation or method={optional} with calib_* arguments")

    def _resolve_fake(self, spec: MethodSpec) -> None:
        self._set("bits", 4 if self.bits is None else self.bits)
        if self.bits not in FAKE_QUANT_BITS:
            raise ValueError(f"bits={self.bits!r} is not allowed for method={self.method}; allowed: 2..8, or 16 (identity)")
        self._set("granularity", self.granularity or spec.default_granularity)
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not allowed; allowed: {_allowed(GRANULARITIES)}")
        if self.granularity == "group":
            self._set("group_size", 128 if self.group_size is None else self.group_size)
            if not (isinstance(self.group_size, int) and self.group_size > 0):
                raise ValueError(f"group_size={self.group_size!r} is not allowed; allowed: a positive integer")
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size!r} is not allowed with granularity={self.granularity}; allowed: unset (or granularity=group)")
        self._set("symmetric", True if self.symmetric is None else self.symmetric)
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric={self.symmetric!r} is not allowed; allowed: true, false")
        self._set("grid", self.grid or "int")
        if self.grid not in GRIDS:
            raise ValueError(f"grid={self.grid!r} is not allowed; allowed: {_allowed(GRIDS)}")
        if self.grid == "midrise" and not self.symmetric:
            raise ValueError("grid=midrise is not allowed with symmetric=false; allowed: grid=int (the asymmetric grid has an integer zero point)")
        self._resolve_kept_value_bits()
        self._set("clip", self.clip or spec.default_clip)
        if self.clip not in spec.clips:
            raise ValueError(f"clip={self.clip!r} is not allowed for method={self.method}; allowed: {_allowed(spec.clips)}")
        if not (0.0 <= self.keep_top <= 100.0):
            raise ValueError(f"keep_top={self.keep_top!r} is not allowed; allowed: a percentage in [0, 100]")
        if self.keep_top > 0 and not spec.keep_top:
            raise ValueError(f"keep_top={self.keep_top!r} is not allowed with method={self.method}; allowed: 0 (unset)")
        if self.keep_top > 0:
            self._set("keep_by", self.keep_by or "magnitude")
            self._set("keep_top_scope", self.keep_top_scope or "layer")
        if self.keep_by is not None and self.keep_by not in KEEP_BY:
            raise ValueError(f"keep_by={self.keep_by!r} is not allowed; allowed: {_allowed(KEEP_BY)}")
        if self.keep_top_scope is not None and self.keep_top_scope not in KEEP_TOP_SCOPES:
            raise ValueError(f"keep_top_scope={self.keep_top_scope!r} is not allowed; allowed: {_allowed(KEEP_TOP_SCOPES)}")
        if self.keep_top == 0 and (self.keep_by is not None or self.keep_top_scope is not None):
            raise ValueError("keep_by/keep_top_scope are not allowed without keep_top; allowed: set keep_top in (0, 100]")
        self._check_keep_layers()

    def _given_options(self, spec: MethodSpec) -> dict[str, Any]:
        """``options`` as given: ``{argument: value}`` (``None`` values: unset)."""
        if self.options is None:
            return {}
        if isinstance(self.options, MethodOptions):
            if type(self.options) is not spec.options:
                allowed = spec.options.__name__ if spec.options else "unset"
                raise ValueError(f"options={type(self.options).__name__} is not allowed with method={self.method}; allowed: {allowed}")
            return {f.name: getattr(self.options, f.name) for f in fields(self.options)}
        unknown = [name for name in self.options if name not in OPTION_ARGS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not an option argument; allowed: {_allowed(OPTION_ARGS)}")
        return {name: value for name, value in self.options.items() if value is not None}

    def _reject_foreign_options(self, spec: MethodSpec, given: dict[str, Any]) -> None:
        foreign = {name: owners for name, owners in option_owners().items() if name not in spec.option_names and name in given}
        if foreign:
            name, owners = next(iter(foreign.items()))
            raise ValueError(f"{', '.join(foreign)} not allowed with method={self.method}; allowed with method={'|'.join(owners)}")

    def _resolve_own_options(self, spec: MethodSpec, given: dict[str, Any]) -> None:
        """The method's options object from its own given arguments (defaults filled in, checked)."""
        own = {name: value for name, value in given.items() if name in spec.option_names}
        self._set("options", spec.options(**own) if spec.options is not None else None)

    def _resolve_calibration(self) -> None:
        given = [name for name in CALIB_FIELDS if getattr(self, name) not in (None, ())]
        calibration = self.spec.calibration
        if not (calibration != "none" or self.keep_by == "activation"):
            if given:
                with_calibration = "|".join(m for m, s in METHODS.items() if s.calibration != "none")
                raise ValueError(f"{', '.join(given)} not allowed with method={self.method}; allowed with method={with_calibration} or keep_by=activation")
            return
        if calibration == INPUTS and self.keep_by != "activation":
            if self.calib_mode is not None:
                raise ValueError(f"calib_mode={self.calib_mode!r} is not allowed with method={self.method}; allowed: unset (calib_mode is laaciq's)")
            self._check_calib_samples()
            return
        self._set("calib_mode", self.calib_mode or "mean")
        if self.calib_mode not in CALIB_MODES:
            raise ValueError(f"calib_mode={self.calib_mode!r} is not allowed; allowed: {_allowed(CALIB_MODES)}")
        if self.calib_mode == "target" and len(self.calib_langs) != 1:
            raise ValueError(f"calib_langs={';'.join(self.calib_langs) or 'unset'} is not allowed with calib_mode=target; allowed: exactly one language, e.g. calib_langs=he")
        self._check_calib_samples()
        if self.keep_by == "activation" and self.keep_top_scope == "global":
            raise ValueError("keep_top_scope=global is not allowed with keep_by=activation; allowed: layer")

    def _reject_fake_options(self, spec: MethodSpec) -> None:
        if spec.fixed_bits is not None and self.bits is not None and self.bits != spec.fixed_bits:
            raise ValueError(f"bits={self.bits!r} is not allowed for method={self.method}; allowed: {spec.fixed_bits} (or unset)")
        if spec.mechanism == Mechanism.NONE and self.bits not in (None, IDENTITY_BITS):
            raise ValueError(f"bits={self.bits!r} is not allowed for method=none; allowed: unset or 16")
        self._set("bits", spec.fixed_bits or IDENTITY_BITS)
        given = [
            name
            for name in ("granularity", "group_size", "symmetric", "grid", "clip", "keep_by", "keep_top_scope", "kept_value_bits")
            if getattr(self, name) not in (None, "none")
        ]
        given += [name for name in ("keep_top", "keep_layers", "keep") if getattr(self, name)]
        given += [name for name in ("quantize_embeddings", "quantize_lm_head") if getattr(self, name)]
        if given:
            raise ValueError(
                f"{', '.join(given)} not allowed with method={self.method}; allowed with methods: "
                f"{_allowed(methods_of(Mechanism.FAKE))}"
            )
        self._set("clip", "none")

    @property
    def spec(self) -> MethodSpec:
        """The method's :class:`MethodSpec`."""
        return METHODS[self.method]

    @property
    def mechanism(self) -> str:
        """:class:`Mechanism`: ``none`` | ``fake`` | ``bnb``."""
        return self.spec.mechanism

    @property
    def calibration_passes(self) -> tuple[str, ...]:
        """The calibration passes run before quantizing, in order; empty: no calibration texts are read.
        :data:`STATS`: per-language activation statistics (``method=laaciq``, ``keep_by=activation``, or
        ``method=gguf`` with a calibration argument: importance matrix; ``calib_mode`` is resolved exactly
        then); :data:`INPUTS`: per-block input Gram matrices (``MethodSpec.calibration``, bits < 16)."""
        return calibration_passes(self.method, self.bits, self.calib_mode)

    def to_dict(self) -> dict:
        """JSON-serialisable resolved config, flat in :data:`QD_ARGS` order: every family's option
        arguments, ``None`` where they are not the method's."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "options":
                out.update({name: getattr(self.options, name, None) for name in OPTION_ARGS})
            else:
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def num_blocks(hf_config) -> int | None:
    """Number of transformer blocks from a ``PretrainedConfig`` (text config if nested)."""
    for cfg in (getattr(hf_config, "text_config", None), hf_config):
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int):
                return value
    return None


def load_hf_config(pretrained: str, model_args: dict):
    """The model's ``PretrainedConfig`` (no weights loaded), with the ``revision`` and
    ``trust_remote_code`` of lm-eval's ``model_args``."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        pretrained, revision=model_args.get("revision", "main"), trust_remote_code=model_args.get("trust_remote_code", False)
    )


def validate_for_model(config: QuantConfig, hf_config) -> None:
    """Checks that need only the model's ``PretrainedConfig`` (call before loading weights)."""
    if config.keep_layers:
        count = num_blocks(hf_config)
        if count is not None and max(config.keep_layers) >= count:
            raise ValueError(f"keep_layers={list(config.keep_layers)} is out of range; allowed: block indices 0..{count - 1}")
    if config.granularity == "group":
        text = getattr(hf_config, "text_config", None) or hf_config
        for attr in ("hidden_size", "n_embd", "intermediate_size"):
            dim = getattr(text, attr, None)
            if isinstance(dim, int) and dim % config.group_size:
                raise ValueError(f"group_size={config.group_size} does not divide {attr}={dim}; allowed: a divisor of every quantized layer's input dim")


def check_output_folder(name: str, value: Any) -> None:
    """A folder argument this run writes into (``save_to``, ``fidelity_out``), checked before the
    model loads: one-line ``ValueError`` for an empty value, a symbolic link to nothing, an existing
    file (or a file on the way), or a location that cannot be written."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise ValueError(f"{name}= is empty; allowed: a folder path")
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.islink(path) and not os.path.exists(path):
        raise ValueError(f"{name}={value} is a symbolic link to nothing ({os.readlink(path)}); allowed: a folder, or a link to an existing folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}={value} is an existing file; allowed: a folder path")
    nearest = path
    while not os.path.isdir(nearest):
        if os.path.lexists(nearest) and nearest != path:
            raise ValueError(f"{name}={value}: {nearest} is not a folder; allowed: a folder path")
        nearest = os.path.dirname(nearest)
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={value} is not writable ({nearest} does not allow writing); allowed: a folder you can write to")


QD_ARGS = tuple(itertools.chain.from_iterable(OPTION_ARGS if f.name == "options" else (f.name,) for f in fields(QuantConfig)))
"""Every qd argument: the common ones, with the families' option arguments in the place of ``options``."""
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    f.name: f.metadata["parse"] for f in itertools.chain(fields(QuantConfig), *map(fields, OPTION_TYPES)) if f.name != "options"
}
"""Argument -> its converter (declared with the field, :func:`arg`)."""


LIST_ARGS = ("keep_layers", "keep", "calib_langs")


def _merge_list_continuations(kwargs: dict) -> dict:
    """Undo lm-eval's comma split of list values: ``keep_layers=0,11`` reaches us as
    ``{"keep_layers": 0, "11": ""}``; a key with an empty value right after a list argument
    (or after another such continuation) is one more item of that list."""
    merged: dict[str, Any] = {}
    current: str | None = None
    for key, value in kwargs.items():
        if current is not None and value == "":
            merged[current] = f"{merged[current]};{key}"
            continue
        merged[key] = value
        current = key if key in LIST_ARGS else None
    return merged


def parse_qd_args(kwargs: dict) -> tuple[QuantConfig, dict]:
    """Split lm-eval model kwargs into (QuantConfig, remaining HFLM kwargs).

    ``None`` values (lm-eval's Python parser turns the string ``none`` into ``None``) mean
    "unset", except for ``method``/``clip`` where they mean ``none``.
    """
    rest = _merge_list_continuations(kwargs)
    typed: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for name in QD_ARGS:
        if name not in rest:
            continue
        value = rest.pop(name)
        if value is None:
            if name in ("method", "clip"):
                typed[name] = "none"
            continue
        (options if name in OPTION_ARGS else typed)[name] = _PARSERS[name](name, value)
    return QuantConfig(**typed, options=options), rest
