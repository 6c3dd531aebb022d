"""Walk a transformers model and fake-quantize its weights in place, one layer at a time.

Selection (``quantize_``): the weights of ``nn.Linear`` and transformers' ``Conv1D`` modules
(GPT-2 stores Conv1D weights as ``[in, out]``; they are transposed to ``[out, in]`` so that
"channel" always means an output channel). Skipped by default: embeddings, ``lm_head``, a weight
tied between them (quantized only when both ``quantize_embeddings`` and ``quantize_lm_head``
are on), norms, biases and every other parameter. Kept in original precision (counted in the
effective bits at ``kept_value_bits``, default 16): modules in ``keep_layers`` blocks, modules matching ``keep`` (exact names or
``re:<regex>`` matched with ``re.fullmatch``), modules ``filter_fn(module, name)`` rejects,
and the ``keep_top`` % largest-|w| weights of each quantized layer (``keep_top_scope=global``:
one |w| threshold over all quantized layers, from a 65536-bin histogram, so at least
``keep_top`` % is kept, over by less than one bin).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from qd_tasks.folder_swap import check_folder_target, real_folder, replace_folder

from . import __version__
from .config import INPUTS, STATS, Mechanism, QuantConfig, validate_for_model
from .methods import QUANTIZERS, LayerInputs, PlanTarget
from .quant.core import check_group_size, to_blocks, top_fraction_mask, weight_stats
from .quant.weighted import activation_keep_scores, mode_weights, normalise_second_moments
from .report import json_safe, quantized_layer_bits, summarize_report

BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)(?:\.|$)")
"""Transformer block index in a module name: ``model.layers.3.``, ``transformer.h.3.``."""

logger = logging.getLogger(__name__)

GLOBAL_HISTOGRAM_BINS = 65536
REPORT_FILENAME = "quant_report.json"

FilterFn = Callable[[nn.Module, str], bool]


def _conv1d_type():
    from transformers.pytorch_utils import Conv1D

    return Conv1D


@dataclass
class _Target:
    name: str  # module name
    param_name: str
    module: nn.Module
    layout: str  # linear | conv1d | embedding
    status: str  # quantize | keep
    reason: str = ""

    def oriented(self) -> torch.Tensor:
        """float32 weight ``[out, in]`` (a view when the weight already is float32)."""
        weight = self.module.weight.detach()
        weight = weight.t() if self.layout == "conv1d" else weight
        return weight.float().contiguous()

    def write(self, oriented: torch.Tensor) -> None:
        self.module.weight.data.copy_(oriented.t() if self.layout == "conv1d" else oriented)


def block_index(name: str) -> int | None:
    """Transformer block index in a module name, or ``None``."""
    match = BLOCK_INDEX.search(name)
    return int(match.group(1)) if match else None


def bnb_from_pretrained_kwargs(config: QuantConfig) -> dict:
    """``from_pretrained`` kwargs for bitsandbytes methods (``{}`` for the others)."""
    if config.mechanism != Mechanism.BNB:
        return {}
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(**config.spec.load_quantization)}


def block_module_name(name: str) -> str | None:
    """``model.layers.3`` for ``model.layers.3.mlp.down_proj`` (the transformer block holding
    module ``name``), or ``None`` outside the blocks."""
    match = BLOCK_INDEX.search(name)
    return name[: match.end(1)] if match else None


def _layer_inputs(model: nn.Module, targets: list[_Target], target: _Target, calib, grams: dict, block_inputs) -> LayerInputs:
    """Gram matrix and mean |x| of ``target``'s input for the ``inputs`` calibration: collected
    for all quantized targets of ``target``'s block at once, when its first target is reached
    (so earlier blocks are already quantized: GPTQ's sequential order), by running the block on
    its cached inputs (``block_inputs``: :class:`qd_models.calibration.BlockInputs`); targets
    outside the blocks (e.g. a quantized head) by a full forward pass."""
    if target.layout == "embedding":
        return LayerInputs()
    if target.name not in grams:
        block = block_module_name(target.name)
        names = [t.name for t in targets
                 if t.status == "quantize" and t.layout != "embedding" and block_module_name(t.name) == block]
        if block is None:
            from .calibration import collect_input_grams

            grams.update(collect_input_grams(model, calib, names, None))
        else:
            grams.update(block_inputs.grams(block, names))
    gram, mean_abs = grams.pop(target.name)
    return LayerInputs(gram=gram.float(), mean_abs=mean_abs.float())


def _block_modules(model: nn.Module) -> list[str]:
    """Names of the transformer blocks (``model.layers.3``, ``transformer.h.3``), in model order."""
    return [name for name, _ in model.named_modules() if name and block_module_name(name) == name]


def _plan_target(target: _Target) -> PlanTarget:
    weight = target.module.weight
    in_features = weight.shape[0] if target.layout == "conv1d" else weight.shape[1]
    return PlanTarget(target.name, in_features, block_index(target.name), target.status == "quantize")


def _layout(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _conv1d_type()):
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def _matches(name: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if (pattern[3:] and re.fullmatch(pattern[3:], name)) if pattern.startswith("re:") else name == pattern:
            return pattern
    return None


def _select(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None) -> tuple[list[_Target], set[int]]:
    """Quantization candidates (status quantize | keep) and the ids of their weights."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied_id = id(head.weight) if head is not None and embedding is not None and head.weight is embedding.weight else None
    targets, seen, used_patterns = [], set(), set()
    for name, module in model.named_modules():
        layout = _layout(module)
        if layout is None or id(module.weight) in seen:
            continue
        if id(module.weight) == tied_id:
            if not (config.quantize_embeddings and config.quantize_lm_head):
                continue
        elif module is head or name.split(".")[-1] == "lm_head":
            if not config.quantize_lm_head:
                continue
        elif layout == "embedding" and not config.quantize_embeddings:
            continue
        seen.add(id(module.weight))
        target = _Target(name, f"{name}.weight" if name else "weight", module, layout, "quantize")
        block = block_index(name)
        pattern = _matches(name, config.keep)
        if block is not None and block in config.keep_layers:
            target.status, target.reason = "keep", f"keep_layers:{block}"
        elif pattern is not None:
            used_patterns.add(pattern)
            target.status, target.reason = "keep", f"keep:{pattern}"
        elif filter_fn is not None and not filter_fn(module, name):
            target.status, target.reason = "keep", "filter_fn"
        targets.append(target)
    unused = [p for p in config.keep if p not in used_patterns]
    if unused:
        raise ValueError(f"keep={';'.join(unused)} matches no quantizable module; allowed: exact module names or re:<regex> (fullmatch)")
    return targets, seen


def _check_group_sizes(targets: list[_Target], config: QuantConfig) -> None:
    """``group_size`` divides the input dim of every target that is quantized (one-line ``ValueError``)."""
    if config.mechanism == Mechanism.FAKE and config.granularity == "group":
        for target in targets:
            if target.status == "quantize":
                shape = target.module.weight.shape
                check_group_size(config.group_size, shape[0] if target.layout == "conv1d" else shape[1], target.name)


def check_module_tree(model: nn.Module, config: QuantConfig) -> None:
    """The checks that need only ``model``'s module tree and weight shapes (a weightless
    :func:`meta_model` will do): every ``keep`` pattern matches a module and ``group_size``
    divides every quantized layer's real input dim (e.g. ``o_proj``'s heads x head_dim)."""
    _check_group_sizes(_select(model, config, None)[0], config)


def meta_model(hf_config, trust_remote_code: bool = False):
    """The model's module tree on the meta device (no weights, no memory), or ``None`` when the
    architecture cannot be built this way (its checks then run at load)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - a best-effort early check only
        logger.info("qd-hf: the module tree is checked at load (meta model not built: %s)", err)
        return None


def quantization_targets(model: nn.Module, config: QuantConfig) -> list[str]:
    """Names of the modules :func:`quantize_` considers (quantized or kept), in model order:
    the modules whose inputs a calibration pass must observe (a ``filter_fn`` would only turn
    some of them from quantized to kept, so it takes none)."""
    return [target.name for target in _select(model, config, None)[0]]


def largest_input_dim(model: nn.Module, config: QuantConfig) -> int:
    """The largest input dim of the token-wise layers :func:`quantize_` would quantize (0: none)."""
    targets = _select(model, config, None)[0]
    return max((_plan_target(t).in_features for t in targets if t.status == "quantize" and t.layout != "embedding"), default=0)


def _skip_reason(param_name: str) -> str:
    lowered = param_name.lower()
    if lowered.endswith("bias"):
        return "bias"
    if "norm" in lowered or "ln_" in lowered:
        return "norm"
    if "embed" in lowered or "wte" in lowered or "wpe" in lowered:
        return "embedding"
    if "lm_head" in lowered:
        return "lm_head"
    return "other"


def _global_threshold(targets: list[_Target], percent: float) -> float:
    """|w| threshold keeping at least ``percent`` % of all quantized weights."""
    quantized = [t for t in targets if t.status == "quantize"]
    total = sum(t.module.weight.numel() for t in quantized)
    wanted = round(percent / 100.0 * total)
    if wanted == 0:
        return float("inf")
    top = max(float(t.module.weight.detach().abs().max()) for t in quantized)
    counts = torch.zeros(GLOBAL_HISTOGRAM_BINS, dtype=torch.float64)
    for target in quantized:
        counts += torch.histc(target.module.weight.detach().float().abs(), GLOBAL_HISTOGRAM_BINS, 0.0, top).double()
    from_top = counts.flip(0).cumsum(0)
    bins_from_top = int(torch.searchsorted(from_top, torch.tensor(float(wanted), dtype=torch.float64)))
    return top * (GLOBAL_HISTOGRAM_BINS - 1 - bins_from_top) / GLOBAL_HISTOGRAM_BINS


def _bits_of(param: torch.Tensor) -> int:
    return param.element_size() * 8


def _deployed_bits(param: torch.Tensor, config: QuantConfig) -> int:
    """Width charged for a weight left unquantized: ``kept_value_bits`` (a deployment dtype,
    default 16) rather than the load dtype (32 for the float32 default model)."""
    return config.kept_value_bits or _bits_of(param)


def quantize_(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: FilterFn | None = None,
    originals_for_restore: dict[str, torch.Tensor] | None = None,
    act_stats=None,
    calib=None,
) -> dict:
    """Fake-quantize ``model``'s selected weights in place (quantize -> dequantize, layer by
    layer, no model copy) and return the JSON-serialisable report.

    ``filter_fn(module, name) -> bool``: False keeps the module in original precision.
    ``originals_for_restore``: if a dict, receives CPU copies of every modified weight (by parameter
    name) for :func:`restore_`. ``act_stats``: a :class:`qd_models.calibration.ActivationStats`
    over :func:`quantization_targets`, required when ``config.calibration_passes`` has ``stats`` (``method=laaciq``,
    ``keep_by=activation``, a gguf importance matrix; adds ``calibration`` blocks to the report).
    ``calib``: a :class:`qd_models.calibration.CalibrationBatches`, required by methods whose
    calibration is ``inputs`` (GPTQ, AWQ: block by block, see :func:`_layer_inputs`; each block's
    inputs are cached for the walk, :class:`qd_models.calibration.BlockInputs`, and dropped when it
    ends, also on an error).
    Each layer is quantized by ``QUANTIZERS[config.method].layer`` (:mod:`qd_models.methods`),
    after the method's ``plan`` (if any) saw every target once.
    For bitsandbytes methods (already quantized at load) only the report is built.
    """
    if calib is None:
        return _quantize(model, config, filter_fn, originals_for_restore, act_stats, None, None)
    from .calibration import BlockInputs

    with BlockInputs(model, calib, _block_modules(model)) as block_inputs:
        return _quantize(model, config, filter_fn, originals_for_restore, act_stats, calib, block_inputs)


def _quantize(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None, originals_for_restore: dict | None,
              act_stats, calib, block_inputs) -> dict:
    """:func:`quantize_` with the calibration's block inputs (``None`` without ``calib``)."""
    if config.mechanism == Mechanism.BNB:
        return _bnb_report(model, config)
    start = time.perf_counter()
    targets, target_ids = _select(model, config, filter_fn)
    if config.mechanism == Mechanism.FAKE and not any(target.status == "quantize" for target in targets):
        logger.warning("qd-hf: method=%s quantizes 0 parameters: every quantizable module is kept (%s); results equal the baseline",
                       config.method, ", ".join(sorted({t.reason for t in targets})) or "no quantizable module")
    _check_group_sizes(targets, config)
    active = config.mechanism == Mechanism.FAKE and config.bits != 16
    if active and STATS in config.calibration_passes and act_stats is None:
        raise ValueError(f"act_stats is required with method={config.method}, keep_by={config.keep_by}; allowed: qd_models.calibration.collect_activation_stats(...)")
    sequential = active and INPUTS in config.calibration_passes
    if sequential and calib is None:
        raise ValueError(f"calib is required with method={config.method}; allowed: qd_models.calibration.CalibrationBatches.from_texts(...)")
    gram_report = None
    if sequential:
        from .calibration.sufficiency import GramReport, warn_if_few_tokens

        widest = max((_plan_target(t).in_features for t in targets if t.status == "quantize" and t.layout != "embedding"), default=0)
        warn_if_few_tokens(sum(calib.tokens.values()), widest)
        gram_report = GramReport(sum(calib.tokens.values()))
    quantizer = QUANTIZERS[config.method] if active else None
    grams: dict = {}
    plans = {}
    if quantizer is not None and quantizer.plan is not None:
        plans = quantizer.plan(model, [_plan_target(target) for target in targets], config, act_stats)
    threshold = None
    if active and config.keep_top > 0 and config.keep_top_scope == "global":
        threshold = _global_threshold(targets, config.keep_top)
    layers, storage_bits, counts = [], 0, {"quantized": 0, "kept": 0, "nonfinite": 0}
    for target in targets:
        param = target.module.weight
        value_bits = _deployed_bits(param, config)
        weight = target.oriented()
        stats = weight_stats(weight)
        layer = {"name": target.name, "kind": target.layout, "shape": list(param.shape), "numel": param.numel(), **stats}
        counts["nonfinite"] += stats["nonfinite"]
        if not active or target.status == "keep":
            layer.update(status="kept" if target.status == "keep" else "unchanged", reason=target.reason or config.method,
                         rel_mse=0.0, kept_fraction=1.0, bits_per_weight=float(value_bits))
            storage_bits += value_bits * param.numel()
            counts["kept"] += param.numel()
            layers.append(layer)
            continue
        blocks = to_blocks(weight, config.granularity, config.group_size) if config.granularity else None
        inputs = degenerate = None
        if act_stats is not None and STATS in config.calibration_passes:
            inputs, degenerate = normalise_second_moments(act_stats.inputs(target.name, config.calib_langs).to(weight.device))
        if threshold is not None:
            kept = weight.abs() >= threshold
        elif config.keep_top > 0 and config.keep_by == "activation":
            kept = top_fraction_mask(activation_keep_scores(weight, mode_weights(inputs, config.calib_mode)), config.keep_top)
        elif config.keep_top > 0:
            kept = top_fraction_mask(weight.abs(), config.keep_top)
        else:
            kept = None
        valid = None if kept is None else (~kept).float().view_as(blocks)
        layer_inputs = _layer_inputs(model, targets, target, calib, grams, block_inputs) if sequential else LayerInputs(stats=inputs)
        layer_inputs = replace(layer_inputs, plan=plans.get(target.name))
        if gram_report is not None and layer_inputs.gram is not None:
            layer.update(gram_report(layer_inputs.gram))
        quantized, info = quantizer.layer(weight, blocks, valid, config, layer_inputs)
        n_kept = 0
        if kept is not None:
            n_kept = int(kept.sum())
            quantized[kept] = weight[kept]
        if param.dtype != quantized.dtype:  # the value the parameter will hold (same rounding as copy_)
            quantized = quantized.to(param.dtype).float()
        norm = float(weight.square().sum())
        error = float((quantized - weight).square_().sum())
        if "storage_bits" in info:
            bits = info["storage_bits"]
        else:
            bits = quantized_layer_bits(param.numel(), blocks.shape[0], config.bits, config.symmetric, n_kept, value_bits)
            bits += info.get("extra_bits", 0)
        layer["status"] = "quantized"
        if blocks is not None:
            layer["n_blocks"] = blocks.shape[0]
        layer.update(
            rel_mse=error / norm if norm > 0 else float("nan"),
            kept_fraction=n_kept / param.numel(),
            bits_per_weight=bits / param.numel(),
        )
        if "alpha" in info and "sigma" in info:
            alpha_over_sigma = info["alpha"] / info["sigma"]
            layer["alpha_over_sigma"] = {k: float(getattr(alpha_over_sigma, k)()) for k in ("mean", "min", "max")}
        layer.update(info.get("report", {}))
        if "laplace" in info:
            layer["laplace_fraction"] = float(info["laplace"].float().mean())
        if "ratio" in info:
            layer["clip_ratio"] = {k: float(getattr(info["ratio"], k)()) for k in ("mean", "min", "max")}
        if inputs is not None:
            from .calibration import layer_calibration_report

            layer["calibration"] = layer_calibration_report(weight, quantized, inputs, degenerate, act_stats.select_langs(config.calib_langs))
        if originals_for_restore is not None:
            originals_for_restore[target.param_name] = param.detach().to("cpu", copy=True)
        target.write(quantized)
        storage_bits += bits
        counts["quantized"] += param.numel() - n_kept
        counts["kept"] += n_kept
        layers.append(layer)
        del weight, blocks, quantized, valid, kept
    if quantizer is not None and quantizer.finish is not None:
        quantizer.finish(model, plans, originals_for_restore)
    skipped, skipped_bits = [], 0
    for param_name, param in model.named_parameters(remove_duplicate=True):
        if id(param) in target_ids:
            continue
        skipped.append({"name": param_name, "numel": param.numel(), "reason": _skip_reason(param_name)})
        skipped_bits += _deployed_bits(param, config) * param.numel()
    candidates = counts["quantized"] + counts["kept"]
    original_bits = skipped_bits + sum(_bits_of(t.module.weight) * t.module.weight.numel() for t in targets)
    report = {
        "config": config.to_dict(),
        "package_version": __version__,
        "totals": {
            "params_quantized": counts["quantized"],
            "params_kept": counts["kept"],
            "params_skipped": sum(s["numel"] for s in skipped),
            "layers_quantized": sum(layer["status"] == "quantized" for layer in layers),
            "layers_kept": sum(layer["status"] == "kept" for layer in layers),
            "effective_bits_per_weight": storage_bits / candidates if candidates else float("nan"),
            "estimated_size_bytes": (storage_bits + skipped_bits) // 8,
            "original_size_bytes": original_bits // 8,
            "kept_value_bits": config.kept_value_bits,
            "nonfinite_weights": counts["nonfinite"],
        },
        "layers": layers,
        "skipped": skipped,
    }
    if act_stats is not None and STATS in config.calibration_passes:
        from .calibration import calibration_report

        report["calibration"] = calibration_report(act_stats, config, layers)
    elif sequential:
        from .calibration.sufficiency import sufficiency_summary

        report["calibration"] = {**calib.report(), **sufficiency_summary(layers, gram_report.tokens, widest)}
    report["wall_seconds"] = time.perf_counter() - start  # not in totals: totals are equal across identical runs
    return json_safe(report)


def _bnb_report(model: nn.Module, config: QuantConfig) -> dict:
    """Report for a model bitsandbytes quantized at load: 4-bit codes plus one fp32 absmax per
    block (nf4/fp4), or 8-bit codes plus one fp32 scale per output row (int8)."""
    import bitsandbytes as bnb

    layers, storage_bits, quantized_params, seen = [], 0, 0, set()
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            numel = module.in_features * module.out_features
            block = module.weight.quant_state.blocksize if module.weight.quant_state is not None else 64
            bits = numel * 4 + (numel // block) * 32
        elif isinstance(module, bnb.nn.Linear8bitLt):
            numel = module.in_features * module.out_features
            bits = numel * 8 + module.out_features * 32
        else:
            continue
        seen.add(id(module.weight))
        layers.append({"name": name, "kind": type(module).__name__, "shape": [module.out_features, module.in_features],
                       "numel": numel, "status": "quantized", "bits_per_weight": bits / numel})
        storage_bits += bits
        quantized_params += numel
    skipped, skipped_bits = [], 0
    for param_name, param in model.named_parameters(remove_duplicate=True):
        if id(param) in seen:
            continue
        skipped.append({"name": param_name, "numel": param.numel(), "reason": _skip_reason(param_name)})
        skipped_bits += _bits_of(param) * param.numel()
    return json_safe({
        "config": config.to_dict(),
        "package_version": __version__,
        "totals": {
            "params_quantized": quantized_params,
            "params_kept": 0,
            "params_skipped": sum(s["numel"] for s in skipped),
            "layers_quantized": len(layers),
            "layers_kept": 0,
            "effective_bits_per_weight": storage_bits / quantized_params if quantized_params else float("nan"),
            "estimated_size_bytes": (storage_bits + skipped_bits) // 8,
            "original_size_bytes": None,
            "nonfinite_weights": None,
        },
        "layers": layers,
        "skipped": skipped,
    })


def restore_(model: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Copy weights saved by ``quantize_(..., originals_for_restore=originals)`` back into ``model``."""
    for param_name, original in originals.items():
        model.get_parameter(param_name).data.copy_(original)


def check_save_target(save_to: str, pretrained, overwrite: bool = False) -> None:
    """Refuse (one-line ``ValueError``, before any weight loads) a ``save_to`` that is the source
    model folder or a non-empty folder unless ``overwrite``, a folder holding the source model or
    inside it, a file, or an unwritable location."""
    target = os.path.abspath(os.path.expanduser(save_to))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"save_to={save_to} is an existing file; allowed: a new or empty folder")
    source = _source_folder(pretrained)
    if not overwrite:
        if source is not None and os.path.isdir(target) and os.path.samefile(source, target):
            raise ValueError(f"save_to={save_to} is the source model folder; allowed: another folder, or save_overwrite=true to replace it")
        if os.path.isdir(target) and os.listdir(target):
            raise ValueError(f"save_to={save_to} is a non-empty folder; allowed: a new or empty folder, or save_overwrite=true to replace it")
    check_folder_target(save_to, _protected_inputs(save_to, source), what=f"save_to={save_to}")
    parent = os.path.dirname(str(real_folder(target)))
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise ValueError(f"save_to={save_to}: {parent} is a file; allowed: a folder path")
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"save_to={save_to} is not writable ({parent} does not allow writing); allowed: a folder you can write to")


def _source_folder(pretrained) -> str | None:
    """The local model folder ``pretrained`` names (``None`` for a hub id or a model object)."""
    return os.path.abspath(os.path.expanduser(pretrained)) if isinstance(pretrained, str) and os.path.isdir(pretrained) else None


def _protected_inputs(save_to: str | os.PathLike, source: str | None) -> list[str]:
    """The source model folder, unless ``save_to`` is that folder itself (replaced only with
    ``save_overwrite=true``): a ``save_to`` holding it or inside it is never allowed."""
    return [] if source is None or real_folder(source) == real_folder(save_to) else [source]


def save_quantized(model: nn.Module, tokenizer, directory: str | os.PathLike, report: dict, pretrained=None) -> str:
    """Write ``model`` (dequantized weights, HF format, loadable by ``--model hf``), its
    tokenizer and ``quant_report.json`` to ``directory``; return the report path.

    The folder is replaced as a whole (:func:`qd_tasks.folder_swap.replace_folder`): written as a
    hidden sibling, swapped in, the old folder restored on any failure (no weights-less
    ``config.json``, no stale files of an earlier model mixed in). A link is followed to its folder;
    a ``directory`` holding the source model folder ``pretrained`` or inside it is refused.
    """
    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_report(report, folder / REPORT_FILENAME)

    what = f"save_to={os.fspath(directory)}"
    replace_folder(directory, write, _protected_inputs(directory, _source_folder(pretrained)), what=what)
    return os.path.join(real_folder(directory), REPORT_FILENAME)


def write_report(report: dict, path: str | os.PathLike) -> None:
    """Strict JSON (non-finite numbers already mapped to null)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, allow_nan=False)


__all__ = [
    "bnb_from_pretrained_kwargs",
    "block_index",
    "block_module_name",
    "check_module_tree",
    "check_save_target",
    "largest_input_dim",
    "meta_model",
    "quantization_targets",
    "quantize_",
    "restore_",
    "save_quantized",
    "summarize_report",
    "validate_for_model",
    "write_report",
]
