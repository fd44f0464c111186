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
from jettag.evaluation.report import write_predictions_root, write_report

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
