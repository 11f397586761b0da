"""Learning curves of cross-validation runs: held-out slice Dice against training steps.

    python bench/learning_curve.py runs/screen3_e10 runs/screen3_e30 [--plot outputs/learning_curve.png]

Each run folder holds ``fold_K/metrics.jsonl`` (one line per epoch, as ``bratseg train``
writes it). For every run it prints, per epoch, the validation slice Dice of WT, TC and ET
averaged over the folds that reached that epoch (each fold validates on its own held-out
cases), with the training steps so far, so that runs of different lengths can be compared
at equal steps. Runs with ``ema_decay`` validate their averaged weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REGIONS = ("WT", "TC", "ET")


def fold_histories(run: Path) -> list[list[dict]]:
    """Each fold's epoch records, in epoch order."""
    histories = []
    for path in sorted(run.glob("fold_*/metrics.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if records:
            histories.append(sorted(records, key=lambda r: r["epoch"]))
    return histories


def curve(histories: list[list[dict]], batch_size: int) -> list[dict]:
    """Per epoch: steps so far, the folds that reached it, and their mean Dice per region.

    Example:
        >>> a = [{"epoch": 1, "train_slices": 32, "dice_WT": 0.5, "dice_TC": 0.4, "dice_ET": 0.3}]
        >>> b = [{"epoch": 1, "train_slices": 32, "dice_WT": 0.7, "dice_TC": 0.6, "dice_ET": 0.5}]
        >>> row = curve([a, b], batch_size=16)[0]
        >>> row["steps"], row["folds"], round(row["WT"], 2), round(row["mean"], 2)
        (2, 2, 0.6, 0.5)
    """
    rows = []
    longest = max(histories, key=len)  # the steps so far, from a fold that reached every epoch
    steps = 0
    for epoch in range(1, len(longest) + 1):
        records = [h[epoch - 1] for h in histories if len(h) >= epoch]
        steps += longest[epoch - 1]["train_slices"] // batch_size
        row = {"epoch": epoch, "steps": steps, "folds": len(records)}
        for region in REGIONS:
            row[region] = statistics.mean(r[f"dice_{region}"] for r in records)
        row["mean"] = statistics.mean(row[r] for r in REGIONS)
        rows.append(row)
    return rows


def _batch_size(run: Path) -> int:
    for config in sorted(run.glob("fold_*/train_config.json")):
        return int(json.loads(config.read_text())["batch_size"])
    return 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--plot", type=Path, help="write the curves (mean Dice against steps) as a PNG")
    args = parser.parse_args()
    curves = {}
    for run in args.runs:
        histories = fold_histories(run)
        if not histories:
            sys.exit(f"{run}: no fold_*/metrics.jsonl")
        curves[run.name] = curve(histories, _batch_size(run))
        print(f"\n### {run.name} ({len(histories)} folds)\n")
        print("| epoch | steps | folds | WT | TC | ET | mean |")
        print("|---|---|---|---|---|---|---|")
        for r in curves[run.name]:
            print(
                f"| {r['epoch']} | {r['steps']} | {r['folds']} | {r['WT']:.3f} | {r['TC']:.3f} | {r['ET']:.3f} "
                f"| {r['mean']:.3f} |"
            )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
        for ax, region in zip(axes, REGIONS):
            for name, rows in curves.items():
                ax.plot([r["steps"] for r in rows], [r[region] for r in rows], marker=".", label=name)
            ax.set_title(f"{region}: held-out slice Dice")
            ax.set_xlabel("training steps")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
