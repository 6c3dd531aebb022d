"""Views for suites with hundreds of languages (``qd_udhr_ppl``) and the memorisation flag.

Resource classes are unknown for most of 500 languages, so the continuous predictor is what
the model itself shows: its **relative baseline** = baseline NLL of a language's documents
divided by the baseline NLL of the reference language's (English) same documents, over the
doc_ids both have (parallel corpora: same article = same doc_id). 1 = the model knows the
language as well as English per unit of content; larger = worse. Degradation D is the
analysis' relative NLL increase. Script (ISO 15924), name and Joshi class come from
``qd_tasks`` metadata where it knows the language.

Memorisation flag: a language whose baseline bits/byte is below :data:`FAR_BELOW_FRACTION`
of the median over its suite's languages (UDHR is widely memorised: its English text is far
more predictable than English prose).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.language_degradation import LN2

REFERENCE_LANG = "en"
MIN_LANGUAGES = 30
"""Suites with at least this many languages get the many-language views instead of per-language bars."""
MIN_LANGUAGES_FOR_FLAG = 5
FAR_BELOW_FRACTION = 1 / 3
TOP_K = 10
TOP_SCRIPTS = 8


def language_metadata(langs) -> pd.DataFrame:
    """One row per language key: name, script, iso639_3, joshi_class (NaN when unknown)."""
    try:
        from qd_tasks.languages import BY_FLORES_CODE, LANGUAGES
        from qd_tasks.udhr import udhr_languages

        udhr = udhr_languages()
    except (ImportError, OSError):
        LANGUAGES, BY_FLORES_CODE, udhr = {}, {}, {}
    rows = []
    for lang in langs:
        entry = udhr.get(lang, {})
        known = LANGUAGES.get(lang) or BY_FLORES_CODE.get(f"{entry.get('iso639_3')}_{entry.get('script')}")
        rows.append({
            "lang": lang,
            "name": entry.get("name") or (known.name if known else ""),
            "script": entry.get("script") or (known.script if known else "unknown"),
            "iso639_3": entry.get("iso639_3") or (known.flores_code.split("_")[0] if known else ""),
            "joshi_class": float(known.joshi_class) if known else math.nan,
        })
    return pd.DataFrame(rows, columns=["lang", "name", "script", "iso639_3", "joshi_class"])


def relative_baseline(docs: pd.DataFrame, reference: str = REFERENCE_LANG) -> pd.DataFrame:
    """Per (quant_id, suite, lang): baseline bits per aligned document and its ratio to ``reference``.

    docs: ``Degradation.docs`` (one row per paired document: quant_id, suite, lang, doc_id,
    nll_base). Aligned documents = the lang's doc_ids that the reference also has. Columns:
    quant_id, suite, lang, n_aligned, bits_per_aligned_doc, relative_baseline (NaN without a
    reference or aligned documents).
    """
    columns = ["quant_id", "suite", "lang", "n_aligned", "bits_per_aligned_doc", "relative_baseline"]
    if docs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (quant_id, suite), block in docs.groupby(["quant_id", "suite"], sort=True):
        ref = block[block.lang == reference].set_index("doc_id").nll_base
        for lang, lang_block in block.groupby("lang", sort=True):
            own = lang_block.set_index("doc_id").nll_base
            aligned = own.index.intersection(ref.index)
            total, ref_total = float(own[aligned].sum()), float(ref[aligned].sum())
            ratio = total / ref_total if len(aligned) and ref_total > 0 else math.nan
            bits = total / LN2 / len(aligned) if len(aligned) else math.nan
            rows.append((quant_id, suite, lang, len(aligned), bits, ratio))
    return pd.DataFrame(rows, columns=columns)


def language_table(deg_table: pd.DataFrame, docs: pd.DataFrame, reference: str = REFERENCE_LANG) -> pd.DataFrame:
    """``deg_table`` rows with metadata, relative baseline and ``memorised`` (bool) per language."""
    if deg_table.empty:
        return deg_table.assign(name=[], script=[], joshi_class=[], relative_baseline=[], memorised=[])
    rel = relative_baseline(docs, reference)
    table = deg_table.merge(rel, on=["quant_id", "suite", "lang"], how="left")
    table = table.merge(language_metadata(sorted(set(table.lang))), on="lang", how="left")
    median = table.groupby(["quant_id", "suite"]).bpb_base.transform("median")
    n_langs = table.groupby(["quant_id", "suite"]).lang.transform("nunique")
    table["memorised"] = (n_langs >= MIN_LANGUAGES_FOR_FLAG) & (table.bpb_base < FAR_BELOW_FRACTION * median)
    return table


def memorisation_flags(table: pd.DataFrame) -> list[str]:
    """One line per (suite, language) whose baseline is far below the suite's other languages (first run per suite)."""
    lines = []
    if table.empty:
        return lines
    for suite, block in table.groupby("suite", sort=True):
        block = block[block.quant_id == block.quant_id.iloc[0]]
        median = float(block.bpb_base.median())
        for row in block[block.memorised].sort_values("bpb_base").itertuples():
            lines.append(
                f"{suite}/{row.lang} ({row.name or 'unknown'}): baseline {row.bpb_base:.3g} bits/byte, below "
                f"{FAR_BELOW_FRACTION:.2g} × the suite median {median:.3g} — probably memorised text (UDHR is widely memorised); "
                "its degradation measures recall of a memorised text, not knowledge of the language"
            )
    return lines


def top_bottom(table: pd.DataFrame, k: int = TOP_K) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``k`` most and ``k`` least degraded languages of one (run, suite) block (finite D only)."""
    finite = table[np.isfinite(table.degradation.to_numpy(dtype=float))]
    ordered = finite.sort_values(["degradation", "lang"], ascending=[False, True])
    return ordered.head(k), ordered.tail(k).iloc[::-1]


def script_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per script of one (run, suite) block: n_langs, median/min/max D and median relative baseline, by median D."""
    rows = []
    for script, block in table.groupby("script", sort=True):
        values = block.degradation.to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        rel = block.relative_baseline.to_numpy(dtype=float)
        rel = rel[np.isfinite(rel)]
        rows.append({
            "script": script,
            "n_langs": len(block),
            "median_D": float(np.median(values)) if len(values) else math.nan,
            "min_D": float(values.min()) if len(values) else math.nan,
            "max_D": float(values.max()) if len(values) else math.nan,
            "median_relative_baseline": float(np.median(rel)) if len(rel) else math.nan,
            "example_langs": ", ".join(sorted(block.lang)[:4]),
        })
    out = pd.DataFrame(rows, columns=["script", "n_langs", "median_D", "min_D", "max_D", "median_relative_baseline", "example_langs"])
    return out.sort_values(["median_D", "script"], ascending=[False, True], na_position="last").reset_index(drop=True)


def spearman(table: pd.DataFrame) -> tuple[int, float, float]:
    """(n, Spearman rho, p) of D vs relative baseline over the languages where both are finite."""
    from scipy import stats

    x, y = table.relative_baseline.to_numpy(dtype=float), table.degradation.to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return int(keep.sum()), math.nan, math.nan
    result = stats.spearmanr(x[keep], y[keep])
    return int(keep.sum()), float(result.statistic), float(result.pvalue)


def _scripts_for_colour(table: pd.DataFrame) -> list[str]:
    return list(table.script.value_counts().sort_index().sort_values(ascending=False, kind="stable").index[:TOP_SCRIPTS])


def scatter_vs_baseline(table: pd.DataFrame, title: str = "", label_k: int = 5):
    """D (%) vs relative baseline (log x) per language, coloured by script (top scripts; rest grey),
    memorised languages circled, the ``label_k`` most and least degraded labelled. Returns (fig, ax)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    x, y = table.relative_baseline.to_numpy(dtype=float), 100 * table.degradation.to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    scripts = _scripts_for_colour(table[ok])
    colours = dict(zip(scripts, [f"C{i}" for i in range(len(scripts))]))
    for script in [*scripts, None]:
        mask = ok & (table.script.isin(scripts).to_numpy() == (script is not None))
        if script is not None:
            mask &= (table.script == script).to_numpy()
        if mask.any():
            ax.scatter(x[mask], y[mask], s=12, alpha=0.75, color=colours.get(script, "#9a9a9a"),
                       label=f"{script or 'other'} ({int(mask.sum())})")
    memorised = ok & table.memorised.to_numpy(dtype=bool)
    if memorised.any():
        ax.scatter(x[memorised], y[memorised], s=60, facecolors="none", edgecolors="black", label="baseline far below others")
    order = np.argsort(np.where(ok, y, np.nan))
    finite = order[: int(ok.sum())]
    for i in [*finite[:label_k], *finite[-label_k:]]:
        ax.annotate(table.lang.iloc[i], (x[i], y[i]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if ok.any():
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", lw=0.6, ls=":")
    ax.set_xlabel("relative baseline: baseline NLL / English NLL on the same articles (log)")
    ax.set_ylabel("relative NLL increase D (%)")
    ax.set_title(title or "Degradation vs how well the model knows the language", fontsize=9)
    ax.legend(fontsize=6, loc="best", ncol=2)
    fig.subplots_adjust(left=0.1, bottom=0.12, right=0.97, top=0.92)
    return fig, ax


def script_view(summary: pd.DataFrame, table: pd.DataFrame, title: str = ""):
    """Per script: D (%) of each language as points on one row, median marked, n in the label. Returns (fig, ax)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, max(2.5, 0.28 * len(summary) + 1.2)))
    ax = fig.add_subplot()
    for row, script in enumerate(summary.script):
        values = 100 * table.loc[table.script == script, "degradation"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        ax.scatter(values, np.full(len(values), row), s=8, alpha=0.6, color="C0")
        if len(values):
            ax.scatter([np.median(values)], [row], marker="|", s=200, color="black")
    ax.set_yticks(range(len(summary)), [f"{s} (n={n})" for s, n in zip(summary.script, summary.n_langs)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relative NLL increase D (%), | = median")
    ax.set_title(title or "Degradation by script", fontsize=9)
    fig.subplots_adjust(left=0.22, bottom=0.1, right=0.97, top=0.93)
    return fig, ax
