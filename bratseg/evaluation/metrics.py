"""BraTS segmentation metrics on label arrays: Dice, IoU, HD95, sensitivity, specificity.

Structures evaluated (as BraTS 2020 label values; BraTS 2023 files use 3 for enhancing):

* regions ``WT`` (1, 2, 4), ``TC`` (1, 4), ``ET`` (4), the BraTS ranking regions;
* single labels ``NCR`` (1, necrotic / non-enhancing core) and ``ED`` (2, edema), which with
  ``ET`` (label 4 alone) give the per-label scores of the three tumour classes.

Conventions, as in the BraTS evaluations:

* both masks empty: Dice 1, IoU 1, HD95 0 mm, sensitivity 1;
* exactly one mask empty: Dice 0, IoU 0, HD95 :data:`HD95_EMPTY` (373.13 mm, the diagonal of
  the 240 x 240 x 155 mm BraTS volume); sensitivity 0 when only the reference is empty
  (BraTS 2023 / GaNDLF rule);
* specificity is TN / (TN + FP) over the whole volume.

HD95 (:func:`hd95`) is the symmetric 95th-percentile Hausdorff distance in millimetres:
the surface of a mask is its voxels with a background 6-neighbour (mask minus its binary
erosion); for each surface voxel of one mask take the Euclidean distance, in mm with the
voxel spacing, to the nearest surface voxel of the other; HD95 is the larger of the two
directed 95th percentiles (linear interpolation). This is MONAI's
``compute_hausdorff_distance(percentile=95, directed=False)``, which computes it here.
Tools that weight surface elements by their area (``surface-distance``'s
``compute_robust_hausdorff``, used by the BraTS 2023 evaluation) can give values about a voxel
apart; a pooled percentile of both directions is another definition, never larger than this one.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((10, 10, 10), np.uint8); ref[2:6, 2:6, 2:6] = 4
    >>> pred = np.zeros_like(ref); pred[3:7, 2:6, 2:6] = 4
    >>> scores = evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0))
    >>> scores["WT"]["dice"], scores["WT"]["iou"], scores["NCR"]["dice"], scores["NCR"]["hd95"]
    (0.75, 0.6, 1.0, 0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from bratseg.data.geometry import bounding_box
from bratseg.data.label_schemes import to_internal_labels
from bratseg.data.labels import ED, NCR, REGIONS, SCHEME_VALUES
from bratseg.errors import EvaluationError

HD95_EMPTY = 373.13
"""HD95 (mm) when exactly one of the two masks is empty, as in the BraTS evaluations."""

# Structure -> internal labels (0 background, 1 NCR, 2 ED, 3 ET).
STRUCTURES: dict[str, tuple[int, ...]] = {**REGIONS, "NCR": (NCR,), "ED": (ED,)}
# Structure -> its BraTS 2020 label values, written beside each row of the report.
STRUCTURE_LABELS: dict[str, str] = {
    name: ",".join(str(SCHEME_VALUES["brats2020"][i]) for i in members) for name, members in STRUCTURES.items()
}
METRICS = ("dice", "iou", "hd95", "sensitivity", "specificity")
"""The scores of each structure; :func:`binary_metrics` adds the two volumes in mL."""


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two binary masks, in mm.

    ``spacing`` gives the voxel size along each array axis (default 1). Both masks empty
    gives 0, exactly one empty gives :data:`HD95_EMPTY`. The masks are cropped to the
    bounding box of their union (plus one voxel) before MONAI computes the surface distances:
    nothing outside it is foreground, so the result is the full volume's, in a fraction of the
    time.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((8, 8, 8), bool); a[2:6, 2:6, 1] = True
        >>> b = np.zeros_like(a); b[2:6, 2:6, 4] = True
        >>> hd95(a, b, spacing=(1.0, 1.0, 3.0))  # three slices of 3 mm apart
        9.0
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if not (has_pred and has_ref):
        return HD95_EMPTY
    box = bounding_box(pred | ref, margin=1)
    pred, ref = pred[box], ref[box]
    # Imported here: MONAI pulls in torch, which the rest of this module does not need.
    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        # MONAI 1.5+ warns about an argument its own code still passes internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(np.ascontiguousarray(pred)[None, None]),
            torch.from_numpy(np.ascontiguousarray(ref)[None, None]),
            include_background=True,
            percentile=95,
            directed=False,
            spacing=None if spacing is None else [float(s) for s in spacing],
        )
    return float(value[0, 0])


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    total_voxels: int | None = None,
) -> dict[str, float]:
    """Dice, IoU, HD95 (mm), sensitivity, specificity and the two volumes (mL) of two masks.

    ``total_voxels`` is the size of the whole volume when ``pred`` and ``ref`` are a crop of
    it (specificity counts the true negatives of the whole volume); default ``pred.size``.

    Example:
        >>> import numpy as np
        >>> ref = np.zeros((10, 10, 10), bool); ref[2:6, 2:6, 2:6] = True
        >>> pred = np.zeros_like(ref); pred[3:7, 2:6, 2:6] = True
        >>> m = binary_metrics(pred, ref)
        >>> m["dice"], m["iou"], m["sensitivity"], round(m["specificity"], 4), m["ref_ml"]
        (0.75, 0.6, 0.75, 0.9829, 0.064)
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    total = pred.size if total_voxels is None else int(total_voxels)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    tp = int(np.logical_and(pred, ref).sum())
    fp, fn = n_pred - tp, n_ref - tp
    tn = total - tp - fp - fn
    voxel_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else 1.0 / 1000.0
    if n_pred == 0 and n_ref == 0:
        dice = iou = sensitivity = 1.0
    else:
        dice = 2.0 * tp / (n_pred + n_ref)
        iou = tp / (tp + fp + fn)
        # An empty reference has nothing to find: BraTS 2023 scores a false alarm as 0.
        sensitivity = tp / n_ref if n_ref else 0.0
    specificity = tn / (tn + fp) if tn + fp else 1.0
    return {
        "dice": dice,
        "iou": iou,
        "hd95": hd95(pred, ref, spacing),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ref_ml": n_ref * voxel_ml,
        "pred_ml": n_pred * voxel_ml,
    }


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = (1.0, 1.0, 1.0),
    pred_scheme: str = "auto",
    ref_scheme: str = "auto",
) -> dict[str, dict[str, float]]:
    """Scores of one case: ``{structure: {metric: value}}`` for WT, TC, ET, NCR and ED.

    ``pred`` and ``ref`` are on-disk label maps (BraTS 2020 0/1/2/4 or 2023 0/1/2/3, see
    :func:`resolve_scheme`; ``"auto"`` decides by the values) of one shape; ``spacing`` is the
    voxel size in mm along the array axes. Metrics as in :func:`binary_metrics`.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    pred_int, _ = to_internal_labels(pred, pred_scheme)
    ref_int, _ = to_internal_labels(ref, ref_scheme)
    return evaluate_internal(pred_int, ref_int, spacing)


def evaluate_internal(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = (1.0, 1.0, 1.0)
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_case` on internal labels (0..3) of one shape."""
    if pred.shape != ref.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    total = pred.size
    # Every structure lies inside the box of the two tumours' union, so everything outside it is
    # background for all of them and cropping changes no surface or distance: crop once, and
    # keep the full volume's size for specificity's true negatives.
    box = bounding_box((pred > 0) | (ref > 0), margin=1)
    if box is not None:
        pred, ref = pred[box], ref[box]
    return {
        name: binary_metrics(np.isin(pred, members), np.isin(ref, members), spacing, total_voxels=total)
        for name, members in STRUCTURES.items()
    }
