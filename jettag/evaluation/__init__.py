"""Predictions -> metrics (ROC, AUC, Rej@eff) -> report, plots and predictions file."""

from jettag.evaluation.metrics import (
    background_efficiency,
    background_rejection,
    binary_metrics,
    compute_metrics,
    metrics_and_curves,
    rank_auc,
    rejection_key,
)

__all__ = [
    "background_efficiency",
    "background_rejection",
    "binary_metrics",
    "compute_metrics",
    "metrics_and_curves",
    "rank_auc",
    "rejection_key",
    "write_predictions_root",
    "write_report",
]


def __getattr__(name: str):
    # the report writers pull in uproot and matplotlib: loaded when first used, so that
    # `import jettag.metrics` (which needs only the curves) stays light
    if name in ("write_predictions_root", "write_report"):
        from jettag.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module 'jettag.evaluation' has no attribute {name!r}")
