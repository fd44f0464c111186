"""Comparison tables across runs, like those of the ParT paper: one row per model, mean +- std over seeds.

A run is a directory holding the `metrics.json` written by jettag-train (or jettag-eval), and usually
`predictions.root` and `.hydra/`. Runs are grouped by task (their class names and background), then
by model: the model config name (`model=part_small`) when the run has a `.hydra/` directory, else the
model class, plus every command-line override other than the seed whose value differs between the
runs of the task (a learning-rate sweep gives one row per learning rate). The spread is the sample
standard deviation over the runs of a row (ddof=1, the convention of the paper's "+-"); a row of one
run has none.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uproot
import yaml

from jettag.errors import DataError
from jettag.evaluation.metrics import (
    DEFAULT_EFFICIENCIES,
    EXTRA_EFFICIENCIES,
    metrics_and_curves,
    rejection_key,
)

METRICS = ("accuracy", "auc", "rej50", "rej30")
HEADERS = {"accuracy": "Accuracy", "auc": "AUC", "rej50": "Rej@50%", "rej30": "Rej@30%"}
# overrides that do not make a different model: the seed (averaged over), where and how the run went
IGNORED_KEYS = ("seed", "ckpt_path", "test", "model")
IGNORED_PREFIXES = ("hydra.", "paths.", "data.", "hydra/")


@dataclass
class Run:
    path: Path
    metrics: dict
    model: str
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        names, bkg = self.metrics["class_names"], self.metrics["background"]
        if len(names) == 2:
            return f"{self.metrics.get('signal', names[1])} vs {bkg}"
        return f"{len(names)} classes, background {bkg}"

    def value(self, key: str) -> float:
        """A metric as a float; an infinite rejection (null in metrics.json) is inf."""
        document, where = self.metrics, key
        for part in key.split("."):
            document = document.get(part) if isinstance(document, dict) else None
        if document is None:
            return math.inf if where in self.metrics.get("nonfinite_values", {}) else math.nan
        return float(document)


def _hydra_info(run_dir: Path) -> tuple[str | None, dict[str, str]]:
    """The model config name and the command-line overrides of a run, from its .hydra directory."""
    model, overrides = None, {}
    hydra_file, overrides_file = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        choices = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {})
        model = (choices.get("choices") or {}).get("model")
    if overrides_file.is_file():
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            if key not in IGNORED_KEYS and not key.startswith(IGNORED_PREFIXES):
                overrides[key] = value
    return model, overrides


def find_runs(dirs) -> list[Run]:
    """Every run under `dirs` (a run directory, a sweep directory, anything above them)."""
    runs, seen = [], set()
    for top in map(Path, dirs):
        if not top.is_dir():
            raise DataError(
                f"{top}: no such directory; give run or sweep directories (e.g. multirun/2026-11-25/10-00-00)."
            )
        for metrics_file in sorted(top.rglob("metrics.json")):
            run_dir = metrics_file.parent
            # a re-evaluation (<run>/eval) is the same run again
            if run_dir.name == "eval" and (run_dir.parent / "metrics.json").is_file():
                continue
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                metrics = json.loads(metrics_file.read_text())
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{metrics_file}: not valid JSON ({err}); was the run interrupted while writing it?"
                ) from None
            missing = [k for k in (*METRICS, "class_names", "background") if k not in metrics]
            if missing:
                raise DataError(
                    f"{metrics_file}: lacks {', '.join(missing)}; is it a metrics.json written by jettag-train?"
                )
            model, overrides = _hydra_info(run_dir)
            info = metrics.get("info") or {}
            runs.append(Run(run_dir, metrics, model or info.get("model") or "model", overrides))
    if not runs:
        raise DataError(
            f"no metrics.json under {', '.join(map(str, dirs))}; give the directories of finished runs."
        )
    return runs


def _label(run: Run, varying: list[str]) -> str:
    settings = ", ".join(f"{k}={run.overrides.get(k, '-')}" for k in varying)
    return f"{run.model} ({settings})" if settings else run.model


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """{task: {row label: runs}}, in the order the runs were found."""
    tasks: dict[str, list[Run]] = {}
    for run in runs:
        tasks.setdefault(run.task, []).append(run)
    grouped = {}
    for task, members in tasks.items():
        keys = sorted({k for r in members for k in r.overrides})
        varying = [k for k in keys if len({r.overrides.get(k) for r in members}) > 1]
        rows: dict[str, list[Run]] = {}
        for run in members:
            rows.setdefault(_label(run, varying), []).append(run)
        grouped[task] = rows
    return grouped


def summarize(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for one value). Any infinite value makes both inf/nan."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or np.isnan(values).any():
        return math.nan, math.nan
    if np.isinf(values).any():
        return math.inf, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def columns_of(runs: list[Run]) -> list[tuple[str, str]]:
    """(metric key, header) of the table of a task: the four metrics, then one rejection per signal class."""
    columns = [(k, HEADERS[k]) for k in METRICS]
    per_class = runs[0].metrics.get("per_class") or {}
    for name in per_class:
        efficiency = next(
            (e for s, e in EXTRA_EFFICIENCIES.items() if name.endswith(s)), DEFAULT_EFFICIENCIES[0]
        )
        key = rejection_key(efficiency)
        columns.append((f"per_class.{name}.{key}", f"{name} Rej@{efficiency * 100:g}%"))
    return columns


@dataclass
class Row:
    label: str
    runs: list[Run]
    stats: dict[str, tuple[float, float]]
    parameters: int | None


def table(rows: dict[str, list[Run]]) -> tuple[list[tuple[str, str]], list[Row]]:
    columns = columns_of(next(iter(rows.values())))
    out = []
    for label, runs in rows.items():
        stats = {key: summarize([r.value(key) for r in runs]) for key, _ in columns}
        params = {(r.metrics.get("info") or {}).get("parameters") for r in runs} - {None}
        out.append(Row(label, runs, stats, params.pop() if len(params) == 1 else None))
    return columns, out


def fmt(key: str, mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    if math.isinf(mean):
        return "inf"
    digits = 4 if key in ("accuracy", "auc") else (0 if abs(mean) >= 100 else 1)
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def read_predictions(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, scores) from a run's predictions.root, or None when it has none or no labels."""
    path = run.path / "predictions.root"
    if not path.is_file():
        return None
    names = run.metrics["class_names"]
    with uproot.open(path) as f:
        tree = f["Events"]
        branches = set(tree.keys())
        if not {f"score_{n}" for n in names} <= branches:
            return None
        scores = np.stack([tree[f"score_{n}"].array(library="np") for n in names], axis=1)
        if set(names) <= branches:  # one-hot label branches
            labels = np.stack([tree[n].array(library="np") for n in names], axis=1).argmax(axis=1)
        elif "label" in branches:  # one integer label column
            labels = tree["label"].array(library="np").astype(np.int64)
        else:
            return None
    return labels, scores


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def plot_task(rows: list[Row], out_dir: Path, stem: str) -> list[tuple[str, str]]:
    """Overlaid rejection curves (mean over the runs of each row) and signal-score histograms.

    Returns (caption, base64 PNG) pairs; the PNGs are also written to `out_dir`.
    """
    import matplotlib.style
    import mplhep as hep

    from jettag.evaluation.plots import COLORS, _figure, efficiency_grid, signal_fraction

    grid = efficiency_grid()
    curves: dict[str, dict[str, list[np.ndarray]]] = {}  # row -> class -> eps_B per run
    scores: dict[
        str, tuple[np.ndarray, np.ndarray]
    ] = {}  # row -> (signal-like score, is signal) of its first run
    for row in rows:
        for run in row.runs:
            predictions = read_predictions(run)
            if predictions is None:
                continue
            labels, probs = predictions
            names = run.metrics["class_names"]
            background = names.index(run.metrics["background"])
            _, run_curves = metrics_and_curves(labels, probs, names, background, grid)
            for name, (_, eps_b) in run_curves.items():
                curves.setdefault(row.label, {}).setdefault(name, []).append(eps_b)
            if row.label not in scores:
                if len(names) == 2:
                    score = signal_fraction(probs[:, 1 - background], probs[:, background])
                else:
                    score = 1 - probs[:, background]
                scores[row.label] = (score, labels != background)
    if not curves:
        return []
    figures = []
    classes = list(next(iter(curves.values())))
    with matplotlib.style.context(hep.style.ROOT):
        ncols = min(len(classes), 3)
        nrows = -(-len(classes) // ncols)
        fig = _figure((7 * ncols, 6 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, name in zip(axes, classes, strict=False):
            for i, (label, per_class) in enumerate(curves.items()):
                runs = np.array(per_class.get(name, []))
                rejection = np.where(runs > 0, 1 / np.where(runs > 0, runs, 1), np.nan)
                color = COLORS[i % len(COLORS)]
                with warnings.catch_warnings():  # no background jet passes at the lowest efficiencies: NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    low, mean, high = (f(rejection, axis=0) for f in (np.nanmin, np.nanmean, np.nanmax))
                ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({len(runs)})")
                if len(runs) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.2)
            ax.set_yscale("log")
            ax.set_xlim(0, 1)
            ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
            ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
            ax.set_title(name, fontsize="small")
            ax.legend(fontsize="xx-small")
        for ax in axes[len(classes) :]:
            ax.set_axis_off()
        fig.savefig(out_dir / f"{stem}_rejection.png")
        figures.append(
            (
                "Background rejection vs signal efficiency: mean over the runs of each row (their number in brackets), band from the lowest to the highest run.",
                _png(fig),
            )
        )

        fig = _figure((9, 7))
        ax = fig.add_subplot()
        edges = np.linspace(0, 1, 41)
        for i, (label, (score, is_signal)) in enumerate(scores.items()):
            color = COLORS[i % len(COLORS)]
            for mask, style, kind in ((is_signal, "-", "signal"), (~is_signal, "--", "background")):
                hist, _ = np.histogram(np.clip(score[mask], 0, 1), edges)
                ax.stairs(
                    hist / max(hist.sum(), 1), edges, color=color, ls=style, lw=1.5, label=f"{label}, {kind}"
                )
        ax.set_yscale("log")
        ax.set_xlabel(
            "signal score" + (r" $s_{sig}/(s_{sig}+s_{bkg})$" if len(classes) == 1 else r" $1 - s_{bkg}$")
        )
        ax.set_ylabel("Fraction of jets")
        ax.legend(fontsize="xx-small")
        fig.savefig(out_dir / f"{stem}_scores.png")
        figures.append(
            (
                "Signal score of signal (solid) and background (dashed) jets, first run of each row, normalized to unit sum.",
                _png(fig),
            )
        )
    return figures


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def write_comparison(dirs, out_dir, plots: bool = True) -> dict[str, list[Row]]:
    """comparison.md, comparison.csv and comparison.html (plots embedded) of the runs under `dirs`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = find_runs(dirs)
    grouped = group_runs(runs)
    md = [
        "# jettag comparison",
        "",
        f"{len(runs)} runs from {', '.join(map(str, dirs))}. Mean ± sample standard deviation (ddof=1) over the runs of each row.",
        "",
    ]
    page = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>jettag comparison</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
            "</head><body><h1>jettag comparison</h1>",
            f"<p>{len(runs)} runs. Mean ± sample standard deviation (ddof=1) over the runs of each row.</p>"]  # fmt: skip
    csv_rows, tables = [], {}
    for task, rows in grouped.items():
        columns, summary = table(rows)
        tables[task] = summary
        header = ["Model", "Runs", *(h for _, h in columns), "Parameters"]
        body = [[r.label, str(len(r.runs)), *(fmt(k.split(".")[-1], *r.stats[k]) for k, _ in columns), fmt_params(r.parameters)] for r in summary]  # fmt: skip
        md += [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(cells) + " |" for cells in body]
        md += [
            "",
            "Runs: "
            + "; ".join(f"{r.label}: " + ", ".join(f"`{run.path}`" for run in r.runs) for r in summary),
            "",
        ]
        page.append(
            f"<h2>{html.escape(task)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr>"
        )
        page += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body]
        page.append("</table>")
        if plots:
            for caption, data in plot_task(summary, out_dir, f"comparison_{_slug(task)}"):
                page.append(
                    f"<figure><img src='data:image/png;base64,{data}' style='max-width:100%'><figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        for r in summary:
            entry = {"task": task, "model": r.label, "runs": len(r.runs), "parameters": r.parameters}
            for key, _ in columns:
                entry[f"{key}_mean"], entry[f"{key}_std"] = r.stats[key]
            csv_rows.append(entry)
    page.append("</body></html>")
    (out_dir / "comparison.md").write_text("\n".join(md))
    (out_dir / "comparison.html").write_text("\n".join(page))
    fieldnames = list(dict.fromkeys(k for row in csv_rows for k in row))
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(csv_rows)
    return tables
