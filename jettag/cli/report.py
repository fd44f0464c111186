"""jettag-report: one comparison table per task over runs (a sweep, or any run directories).

    jettag-report multirun/2026-11-25/10-00-00
    jettag-report runs/part_seed* runs/pfn_seed* -o tables/

Writes comparison.md, comparison.csv and comparison.html (tables, overlaid rejection curves and
score histograms, self-contained) into the output directory (default: the first directory given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jettag.errors import JetTagError
from jettag.evaluation.compare import fmt, write_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jettag-report",
        description="Gather the runs under DIRS into one table per task: model, accuracy, AUC, Rej50, Rej30 as "
        "mean ± sample std (ddof=1) over the runs of each row (seeds), and the parameter count.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, sweep directories, or above")
    parser.add_argument(
        "-o", "--output", help="where to write comparison.{md,csv,html} (default: the first DIR)"
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only (no predictions.root read)")
    args = parser.parse_args(argv)
    output = Path(args.output or args.dirs[0])
    try:
        tables = write_comparison(args.dirs, output, plots=not args.no_plots)
    except JetTagError as err:
        print(f"jettag-report: error: {err}", file=sys.stderr)
        return 2
    for task, rows in tables.items():
        print(f"{task}:")
        for row in rows:
            print(f"  {row.label:30s} {len(row.runs)} runs  AUC {fmt('auc', *row.stats['auc'])}  "
                  f"Rej50 {fmt('rej50', *row.stats['rej50'])}")  # fmt: skip
    print(f"written: {output / 'comparison.md'}, comparison.csv, comparison.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
