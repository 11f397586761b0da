"""Pair prediction and reference label maps and score them: :class:`CaseResult` per case,
:class:`Evaluation` for a set.

Pairing is :mod:`bratseg.evaluation.pairing` (:func:`match_pairs`, by case id); the metrics are
:mod:`bratseg.evaluation.metrics`; the report files :mod:`bratseg.evaluation.summary`.

Example:
    >>> from bratseg.evaluation import evaluate_folder, write_report
    >>> evaluation = evaluate_folder("predictions/", "BraTS2020_TrainingData/")  # doctest: +SKIP
    >>> write_report(evaluation, "report/")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import load_volume
from bratseg.data.label_schemes import to_internal_labels
from bratseg.errors import InvalidCaseError
from bratseg.evaluation.metrics import METRICS, STRUCTURE_LABELS, STRUCTURES, evaluate_internal
from bratseg.evaluation.pairing import Pairing, case_id_of, match_pairs

_AFFINE_TOLERANCE = 1e-3  # mm, as for the images of one case
VOLUME_COLUMNS = ("ref_ml", "pred_ml")  # the volumes each case's metrics carry too


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
