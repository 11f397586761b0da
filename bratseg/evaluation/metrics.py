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
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from bratseg.data.labels import ED, NCR, REGIONS, SCHEME_VALUES, LabelScheme
from bratseg.data.layout import modality_of
from bratseg.errors import BratsegError, InvalidCaseError

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

SCHEME_CHOICES = ("auto", "brats2020", "brats2023")
_INTEGER_TOLERANCE = 1e-3  # as bratseg.data.labels.to_internal


class EvaluationError(BratsegError):
    """Predictions and references cannot be evaluated together (nothing pairs up, mismatched
    arrays, contradictory options)."""


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
    box = _bounding_box(pred | ref, margin=1)
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


def resolve_scheme(values: Iterable[int], requested: str = "auto", path: str | Path | None = None) -> LabelScheme:
    """The label scheme of a label map holding ``values``.

    ``requested`` other than ``"auto"`` wins. ``"auto"`` uses the file name when it follows a
    BraTS convention (``*_seg`` -> brats2020, ``*-seg`` -> brats2023), otherwise the values: a 4
    means brats2020, a 3 without a 4 brats2023; with only 0/1/2 both schemes give the same
    labels (brats2020 is returned). A 3 and a 4 together fit neither scheme.

    Example:
        >>> resolve_scheme([0, 1, 2, 3]), resolve_scheme([0, 2, 4]), resolve_scheme([0], path="X-seg.nii.gz")
        ('brats2023', 'brats2020', 'brats2023')
    """
    if requested not in SCHEME_CHOICES:
        raise EvaluationError(f"unknown label scheme {requested!r}; choose one of {list(SCHEME_CHOICES)}")
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if path is not None and (hit := modality_of(path)) is not None and hit[0] == "seg":
        return hit[1]
    present = {int(v) for v in values}
    if 3 in present and 4 in present:
        raise InvalidCaseError(
            path,
            "holds both labels 3 and 4, which fits neither BraTS 2020 (0/1/2/4) nor BraTS 2023 (0/1/2/3); "
            "set the scheme with --ref-scheme / --pred-scheme if one is meant",
        )
    return "brats2023" if 3 in present else "brats2020"


def to_internal_labels(
    seg: np.ndarray, scheme: str = "auto", path: str | Path | None = None
) -> tuple[np.ndarray, LabelScheme]:
    """An on-disk label map as internal labels 0..3 (uint8) and the scheme it was read with.

    Raises :class:`InvalidCaseError` (naming ``path``) for non-integer values or values outside
    the scheme. Unlike :func:`bratseg.data.labels.to_internal` it inspects the bounding box of
    the non-zero voxels only, seconds less per 512 x 512 x 176 map.

    Example:
        >>> import numpy as np
        >>> labels, scheme = to_internal_labels(np.array([0, 1, 2, 3], np.float32))
        >>> labels.tolist(), scheme
        ([0, 1, 2, 3], 'brats2023')
    """
    seg = np.asarray(seg)
    # Background is most of a volume and trivially valid: check and map the tumour's box only.
    box = _bounding_box(seg != 0)
    inner = seg[box] if box is not None else np.zeros(0, seg.dtype)
    if inner.dtype.kind == "f":
        rounded = np.rint(inner)
        # Float storage may carry rounding error (3.9999998); real fractions mean a label map
        # resampled with interpolation, whose rounding would invent classes at tumour borders.
        fractional = ~(np.abs(inner - rounded) <= _INTEGER_TOLERANCE)  # NaN counts as fractional
        if fractional.any():
            example = float(inner[fractional][0])
            raise InvalidCaseError(
                path, f"holds non-integer values (e.g. {example:g}): not a label map (resampled with interpolation?)"
            )
        inner = rounded
    if not inner.size or (inner.min() >= 0 and inner.max() <= 255):
        inner = inner.astype(np.uint8)
        present = np.flatnonzero(np.bincount(inner.ravel(), minlength=1)).tolist()
    else:
        present = [int(v) for v in np.unique(inner)]
    if inner.size < seg.size and 0 not in present:
        present = [0, *present]
    chosen = resolve_scheme(present, scheme, path)
    allowed = SCHEME_VALUES[chosen]
    bad = sorted(set(present) - set(allowed))
    if bad:
        hint = (
            "chosen from the file name or values; set it with --ref-scheme / --pred-scheme"
            if scheme == "auto"
            else "as requested"
        )
        raise InvalidCaseError(path, f"label values {bad[:10]} are not in the {chosen} scheme {list(allowed)} ({hint})")
    lut = np.zeros(256, dtype=np.uint8)
    for internal, on_disk in enumerate(allowed):
        lut[on_disk] = internal
    labels = np.zeros(seg.shape, dtype=np.uint8)
    if box is not None:
        labels[box] = lut[inner]
    return labels, chosen


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
    box = _bounding_box((pred > 0) | (ref > 0), margin=1)
    if box is not None:
        pred, ref = pred[box], ref[box]
    return {
        name: binary_metrics(np.isin(pred, members), np.isin(ref, members), spacing, total_voxels=total)
        for name, members in STRUCTURES.items()
    }


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding ``mask``'s True voxels, grown by ``margin`` and
    clipped to the array; None when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)
