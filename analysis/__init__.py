"""Analysis of quant-disparity runs: lm-eval outputs -> degradation, disparity, statistics, plots.

Notebook use::

    import analysis
    runs = analysis.load_runs(["runs/"])
    deg = analysis.degradation(runs, random_state=0)
    table = analysis.disparity(deg, analysis.resource_groups(sorted(set(deg.table.lang))))

Plotting (``analysis.plots``) imports matplotlib lazily when that module is imported.
"""

from analysis.group_disparity import disparity
from analysis.groups import resource_groups
from analysis.language_degradation import Degradation, degradation
from analysis.loading import AnalysisInputError, Run, RunSet, load_runs
from analysis.pairing import Pair, pair_runs
from analysis.pareto import pareto_front
from analysis.predictors import correlations
from analysis.rate_distortion import rate_distortion, weight_mse, weight_mse_slopes
from analysis.report import AnalysisOptions, analyze, write_outputs
from analysis.tokenizer_fertility import fertility

__all__ = [
    "AnalysisInputError",
    "AnalysisOptions",
    "Degradation",
    "Pair",
    "Run",
    "RunSet",
    "analyze",
    "correlations",
    "degradation",
    "disparity",
    "fertility",
    "load_runs",
    "pair_runs",
    "pareto_front",
    "rate_distortion",
    "resource_groups",
    "weight_mse",
    "weight_mse_slopes",
    "write_outputs",
]
