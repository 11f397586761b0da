"""``bratseg evaluate``: pair prediction and reference label maps, score them, write a report.

Pairing is :mod:`bratseg.evaluation.pairing` (:func:`match_pairs`, by case id).

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

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import atomic_write_bytes, load_volume
from bratseg.data.label_schemes import to_internal_labels
from bratseg.errors import InvalidCaseError
from bratseg.evaluation.metrics import (
    HD95_EMPTY,
    METRICS,
    STRUCTURE_LABELS,
    STRUCTURES,
    EvaluationError,
    evaluate_internal,
)
from bratseg.evaluation.pairing import Pairing, case_id_of, match_pairs, pairs_in_folders, read_pairs_csv

_AFFINE_TOLERANCE = 1e-3  # mm, as for the images of one case
VOLUME_COLUMNS = ("ref_ml", "pred_ml")
STATISTICS = ("n", "mean", "std", "median", "q25", "q75")


@dataclass
class CaseResult:
    """Scores of one case: ``metrics[structure][metric]``, see :func:`evaluate_case`."""

    case_id: str
    pred: Path
    ref: Path
    pred_scheme: str
    ref_scheme: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    metrics: dict[str, dict[str, float]]


@dataclass
class Evaluation:
    """Every scored case, and the cases that had no partner."""

    results: list[CaseResult]
    missing_pred: list[tuple[str, Path]] = field(default_factory=list)
    missing_ref: list[tuple[str, Path]] = field(default_factory=list)

    def rows(self) -> list[dict[str, object]]:
        """One dict per case and structure, the rows of ``metrics.csv``."""
        return [
            {"case": r.case_id, "region": name, "labels": STRUCTURE_LABELS[name], **r.metrics[name]}
            for r in self.results
            for name in STRUCTURES
        ]

    def values(self, structure: str, metric: str) -> np.ndarray:
        """``metric`` of ``structure`` for every case, in case order."""
        return np.array([r.metrics[structure][metric] for r in self.results], dtype=np.float64)

    def summary(self) -> list[dict[str, object]]:
        """n, mean, std (n - 1), median and quartiles per structure and metric."""
        out = []
        for name in STRUCTURES:
            for metric in (*METRICS, *VOLUME_COLUMNS):
                v = self.values(name, metric)
                stats = {
                    "n": len(v),
                    "mean": float(v.mean()) if len(v) else math.nan,
                    "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                    "median": float(np.median(v)) if len(v) else math.nan,
                    "q25": float(np.percentile(v, 25)) if len(v) else math.nan,
                    "q75": float(np.percentile(v, 75)) if len(v) else math.nan,
                }
                out.append({"region": name, "metric": metric, **stats})
        return out


# ----------------------------------------------------------------------------- pairing


def evaluate_files(
    pred: str | Path,
    ref: str | Path,
    case_id: str | None = None,
    pred_scheme: str = "auto",
    ref_scheme: str = "auto",
) -> CaseResult:
    """Load a prediction and a reference label map and score them with the reference's voxel
    spacing.

    Raises :class:`InvalidCaseError` naming the files when they are unreadable, hold values
    outside their label scheme, or do not share shape and affine (voxel grid; a reference at
    origin 0 that differs in nothing else is taken as voxel-aligned, see :func:`_zero_origin_only`).
    """
    pred, ref = Path(pred), Path(ref)
    ref_vol = load_volume(ref)
    pred_vol = load_volume(pred)
    if pred_vol.data.shape != ref_vol.data.shape:
        raise InvalidCaseError(
            pred, f"shape {pred_vol.data.shape} differs from the reference {ref.name}'s {ref_vol.data.shape}"
        )
    if not np.allclose(pred_vol.affine, ref_vol.affine, atol=_AFFINE_TOLERANCE) and not _zero_origin_only(
        pred_vol.affine, ref_vol.affine
    ):
        raise InvalidCaseError(
            pred,
            f"affine differs from the reference {ref.name}'s: the label maps are not on the same voxel grid "
            f"({_grid(pred_vol.affine)} vs {_grid(ref_vol.affine)})",
        )
    ref_labels, ref_used = to_internal_labels(ref_vol.data, ref_scheme, ref)
    pred_labels, pred_used = to_internal_labels(pred_vol.data, pred_scheme, pred)
    spacing = tuple(float(z) for z in ref_vol.header.get_zooms()[:3])
    return CaseResult(
        case_id or case_id_of(ref),
        pred,
        ref,
        pred_used,
        ref_used,
        tuple(ref_vol.data.shape),
        spacing,
        evaluate_internal(pred_labels, ref_labels, spacing),
    )


def _zero_origin_only(pred_affine: np.ndarray, ref_affine: np.ndarray) -> bool:
    """The one difference tolerated: a reference label map at origin 0 with the prediction's
    orientation and voxel size. Some BraTS 2017 label files carry a zero origin while their
    images (and so a prediction from them) carry the real one, voxel-aligned all the same, as
    :func:`bratseg.data.io.load_case` accepts for a case's own label."""
    same_axes = np.allclose(pred_affine[:3, :3], ref_affine[:3, :3], atol=_AFFINE_TOLERANCE)
    return bool(same_axes and np.allclose(ref_affine[:3, 3], 0.0, atol=_AFFINE_TOLERANCE))


def _grid(affine: np.ndarray) -> str:
    """Orientation, voxel size and origin of an affine, for error messages."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    origin = ", ".join(f"{v:.1f}" for v in affine[:3, 3])
    return f"{''.join(nib.aff2axcodes(affine))} {'x'.join(f'{z:.4g}' for z in zooms)} mm, origin ({origin})"


def evaluate_pairs(
    pairing: Pairing,
    pred_scheme: str = "auto",
    ref_scheme: str = "auto",
    progress: Callable[[int, int, CaseResult], None] | None = None,
) -> Evaluation:
    """Score every pair of ``pairing``; ``progress(i, n, result)`` is called after each case."""
    results = []
    for i, pair in enumerate(pairing.pairs, start=1):
        result = evaluate_files(pair.pred, pair.ref, pair.case_id, pred_scheme, ref_scheme)
        results.append(result)
        if progress is not None:
            progress(i, len(pairing.pairs), result)
    return Evaluation(results, list(pairing.missing_pred), list(pairing.missing_ref))


def evaluate_folder(
    pred: str | Path,
    ref: str | Path,
    pred_scheme: str = "auto",
    ref_scheme: str = "auto",
    progress: Callable[[int, int, CaseResult], None] | None = None,
) -> Evaluation:
    """:func:`match_pairs` then :func:`evaluate_pairs`: score a prediction (folder) against a
    reference (folder)."""
    return evaluate_pairs(match_pairs(pred, ref), pred_scheme, ref_scheme, progress)


# ----------------------------------------------------------------------------- report


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


# ----------------------------------------------------------------------------- CLI


def _pairing_from_args(args: argparse.Namespace) -> Pairing:
    pred, ref = getattr(args, "pred", None), getattr(args, "ref", None)
    pairs, in_folders = getattr(args, "pairs", None), getattr(args, "pairs_in_folders", None)
    modes = [
        name
        for name, given in (
            ("--pred/--ref", pred is not None or ref is not None),
            ("--pairs", pairs is not None),
            ("--pairs-in-folders", in_folders is not None),
        )
        if given
    ]
    if len(modes) != 1:
        got = f" (got {' and '.join(modes)})" if modes else ""
        raise EvaluationError(f"give either --pred and --ref, or --pairs CSV, or --pairs-in-folders DIR{got}")
    if pairs is not None:
        return read_pairs_csv(pairs)
    if in_folders is not None:
        return pairs_in_folders(in_folders)
    if pred is None or ref is None:
        raise EvaluationError("--pred and --ref go together: give both")
    return match_pairs(pred, ref)


def run_evaluate(args: argparse.Namespace) -> Evaluation:
    """The ``bratseg evaluate`` command: pair, score, write the report, print the summary."""
    pairing = _pairing_from_args(args)
    for case_id, path in pairing.missing_pred:
        print(f"warning: {case_id}: no prediction for reference {path.name}; not evaluated", file=sys.stderr)
    for case_id, path in pairing.missing_ref:
        print(f"warning: {case_id}: no reference for prediction {path.name}; not evaluated", file=sys.stderr)

    def progress(i: int, n: int, result: CaseResult) -> None:
        wt = result.metrics["WT"]
        print(f"[{i}/{n}] {result.case_id}: WT Dice {wt['dice']:.3f}, HD95 {wt['hd95']:.2f} mm", file=sys.stderr)

    evaluation = evaluate_pairs(
        pairing, getattr(args, "pred_scheme", "auto"), getattr(args, "ref_scheme", "auto"), progress
    )
    paths = write_report(evaluation, args.out)
    print(summary_table(evaluation))
    missing = len(evaluation.missing_pred) + len(evaluation.missing_ref)
    note = f"; {missing} unpaired case(s) listed in {paths['missing'].name}" if missing else ""
    print(f"{len(evaluation.results)} case(s) evaluated; report written to {Path(args.out)}{note}")
    return evaluation
