"""Per-case extras of a batch prediction: files written beside each label map, such as the
uncertainty map of ``bratseg predict --uncertainty``.

An extra names its file from the label map's path (so that it can be checked before the model
loads, and a rerun can tell whether it was written) and writes it from the case's prediction.
It is called on the writer thread after the label map is written; an error in it fails that
case. Extras that draw (``--figures``) are assembled by the front end that asks for them
(:mod:`bratseg.cli.predict`), since drawing belongs to :mod:`bratseg.reporting`.

Example:
    >>> from pathlib import Path
    >>> UNCERTAINTY.path(Path("out/Brats18_X.NII.GZ"))
    PosixPath('out/Brats18_X_uncertainty.NII.GZ')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.layout import nifti_stem

if TYPE_CHECKING:
    from bratseg.inference.prediction import Prediction


@dataclass(frozen=True)
class CaseExtra:
    """A file written beside each label map.

    Attributes:
        path: the extra's file for a label map's path.
        write: writes it from the case's prediction, to the path ``path`` gave.
    """

    path: Callable[[Path], Path]
    write: Callable[[Prediction, Path], None]


def uncertainty_path(label_map: Path) -> Path:
    """``seg.nii.gz`` -> ``seg_uncertainty.nii.gz`` (the suffix's letter case kept)."""
    stem = nifti_stem(label_map) or label_map.name
    return label_map.with_name(f"{stem}_uncertainty{label_map.name[len(stem) :]}")


def _write_uncertainty(prediction: Prediction, path: Path) -> None:
    from bratseg.inference.confidence import save_uncertainty

    # On the label map's own (patient) grid, as the web front ends show it: a native-path
    # case's map is pulled back from BraTS space.
    save_uncertainty(prediction.on_patient_grid(), path)


UNCERTAINTY = CaseExtra(uncertainty_path, _write_uncertainty)
"""The per-voxel uncertainty map, ``<label map name>_uncertainty.nii.gz``."""


def extra_paths(extras: list[CaseExtra] | tuple[CaseExtra, ...], label_map: Path) -> list[Path]:
    """The files ``extras`` write beside ``label_map``, in order."""
    return [extra.path(label_map) for extra in extras]
