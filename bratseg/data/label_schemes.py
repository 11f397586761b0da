"""Label maps as stored on disk, read into the internal labels: which scheme a file uses (BraTS
2017-2020's 0/1/2/4 or 2023's 0/1/2/3, from its name or its values) and its conversion.

Shared by ``bratseg evaluate``, ``bratseg measure``, ``bratseg report --seg`` and the follow-up's
given label maps, so that a file is read the same way by each.

Example:
    >>> import numpy as np
    >>> labels, scheme = to_internal_labels(np.array([0, 1, 2, 4], np.uint8))
    >>> labels.tolist(), scheme
    ([0, 1, 2, 3], 'brats2020')
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bratseg.data.geometry import bounding_box
from bratseg.data.labels import SCHEME_VALUES, LabelScheme
from bratseg.data.layout import modality_of
from bratseg.errors import EvaluationError, InvalidCaseError

SCHEME_CHOICES = ("auto", "brats2020", "brats2023")
"""What a ``--scheme`` option takes: a scheme, or ``auto`` to tell it from the file."""
_INTEGER_TOLERANCE = 1e-3  # as bratseg.data.labels.to_internal


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
    box = bounding_box(seg != 0)
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
