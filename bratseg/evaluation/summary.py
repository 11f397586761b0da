"""The report of an :class:`~bratseg.evaluation.scores.Evaluation` (what ``bratseg evaluate``
writes): the summary table and the report files.

Report files in the output folder, each written atomically:

* ``metrics.csv``: one row per case and structure (WT, TC, ET, NCR, ED; ``labels`` gives its
  BraTS 2020 values, so NCR, ED and ET rows are the per-label scores of labels 1, 2 and 4) with
  dice, iou, hd95 (mm), sensitivity, specificity, ref_ml and pred_ml (volumes in mL);
* ``cases.csv``: the files, label schemes, shape and voxel spacing of each case;
* ``missing.csv``: cases with a prediction but no reference or the reverse;
* ``summary.csv`` (n, mean, std, median, q25, q75 per structure and metric; std with n - 1)
  and ``summary.md`` (the table also printed to stdout);
* ``boxplot.png``: Dice and HD95 per structure.

Example:
    >>> from bratseg.evaluation import evaluate_folder, write_report
    >>> evaluation = evaluate_folder("predictions/", "BraTS2020_TrainingData/")  # doctest: +SKIP
    >>> write_report(evaluation, "report/")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bratseg.data.io import atomic_write_bytes
from bratseg.evaluation.metrics import HD95_EMPTY, METRICS, STRUCTURE_LABELS, STRUCTURES, EvaluationError
from bratseg.evaluation.scores import VOLUME_COLUMNS, Evaluation

STATISTICS = ("n", "mean", "std", "median", "q25", "q75")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, ".6g")
    return str(value)


def _csv_text(header: Sequence[str], rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_fmt(row[h]) for h in header])
    return buf.getvalue()


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "hd95": "HD95 (mm)",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}


def summary_table(evaluation: Evaluation) -> str:
    """Markdown table: one row per structure, ``mean ± std (median)`` per metric."""
    stats = {(s["region"], s["metric"]): s for s in evaluation.summary()}
    lines = [
        "| region (labels) | " + " | ".join(_TITLES[m] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name in STRUCTURES:
        cells = []
        for metric in METRICS:
            s = stats[(name, metric)]
            digits = 2 if metric == "hd95" else 3 if metric != "specificity" else 4
            std = "n/a" if math.isnan(s["std"]) else f"{s['std']:.{digits}f}"
            cells.append(f"{s['mean']:.{digits}f} ± {std} ({s['median']:.{digits}f})")
        lines.append(f"| {name} ({STRUCTURE_LABELS[name]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_markdown(evaluation: Evaluation) -> str:
    n = len(evaluation.results)
    schemes = sorted({f"{r.ref_scheme} references, {r.pred_scheme} predictions" for r in evaluation.results})
    parts = [
        f"# Segmentation metrics: {n} case{'s' if n != 1 else ''}",
        "",
        "Cells are mean ± standard deviation (median) over cases. Labels are BraTS 2020 values "
        "(BraTS 2023 files: enhancing = 3). Label schemes: " + "; ".join(schemes) + ".",
        "",
        summary_table(evaluation),
        "",
        "Conventions: both masks empty gives Dice 1 and HD95 0; exactly one empty gives Dice 0 and "
        f"HD95 {HD95_EMPTY} mm. HD95 is the larger of the two directed 95th percentiles of the "
        "distances (mm, voxel spacing from the reference header) between the surface voxels of the "
        "two masks (MONAI's compute_hausdorff_distance). Per-case values: metrics.csv.",
    ]
    if evaluation.missing_pred or evaluation.missing_ref:
        parts += ["", "## Not evaluated", ""]
        parts += [f"- {c}: no prediction (reference {p.name})" for c, p in evaluation.missing_pred]
        parts += [f"- {c}: no reference (prediction {p.name})" for c, p in evaluation.missing_ref]
    return "\n".join(parts) + "\n"


def _boxplot(evaluation: Evaluation, path: Path) -> None:
    # A bare Figure on the Agg canvas: no pyplot state, no GUI backend, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(STRUCTURES)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, metric in zip(fig.subplots(1, 2), ("dice", "hd95")):
        data = [evaluation.values(name, metric) for name in names]
        ax.boxplot(data, tick_labels=[f"{n}\n({STRUCTURE_LABELS[n]})" for n in names], showmeans=True, showfliers=False)
        for i, values in enumerate(data, start=1):
            # Every case as a dot too: with a handful of cases the boxes alone mislead.
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + offsets, values, s=10, alpha=0.6, color="tab:blue", zorder=3)
        ax.set_title(_TITLES[metric] + " per region")
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].set_ylim(-0.02, 1.02)
    fig.axes[1].set_ylabel(f"mm ({HD95_EMPTY} = one mask empty)")
    fig.suptitle(f"{len(evaluation.results)} cases (box: quartiles, line: median, triangle: mean, dots: cases)")

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=100)

    atomic_write_bytes(path, write)


def write_report(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """Write the report files (see the module docstring) into ``out_dir``; returns their paths
    by name (``metrics``, ``cases``, ``missing``, ``summary_csv``, ``summary_md``, ``boxplot``)."""
    if not evaluation.results:
        raise EvaluationError("no case was evaluated: nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.csv",
        "cases": out / "cases.csv",
        "missing": out / "missing.csv",
        "summary_csv": out / "summary.csv",
        "summary_md": out / "summary.md",
        "boxplot": out / "boxplot.png",
    }
    _write_text(paths["metrics"], _csv_text(("case", "region", "labels", *METRICS, *VOLUME_COLUMNS), evaluation.rows()))
    cases = [
        {
            "case": r.case_id,
            "pred": str(r.pred),
            "ref": str(r.ref),
            "pred_scheme": r.pred_scheme,
            "ref_scheme": r.ref_scheme,
            "shape": "x".join(map(str, r.shape)),
            "spacing_mm": "x".join(format(s, "g") for s in r.spacing),
        }
        for r in evaluation.results
    ]
    _write_text(
        paths["cases"], _csv_text(("case", "pred", "ref", "pred_scheme", "ref_scheme", "shape", "spacing_mm"), cases)
    )
    missing = [{"case": c, "missing": "prediction", "file": str(p)} for c, p in evaluation.missing_pred]
    missing += [{"case": c, "missing": "reference", "file": str(p)} for c, p in evaluation.missing_ref]
    _write_text(paths["missing"], _csv_text(("case", "missing", "file"), missing))
    _write_text(paths["summary_csv"], _csv_text(("region", "metric", *STATISTICS), evaluation.summary()))
    _write_text(paths["summary_md"], _summary_markdown(evaluation))
    _boxplot(evaluation, paths["boxplot"])
    return paths
