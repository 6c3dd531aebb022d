"""A sweep's configs: grid expansion, validation into :class:`SweepItem` s, and their labels
(:func:`qd_models.run_record.config_label`, the labels of ``qd-analyze``'s reports)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qd_models.config import METHODS, QD_ARGS, Mechanism, QuantConfig, calibrated_methods, parse_qd_args
from qd_models.run_record import SCAN, config_label, format_arg

FAKE_ONLY_ARGS = tuple(name for name in QD_ARGS if name not in ("method", "bits", "save_to"))
"""Grid keys dropped for methods that are not fake-quant (they would be rejected)."""


@dataclass(frozen=True)
class SweepItem:
    """One config of a sweep: the qd args as given (``qd_args``, canonical order), the
    validated :class:`QuantConfig`, a short label and an optional scan label (recorded as
    ``quant_config["scan"]`` so ``qd-analyze`` can build a block × language heatmap)."""

    qd_args: tuple[tuple[str, Any], ...]
    config: QuantConfig
    label: str
    scan: str | None = None

    @property
    def qd_arg_string(self) -> str:
        """``method=rtn,bits=4`` (lists joined with ``;``), as ``--model_args`` accepts it."""
        return ",".join(f"{name}={format_arg(value)}" for name, value in self.qd_args)

    def model_args(self, base: str) -> str:
        """The equivalent standalone ``--model qd-hf --model_args`` string."""
        return ",".join(part for part in (base.strip(","), self.qd_arg_string) if part)


def make_item(qd_args: dict[str, Any], scan: str | None = None) -> SweepItem:
    """Validate one config's qd args (``ValueError`` naming the bad key/value) into an item."""
    unknown = sorted(set(qd_args) - set(QD_ARGS))
    if unknown:
        raise ValueError(f"grid key(s) {unknown} are not quantization args; allowed: {', '.join(QD_ARGS)}")
    if "save_to" in qd_args or "save_overwrite" in qd_args:
        raise ValueError("save_to is not allowed in a sweep; allowed: the qd args other than save_to, save_overwrite")
    config, _ = parse_qd_args(dict(qd_args))
    ordered = tuple((name, qd_args[name]) for name in QD_ARGS if name in qd_args and qd_args[name] is not None)
    return SweepItem(ordered, config, config_label(recorded_config(config, scan)), scan)


def recorded_config(config: QuantConfig, scan: str | None = None) -> dict:
    """The ``quant_config`` a run of ``config`` records (a scan adds its ``scan`` field)."""
    return {**config.to_dict(), **({SCAN: scan} if scan is not None else {})}


def expand_grid(grid: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``{key: value or [values]}`` (a list of such dicts: their union).

    For methods that are not fake-quant (``none``, ``nf4``, ``fp4``, ``int8``) the fake-only
    keys (granularity, clip, keep_top, ...) and ``bits`` are dropped, and duplicates removed,
    so ``method: [rtn, nf4], bits: [4, 3]`` gives rtn/4, rtn/3 and one nf4.
    """
    if isinstance(grid, list):
        return _dedupe(itertools.chain.from_iterable(expand_grid(part) for part in grid))
    if not isinstance(grid, dict):
        raise ValueError(f"grid={grid!r} is not allowed; allowed: a mapping of qd arg -> value or list of values")
    keys = list(grid)
    axes = [value if isinstance(value, list) else [value] for value in grid.values()]
    combos = []
    for values in itertools.product(*axes):
        combo = dict(zip(keys, values))
        method = str(combo.get("method", "none")).lower()
        if method in METHODS and METHODS[method].mechanism != Mechanism.FAKE:
            combo = {k: v for k, v in combo.items() if k not in FAKE_ONLY_ARGS and k != "bits"}
        combos.append(combo)
    return _dedupe(combos)


CALIB_DRAWS = "calib_draws"
"""Grid key (and ``qd-sweep --calib_draws``): expand a calibrated config into N calibration draws,
``calib_seed`` = 0..N-1 (replicates of one config: one label, :data:`qd_models.run_record.DRAW`)."""


def expand_draws(combos: Iterable[dict[str, Any]], draws: int | None = None) -> list[dict[str, Any]]:
    """Each combo with ``calib_draws: N`` (its own key, else ``draws`` from ``--calib_draws``) as N
    combos with ``calib_seed`` 0..N-1. A combo's own ``calib_draws`` on a config that reads no
    calibration texts, or with a ``calib_seed`` of its own, is refused with one line; ``draws`` skips
    such configs (the baseline, RTN, NF4 ...) but is refused when no config is calibrated."""
    if draws is not None:
        _check_draws(draws, "--calib_draws")
    out, calibrated = [], 0
    always, optional = calibrated_methods()
    for combo in combos:
        combo = dict(combo)
        own = combo.pop(CALIB_DRAWS, None)
        count = _check_draws(own, CALIB_DRAWS) if own is not None else draws
        if count is None:
            out.append(combo)
            continue
        config, _ = parse_qd_args(dict(combo))
        if not config.calibration_passes or combo.get("calib_seed") is not None:
            if own is None:
                out.append(combo)
                continue
            why = "a calib_seed of its own" if combo.get("calib_seed") is not None else "no calibration texts"
            raise ValueError(f"calib_draws={own} is not allowed with {config_label(config.to_dict())} ({why}); allowed: "
                             f"a config of method={always}, keep_by=activation or {optional} with calib_* arguments, without calib_seed")
        calibrated += 1
        out += [{**combo, "calib_seed": seed} for seed in range(count)]
    if draws is not None and not calibrated:
        raise ValueError(f"--calib_draws={draws} is not allowed here: no config of the sweep reads calibration texts; "
                         f"allowed: a sweep with a {always} config (or keep_by=activation, {optional} with calib_* arguments)")
    return out


def _check_draws(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: an integer >= 1 (calibration draws, calib_seed 0..N-1)")
    return value


def _dedupe(combos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for combo in combos:
        key = json.dumps(combo, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(combo)
    return out


def build_items(combos: Iterable[dict[str, Any]], baseline: bool = True) -> list[SweepItem]:
    """Validated, deduplicated items (by resolved config + scan label); the baseline first,
    then fake-quant configs, then bitsandbytes configs (each needs its own load)."""
    items = [make_item(combo) for combo in combos]
    if baseline:
        items.insert(0, make_item({"method": "none"}))
    unique: dict[str, SweepItem] = {}
    for item in items:
        unique.setdefault(json.dumps([item.config.to_dict(), item.scan], sort_keys=True), item)
    order = {Mechanism.NONE: 0, Mechanism.FAKE: 1, Mechanism.BNB: 2}
    return sorted(unique.values(), key=lambda item: order[item.config.mechanism])
