"""Side by side: the per-case Dice of several cross-validation reports (``bratseg evaluate``'s
``metrics.csv``), as the Markdown tables of BENCHMARKS.md ("Model v2").

    python bench/cv_table.py light=outputs/screen27_light/report ctx1=outputs/screen27_light_ctx1/report

Prints one table of WT / TC / ET Dice per case and configuration (cases every report scored),
then the mean and median of each, the number of cases with WT Dice under 0.6, and, for the
first two configurations, how many cases each wins on WT.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

REGIONS = ("WT", "TC", "ET")


def read_report(folder: Path) -> dict[str, dict[str, float]]:
    """``{case: {region: dice}}`` from a report folder's metrics.csv."""
    path = folder / "metrics.csv"
    if not path.is_file():
        sys.exit(f"{path}: not found (run bratseg evaluate first)")
    scores: dict[str, dict[str, float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["region"] in REGIONS:
                scores.setdefault(row["case"], {})[row["region"]] = float(row["dice"])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="NAME=REPORT_DIR")
    args = parser.parse_args()
    reports = {}
    for item in args.reports:
        name, _, folder = item.partition("=")
        if not folder:
            sys.exit(f"{item}: give NAME=REPORT_DIR")
        reports[name] = read_report(Path(folder))
    cases = sorted(set.intersection(*(set(r) for r in reports.values())))
    names = list(reports)
    header = "| case | " + " | ".join(f"{n} WT / TC / ET" for n in names) + " |"
    print(header)
    print("|---|" + "---|" * len(names))
    for case in cases:
        cells = [" / ".join(f"{reports[n][case][r]:.3f}" for r in REGIONS) for n in names]
        print(f"| {case} | " + " | ".join(cells) + " |")
    print()
    print("| configuration | cases | WT mean (median) | TC mean (median) | ET mean (median) | WT < 0.6 |")
    print("|---|---|---|---|---|---|")
    for n in names:
        cells = []
        for r in REGIONS:
            values = [reports[n][c][r] for c in cases]
            cells.append(f"{statistics.fmean(values):.3f} ({statistics.median(values):.3f})")
        poor = sum(reports[n][c]["WT"] < 0.6 for c in cases)
        print(f"| {n} | {len(cases)} | " + " | ".join(cells) + f" | {poor} |")
    if len(names) >= 2:
        a, b = names[:2]
        wins = sum(reports[a][c]["WT"] > reports[b][c]["WT"] for c in cases)
        print(f"\nWT: {a} better on {wins} of {len(cases)} cases, {b} on {len(cases) - wins}.")


if __name__ == "__main__":
    main()
