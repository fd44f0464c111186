"""The evaluation report of a test set: metrics.json, report.md, plots and predictions.root."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import uproot

from jettag.evaluation.metrics import (
    DEFAULT_EFFICIENCIES,
    EXTRA_EFFICIENCIES,
    metrics_and_curves,
    rejection_key,
)

PREDICTIONS_CHUNK = 1_000_000  # entries per write: one basket of a few MB per branch

DEFINITIONS = """\
- Rej@X% is the background rejection 1/eps_B at signal efficiency X%, eps_B read off the ROC curve by
  linear interpolation at exactly X%.
- Two classes: the discriminant is s_sig / (s_sig + s_bkg).
- More classes: the AUC is the mean of the one-vs-rest AUCs of all classes, each on its own score s_k;
  the overall Rej@50% / Rej@30% count any signal class against the background with the score 1 - s_bkg;
  the per-class rows use only jets of that class and of the background, with the discriminant
  s_X / (s_X + s_bkg). Rej@99% (H->lnuqq) and Rej@99.5% (t->blnu) follow the Particle Transformer paper.
- A rejection shown as "> N" is infinite: no background jet passes at that efficiency, so the rejection
  exceeds the N background jets of the test set. JSON has no infinity, so metrics.json stores it as
  null and names it under "nonfinite_values" (e.g. "per_class.label_Tbl.rej995": "inf"); the file
  stays strict JSON for any reader.
"""


def _branch_values(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f" and values.dtype.itemsize < 4:
        return values.astype(np.float32)  # ROOT has no float16
    return values


def write_predictions_root(
    path,
    scores: np.ndarray,
    class_names: list[str],
    truth: dict[str, np.ndarray],
    observers: dict[str, np.ndarray],
    treename: str = "Events",
) -> None:
    """One entry per jet: `score_<class>` (float32) per class, then `truth`, then `observers`, as given."""
    scores = np.asarray(scores)
    num_jets = len(scores)
    if scores.ndim != 2 or scores.shape[1] != len(class_names):
        raise ValueError(
            f"scores of shape {scores.shape} do not match the {len(class_names)} classes {class_names}."
        )
    columns: dict[str, np.ndarray] = {}
    sources = (
        ("score", {f"score_{name}": scores[:, i] for i, name in enumerate(class_names)}),
        ("truth branch", truth or {}),
        ("observer", observers or {}),
    )
    for what, branches in sources:
        for name, values in branches.items():
            values = np.asarray(values)
            if name in columns:
                raise ValueError(
                    f"the predictions file would hold the branch '{name}' twice (as {what}); rename one."
                )
            if values.shape != (num_jets,):
                raise ValueError(
                    f"{what} '{name}' has shape {values.shape}; it needs one value per jet ({num_jets},)."
                )
            columns[name] = values.astype(np.float32) if what == "score" else _branch_values(values)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        tree = f.mktree(treename, {name: values.dtype for name, values in columns.items()})
        for start in range(0, num_jets, PREDICTIONS_CHUNK):
            stop = start + PREDICTIONS_CHUNK
            tree.extend({name: np.ascontiguousarray(values[start:stop]) for name, values in columns.items()})


def _jsonable(obj, key: str, nonfinite: dict):
    """`obj` with numpy types made plain and non-finite floats replaced by None (recorded in `nonfinite`)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}" if key else str(k), nonfinite) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, Sequence | set) and not isinstance(obj, str | bytes):
        return [_jsonable(v, f"{key}[{i}]", nonfinite) for i, v in enumerate(obj)]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        if math.isfinite(value):
            return value
        nonfinite[key] = str(value)  # "inf", "-inf", "nan"
        return None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _fmt_rejection(value: float, num_background: int) -> str:
    if math.isinf(value):
        return f"> {num_background}"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _fmt_info(value, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(value, Mapping):
        lines = []
        for k, v in value.items():
            if isinstance(v, Mapping) and v:
                lines += [f"{pad}- **{k}**:", *_fmt_info(v, indent + 1)]
            else:
                lines.append(f"{pad}- **{k}**: {_fmt_scalar(v)}")
        return lines
    return [f"{pad}- {_fmt_scalar(value)}"]


def _fmt_scalar(value) -> str:
    if isinstance(value, Mapping):
        return "(none)" if not value else ", ".join(f"{k}: {_fmt_scalar(v)}" for k, v in value.items())
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Sequence | set) and not isinstance(value, str | bytes):
        items = [_fmt_scalar(v) for v in value]
        shown = ", ".join(items[:10])
        return f"{shown}, ... ({len(items) - 10} more)" if len(items) > 10 else shown or "(none)"
    if isinstance(value, float | np.floating):
        return f"{value:.6g}"
    return f"`{value}`" if isinstance(value, str | Path) else str(value)


def _rejection_statistics(metrics: dict, keys: list[str], num_background: int) -> str:
    """How many background jets each rejection rests on: its statistical precision."""
    parts = []
    for key in keys:
        value = metrics[key]
        label = f"Rej@{key[3:]}%"
        if not math.isfinite(value) or value <= 0:
            parts.append(f"{label}: no background jet passes")
            continue
        passing = num_background / value
        parts.append(
            f"{label}: {passing:.1f} background jets pass (relative uncertainty ~{1 / math.sqrt(passing):.0%})"
        )
    return "Statistics: " + "; ".join(parts) + f", of {num_background} background jets."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _markdown(metrics: dict, info: dict, title: str, truth_names, observer_names) -> str:
    names = metrics["class_names"]
    bkg = metrics["background"]
    counts = metrics["num_jets_per_class"]
    num_bkg = counts[bkg]
    rej = [rejection_key(e) for e in DEFAULT_EFFICIENCIES]
    lines = [
        f"# {title}",
        "",
        f"{metrics['num_jets']} test jets, {len(names)} classes, background `{bkg}`.",
        "",
    ]

    if "per_class" not in metrics:
        lines += _table(
            ["signal", "background", "accuracy", "AUC", "Rej@50%", "Rej@30%", "jets"],
            [
                [
                    f"`{metrics['signal']}`",
                    f"`{bkg}`",
                    f"{metrics['accuracy']:.4f}",
                    f"{metrics['auc']:.4f}",
                    *(_fmt_rejection(metrics[k], num_bkg) for k in rej),
                    str(metrics["num_jets"]),
                ]
            ],
        )
        lines += ["", "Jets per class: " + ", ".join(f"`{n}` {c}" for n, c in counts.items()) + "."]
        lines += ["", _rejection_statistics(metrics, rej, num_bkg)]
    else:
        lines += _table(
            ["accuracy", "AUC (macro, one-vs-rest)", "Rej@50% (any signal)", "Rej@30% (any signal)", "jets"],
            [
                [
                    f"{metrics['accuracy']:.4f}",
                    f"{metrics['auc']:.4f}",
                    *(_fmt_rejection(metrics[k], num_bkg) for k in rej),
                    str(metrics["num_jets"]),
                ]
            ],
        )
        per_class = metrics["per_class"]
        extra = [
            e
            for e in sorted(EXTRA_EFFICIENCIES.values())
            if any(rejection_key(e) in m for m in per_class.values())
        ]
        header = [
            "class",
            "jets",
            f"AUC vs {bkg}",
            "Rej@50%",
            "Rej@30%",
            *(f"Rej@{e * 100:g}%" for e in extra),
        ]
        rows = [
            [
                f"`{name}`",
                str(m["num_jets"]),
                f"{m['auc']:.4f}",
                *(
                    _fmt_rejection(m[k], num_bkg) if k in m else "-"
                    for k in rej + [rejection_key(e) for e in extra]
                ),
            ]
            for name, m in per_class.items()
        ]
        rows.append([f"`{bkg}` (background)", str(num_bkg), *["-"] * (len(header) - 2)])
        lines += ["", f"### Per class, against `{bkg}`", "", *_table(header, rows)]

    lines += ["", "## Definitions", "", DEFINITIONS]
    lines += [
        "## Plots",
        "",
        "![Background rejection vs signal efficiency](rejection.png)",
        "",
        "Background rejection vs signal efficiency ([PDF](rejection.pdf)); "
        "markers at 50% (circle) and 30% (square).",
        "",
        "![Score distributions per true class](scores.png)",
        "",
        "Score distributions per true class, each normalized to unit sum.",
        "",
        "## Files",
        "",
        "- `metrics.json`: the metrics above and the run information.",
        "- `predictions.root`: tree `Events`, one entry per jet: "
        + ", ".join(f"`score_{n}`" for n in names)
        + " (float32)"
        + (", truth " + ", ".join(f"`{n}`" for n in truth_names) if truth_names else "")
        + (", observers " + ", ".join(f"`{n}`" for n in observer_names) if observer_names else "")
        + ".",
        "",
        "## Run information",
        "",
        *(_fmt_info(info, 0) if info else ["(none given)"]),
        "",
    ]
    return "\n".join(lines)


def write_report(
    output_dir,
    labels,
    scores,
    class_names,
    truth,
    observers,
    background: int = 0,
    info: dict | None = None,
    title: str = "jettag evaluation",
) -> dict:
    """Write metrics.json, report.md, rejection.png/.pdf, scores.png and predictions.root; return the metrics.

    The metrics are those of `compute_metrics`; they are computed (and any `DataError` raised) before
    anything is written.
    """
    from jettag.evaluation import plots  # matplotlib only when a report is written

    output_dir = Path(output_dir)
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    metrics, curves = metrics_and_curves(labels, scores, class_names, background, plots.efficiency_grid())
    truth, observers, info = dict(truth or {}), dict(observers or {}), dict(info or {})

    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions_root(output_dir / "predictions.root", scores, metrics["class_names"], truth, observers)
    plots.plot_rejection(curves, metrics, [output_dir / "rejection.png", output_dir / "rejection.pdf"])
    plots.plot_scores(labels, scores, metrics["class_names"], background, output_dir / "scores.png")

    nonfinite: dict[str, str] = {}
    document = _jsonable({**metrics, "info": info}, "", nonfinite)
    document["nonfinite_values"] = nonfinite
    with open(output_dir / "metrics.json", "w") as f:
        json.dump(document, f, indent=2, allow_nan=False)
        f.write("\n")
    (output_dir / "report.md").write_text(_markdown(metrics, info, title, list(truth), list(observers)))
    return metrics
