"""Quantization config resolved from flat ``--model_args`` scalars.

``parse_qd_args`` pops the qd-specific keys from lm-eval's model kwargs, converts CLI
strings ("4", "true", "0;11", "[0, 11]") to typed values, validates them and returns a frozen
:class:`QuantConfig` plus the remaining kwargs for ``HFLM``. Importing this module is cheap
(no torch). Every invalid value raises a one-line ``ValueError`` naming the argument and the
allowed values, before any model is loaded.

Method families: :data:`METHODS` is the one registry of methods. A :class:`MethodSpec` says
how a method is applied (``mechanism``), which calibration it needs (``calibration``) and which
family options type validates its own arguments (``options``: a frozen dataclass such as
:class:`GPTQOptions`, whose field names are also :class:`QuantConfig` fields, ``None`` = unset).
A family whose format fixes bits, blocks and grid itself (``gguf``) resolves the shared arguments
with its own ``MethodSpec.resolve``. The torch side of the registry (method -> quantize-layer
function and optional per-model plan) is :data:`qd_models.methods.QUANTIZERS`.

Extending: (1) add the method's own arguments as fields at the end of :class:`QuantConfig`
(default ``None``) with a converter in ``_CONVERTERS`` (``QD_ARGS`` is derived from the
dataclass fields); (2) write their options type (defaults + checks in ``__post_init__``);
(3) add ``METHODS[name] = MethodSpec(mechanism=..., options=TheOptions, calibration=...)``; (4) add its layer function (and plan, if any) to ``qd_models.methods.QUANTIZERS``.
Arguments of another family are rejected with one line naming the methods that take them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

CALIBRATIONS = ("none", "stats", "inputs")
"""What a method needs from the calibration texts: nothing, per-language input second moments
(:class:`qd_models.calibration.ActivationStats`, one pass) or each layer's input Gram matrix
collected block by block from the partly quantized model (:mod:`qd_models.calibration`)."""


@dataclass(frozen=True)
class GPTQOptions:
    """``method=gptq`` (Frantar et al. 2023): ``damp`` (fraction of mean diag(H) added to the
    diagonal, reference ``percdamp``), ``act_order`` (columns in decreasing diag(H) order) and
    ``gptq_block`` (columns per lazy-batch update)."""

    damp: float = 0.01
    act_order: bool = False
    gptq_block: int = 128

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
class AWQOptions:
    """``method=awq`` (Lin et al. 2024): ``awq_grid`` exponents alpha = k / awq_grid,
    k = 0..awq_grid-1 (llm-awq ``auto_scale``), ``awq_clip`` (llm-awq ``auto_clip``) and
    ``awq_scope`` (:data:`AWQ_SCOPES`)."""

    awq_grid: int = 20
    awq_clip: bool = False
    awq_scope: str = "linear"

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
class GGUFOptions:
    """``method=gguf`` (llama.cpp's block formats): ``gguf_type``, one of :data:`GGUF_TYPES`."""

    gguf_type: str = GGUF_DEFAULT_TYPE

    def __post_init__(self):
        if self.gguf_type not in GGUF_TYPES:
            raise ValueError(f"gguf_type={self.gguf_type!r} is not allowed; allowed: {_allowed(GGUF_TYPES)}")


@dataclass(frozen=True)
class MethodSpec:
    """How a method is applied: ``mechanism`` is ``none``, ``fake`` (our weight-only
    quantize->dequantize) or ``bnb`` (bitsandbytes at load time); ``calibration``: one of
    :data:`CALIBRATIONS`; ``options``: the family's options type (module doc);
    ``default_granularity``; ``keep_top``: whether ``keep_top`` is supported; ``resolve``: the
    family's own resolution of the shared and calibration arguments (after its own options), for a
    format that fixes bits, blocks and grid itself, in place of the fake-quant rules;
    ``load_quantization``: ``BitsAndBytesConfig`` arguments (``bnb``)."""

    mechanism: str
    clips: tuple[str, ...] = ("none",)
    default_clip: str = "none"
    fixed_bits: int | None = None
    calibration: str = "none"
    options: type | None = None
    default_granularity: str = "channel"
    keep_top: bool = True
    resolve: Callable[[QuantConfig], None] | None = None
    load_quantization: dict[str, Any] | None = None


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
    config._set("bits", int(config.gguf_type[1]))
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
    "none": MethodSpec(mechanism="none"),
    "rtn": MethodSpec(mechanism="fake"),
    "aciq": MethodSpec(mechanism="fake", clips=("gauss", "laplace", "auto"), default_clip="auto"),
    "mse": MethodSpec(mechanism="fake"),
    "laaciq": MethodSpec(mechanism="fake", calibration="stats"),
    "gptq": MethodSpec(mechanism="fake", calibration="inputs", options=GPTQOptions, default_granularity="group", keep_top=False),
    "awq": MethodSpec(mechanism="fake", calibration="inputs", options=AWQOptions, default_granularity="group", keep_top=False),
    "gguf": MethodSpec(mechanism="fake", options=GGUFOptions, keep_top=False, resolve=_resolve_gguf),
    "nf4": MethodSpec(mechanism="bnb", fixed_bits=4, load_quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "fp4": MethodSpec(mechanism="bnb", fixed_bits=4, load_quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    "int8": MethodSpec(mechanism="bnb", fixed_bits=8, load_quantization={"load_in_8bit": True}),
}

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
        for field in fields(spec.options) if spec.options else ():
            owners.setdefault(field.name, []).append(method)
    return owners


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values)


@dataclass(frozen=True)
class QuantConfig:
    """Resolved, validated quantization settings (see the README argument table).

    Method-specific fields left ``None`` are resolved to their defaults for methods that use
    them and must stay ``None`` for methods that do not (e.g. ``granularity`` with ``nf4``).
    """

    method: str = "none"
    bits: int | None = None
    granularity: str | None = None
    group_size: int | None = None
    symmetric: bool | None = None
    grid: str | None = None
    clip: str | None = None
    keep_top: float = 0.0
    keep_top_scope: str | None = None
    keep_by: str | None = None
    keep_layers: tuple[int, ...] = ()
    keep: tuple[str, ...] = ()
    quantize_embeddings: bool = False
    quantize_lm_head: bool = False
    kept_value_bits: int | None = None
    save_to: str | None = None
    calib_mode: str | None = None
    calib_langs: tuple[str, ...] = ()
    calib_data: str | None = None
    calib_samples: int | None = None
    save_overwrite: bool = False
    damp: float | None = None
    act_order: bool | None = None
    gptq_block: int | None = None
    awq_grid: int | None = None
    awq_clip: bool | None = None
    gguf_type: str | None = None
    awq_scope: str | None = None
    calib_seed: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not allowed; allowed: {_allowed(METHODS)}")
        spec = METHODS[self.method]
        if spec.resolve is not None:  # a format that fixes the shared arguments itself
            self._resolve_own_options(spec)
            spec.resolve(self)
            self._reject_foreign_options(spec)
        else:
            if spec.mechanism == "fake":
                self._resolve_fake(spec)
            else:
                self._reject_fake_options(spec)
            self._resolve_options(spec)
            self._resolve_calibration()
        self._check_calib_seed()
        for name in ("quantize_embeddings", "quantize_lm_head", "save_overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; allowed: true, false")
        for name in ("save_to", "calib_data"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name}= is empty; allowed: a path (or leave {name} out)")
        if self.save_to is not None and spec.mechanism == "none":
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
        if not self.uses_calibration_texts:
            raise ValueError(f"calib_seed={self.calib_seed} is not allowed with method={self.method} (this config reads no calibration "
                             "texts); allowed with method=gptq|awq|laaciq (bits < 16), keep_by=activation or method=gguf with calib_* arguments")

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

    def _resolve_options(self, spec: MethodSpec) -> None:
        """Reject other families' options, validate the method's own (defaults filled in)."""
        self._reject_foreign_options(spec)
        self._resolve_own_options(spec)

    def _reject_foreign_options(self, spec: MethodSpec) -> None:
        own = {field.name for field in fields(spec.options)} if spec.options else set()
        foreign = {name: owners for name, owners in option_owners().items() if name not in own and getattr(self, name) is not None}
        if foreign:
            name, owners = next(iter(foreign.items()))
            raise ValueError(f"{', '.join(foreign)} not allowed with method={self.method}; allowed with method={'|'.join(owners)}")

    def _resolve_own_options(self, spec: MethodSpec) -> None:
        own = {field.name for field in fields(spec.options)} if spec.options else set()
        if spec.options is not None:
            options = spec.options(**{name: getattr(self, name) for name in own if getattr(self, name) is not None})
            for name in own:
                self._set(name, getattr(options, name))

    def _resolve_calibration(self) -> None:
        given = [name for name in CALIB_FIELDS if getattr(self, name) not in (None, ())]
        calibration = METHODS[self.method].calibration
        if not (calibration != "none" or self.keep_by == "activation"):
            if given:
                with_calibration = "|".join(m for m, s in METHODS.items() if s.calibration != "none")
                raise ValueError(f"{', '.join(given)} not allowed with method={self.method}; allowed with method={with_calibration} or keep_by=activation")
            return
        if calibration == "inputs" and self.keep_by != "activation":
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
        if spec.mechanism == "none" and self.bits not in (None, IDENTITY_BITS):
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
                f"{_allowed(m for m, s in METHODS.items() if s.mechanism == 'fake')}"
            )
        self._set("clip", "none")

    @property
    def needs_calibration(self) -> bool:
        """Per-language activation statistics are needed (``method=laaciq``, ``keep_by=activation``,
        or ``method=gguf`` with a calibration argument: importance matrix): ``calib_mode`` is resolved exactly then."""
        return self.calib_mode is not None

    @property
    def calibration(self) -> str:
        """The method's calibration (:data:`CALIBRATIONS`); ``stats`` also for ``keep_by=activation``."""
        spec = METHODS[self.method]
        return "stats" if spec.calibration == "none" and self.needs_calibration else spec.calibration

    @property
    def uses_calibration_texts(self) -> bool:
        """Calibration texts are read (and checked before the model loads)."""
        return self.mechanism == "fake" and (self.needs_calibration or (self.calibration == "inputs" and self.bits != IDENTITY_BITS))

    @property
    def options(self):
        """The method family's options (e.g. :class:`GPTQOptions`), or ``None``."""
        spec = METHODS[self.method]
        if spec.options is None:
            return None
        return spec.options(**{field.name: getattr(self, field.name) for field in fields(spec.options)})

    @property
    def mechanism(self) -> str:
        """``none`` | ``fake`` | ``bnb``."""
        return METHODS[self.method].mechanism

    def to_dict(self) -> dict:
        """JSON-serialisable resolved config."""
        out = asdict(self)
        out["keep_layers"] = list(self.keep_layers)
        out["keep"] = list(self.keep)
        out["calib_langs"] = list(self.calib_langs)
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


_CONVERTERS = {
    "method": _to_str,
    "bits": _to_int,
    "granularity": _to_str,
    "group_size": _to_int,
    "symmetric": _to_bool,
    "grid": _to_str,
    "clip": _to_str,
    "keep_top": _to_float,
    "keep_top_scope": _to_str,
    "keep_by": _to_str,
    "keep_layers": _to_layers,
    "keep": _to_patterns,
    "quantize_embeddings": _to_bool,
    "quantize_lm_head": _to_bool,
    "kept_value_bits": _to_int,
    "save_to": _to_path,
    "calib_mode": _to_str,
    "calib_langs": _to_langs,
    "calib_data": _to_path,
    "calib_samples": _to_int,
    "save_overwrite": _to_bool,
    "damp": _to_float,
    "act_order": _to_bool,
    "gptq_block": _to_int,
    "awq_grid": _to_int,
    "awq_clip": _to_bool,
    "gguf_type": _to_str,
    "awq_scope": _to_str,
    "calib_seed": _to_int,
}

QD_ARGS = tuple(f.name for f in fields(QuantConfig))


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
    for name in QD_ARGS:
        if name not in rest:
            continue
        value = rest.pop(name)
        if value is None:
            if name in ("method", "clip"):
                typed[name] = "none"
            continue
        typed[name] = _CONVERTERS[name](name, value)
    return QuantConfig(**typed), rest
