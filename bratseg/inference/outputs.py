"""Where ``bratseg predict`` writes, checked before the model loads, and what it leaves there.

- :func:`check_targets` refuses, with one line naming the file, an output that *is* one of the
  inputs (same resolved path or same inode, so a hard link or a symbolic link counts), an
  output folder that cannot be written (probed by creating a file there: ``os.access`` says
  yes to root on a read-only file system), and an existing file that bratseg did not write
  (replaced only with ``--overwrite``).
- Each label map carries its own :class:`CaseRecord` (region volumes, prediction time, model,
  settings, warnings) as a NIfTI comment extension, written with it in one atomic file. A
  rerun skips a case whose label map holds a record of the same model and settings on the
  input's grid (:func:`existing_status`); a run killed part way therefore loses at most the
  case in flight, and ``volumes.csv`` is rebuilt from the records of every case at the end
  (:func:`write_volumes_table`), whichever process or run wrote them.
- The record also carries the label map's RANO measurement (:mod:`bratseg.measurement`): the
  sum of products of perpendicular diameters of its target lesions (``spd_mm2``, a column of
  ``volumes.csv``) and how many target lesions it sums, measured by :func:`attach_record` on
  the label map itself, on the grid it is written on.

Example:
    >>> import pathlib, tempfile
    >>> record = CaseRecord("Brats18_X", {"whole tumour": 12.5}, 1.2, "m", "sha256:0", {"tta": False})
    >>> table = write_volumes_table(pathlib.Path(tempfile.mkdtemp()) / "volumes.csv", [record])
    >>> table.read_text().splitlines()[0].split(",")[:3]
    ['case', 'whole_tumour_cm3', 'tumour_core_cm3']
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import BratsegError, OutputError

if TYPE_CHECKING:
    import nibabel as nib

    from bratseg.data.layout import Case

RECORD_KEY = "bratseg_prediction"
RECORD_FORMAT = 1
_COMMENT_EXTENSION = 6  # NIfTI-1 extension code "comment"
VOLUME_COLUMNS = ("whole tumour", "tumour core", "enhancing tumour", "necrotic core", "edema")
TABLE_NAME = "volumes.csv"


@dataclass
class CaseRecord:
    """What a label map records about its own prediction (one row of ``volumes.csv``)."""

    case: str
    volumes_cm3: dict[str, float]
    seconds: float
    model: str
    model_version: str
    settings: dict
    warnings: list[str] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)
    rank: int = 0
    confidence: float | None = None  # bratseg.inference.confidence's case score
    low_confidence: bool | None = None  # below the predicting model's threshold
    spd_mm2: float | None = None  # RANO sum of products of perpendicular diameters (None: not measured)
    target_lesions: int | None = None  # how many lesions (at most 3) that sum holds

    def to_json(self) -> bytes:
        return json.dumps({RECORD_KEY: {"format": RECORD_FORMAT, **asdict(self)}}).encode()

    @classmethod
    def from_json(cls, content: bytes) -> CaseRecord | None:
        """The record in an extension's content, or None when it holds none of ours."""
        try:
            body = json.loads(content.decode()).get(RECORD_KEY)
        except (ValueError, UnicodeDecodeError, AttributeError):
            return None
        if not isinstance(body, dict) or body.pop("format", None) != RECORD_FORMAT:
            return None
        try:
            return cls(**body)
        except TypeError:
            return None


def attach_record(img: nib.Nifti1Image, record: CaseRecord) -> nib.Nifti1Image:
    """Add ``record`` to ``img``'s header as a comment extension (replacing an earlier one).

    A record without a RANO measurement gets the one of ``img``'s labels (on ``img``'s own
    grid, as the label map is written); ``record`` itself is not changed. A label map that
    cannot be measured is still written, its measurement left empty."""
    from nibabel.nifti1 import Nifti1Extension

    if record.spd_mm2 is None:
        try:
            record = with_measurement(record, img)
        except Exception:  # noqa: BLE001 - the measurement is an extra: never lose the prediction for it
            logging.getLogger(__name__).exception("%s: the RANO measurement failed", record.case)
    extensions = img.header.extensions
    for ext in [e for e in extensions if _is_record(e)]:
        extensions.remove(ext)
    extensions.append(Nifti1Extension(_COMMENT_EXTENSION, record.to_json()))
    return img


def with_measurement(record: CaseRecord, img: nib.Nifti1Image) -> CaseRecord:
    """A copy of ``record`` holding the RANO measurement of the label map ``img``."""
    import numpy as np

    from bratseg.measurement.rano import measure

    measurement = measure(np.asanyarray(img.dataobj), img.affine)
    targets = sum(1 for lesion in measurement.lesions if lesion.target)
    return replace(record, spd_mm2=round(float(measurement.spd_mm2), 3), target_lesions=targets)


def _is_record(extension) -> bool:
    return extension.get_code() == _COMMENT_EXTENSION and RECORD_KEY.encode() in extension.get_content()[:40]


def read_record(path: Path) -> CaseRecord | None:
    """The record of a label map bratseg wrote, or None (not NIfTI, unreadable, not ours).
    Only the header is read."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        extensions = list(img.header.extensions)
        shape = list(img.shape[:3])
    except Exception:  # any unreadable file is "not a label map of ours"
        return None
    for ext in extensions:
        if _is_record(ext):
            record = CaseRecord.from_json(ext.get_content())
            if record is not None and record.shape in ([], shape):
                return record
    return None


# --------------------------------------------------------------------------------------------
# Checks before the model loads
# --------------------------------------------------------------------------------------------


def input_files(case: Case | Path) -> list[Path]:
    """Every file a case reads (its images and label map), or [] when it cannot be listed
    (a bad case is reported when it is read)."""
    from bratseg.data.layout import case_from_folder

    if isinstance(case, Path):
        try:
            case = case_from_folder(case)
        except BratsegError:
            return []
    files = list(case.images.values())
    if case.label is not None:
        files.append(case.label)
    return files


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    try:
        st = path.stat()
        inode = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return os.path.realpath(path), inode


def check_not_an_input(targets: list[Path], inputs: list[Path]) -> None:
    """Raise :class:`OutputError` when an output path is one of the input files."""
    known = {}
    for path in inputs:
        real, inode = _identity(path)
        known[real] = path
        if inode is not None:
            known[inode] = path
    for target in targets:
        real, inode = _identity(target)
        hit = known.get(real) or (known.get(inode) if inode is not None else None)
        if hit is not None:
            raise OutputError(f"{target}: is the input {hit}; writing the label map there would destroy the scan")


def check_writable(targets: list[Path]) -> None:
    """Raise :class:`OutputError` for an output that cannot be created: its folder (or the
    nearest folder that exists above it) is a file or refuses a new file."""
    probed: set[Path] = set()
    for target in targets:
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; give a file name ending in .nii.gz or .nii")
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder in probed:
            continue
        if not folder.is_dir():
            raise OutputError(f"{target}: cannot be written: {folder} is a file, not a folder")
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".bratseg-write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{target}: cannot be written: {folder} refuses new files ({exc.strerror})") from None
        probed.add(folder)


def check_foreign(targets: list[Path], overwrite: bool) -> None:
    """Raise :class:`OutputError` for an existing output that bratseg did not write, unless
    ``overwrite``: a rerun replaces its own label maps, never someone else's file."""
    if overwrite:
        return
    foreign = [t for t in targets if t.exists() and read_record(t) is None]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(
            f"{foreign[0]}{more}: exists and is not a label map written by bratseg predict; "
            "give --overwrite to replace it, or another --output"
        )


def check_targets(targets: list[Path], inputs: list[Path], overwrite: bool) -> None:
    """Every check of this module that can be made before the model loads."""
    check_not_an_input(targets, inputs)
    check_writable(targets)
    check_foreign(targets, overwrite)


def existing_status(target: Path, shape: tuple[int, ...] | None, model_version: str, settings: dict) -> str:
    """``missing``, ``done`` (a label map of this model and settings on the input's grid:
    skipped on a rerun) or ``stale`` (ours, but another model, settings or grid: redone)."""
    if not target.exists():
        return "missing"
    record = read_record(target)
    if record is None:
        return "stale"
    same_grid = shape is None or list(shape) == record.shape
    current = record.model_version == model_version and record.settings == settings
    return "done" if same_grid and current else "stale"


def input_shape(case: Case | Path) -> tuple[int, ...] | None:
    """The grid of a case's first image, from its header alone (None when unreadable)."""
    import nibabel as nib

    files = input_files(case)
    if not files:
        return None
    try:
        return tuple(nib.load(str(files[0])).shape[:3])
    except Exception:  # the case's reader reports it properly
        return None


def remove_stale_temporaries(target: Path) -> None:
    """Remove what a killed run left of an atomic write of ``target`` (``.<name>.*.tmp``, and
    ``.<name>.*.tmp.nii.gz`` that nibabel writes first)."""
    try:
        leftovers = list(target.parent.glob(f".{target.name}.*.tmp*"))
    except OSError:
        return
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# volumes.csv
# --------------------------------------------------------------------------------------------


def _column(region: str) -> str:
    return region.replace(" ", "_") + "_cm3"


def table_header() -> list[str]:
    return [
        "case",
        *(_column(r) for r in VOLUME_COLUMNS),
        "spd_mm2",
        "target_lesions",
        "seconds",
        "confidence",
        "low_confidence",
        "model",
        "model_version",
        "warnings",
    ]


def write_volumes_table(path: Path, records: list[CaseRecord]) -> Path:
    """Write ``volumes.csv`` (one row per case, in the order given) atomically."""
    # records written before thresholds were per model: the default threshold
    from bratseg.inference.confidence import LOW_CONFIDENCE_THRESHOLD as threshold

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table_header())
    for r in records:
        volumes = [f"{r.volumes_cm3[v]:.3f}" if v in r.volumes_cm3 else "" for v in VOLUME_COLUMNS]
        low = r.low_confidence if r.low_confidence is not None else (r.confidence or 0) < threshold
        confidence = ["", ""] if r.confidence is None else [f"{r.confidence:.3f}", str(bool(low)).lower()]
        # Label maps written before records carried the measurement leave these cells empty.
        rano = ["", ""] if r.spd_mm2 is None else [f"{r.spd_mm2:.1f}", str(r.target_lesions)]
        writer.writerow(
            [r.case, *volumes, *rano, f"{r.seconds:.2f}", *confidence, r.model, r.model_version, " | ".join(r.warnings)]
        )
    atomic_write_bytes(path, lambda tmp: tmp.write_text(buffer.getvalue()))
    return path
