"""Read and validate NIfTI volumes and whole cases (BraTS-named files, or a Decathlon case's 4-D
image split into its modalities), and write NIfTI files atomically.

Every failure is an :class:`~bratseg.errors.InvalidCaseError` naming the file and the problem:
unreadable or truncated file, not 3-D, non-finite voxels, a grid no scan can have (see
:func:`bratseg.data.geometry.geometry_problem`), modalities of different shapes or affines,
empty brain, label values outside the scheme. A modality stored in another voxel order whose
affine says so (axes flipped or permuted, the same voxels in world space) is reoriented onto
the first modality's grid instead of refused.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, igzip_lib

from bratseg.data.geometry import axis_flips, geometry_problem, reorient_onto
from bratseg.data.labels import decathlon_to_internal, to_brats2020, to_internal
from bratseg.data.layout import MODALITIES, Case
from bratseg.errors import InvalidCaseError

_UMASK = os.umask(0)
os.umask(_UMASK)
_AFFINE_TOLERANCE = 1e-3  # mm; BraTS files of one case share the affine to float precision
# Header slopes applied as such; beyond, as their sign (see _scaled_data). int16 scans times any
# slope in this range stay far inside float32 and far above the z-score's floor of 1e-8.
SAFE_SLOPE = (1e-6, 1e6)
_SINGLE_FILE_NIFTI1 = b"n+1\x00"  # the magic at byte 344 of a .nii NIfTI-1 header


@dataclass
class Volume:
    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path


def load_volume(path: str | Path, dtype: type = np.float32) -> Volume:
    """Load one NIfTI file as a 3-D array, squeezing a singleton 4th axis.

    Raises :class:`InvalidCaseError` for a missing, unreadable, truncated, non-3-D or
    non-finite file, and for a grid no scan can have (too small, a broken affine, absurd voxel
    sizes).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidCaseError(path, "file not found")
    try:
        with _nifti_image(path) as img:
            data = _scaled_data(img)
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile) as exc:
        raise InvalidCaseError(path, f"not a readable NIfTI file ({_one_line(exc)})") from None
    except (EOFError, zlib.error, igzip_lib.IsalError) as exc:
        # gzip stream cut short or damaged: typically an interrupted download or copy.
        raise InvalidCaseError(path, f"truncated or corrupt gzip data ({_one_line(exc)})") from None
    except (OSError, ValueError) as exc:
        raise InvalidCaseError(path, f"unreadable or truncated NIfTI file ({_one_line(exc)})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidCaseError(path, f"expected a 3-D volume, got shape {tuple(data.shape)}")
    problem = geometry_problem(data.shape, img.affine, img.header.get_zooms()[:3])
    if problem is not None:
        raise InvalidCaseError(path, problem)
    data = data.astype(dtype, copy=False)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        count = int((~np.isfinite(data)).sum())
        raise InvalidCaseError(path, f"{count} voxels are NaN or infinite")
    header = img.header.copy()
    return Volume(data, img.affine.copy(), header, path)


def _scaled_data(img: nib.Nifti1Image) -> np.ndarray:
    """The voxels with the header's scaling (``scl_slope``, ``scl_inter``) applied safely.

    A slope far from 1 (outside :data:`SAFE_SLOPE`, such as 1e-30) would push the values out of
    what float32 holds (underflow below the z-score's floor, overflow to infinity). Every
    consumer of an image's intensities (z-scoring, the brain mask from a constant background,
    registration by mutual information, skull stripping) is unchanged by a positive factor and
    an offset, so such a slope is applied as its sign alone and the intercept dropped: the
    answer is that of the properly scaled image, and a negative slope still inverts the
    contrast (for the content checks to catch).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.nii.gz"
        >>> img = nib.Nifti1Image(np.arange(0, 64, dtype=np.int16).reshape(4, 4, 4), np.eye(4))
        >>> img.header.set_slope_inter(1e-30, 5.0)
        >>> nib.save(img, str(path))
        >>> load_volume(path).data[0, 0, :].tolist()  # as stored: z-scoring gives what 1e-30 x + 5 would
        [0.0, 1.0, 2.0, 3.0]
        >>> img.header.set_slope_inter(-1e-30, 0.0)
        >>> nib.save(img, str(path))
        >>> load_volume(path).data[0, 0, :].tolist()  # the sign kept: inverted contrast
        [0.0, -1.0, -2.0, -3.0]
    """
    proxy = img.dataobj
    slope = getattr(proxy, "slope", 1.0)
    if not hasattr(proxy, "get_unscaled") or SAFE_SLOPE[0] <= abs(float(slope)) <= SAFE_SLOPE[1]:
        return np.asanyarray(proxy)
    raw = np.asarray(proxy.get_unscaled(), dtype=np.float32)
    return np.float32(0) - raw if float(slope) < 0 else raw  # 0 - x: no -0.0 in the background


@contextmanager
def _nifti_image(path: Path) -> Iterator[nib.Nifti1Image]:
    """The image at ``path``, its data readable inside the ``with`` block.

    Gzipped files (told by their first bytes, not their name) are read through python-isal's
    igzip, 3-4x faster than the standard library's gzip that nibabel uses, and it lets other
    threads run while it inflates. Reading through an opened stream also covers names whose
    ``.nii`` nibabel does not recognise (it wants all-lower or all-upper case, while case
    folders are matched in any letter case); anything not NIfTI-1 is left to ``nib.load``.
    """
    with open(path, "rb") as raw:
        head = raw.read(348)
    compressed = head[:2] == b"\x1f\x8b"
    if not compressed and head[344:348] != _SINGLE_FILE_NIFTI1:
        yield nib.load(str(path))  # NIfTI-2, a header/image pair, Analyze, garbage: nibabel decides
        return
    with igzip.open(path, "rb") if compressed else open(path, "rb") as stream:
        image = None
        inflated = stream.read(348)  # the header's magic, inflated
        if inflated[344:348] == _SINGLE_FILE_NIFTI1:
            stream.seek(0)
            holder = nib.FileHolder(str(path), stream)
            try:
                image = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
            except (nib.filebasedimages.ImageFileError, nib.wrapstruct.WrapStructError):
                image = None
        if image is not None:
            yield image
            return
    yield nib.load(str(path))  # gzipped, but not single-file NIfTI-1 (or unreadable): nibabel decides


def _one_line(exc: BaseException) -> str:
    """The exception's text on one line: nibabel's messages can span lines, and the CLI
    prints errors as a single line."""
    return " ".join(str(exc).split())


@dataclass
class CaseVolumes:
    """A validated case in memory: modality arrays of one shape and affine, and the label
    map in internal 0..3 labels when the case has one.

    ``paths`` are the files each modality came from (empty for volumes built in memory), so
    later checks can name the file; ``notes`` are one-line remarks about what loading did to
    the data (a modality reoriented onto the first one's grid), shown to the user as warnings.
    """

    case_id: str
    images: dict[str, np.ndarray]
    affine: np.ndarray
    header: nib.Nifti1Header
    label: np.ndarray | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in self.header.get_zooms()[:3])


def load_case(case: Case, with_label: bool = True) -> CaseVolumes:
    """Load and validate every file of ``case``.

    Example:
        >>> import tempfile, pathlib
        >>> from bratseg.synthetic import write_synthetic_case
        >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "S", shape=(48, 48, 32))
        >>> vols = load_case(case)
        >>> sorted(vols.images), vols.shape, sorted(set(vols.label.ravel().tolist()))
        (['flair', 't1', 't1ce', 't2'], (48, 48, 32), [0, 1, 2, 3])
    """
    if case.channels:  # a Decathlon case: the sequences are channels of one 4-D file
        return load_decathlon_case(case, with_label)
    case.check_required()
    images: dict[str, np.ndarray] = {}
    notes: list[str] = []
    ref: Volume | None = None
    present = [m for m in MODALITIES if m in case.images]
    # The sequences are read in parallel threads (inflating releases the GIL); they are then
    # checked in a fixed order, so the error raised for a bad case is always the same one.
    with ThreadPoolExecutor(max_workers=len(present)) as pool:
        reads = {m: pool.submit(load_volume, case.images[m]) for m in present}
    for modality in present:
        vol = reads[modality].result()
        if ref is None:
            ref = vol
        else:
            notes += _onto_grid(ref, vol)
        if not np.any(vol.data):
            raise InvalidCaseError(vol.path, "the image is empty (every voxel is 0): no brain")
        images[modality] = vol.data
    assert ref is not None
    label = None
    if with_label and case.label is not None:
        seg = load_volume(case.label, dtype=np.float32)
        notes += _onto_grid(ref, seg, origin_may_differ=True)
        try:
            label = to_internal(seg.data, case.label_scheme)
        except ValueError as exc:
            raise InvalidCaseError(seg.path, str(exc)) from None
    paths = {m: Path(p) for m, p in case.images.items() if m in images}
    return CaseVolumes(case.case_id, images, ref.affine, ref.header, label, paths, notes)


def load_decathlon_case(case: Case, with_label: bool = True) -> CaseVolumes:
    """The modalities of a Decathlon case (:func:`bratseg.data.layout.decathlon_cases`) split
    from its 4-D image, and its label in internal labels."""
    case.check_required()
    paths = set(case.images.values())
    if len(paths) != 1 or not case.channels:
        raise InvalidCaseError(case.folder or case.case_id, "not a Decathlon case (one 4-D image with channels)")
    path = next(iter(paths))
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise InvalidCaseError(path, f"unreadable NIfTI file ({' '.join(str(exc).split())})") from None
    needed = max(case.channels.values()) + 1
    if data.ndim != 4 or data.shape[3] < needed:
        raise InvalidCaseError(path, f"expected a 4-D image with {needed} modalities, got shape {tuple(data.shape)}")
    images = {}
    for modality in MODALITIES:
        if modality not in case.channels:
            continue
        channel = np.asarray(data[..., case.channels[modality]], dtype=np.float32)
        if not np.isfinite(channel).all():
            raise InvalidCaseError(path, f"{modality} (channel {case.channels[modality]}) has NaN or infinite voxels")
        if not channel.any():
            raise InvalidCaseError(path, f"{modality} (channel {case.channels[modality]}) is empty: no brain")
        images[modality] = channel
    header = img.header.copy()
    header.set_data_shape(data.shape[:3])
    label = None
    if with_label and case.label is not None:
        seg_img = nib.load(str(case.label))
        seg = np.asanyarray(seg_img.dataobj)
        seg = seg.reshape(seg.shape[:3]) if seg.ndim == 4 and seg.shape[3] == 1 else seg
        if seg.shape != data.shape[:3]:
            raise InvalidCaseError(case.label, f"shape {seg.shape} differs from the image's {data.shape[:3]}")
        try:
            label = decathlon_to_internal(seg)
        except ValueError as exc:
            raise InvalidCaseError(case.label, str(exc)) from None
    return CaseVolumes(case.case_id, images, img.affine.copy(), header, label)


def _onto_grid(ref: Volume, other: Volume, origin_may_differ: bool = False) -> list[str]:
    """Put ``other`` on ``ref``'s grid in place: as it is, or reoriented when it is stored in
    another voxel order that maps exactly onto that grid; refuse it otherwise. Returns a note
    when it was reoriented."""
    moved = reorient_onto(other.data, other.affine, ref.affine, ref.data.shape)
    if moved is None:
        _check_same_grid(ref, other, origin_may_differ)
        return []
    how = axis_flips(other.affine, ref.affine)
    other.data, other.affine = moved, ref.affine.copy()
    return [
        f"{other.path.name}: stored in another voxel order ({how}) with a matching affine; "
        f"reoriented onto {ref.path.name}'s grid"
    ]


def _check_same_grid(ref: Volume, other: Volume, origin_may_differ: bool = False) -> None:
    """Refuse ``other`` unless it lies on ``ref``'s grid. With ``origin_may_differ`` (label
    maps) the origin alone may differ: some BraTS 2017 label files carry a zero origin while
    their images carry the real one, yet are voxel-aligned with them (every tumour voxel of
    Brats17_TCIA_105_1 lies in its brain; shifted by the origins it would leave the brain)."""
    if ref.data.shape != other.data.shape:
        raise InvalidCaseError(
            other.path,
            f"shape {other.data.shape} differs from {ref.path.name}'s {ref.data.shape}",
        )
    compared = (slice(0, 3), slice(0, 3)) if origin_may_differ else (slice(None), slice(None))
    if not np.allclose(ref.affine[compared], other.affine[compared], atol=_AFFINE_TOLERANCE):
        raise InvalidCaseError(other.path, f"affine differs from {ref.path.name}'s: the images are not co-registered")


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so a crash never leaves half
    a file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def label_image(labels: np.ndarray, like: CaseVolumes) -> nib.Nifti1Image:
    """A label map whose values are already in the on-disk scheme, as a uint8 NIfTI image with
    the input's affine and header."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(labels.astype(np.uint8, copy=False), like.affine, header)
    img.header.set_slope_inter(1, 0)
    return img


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``img`` to ``path`` atomically: gzip-compressed when the name ends in ``.nii.gz``
    in any letter case (``seg.NII.GZ`` too, as reading matches suffixes), plain NIfTI otherwise.

    Example:
        >>> import gzip, pathlib, tempfile
        >>> img = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4))
        >>> out = save_nifti(img, pathlib.Path(tempfile.mkdtemp()) / "seg.NII.GZ")
        >>> out.read_bytes()[:2] == b"\\x1f\\x8b", nib.load(str(out)).shape
        (True, (4, 4, 4))
    """
    path = Path(path)
    compressed = path.name.lower().endswith(".nii.gz")

    def write(tmp: Path) -> None:
        # nibabel picks compression from the suffix, case-sensitively: write under the
        # lower-case suffix, then move the file under the name asked for.
        real = tmp.with_name(tmp.name + (".nii.gz" if compressed else ".nii"))
        nib.save(img, str(real))
        os.replace(real, tmp)

    atomic_write_bytes(path, write)
    return path


def save_labels(labels: np.ndarray, like: CaseVolumes, path: str | Path) -> Path:
    """Write internal labels as a BraTS 2020 (0/1/2/4) label map with the input's affine and
    header, atomically."""
    return save_nifti(label_image(to_brats2020(labels), like), path)
