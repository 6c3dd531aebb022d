"""``qd-sweep`` (``python -m qd_models.sweep``): many quantization configs, one process, one loaded model.

The model is loaded once as ``qd-hf`` with ``method=none`` (every ``hf`` model argument passes
through; no ``pretrained`` -> the embedded Gemma default). For each config: the original
weights are restored, the config is applied in place with :func:`qd_models.engine.quantize_`
and lm-eval runs on the same ``LM`` object with one ``TaskManager``. bitsandbytes methods
(nf4/fp4/int8) quantize at load time, so each of them gets a fresh load (same process, after
all fake-quant configs). ``method=none`` (the baseline) is evaluated first unless
``--no_baseline``.

Output: one folder per config under ``--output_path``, ``<label>-<hash>/`` holding normal
lm-eval output (``<model>/results_*.json`` + ``samples_*.jsonl``, readable by ``qd-analyze``)
and ``sweep_complete.json``. Each folder is written under ``.tmp-<label>-<hash>-<token>`` and
renamed when complete (:func:`qd_tasks.folder_swap.replace_folder`), so a crash or Ctrl-C leaves
no half-written config; rerunning the same command skips completed configs. The hash covers
everything that changes a result: the model args (scoring args included), the model's weights
(:func:`qd_models.model_identity.model_fingerprint`: new weights in the same folder rerun every
config), the config, the eval settings (tasks, limit, few-shot,
``--log_samples``, ``--include_path``), the lm-eval version, a fingerprint of this package's
code and bundled data (:func:`code_fingerprint`: a code fix or a new corpus reruns every config)
and the content of a ``calib_data`` file.

``--fidelity``: the baseline stores its top-k log-probs per scored token in its folder and every
other config writes its per-token fidelity (KL, same top token, Δp; :mod:`qd_models.fidelity`)
into its own folder, read by ``qd-analyze``.

``--shard K/N`` (:mod:`qd_models.runners.shard`): this process runs its share of the grid into the
shared ``--output_path``; each config folder is locked while written, so N processes (a Slurm job
array, several GPUs, several machines on one filesystem) fill one folder. Shard 1 runs the
baseline first; with ``--fidelity`` the other shards wait for its folder (``--baseline_timeout``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qd_models.config import Mechanism, parse_qd_args
from qd_models.run_record import LM_EVAL_MODEL, parse_model_args, slug
from qd_models.runners.grid import SweepItem, build_items, expand_draws, expand_grid
from qd_models.runners.lm_eval_glue import save_as_standalone, task_manager
from qd_models.runners.shard import Shard, is_baseline
from qd_models.runners.store import COMPLETE_MARKER, code_fingerprint, config_lock, read_results, remove_stale_tmp, tree_digest
from qd_tasks.cli_errors import UserInputError
from qd_tasks.folder_swap import replace_folder

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class EvalSettings:
    """lm-eval settings shared by every config of a sweep."""

    tasks: tuple[str, ...]
    output_path: str
    model_args: str = ""
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: int | str = 1
    max_batch_size: int | None = None
    device: str | None = None
    log_samples: bool = False
    include_path: str | None = None
    fidelity: bool = False
    fidelity_topk: int = 32
    baseline_timeout: float = 3600.0

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("tasks=[] is not allowed; allowed: one or more lm-eval task or group names")
        base, _ = parse_qd_args(parse_model_args(self.model_args))
        if base.mechanism != Mechanism.NONE:
            raise ValueError(f"model_args method={base.method} is not allowed in a sweep; allowed: hf args only (methods come from the grid)")
        if self.fidelity_topk < 1:
            raise ValueError(f"fidelity_topk={self.fidelity_topk} is not allowed; allowed: an integer >= 1")
        if not self.baseline_timeout >= 0:
            raise ValueError(f"baseline_timeout={self.baseline_timeout} is not allowed; allowed: seconds >= 0")


@dataclass
class SweepOutcome:
    item: SweepItem
    folder: Path
    status: str  # done | skipped
    seconds: float = 0.0
    results: dict | None = field(default=None, repr=False)


class Sweep:
    """Runs :class:`SweepItem` s on one loaded ``qd-hf`` model (see the module docstring)."""

    def __init__(self, settings: EvalSettings):
        self.settings = settings
        self.output = Path(settings.output_path)
        self._lm = None
        self._originals: dict = {}
        self._task_manager = None
        self._baseline_item: SweepItem | None = None

    # -- paths -------------------------------------------------------------------------
    def identity(self, item: SweepItem) -> dict:
        """Everything that changes ``item``'s results (module doc); written into the marker."""
        from importlib.metadata import version

        s = self.settings
        calib = item.config.calib_data
        return {
            "model_args": item.model_args(s.model_args),
            "model_weights": self.model_fingerprint(),
            "tasks": list(s.tasks),
            "limit": s.limit,
            "num_fewshot": s.num_fewshot,
            "log_samples": s.log_samples,
            "include_path": tree_digest(Path(s.include_path)) if s.include_path else None,
            "scan": item.scan,
            "lm_eval_version": version("lm_eval"),
            "code": code_fingerprint(),
            "calib_data": tree_digest(Path(calib)) if calib else None,
            # other folders than a sweep without fidelity (whose baseline has no top-k files)
            **({"fidelity_topk": s.fidelity_topk} if s.fidelity else {}),
        }

    def model_fingerprint(self) -> str:
        """The weights' fingerprint of the sweep's model (file hashes are cached on disk)."""
        from qd_models.model_identity import model_fingerprint

        kwargs = parse_model_args(self.settings.model_args)
        return model_fingerprint(self.pretrained(), kwargs.get("revision"))

    def folder_name(self, item: SweepItem) -> str:
        """``<label>-<10 hex>`` (the label as in reports, :func:`qd_models.run_record.config_label`;
        a character not allowed in a file name as ``_``); the hash covers :meth:`identity`."""
        digest = hashlib.sha1(json.dumps(self.identity(item), sort_keys=True).encode()).hexdigest()[:10]
        return f"{slug(item.label)}-{digest}"

    def is_complete(self, item: SweepItem) -> bool:
        return (self.output / self.folder_name(item) / COMPLETE_MARKER).is_file()

    # -- model -------------------------------------------------------------------------
    def hf_config(self):
        """The model's ``PretrainedConfig`` (no weights loaded)."""
        from qd_models.config import load_hf_config

        return load_hf_config(self.pretrained(), parse_model_args(self.settings.model_args))

    def pretrained(self) -> str:
        """The ``pretrained`` model argument (the embedded default model's folder when none)."""
        pretrained = parse_model_args(self.settings.model_args).get("pretrained")
        if pretrained is None:
            from qd_models.default_model import default_model_path

            pretrained = str(default_model_path())
        return str(pretrained)

    def validate(self, items: list[SweepItem]) -> None:
        """Model-dependent checks of every item (e.g. keep_layers range), before any load."""
        from qd_models.config import validate_for_model

        self.task_manager()  # unknown tasks fail here, before any weight loads
        if self.settings.fidelity and self._baseline_item is not None:  # a completed baseline's files are read later
            from qd_models.fidelity import BASE_PREFIX, FidelityFileError, read_meta

            for file in sorted((self.output / self.folder_name(self._baseline_item)).glob(f"{BASE_PREFIX}*.npz")):
                try:
                    read_meta(file)
                except FidelityFileError as err:
                    raise ValueError(f"{err}; allowed: the complete files of the baseline (remove its folder to re-run it)") from None
        hf_config = self.hf_config()
        skeleton, built = None, False
        for item in items:
            if item.config.mechanism == Mechanism.FAKE:
                validate_for_model(item.config, hf_config)
                if item.config.keep or item.config.granularity == "group":
                    from qd_models.model_layout import meta_model
                    from qd_models.targets import check_module_tree

                    if not built:
                        trust = parse_model_args(self.settings.model_args).get("trust_remote_code", False)
                        skeleton, built = meta_model(hf_config, trust), True
                    if skeleton is not None:  # keep patterns, group_size against every quantized layer's input dim
                        check_module_tree(skeleton, item.config)
                if item.config.calibration_passes:
                    from qd_models.calibration import load_calibration_texts

                    load_calibration_texts(item.config)  # raises on missing/bad calibration data

    def _model_kwargs(self) -> dict:
        s = self.settings
        extra = {"batch_size": s.batch_size, "max_batch_size": s.max_batch_size, "device": s.device}
        return {**parse_model_args(s.model_args), **{k: v for k, v in extra.items() if v is not None}}

    @property
    def lm(self):
        """The shared ``qd-hf`` LM (``method=none``), loaded on first use."""
        if self._lm is None:
            from qd_models.qd_hf import QDHFLM

            self._lm = QDHFLM(**self._model_kwargs())
        return self._lm

    def release_model(self) -> None:
        self._lm, self._originals = None, {}

    def apply(self, item: SweepItem):
        """Restore the shared model's original weights, then apply ``item`` in place; return
        the LM (for bitsandbytes items: a freshly loaded one)."""
        from qd_models.engine import restore_

        if item.config.mechanism == Mechanism.BNB:
            from qd_models.qd_hf import QDHFLM

            self.release_model()  # bnb items come last: free the shared model's memory
            return QDHFLM(**self._model_kwargs(), **dict(item.qd_args))
        lm = self.lm
        restore_(lm.model, self._originals)
        saved: dict = {}
        lm.apply_quantization(item.config, originals_for_restore=saved)  # calibration sees the restored weights
        for name, tensor in saved.items():  # copies taken after a full restore: originals
            self._originals.setdefault(name, tensor)
        return lm

    def task_manager(self):
        """One ``TaskManager`` for the sweep (:func:`qd_models.runners.lm_eval_glue.task_manager`)."""
        if self._task_manager is None:
            self._task_manager = task_manager(self.settings.tasks, self.settings.include_path)
        return self._task_manager

    # -- one config --------------------------------------------------------------------
    def evaluate(self, item: SweepItem) -> SweepOutcome:
        """Run ``item`` (or skip it when complete) and write its folder atomically."""
        final = self.output / self.folder_name(item)
        if (final / COMPLETE_MARKER).is_file():
            return SweepOutcome(item, final, "skipped", results=read_results(final))
        if final.exists():  # not made by this module (it renames complete folders only)
            aside = final.with_name(f"{final.name}.incomplete-{int(time.time())}")
            logger.warning("qd-sweep: %s has no %s; moved to %s and re-run", final, COMPLETE_MARKER, aside)
            final.rename(aside)
        start = time.perf_counter()

        def write(tmp: Path) -> tuple[dict, float]:
            results = self._evaluate_into(item, tmp)
            seconds = time.perf_counter() - start
            marker = {
                "label": item.label,
                "model": LM_EVAL_MODEL,
                **self.identity(item),
                "seconds": seconds,
                "results_files": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("results_*.json")),
            }
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            return results, seconds

        results, seconds = replace_folder(final, write)
        return SweepOutcome(item, final, "done", seconds, results)

    def _evaluate_into(self, item: SweepItem, folder: Path) -> dict:
        from lm_eval import simple_evaluate
        from lm_eval.loggers import EvaluationTracker

        s = self.settings
        lm = self.apply(item)
        tracker = EvaluationTracker(output_path=str(folder))
        model_args = item.model_args(s.model_args)
        if s.fidelity:
            lm.fidelity = self._fidelity_recorder(item, lm, folder)
        try:
            results = simple_evaluate(
                model=lm,
                model_args=model_args,
                tasks=list(s.tasks),
                num_fewshot=s.num_fewshot,
                batch_size=s.batch_size,
                max_batch_size=s.max_batch_size,
                device=s.device,
                limit=s.limit,
                log_samples=s.log_samples,
                evaluation_tracker=tracker,
                task_manager=self.task_manager(),
            )
        finally:
            lm.fidelity = None
        if results is None:
            raise UserInputError("lm-eval returned no results (non-zero rank?); allowed: qd-sweep in one process per shard (--shard i/n; data parallel: accelerate launch -m lm_eval --model qd-hf)")
        save_as_standalone(tracker, results, lm, s.model_args, item.scan, s.log_samples)
        if not any(folder.rglob("results_*.json")):  # lm-eval logs save errors instead of raising
            raise RuntimeError(f"lm-eval wrote no results file under {folder}")
        return results

    def _fidelity_recorder(self, item: SweepItem, lm, folder: Path):
        """The baseline stores its top-k per position in its own folder; every other config is
        compared with the baseline's completed folder and writes its results into ``folder``."""
        if item is self._baseline_item:
            return lm.fidelity_recorder("store", folder, self.settings.fidelity_topk, None, item.config)
        self.wait_for_baseline()
        baseline_dir = self.output / self.folder_name(self._baseline_item)
        return lm.fidelity_recorder("compare", folder, self.settings.fidelity_topk, baseline_dir, item.config)

    def wait_for_baseline(self, poll_seconds: float = 2.0) -> None:
        """Return once the baseline's folder is complete (another shard may be writing it);
        :class:`UserInputError` naming it after ``baseline_timeout`` seconds."""
        deadline = time.monotonic() + self.settings.baseline_timeout
        name = self.folder_name(self._baseline_item)
        if not self.is_complete(self._baseline_item):
            logger.info("qd-sweep: waiting for the baseline %s (shard 1 writes it)", name)
        while not self.is_complete(self._baseline_item):
            if time.monotonic() >= deadline:
                raise UserInputError(f"the fidelity baseline {name} is not complete in {self.output} after {self.settings.baseline_timeout:g} s; "
                                   "allowed: run shard 1 (it writes the baseline) or a longer --baseline_timeout")
            time.sleep(poll_seconds)

    # -- many configs ------------------------------------------------------------------
    def run(self, items: list[SweepItem], shard: Shard | None = None) -> list[SweepOutcome]:
        """Validate this shard's items (all without ``shard``) against the model's config (before
        loading weights), then evaluate them in order, each under its config's lock (a config
        another process is writing fails fast)."""
        from tqdm import tqdm

        if self.settings.fidelity:
            self._baseline_item = next((item for item in items if is_baseline(item)), None)
            if self._baseline_item is None:
                raise ValueError("--fidelity needs the baseline config; allowed: --fidelity without --no_baseline")
        mine = shard.select(items) if shard else items
        self.validate(mine)
        self.output.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.output)
        todo = sum(not self.is_complete(item) for item in mine)
        logger.info("qd-sweep%s: %d configs, %d to run, %d already complete", f" shard {shard}" if shard else "", len(mine), todo, len(mine) - todo)
        outcomes = []
        bar = tqdm(mine, desc="qd-sweep", unit="config")
        for item in bar:
            bar.set_postfix_str(item.label)
            with config_lock(self.output, self.folder_name(item)):
                outcomes.append(self.evaluate(item))
        return outcomes


# ----------------------------------------------------------------------------- CLI


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qd-sweep",
        description="Evaluate many quantization configs on one loaded model (see module docstring).",
    )
    parser.add_argument("--grid", help="YAML file: `grid:` (mapping or list of mappings of qd arg -> values) and/or `configs:` (list of qd-arg mappings)")
    parser.add_argument("--methods", type=_csv, help="simple grid: comma-separated methods, e.g. rtn,aciq,nf4")
    parser.add_argument("--bits", type=_csv, help="simple grid: comma-separated bit widths, e.g. 4,3")
    parser.add_argument("--granularity", type=_csv, help="simple grid: tensor,channel,group")
    parser.add_argument("--group_size", type=_csv, help="simple grid: group sizes (with granularity=group)")
    parser.add_argument("--keep_top", type=_csv, help="simple grid: kept %% of largest weights, e.g. 0,1,5")
    parser.add_argument("--calib_draws", type=int, help="calibration draws per calibrated config (calib_seed 0..N-1; also `calib_draws: N` in a grid entry)")
    parser.add_argument("--no_baseline", action="store_true", help="do not add the method=none baseline config")
    parser.add_argument("--tasks", type=_csv, required=True)
    parser.add_argument("--output_path", required=True)
    parser.add_argument("--model_args", default="", help="hf args shared by all configs (no `method`), e.g. pretrained=PATH,dtype=float32")
    parser.add_argument("--limit", type=float)
    parser.add_argument("--num_fewshot", type=int)
    parser.add_argument("--batch_size", default="1")
    parser.add_argument("--max_batch_size", type=int)
    parser.add_argument("--device")
    parser.add_argument("--log_samples", action="store_true")
    parser.add_argument("--include_path")
    parser.add_argument("--fidelity", action="store_true",
                        help="per-token fidelity to the baseline (KL, same top token, Δp): the baseline stores its top-k log-probs")
    parser.add_argument("--fidelity_topk", type=int, default=32, help="k of the stored baseline top-k (default 32)")
    parser.add_argument("--shard", metavar="K/N", help="run the K-th of N deterministic shares of the grid into the shared --output_path "
                        "(shard 1 runs the baseline; e.g. a Slurm array: --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--baseline_timeout", type=float, default=3600.0,
                        help="with --fidelity: seconds a shard waits for the baseline folder written by shard 1 (default 3600)")
    parser.add_argument("--dry_run", action="store_true", help="print the configs and their folders, run nothing")
    parser.add_argument("--analyze", metavar="DIR", help="run qd-analyze on --output_path afterwards, writing to DIR")
    return parser


def combos_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Grid combos from ``--grid`` and the simple-grid flags (validated later by make_item)."""
    combos: list[dict[str, Any]] = []
    if args.grid:
        try:
            spec = yaml_load(args.grid)
        except OSError as err:
            raise ValueError(f"grid={args.grid!r} could not be read ({err}); allowed: a readable YAML file") from None
        if not isinstance(spec, dict) or not set(spec) <= {"grid", "configs"} or not spec:
            raise ValueError(f"grid={args.grid!r} is not allowed; allowed: a YAML mapping with keys grid and/or configs")
        if "grid" in spec:
            combos += expand_grid(spec["grid"])
        for config in spec.get("configs") or []:
            if not isinstance(config, dict):
                raise ValueError(f"grid configs entry {config!r} is not allowed; allowed: a mapping of qd arg -> value")
            combos.append(config)
    flags = {name: getattr(args, name) for name in ("bits", "granularity", "group_size", "keep_top") if getattr(args, name)}
    if args.methods:
        combos += expand_grid({"method": args.methods, **flags})
    elif flags:
        raise ValueError(f"{', '.join(flags)} given without --methods; allowed: --methods with the simple-grid flags")
    return expand_draws(combos, getattr(args, "calib_draws", None))


def yaml_load(path: str):
    import yaml

    with open(path, encoding="utf-8") as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ValueError(f"grid={path!r} is not valid YAML ({str(err).splitlines()[0]}); allowed: a YAML mapping") from None


def _batch_size(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def main(argv: list[str] | None = None) -> int:
    """``qd-sweep``: user errors as one line on stderr, exit 2 (``--debug``: traceback)."""
    from qd_tasks.cli_errors import run_cli

    return run_cli("qd-sweep", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fidelity_problem = ("--fidelity with --no_baseline is not allowed; allowed: --fidelity with the baseline config" if args.fidelity and args.no_baseline
                        else f"--fidelity_topk={args.fidelity_topk} is not allowed; allowed: an integer >= 1" if args.fidelity_topk < 1 else None)
    if fidelity_problem:
        print(f"qd-sweep: error: {fidelity_problem}", file=sys.stderr)
        return 2
    shard = Shard.parse(args.shard) if args.shard is not None else None
    if shard and args.analyze:
        raise ValueError("--analyze with --shard is not allowed; allowed: qd-analyze on --output_path once every shard has finished")
    items = build_items(combos_from_args(args), baseline=not args.no_baseline)
    settings = EvalSettings(
        tasks=tuple(args.tasks), output_path=args.output_path, model_args=args.model_args, limit=args.limit,
        num_fewshot=args.num_fewshot, batch_size=_batch_size(args.batch_size), max_batch_size=args.max_batch_size,
        device=args.device, log_samples=args.log_samples, include_path=args.include_path,
        fidelity=args.fidelity, fidelity_topk=args.fidelity_topk, baseline_timeout=args.baseline_timeout,
    )
    sweep = Sweep(settings)
    if args.dry_run:
        for item in shard.select(items) if shard else items:
            state = "complete" if sweep.is_complete(item) else "to run"
            print(f"{sweep.folder_name(item)}\t{item.model_args(settings.model_args)}\t{state}")
        return 0
    outcomes = sweep.run(items, shard)
    for outcome in outcomes:
        print(f"{outcome.status:8s} {outcome.seconds:8.1f}s  {outcome.folder}")
    if args.analyze:  # qd-analyze in its own process: qd_models never imports analysis
        sys.stdout.flush()
        return subprocess.run([sys.executable, "-m", "analysis", args.output_path, "--out", args.analyze], check=False).returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
