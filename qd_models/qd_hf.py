"""``qd-hf``: lm-eval's ``HFLM`` with a post-training weight quantization applied once.

Every ``hf`` model argument is accepted; the quantization arguments (``method``, ``bits``, ...,
see :mod:`qd_models.config`) are split off and validated *before* any weight is loaded.
Then, as in lm-eval's ``hf_steered``: ``super().__init__()`` loads the model, and the model is
transformed once, in place. Without ``pretrained``, the embedded Gemma-3-270M demo model is used.

Scoring (what ``hf`` does not guarantee; recorded as ``quant_disparity.scoring``):

* a rolling (perplexity) document is scored as exactly one prefix token (BOS, else EOS, or
  ``prefix_token_id``) then the text's own tokens, each scored once: lm-eval 0.4.13 prepends the
  prefix *and* lets a BOS-adding tokenizer (Gemma, Llama) add another, scoring ``<bos>`` after
  ``<bos>`` (lm-eval issue #3333). Other request types keep the tokenizer's default.
* log-softmax and the sums run in float32 (``softmax_dtype=float32`` unless given), whatever
  the model dtype: HFLM sums bf16 log-probs in bf16, which erases small degradations.

Fidelity to a baseline (:mod:`qd_models.fidelity`): ``fidelity_out=DIR`` with ``method=none``
stores the baseline's top-``fidelity_topk`` (default 32) log-probs per scored token in DIR;
``fidelity_baseline=BASE_DIR,fidelity_out=DIR`` compares this run with them (per-token KL,
same top token, Δp) and writes the per-position results to DIR. Results record the files under
``quant_disparity.fidelity``.

Data-parallel (``accelerate launch`` on GPUs, ``ACCELERATE_USE_CPU=true torchrun`` on CPUs; one
process per device, :mod:`qd_models.data_parallel`): every rank quantizes its own copy, the ranks'
weight digests are compared before scoring (``quant_disparity.ranks``), and rank 0 writes the
fidelity files of every rank's documents.

With ``method=none`` the results are identical to
``--model hf --model_args pretrained=...,add_bos_token=False,softmax_dtype=float32``
on perplexity tasks.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from qd_models import __version__
from qd_models import run_record as record
from qd_models.config import INPUTS, STATS, Mechanism, QuantConfig, check_output_folder, parse_qd_args
from qd_models.data_parallel import all_gather_objects, check_rank_agreement, launched_ranks, weight_digest
from qd_models.default_model import DEFAULT_MODEL_NOTE, default_model_path, is_default_model

logger = logging.getLogger(__name__)

SCORING_ARGS = ("dtype", "add_bos_token", "max_length", "revision", "prefix_token_id", "softmax_dtype", "trust_remote_code")
"""``hf`` model arguments that change a score (recorded with every run; analysis pairs only equal ones)."""


def check_pretrained_path(pretrained) -> None:
    """A ``pretrained`` that is written as a path (absolute, ``./``, ``~`` or with more than one
    ``/``; hub ids are ``name`` or ``org/name``) must exist: one-line ``ValueError`` otherwise."""
    if not isinstance(pretrained, str) or os.path.exists(os.path.expanduser(pretrained)):
        return
    if pretrained.startswith(("/", "./", "../", "~")) or pretrained.count("/") > 1:
        raise ValueError(f"pretrained={pretrained} does not exist; allowed: a local model folder or a Hugging Face hub id (org/name)")


@register_model(record.LM_EVAL_MODEL)
class QDHFLM(HFLM):
    sort_rolling_by_length: bool = True
    """Score rolling documents longest first, so that each batch holds documents of similar
    length: HFLM batches them in request order and right-pads every row to the batch's longest,
    computing the model and the full-vocabulary log-softmax on the padding too. A document's
    score does not depend on its batch up to float32 round-off (so ``hf``'s equal scores hold to
    that precision); ``False``: lm-eval's order (``scripts/bench_throughput.py`` times both)."""

    def __init__(self, pretrained=None, device: str = "cuda:0", **kwargs) -> None:
        """``device`` defaults to the lm_eval CLI's "cuda:0", which HFLM resolves to cuda when
        available and cpu otherwise (HFLM's own default "cuda" fails on CPU-only torch), so
        programmatic use (sweeps, notebooks) behaves like the CLI."""
        from qd_models.fidelity import FIDELITY_ARGS, parse_fidelity_args

        fidelity_args = {name: kwargs.pop(name) for name in FIDELITY_ARGS if name in kwargs}
        config, hf_kwargs = parse_qd_args(kwargs)  # raises ValueError before loading
        fidelity = parse_fidelity_args(fidelity_args, config.mechanism == Mechanism.NONE)
        if fidelity is not None:
            check_output_folder("fidelity_out", fidelity_args.get("fidelity_out"))
        self.fidelity = None
        hf_kwargs.setdefault("softmax_dtype", "float32")
        self._rolling = False
        if pretrained is None:
            pretrained = str(default_model_path())
        check_pretrained_path(pretrained)
        if config.save_to is not None:
            from qd_models.saving import check_save_target

            check_output_folder("save_to", config.save_to)
            check_save_target(config.save_to, pretrained, config.save_overwrite)
        self.model_note = DEFAULT_MODEL_NOTE if (
            isinstance(pretrained, str) and is_default_model(pretrained)
        ) else None
        self._load_overrides: dict = {}
        if config.mechanism == Mechanism.BNB:
            from qd_models.engine import bnb_from_pretrained_kwargs

            self._load_overrides = bnb_from_pretrained_kwargs(config)
        elif config.mechanism == Mechanism.FAKE and isinstance(pretrained, str):
            from qd_models.config import load_hf_config, validate_for_model

            hf_config = load_hf_config(pretrained, hf_kwargs)
            validate_for_model(config, hf_config)
            if config.keep or config.granularity == "group":
                from qd_models.model_layout import meta_model
                from qd_models.targets import check_module_tree

                skeleton = meta_model(hf_config, bool(hf_kwargs.get("trust_remote_code", False)))
                if skeleton is not None:  # keep patterns, group_size against every quantized layer's input dim
                    check_module_tree(skeleton, config)
        calib_texts = None
        if config.calibration_passes:
            from qd_models.calibration import load_calibration_texts

            calib_texts = load_calibration_texts(config)  # checked before loading weights
        if INPUTS in config.calibration_passes:
            from qd_models.calibration import calibration_memory_budget

            calibration_memory_budget()  # $QD_CALIB_MEMORY_GB checked before loading weights
        from qd_models.model_identity import model_fingerprint

        self.model_fingerprint = model_fingerprint(pretrained, hf_kwargs.get("revision"))  # the weights as loaded (before quantizing)
        super().__init__(pretrained=pretrained, device=device, **hf_kwargs)
        ranks = launched_ranks(getattr(self, "accelerator", None))
        if ranks is not None:  # data-parallel also on CPUs, ranks numbered across machines
            self._rank, self._world_size = ranks
        self.scoring = {
            **{name: _plain(hf_kwargs.get(name)) for name in SCORING_ARGS},
            "softmax_dtype": str(self.softmax_dtype).removeprefix("torch."),
            "rolling": record.ROLLING_PREFIX_TEXT,
            "prefix_token_id": self.prefix_token_id,
        }
        if self.model_note:
            logger.warning("qd-hf: %s", self.model_note)
        if fidelity is not None:  # a mismatched baseline is refused before quantizing
            self.fidelity = self.fidelity_recorder(fidelity.mode, fidelity.out, fidelity.topk, fidelity.baseline, config)
        self.apply_quantization(config, calib_texts)
        self.rank_record = None
        if self.world_size > 1:
            self.rank_record = check_rank_agreement(all_gather_objects(weight_digest(self.model), self.world_size))

    def fidelity_identity(self) -> dict:
        """Model + scoring identity that a stored fidelity baseline must match."""
        from qd_models.fidelity import model_identity

        return model_identity(self.pretrained, getattr(self, "revision", None), self.model.config, self.scoring, self.model_fingerprint)

    def fidelity_recorder(self, mode: str, out_dir, topk: int, baseline_dir, config: QuantConfig):
        """A :class:`qd_models.fidelity.FidelityRecorder` for this model; compare files are tagged
        by a hash of ``config``."""
        import hashlib
        import json

        from qd_models.fidelity import FidelityRecorder

        tag = f"{config.method}-" + hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        return FidelityRecorder(mode, out_dir, self.fidelity_identity(), topk=topk, baseline_dir=baseline_dir, tag=tag,
                                quant_config=config.to_dict())

    def apply_quantization(
        self, config: QuantConfig, calib_texts: dict | None = None, originals_for_restore: dict | None = None
    ) -> None:
        """Quantize ``self.model`` in place with ``config`` and record the report.

        ``calib_texts``: already-loaded calibration texts (else loaded here when the config needs
        a calibration pass, which then sees the current weights). ``originals_for_restore``: passed to
        :func:`qd_models.engine.quantize_` (CPU copies of modified weights, for sweeps).
        """
        self.quant_config: QuantConfig = config
        self.quant_report: dict | None = None
        if config.mechanism == Mechanism.NONE:
            return
        from qd_models.engine import quantize_
        from qd_models.report import summarize_report

        act_stats = calib = None
        if config.calibration_passes:
            from qd_models.calibration import CalibrationBatches, collect_activation_stats, load_calibration_texts
            from qd_models.calibration.sources import calibration_source_name
            from qd_models.targets import quantization_targets

            texts = calib_texts if calib_texts is not None else load_calibration_texts(config)
            source = calibration_source_name(config)
            if STATS in config.calibration_passes:
                act_stats = collect_activation_stats(self.model, self.tokenizer, texts, quantization_targets(self.model, config),
                                                     source=source, prefix_id=self.prefix_token_id, seed=config.calib_seed)
            if INPUTS in config.calibration_passes:
                from qd_models.calibration.sufficiency import calibration_texts_for_model

                texts = calibration_texts_for_model(texts, config, self.model, self.tokenizer, self.prefix_token_id)
                calib = CalibrationBatches.from_texts(self.tokenizer, texts, source, self.prefix_token_id)
        self.quant_report = quantize_(self.model, config, originals_for_restore=originals_for_restore, act_stats=act_stats, calib=calib)  # bnb: report only
        logger.info("qd-hf quantization: %s", summarize_report(self.quant_report))
        if config.save_to:
            from qd_models.saving import save_quantized

            source = self.pretrained if isinstance(self.pretrained, str) else None  # lets qd-analyze pair the saved model
            save_quantized(self.model, self.tokenizer, config.save_to, {**self.quant_report, record.MODEL_SOURCE: source,
                                                                        record.MODEL_FINGERPRINT: self.model_fingerprint}, pretrained=source)
            logger.info("qd-hf: quantized model saved to %s", config.save_to)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """HFLM's rolling windows over ``[prefix] + text tokens`` (see the module doc), longest
        documents first (:attr:`sort_rolling_by_length`), results in the order of ``requests``;
        with fidelity on, per-token fidelity data is collected and written once all are scored."""
        with progress_bars_closed_on_error():
            self._rolling = True
            try:
                order = list(range(len(requests)))
                if self.sort_rolling_by_length:
                    lengths = [len(self.tok_encode(req.args[0])) for req in requests]
                    order.sort(key=lambda i: -lengths[i])
                ordered = [requests[i] for i in order]
                if self.fidelity is not None:
                    if self.backend != "causal":
                        raise ValueError("fidelity_* is not allowed here; allowed: a causal model")
                    self.fidelity.plan(ordered, self.tok_encode, self.prefix_token_id, self.max_length, padded=self.world_size > 1)
                scored = super().loglikelihood_rolling(ordered, disable_tqdm=disable_tqdm)
            finally:
                self._rolling = False
            result = [0.0] * len(requests)
            for i, value in zip(order, scored, strict=True):
                result[i] = value
            if self.fidelity is not None:
                self.fidelity.write(gather=(lambda docs: self.gather_object(docs, dst=0)) if self.world_size > 1 else None)
        return result

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        """HFLM's (an error leaves no progress bar after it, :func:`progress_bars_closed_on_error`)."""
        with progress_bars_closed_on_error():
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        """HFLM's (an error leaves no progress bar after it, :func:`progress_bars_closed_on_error`)."""
        with progress_bars_closed_on_error():
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """HFLM's; inside :meth:`loglikelihood_rolling` with fidelity on, every window's logits
        are passed to the recorder (see :meth:`_model_call`)."""
        if not (self._rolling and self.fidelity is not None):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        self.fidelity.expect(requests)
        result = super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        self.fidelity.check_done()
        return result

    def _model_call(self, inps, attn_mask=None, labels=None):
        """HFLM's logits (B, L, V); rows of pending fidelity windows are also given to the recorder."""
        logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        if self._rolling and self.fidelity is not None and self.fidelity.pending:
            self.fidelity.observe(inps, logits, self.max_length)
        return logits

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None, **kwargs):
        """Inside :meth:`loglikelihood_rolling` the text's own tokens only (the prefix token is
        HFLM's); elsewhere HFLM's behaviour."""
        if self._rolling and add_special_tokens is None:
            add_special_tokens = False
        return super().tok_encode(string, add_special_tokens=add_special_tokens, left_truncate_len=left_truncate_len, **kwargs)

    def _create_model(self, *args, **kwargs) -> None:
        """HFLM passes the checkpoint's own ``quantization_config``; bnb methods replace it."""
        kwargs.update(self._load_overrides)
        super()._create_model(*args, **kwargs)

    def get_model_info(self) -> dict:
        """HFLM's model info plus a ``quant_disparity`` block (lands in results["config"])."""
        info = super().get_model_info()
        report = self.quant_report or {}
        block = info[record.QD_BLOCK] = {
            record.VERSION: __version__,
            record.MODEL_SOURCE: self.pretrained if isinstance(self.pretrained, str) else None,
            record.MODEL_FINGERPRINT: self.model_fingerprint,
            record.BASELINE_NOTE: self.model_note,
            record.SCORING: self.scoring,
            record.QUANT_CONFIG: self.quant_config.to_dict(),
            **record.label_fields(self.quant_config.to_dict()),
            record.QUANT_TOTALS: report.get("totals"),
            record.QUANT_REPORT: report or None,
        }
        if self.fidelity is not None:
            block[record.FIDELITY] = self.fidelity.info()
        if getattr(self, "rank_record", None):
            block[record.RANKS] = self.rank_record
        return info


@contextmanager
def progress_bars_closed_on_error():
    """Close the progress bars opened inside when an error leaves the block: an open bar is redrawn
    when it is garbage-collected at exit, after the traceback, and would hide the error's one line."""
    from tqdm import tqdm

    before = set(getattr(tqdm, "_instances", ()))
    try:
        yield
    except BaseException:
        for bar in set(getattr(tqdm, "_instances", ())) - before:
            bar.close()
        raise


def _plain(value):
    """A model argument as JSON (a torch dtype or other object as its string)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
