"""DICOM studies: a folder (or zip) of series, one subfolder per series or all files mixed.

Files are grouped by SeriesInstanceUID (pydicom reads the headers only); each series is read by
SimpleITK (GDCM), whose geometry comes from ImagePositionPatient / ImageOrientationPatient,
including enhanced multi-frame files (per-frame functional groups). The sequence of each series
is guessed from SeriesDescription, ProtocolName and SequenceName, then from the sequence tags
(ScanningSequence, InversionTime, EchoTime, RepetitionTime, ContrastBolusAgent); the guess and
its basis are reported and can be overridden. The series of one case must share PatientID and
StudyInstanceUID (unless each is named), and each series' slices must be evenly spaced (no
slice missing or repeated): dcm2niix warns about both; a reader that stacks such slices as a
regular volume puts anatomy at the wrong place.

Example:
    >>> guess_sequence({"SeriesDescription": "AX T1 POST GAD"})
    ('t1ce', "SeriesDescription 'AX T1 POST GAD'")
    >>> guess_sequence({"ScanningSequence": "IR", "InversionTime": 2500, "EchoTime": 120})
    ('flair', 'inversion recovery, TI 2500 ms, TE 120 ms')
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bratseg.errors import DicomError

MIN_SLICES = 3  # fewer is a localiser or a single image, not a volume
_MAX_ZIP_BYTES = 4 << 30  # uncompressed; a whole MR study is well under 1 GB
_CONTRAST = r"(post|\+ ?c\b|c\+|gad|gd\b|\bgd|contrast|\bce\b|kontrast|\bkm\b|mdc|enh)"
# (sequence, pattern on the lower-cased SeriesDescription / ProtocolName / SequenceName), in order.
_T1 = r"(t1|mprage|spgr|bravo|vibe|tfe|tfl3d|flash|mpr)"
_NAME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("flair", re.compile(r"flair|tirm|dark[ _-]?fluid|t2[ _-]?fl\b|\bfl[ _-]?t2")),
    ("t1ce", re.compile(_T1 + ".*" + _CONTRAST + "|" + _CONTRAST + ".*" + _T1)),
    ("t1", re.compile(_T1)),
    ("t2", re.compile(r"t2|\btse\b|\bfse\b")),
]
_NAME_TAGS = ("SeriesDescription", "ProtocolName", "SequenceName")
# Descriptions of series that are none of the four, whatever their timing tags say.
_OTHER = re.compile(
    r"\b(dwi|diff\w*|adc|trace|dti|tensor|swi|swan|perf\w*|dsc|dce|asl|loc\w*|scout|survey|tof|mra|mip)\b"
)


def guess_sequence(header: Mapping[str, object]) -> tuple[str | None, str]:
    """The sequence (``flair``, ``t1ce``, ``t1``, ``t2``) a DICOM header describes, or None, and
    what the guess rests on. ``header`` is a pydicom dataset or any mapping of keywords."""
    for tag in _NAME_TAGS:
        text = str(_get(header, tag) or "")
        lowered = text.lower()
        if _OTHER.search(lowered):
            return None, f"{tag} {text!r} (none of FLAIR, T1, T1ce, T2)"
        for sequence, pattern in _NAME_PATTERNS:
            if pattern.search(lowered):
                return sequence, f"{tag} {text!r}"
    image_type = [str(v).upper() for v in (_get(header, "ImageType") or [])]
    for sequence, marker in (("flair", "FLAIR"), ("t1", "T1"), ("t2", "T2")):
        if marker in image_type[2:]:  # Philips enhanced files name the contrast here
            return sequence, "ImageType " + "\\".join(image_type)
    scanning = str(_get(header, "ScanningSequence") or "")
    ti, te, tr = (_number(_get(header, t)) for t in ("InversionTime", "EchoTime", "RepetitionTime"))
    contrast = str(_get(header, "ContrastBolusAgent") or "").strip()
    if "IR" in scanning and ti is not None and ti >= 1500 and (te is None or te >= 60):
        return "flair", f"inversion recovery, TI {ti:g} ms" + (f", TE {te:g} ms" if te is not None else "")
    if te is not None and tr is not None:
        if te >= 60 and tr >= 1500:
            return "t2", f"TE {te:g} ms, TR {tr:g} ms"
        if te < 30 and (tr < 1000 or ("IR" in scanning and ti is not None and ti < 1500)):
            return ("t1ce" if contrast else "t1"), f"TE {te:g} ms, TR {tr:g} ms" + (
                f", contrast agent {contrast!r}" if contrast else ""
            )
    if te is not None and tr is not None:
        return None, f"TE {te:g} ms, TR {tr:g} ms fit none of FLAIR, T1, T2 (proton density?)"
    return None, "no sequence named in the description, and no echo and repetition times"


def _get(header: Mapping[str, object], keyword: str) -> object:
    try:
        value = header.get(keyword)  # pydicom datasets and dicts alike
    except (KeyError, TypeError):
        return None
    return getattr(value, "value", value)


def _number(value: object) -> float | None:
    try:
        return float(value)  # DS and IS values, strings, numbers
    except (TypeError, ValueError):
        return None


@dataclass
class DicomSeries:
    """One series of a study: its files (sorted by GDCM along the slice normal when read), the
    descriptive tags, and the sequence guessed for it."""

    uid: str
    files: list[Path]
    number: int | None = None
    description: str = ""
    sequence: str | None = None
    basis: str = ""
    frames: int = 0
    patient_id: str = ""
    study_uid: str = ""
    # (position, orientation) of each slice as ImagePositionPatient / ImageOrientationPatient
    # give them (per frame for an enhanced multi-frame file), for the spacing check.
    planes: list[tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=list, repr=False)
    _image: sitk.Image | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How messages name the series."""
        number = f"series {self.number}" if self.number is not None else f"series {self.uid[-12:]}"
        return f"{number} {self.description!r}" if self.description else number

    def read(self) -> sitk.Image:
        """The series as one 3-D SimpleITK image (cached)."""
        if self._image is None:
            self._image = _read_files(self)
        return self._image

    @property
    def image(self) -> sitk.Image:
        return self.read()


@contextmanager
def dicom_folder(source: str | Path) -> Iterator[Path]:
    """``source`` itself when it is a folder; a single file in a temporary folder of its own; a
    zip's contents in a temporary folder (removed afterwards), refusing members that would land
    outside it or unpack too large."""
    source = Path(source)
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise DicomError(source, "not found")
    if not zipfile.is_zipfile(source) and source.suffix.lower() != ".zip":
        with tempfile.TemporaryDirectory(prefix="bratseg-dicom-") as tmp:  # one file: an enhanced multi-frame
            (Path(tmp) / source.name).symlink_to(source.resolve())
            yield Path(tmp)
        return
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DicomError(source, f"not a DICOM folder or a readable zip ({exc})") from None
    with archive, tempfile.TemporaryDirectory(prefix="bratseg-dicom-") as tmp:
        root = Path(tmp).resolve()
        total = 0
        for member in archive.infolist():
            target = (root / member.filename).resolve()
            if root not in target.parents and target != root:
                raise DicomError(source, f"member {member.filename!r} would unpack outside the folder")
            total += member.file_size
            if total > _MAX_ZIP_BYTES:
                raise DicomError(source, f"unpacks to more than {_MAX_ZIP_BYTES >> 30} GB")
        archive.extractall(root)
        yield root


def find_series(folder: str | Path) -> list[DicomSeries]:
    """Every image series below ``folder`` (searched recursively), sorted by series number.
    Files that are not DICOM, and DICOM objects without pixels, are passed over."""
    import pydicom

    folder = Path(folder)
    groups: dict[str, DicomSeries] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=None)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, TypeError):
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            continue  # reports, presentation states, DICOMDIR
        uid = str(ds.SeriesInstanceUID)
        series = groups.get(uid)
        if series is None:
            sequence, basis = guess_sequence(ds)
            number = _number(ds.get("SeriesNumber"))
            description = str(ds.get("SeriesDescription") or ds.get("ProtocolName") or "").strip()
            series = DicomSeries(uid, [], None if number is None else int(number), description, sequence, basis)
            series.patient_id = str(ds.get("PatientID") or "").strip()
            series.study_uid = str(ds.get("StudyInstanceUID") or "").strip()
            groups[uid] = series
        series.files.append(path)
        series.frames += int(_number(ds.get("NumberOfFrames")) or 1)
        series.planes += _planes(ds)
    return sorted(groups.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))


def _planes(ds) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(ImagePositionPatient, ImageOrientationPatient) of each slice of a dataset: the
    dataset's own, or each frame's from the functional groups of an enhanced multi-frame file.
    Empty where the tags are missing or malformed (the spacing check then has nothing to say)."""
    try:
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.get("SharedFunctionalGroupsSequence")
            shared_orientation = _orientation(shared[0]) if shared else None
            frames = ds.PerFrameFunctionalGroupsSequence
            planes = [(frame.PlanePositionSequence[0].ImagePositionPatient, _orientation(frame)) for frame in frames]
            planes = [(p, o or shared_orientation) for p, o in planes]
            return [(tuple(float(v) for v in p), o) for p, o in planes] if all(o for _, o in planes) else []
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            position = tuple(float(v) for v in ds.ImagePositionPatient)
            return [(position, tuple(float(v) for v in ds.ImageOrientationPatient))]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        pass
    return []


def _orientation(group) -> tuple[float, ...] | None:
    sequence = group.get("PlaneOrientationSequence") if group is not None else None
    if not sequence or "ImageOrientationPatient" not in sequence[0]:
        return None
    return tuple(float(v) for v in sequence[0].ImageOrientationPatient)


# Gaps between neighbouring slices may exceed the smallest by this share of it (positions are
# written rounded, to 0.01 mm or so; the real series of five vendors vary by under 0.01 %); a
# missing slice doubles a gap. Gaps under a tenth of the largest are slices at one position
# (two echoes, or a repeat, in one series).
SLICE_GAP_TOLERANCE = 0.2


def slice_gap_problem(series: DicomSeries) -> str | None:
    """Why the slices of ``series`` are not a regular volume (None when they are): slices
    missing (a gap larger than the others) or repeated (two at one position), measured on the
    slice positions along the slice normal. A series whose slices are not all parallel, or lack
    positions, is left to the reader.

    Example:
        >>> axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        >>> series = DicomSeries("1.2.3", [], 7, "AX FLAIR", planes=[((0, 0, z), axial) for z in (0, 5, 10, 20, 25)])
        >>> problem = slice_gap_problem(series)
        >>> problem[:49]
        'slice positions are not evenly spaced: 5 mm apart'
        >>> problem[51:]
        'but 10 mm between 10 and 20 mm along the slice normal (1 slice missing?)'
    """
    planes = series.planes
    if len(planes) < MIN_SLICES:
        return None
    orientations = np.array([o for _, o in planes], dtype=np.float64)
    if orientations.shape[1] != 6 or not np.allclose(orientations, orientations[0], atol=1e-3):
        return None
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    if np.linalg.norm(normal) < 0.5:
        return None
    depth = np.sort(np.array([p for p, _ in planes], dtype=np.float64) @ normal)
    gaps = np.diff(depth)
    if float(gaps.max()) <= 0:
        return f"all {len(planes)} slices lie at one position: not a 3-D volume"
    repeated = np.flatnonzero(gaps < SLICE_GAP_TOLERANCE * float(gaps.max()) * 0.5)
    if repeated.size:
        first = int(repeated[0])
        return (
            f"{repeated.size + 1} slices share positions (the first at {depth[first]:.4g} mm along the slice "
            "normal): several images per slice in one series (echoes, repeats)?"
        )
    spacing = float(gaps.min())  # the regular spacing: missing slices only widen gaps
    odd = np.flatnonzero(gaps > (1 + SLICE_GAP_TOLERANCE) * spacing)
    if odd.size == 0:
        return None
    first = int(odd[0])
    gap = float(gaps[first])
    missing = max(round(gap / spacing) - 1, 1)
    more = f" (and {odd.size - 1} more uneven gap{'s' if odd.size > 2 else ''})" if odd.size > 1 else ""
    return (
        f"slice positions are not evenly spaced: {spacing:.3g} mm apart, but {gap:.3g} mm between {depth[first]:.4g} "
        f"and {depth[first + 1]:.4g} mm along the slice normal{more} ({missing} slice{'s' if missing > 1 else ''} "
        "missing?)"
    )


def mixed_study_problem(chosen: Mapping[str, DicomSeries]) -> str | None:
    """Series assigned to one case that carry different PatientIDs or StudyInstanceUIDs: the
    two (or more) values, and the series carrying each. None when they agree (a missing tag
    agrees with anything)."""
    for tag, attribute in (("PatientID", "patient_id"), ("StudyInstanceUID", "study_uid")):
        values: dict[str, list[str]] = {}
        for sequence, series in chosen.items():
            value = getattr(series, attribute)
            if value:
                values.setdefault(value, []).append(f"{sequence.upper()} ({series.label})")
        if len(values) > 1:
            listed = "; ".join(f"{tag} {value!r}: {', '.join(names)}" for value, names in values.items())
            what = "patients" if tag == "PatientID" else "studies"
            return (
                f"the series come from {len(values)} different {what} ({listed}); give each series explicitly "
                "(--flair, --t1ce, --t1, --t2 with a series folder each) if they belong to one case"
            )
    return None


def _read_files(series: DicomSeries) -> sitk.Image:
    where = series.files[0].parent
    if series.frames < MIN_SLICES:
        raise DicomError(where, f"{series.label} has {series.frames} image(s): not a 3-D volume")
    problem = slice_gap_problem(series)
    if problem is not None:
        raise DicomError(where, f"{series.label}: {problem}")
    try:
        if len(series.files) == 1:  # an enhanced multi-frame file: GDCM reads its per-frame geometry
            image = sitk.ReadImage(str(series.files[0]))
        else:
            image = _read_slices(series)
    except RuntimeError as exc:
        raise DicomError(where, f"{series.label} cannot be read as a volume ({_first_line(exc)})") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError(where, f"{series.label} is not a 3-D greyscale volume (size {image.GetSize()})")
    return image


def _read_slices(series: DicomSeries) -> sitk.Image:
    """A single-frame series through GDCM's sorting by position along the slice normal; files
    of one series spread over several folders are linked into one first."""
    folders = {p.parent for p in series.files}
    with tempfile.TemporaryDirectory(prefix="bratseg-series-") as tmp:
        if len(folders) == 1:
            folder = next(iter(folders))
        else:
            folder = Path(tmp)
            for i, path in enumerate(series.files):
                (folder / f"{i:06d}.dcm").symlink_to(path.resolve())
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series.uid)
        if len(names) < MIN_SLICES:
            raise DicomError(folder, f"{series.label}: GDCM finds {len(names)} slices")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        return reader.Execute()


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200]


def read_dicom_series(source: str | Path) -> DicomSeries:
    """The one image series in a folder or zip (read into memory). Raises
    :class:`~bratseg.errors.DicomError` when there is none or several."""
    with dicom_folder(source) as folder:
        series = [s for s in find_series(folder) if s.frames >= MIN_SLICES]
        if not series:
            raise DicomError(source, "holds no DICOM image series of 3 or more slices")
        if len(series) > 1:
            listed = "; ".join(s.label for s in series)
            raise DicomError(source, f"holds {len(series)} series ({listed}); give the folder of one series")
        series[0].read()
        return series[0]


def read_study(
    source: str | Path, overrides: Mapping[str, str | int] | None = None
) -> tuple[dict[str, DicomSeries], list[DicomSeries]]:
    """The series of a study assigned to sequences, and every series found.

    Each sequence takes the series guessed for it; ``overrides`` maps a sequence to a series
    number, SeriesInstanceUID or description, and wins over the guess. Two series guessed as one
    sequence take the later series (a repeat scan) unless overridden. Series of different
    PatientIDs or StudyInstanceUIDs are refused (:func:`mixed_study_problem`) unless
    ``overrides`` names every sequence; series with missing or repeated slices are refused
    (:func:`slice_gap_problem`). The assigned series are read into memory, so a zip's temporary
    folder can go.
    """
    overrides = dict(overrides or {})
    with dicom_folder(source) as folder:
        found = [s for s in find_series(folder) if s.frames >= MIN_SLICES]
        if not found:
            raise DicomError(source, "holds no DICOM image series of 3 or more slices")
        chosen: dict[str, DicomSeries] = {}
        for sequence, key in overrides.items():
            matches = [s for s in found if str(key) in (s.uid, str(s.number), s.description)]
            if len(matches) != 1:
                listed = "; ".join(s.label for s in found)
                raise DicomError(source, f"{sequence}: {len(matches)} series match {key!r} (found: {listed})")
            chosen[sequence] = matches[0]
        taken = {s.uid for s in chosen.values()}
        for series in found:
            if series.sequence is None or series.sequence in overrides or series.uid in taken:
                continue
            chosen[series.sequence] = series  # later series numbers come later: a repeat wins
        if not all(sequence in overrides for sequence in chosen):
            problem = mixed_study_problem(chosen)
            if problem is not None:
                raise DicomError(source, problem)
        for series in chosen.values():
            series.read()
        return chosen, found
