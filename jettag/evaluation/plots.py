"""Report plots: background rejection vs signal efficiency, and score distributions per true class.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so no
display is needed and the caller's matplotlib backend is left alone. Style: mplhep's ROOT style,
with no experiment label.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.style
import mplhep as hep
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jettag.evaluation.metrics import rejection_key, signal_fraction

SCORE_BINS = 50
COLORS = [f"C{i}" for i in range(10)] + ["#7f7f7f", "#000000"]


def efficiency_grid(points: int = 200) -> np.ndarray:
    """Signal efficiencies to sample ROC curves at: log-spaced towards 0 and towards 1, plus 30%, 50%."""
    low = np.geomspace(1e-3, 0.5, points)
    high = 1 - np.geomspace(1e-4, 0.5, points)
    return np.unique(np.concatenate([low, high, [0.3, 0.5, 1.0]]))


def _figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_rejection(curves: dict, metrics: dict, paths) -> None:
    """1/eps_B (log) vs signal efficiency, one curve per signal class, saved to each of `paths`.

    `curves`: {signal class: (efficiencies, eps_B)}; `metrics`: from `compute_metrics`, for the AUC in
    the legend and the markers at 50% and 30%.
    """
    per_class = metrics.get("per_class") or {metrics["signal"]: metrics}
    with matplotlib.style.context(hep.style.ROOT):
        fig = _figure((9, 7.5))
        ax = fig.add_subplot()
        for i, (name, (eff, eps_b)) in enumerate(curves.items()):
            color = COLORS[i % len(COLORS)]
            with np.errstate(divide="ignore"):
                rejection = np.where(eps_b > 0, 1.0 / eps_b, np.nan)
            ax.plot(eff, rejection, color=color, lw=2, label=f"{name} (AUC = {per_class[name]['auc']:.4f})")
            for eff_mark, marker in ((0.5, "o"), (0.3, "s")):
                value = per_class[name][rejection_key(eff_mark)]
                if np.isfinite(value):
                    ax.plot([eff_mark], [value], marker=marker, color=color, ms=7, ls="none")
        ax.plot([], [], "ko", ls="none", label="Rej@50%")
        ax.plot([], [], "ks", ls="none", label="Rej@30%")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
        ax.legend(title=f"background: {metrics['background']}", fontsize="x-small", title_fontsize="x-small")
        for path in paths:
            fig.savefig(path)


def _histograms(labels: np.ndarray, score: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, SCORE_BINS) histogram of `score` in [0, 1] per true class, normalized per class."""
    bins = np.clip((np.asarray(score, dtype=np.float64) * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
    hist = np.bincount(
        labels.astype(np.int64) * SCORE_BINS + bins, minlength=num_classes * SCORE_BINS
    ).reshape(num_classes, -1)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)


def _draw_histograms(ax, hist: np.ndarray, names, xlabel: str) -> None:
    edges = np.linspace(0, 1, SCORE_BINS + 1)
    for cls, name in enumerate(names):
        if hist[cls].any():
            ax.stairs(
                np.where(hist[cls] > 0, hist[cls], np.nan),
                edges,
                color=COLORS[cls % len(COLORS)],
                lw=1.5,
                label=name,
            )
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Fraction of jets")


def plot_scores(labels: np.ndarray, scores: np.ndarray, class_names, background: int, path) -> None:
    """Score distributions per true class, each normalized to unit sum, log y.

    Two classes: the signal discriminant s_sig / (s_sig + s_bkg). More: one panel per class k with
    s_k for the jets of each true class.
    """
    labels = np.asarray(labels)
    names = list(class_names)
    num_classes = len(names)
    with matplotlib.style.context(hep.style.ROOT):
        if num_classes == 2:
            signal = 1 - background
            fig = _figure((9, 7))
            ax = fig.add_subplot()
            score = signal_fraction(scores[:, signal], scores[:, background])
            _draw_histograms(
                ax,
                _histograms(labels, score, 2),
                [f"true {n}" for n in names],
                f"$s_{{sig}} / (s_{{sig}} + s_{{bkg}})$, signal = {names[signal]}",
            )
            ax.legend(fontsize="x-small")
        else:
            ncols = min(num_classes, 3)
            nrows = -(-num_classes // ncols)
            fig = _figure((6 * ncols, 5 * nrows))
            axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
            for cls, ax in enumerate(axes[:num_classes]):
                _draw_histograms(
                    ax, _histograms(labels, scores[:, cls], num_classes), names, f"score {names[cls]}"
                )
                ax.xaxis.label.set_fontsize("small")
                ax.yaxis.label.set_fontsize("small")
            for ax in axes[num_classes:]:
                ax.set_axis_off()
            handles, legend_names = axes[0].get_legend_handles_labels()
            fig.legend(
                handles, [f"true {n}" for n in legend_names], loc="outside right upper", fontsize="small"
            )
        fig.savefig(Path(path))
