"""Find BraTS cases in a folder tree and map their files to modalities.

Known namings (``.nii`` or ``.nii.gz``):

* BraTS 2018-2021: ``<case>_flair``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg``; the Kaggle BraTS
  2020 download's case 355 has its label misnamed ``W39_1998.09.19_Segm.nii``.
* BraTS 2023+: ``-t2f`` (FLAIR), ``-t1n`` (T1), ``-t1c`` (T1ce), ``-t2w`` (T2), ``-seg``, whose
  enhancing label is 3.
* BraTS Toolkit output: ``_fla``, ``_t1``, ``_t1c``, ``_t2``, optionally followed by ``_bet``.
* The Medical Segmentation Decathlon's Task01 (``imagesTr/BRATS_001.nii.gz`` holding FLAIR,
  T1, T1gd, T2 along a 4th axis, ``labelsTr/BRATS_001.nii.gz`` with 1 edema, 2 non-enhancing,
  3 enhancing): :func:`decathlon_cases`, read by :mod:`bratseg.data.decathlon`.

Example:
    >>> from bratseg.data.layout import modality_of
    >>> modality_of("BraTS-GLI-00001-000-t2f.nii.gz")
    ('flair', 'brats2023')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bratseg.data.labels import LabelScheme
from bratseg.errors import InvalidCaseError, MissingModalityError

MODALITIES = ("flair", "t1ce", "t1", "t2")
"""Every image modality bratseg knows, in the model's channel order (required ones first)."""
REQUIRED_MODALITIES = ("flair", "t1ce")

_SUFFIX_BET = r"(?:[_-]bet)?$"
# (modality, naming scheme, pattern on the lower-cased file stem)
_PATTERNS: list[tuple[str, LabelScheme, re.Pattern[str]]] = [
    (m, s, re.compile(p + _SUFFIX_BET))
    for m, s, p in [
        ("flair", "brats2020", r"[_-](flair|fla)"),
        ("t1ce", "brats2020", r"[_-](t1ce|t1c|t1gd)(?<!-t1c)"),
        ("t1", "brats2020", r"[_-]t1"),
        ("t2", "brats2020", r"[_-]t2(?<!-t2)"),
        ("seg", "brats2020", r"[_-]seg(?<!-seg)"),
        ("flair", "brats2023", r"-t2f"),
        ("t1ce", "brats2023", r"-t1c"),
        ("t1", "brats2023", r"-t1n"),
        ("t2", "brats2023", r"-t2w"),
        ("seg", "brats2023", r"-seg"),
    ]
]
# Kaggle BraTS 2020, case 355: the label file carries a scan date instead of the case name.
_MISNAMED_SEG = re.compile(r"^w39_1998\.09\.19_segm$")


def nifti_stem(path: str | Path) -> str | None:
    """File name without ``.nii``/``.nii.gz``, or None if it is not a NIfTI name."""
    name = Path(path).name
    lower = name.lower()
    for ext in (".nii.gz", ".nii"):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return None


def modality_of(path: str | Path) -> tuple[str, LabelScheme] | None:
    """The modality (``flair``, ``t1``, ``t1ce``, ``t2`` or ``seg``) and naming scheme of a
    file, or None when its name follows no known convention."""
    stem = nifti_stem(path)
    if stem is None:
        return None
    stem = stem.lower()
    if _MISNAMED_SEG.match(stem):
        return "seg", "brats2020"
    for modality, scheme, pattern in _PATTERNS:
        if pattern.search(stem):
            return modality, scheme
    return None


@dataclass
class Case:
    """The files of one case: image modalities and, when known, the label map."""

    case_id: str
    images: dict[str, Path]
    label: Path | None = None
    label_scheme: LabelScheme = "brats2020"
    folder: Path | None = field(default=None, compare=False)
    channels: dict[str, int] = field(default_factory=dict, compare=False)
    """For images that share one 4-D file (the Decathlon layout): each modality's index along
    the 4th axis. Empty for one 3-D file per modality."""

    def check_required(self) -> None:
        for modality in REQUIRED_MODALITIES:
            if modality not in self.images:
                where = self.folder if self.folder is not None else self.case_id
                raise MissingModalityError(where, f"no {modality.upper()} image found (required: FLAIR and T1ce)")

    @classmethod
    def from_files(
        cls,
        flair: str | Path,
        t1ce: str | Path,
        t1: str | Path | None = None,
        t2: str | Path | None = None,
        label: str | Path | None = None,
        label_scheme: LabelScheme = "brats2020",
        case_id: str | None = None,
    ) -> Case:
        """A case from explicit files, whatever their names."""
        images = {"flair": Path(flair), "t1ce": Path(t1ce)}
        if t1 is not None:
            images["t1"] = Path(t1)
        if t2 is not None:
            images["t2"] = Path(t2)
        case_id = case_id or _common_case_id([images["flair"]]) or "case"
        return cls(case_id, images, None if label is None else Path(label), label_scheme)


def _common_case_id(paths: list[Path]) -> str:
    stem = nifti_stem(paths[0]) or paths[0].name
    return re.sub(r"[_-](flair|fla|t2f)([_-]bet)?$", "", stem, flags=re.IGNORECASE)


def case_from_folder(folder: str | Path) -> Case:
    """Map the NIfTI files directly inside ``folder`` to modalities.

    Raises :class:`InvalidCaseError` when two files claim the same modality and
    :class:`MissingModalityError` when FLAIR or T1ce is absent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidCaseError(folder, "is not a folder")
    found: dict[str, Path] = {}
    schemes: set[str] = set()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        hit = modality_of(path)
        if hit is None:
            continue
        modality, scheme = hit
        if modality in found:
            raise InvalidCaseError(folder, f"two files claim {modality}: {found[modality].name} and {path.name}")
        found[modality] = path
        schemes.add(scheme)
    label = found.pop("seg", None)
    scheme: LabelScheme = "brats2023" if "brats2023" in schemes else "brats2020"
    case = Case(folder.name, found, label, scheme, folder)
    case.check_required()
    return case


def find_cases(root: str | Path) -> list[Case]:
    """Every case folder beneath ``root`` (itself included), sorted by case id.

    A case folder is one that directly holds a FLAIR image by a known naming.

    Example:
        >>> import tempfile, pathlib
        >>> from bratseg.synthetic import write_synthetic_case
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_synthetic_case(root / "SYNTH_001", shape=(48, 48, 32))
        >>> [c.case_id for c in find_cases(root)]
        ['SYNTH_001']
    """
    root = Path(root)
    if not root.exists():
        raise InvalidCaseError(root, "does not exist")
    if root.is_file():
        raise InvalidCaseError(root, "is a file; give a folder of cases or a case folder")
    cases = []
    # Follow symlinked folders (a folder of links to case folders is a common way to pick
    # a subset of a dataset), but visit each real folder once so a link cycle cannot loop.
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        if any((hit := modality_of(f)) is not None and hit[0] == "flair" for f in filenames):
            cases.append(case_from_folder(dirpath))
    return sorted(cases, key=lambda c: c.case_id)


DECATHLON_IMAGE_FOLDERS = ("imagesTr", "imagesTs")
DECATHLON_CHANNELS = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
"""Channel of each modality in Task01_BrainTumour (its dataset.json: FLAIR, T1w, t1gd, T2w)."""


def is_decathlon_folder(folder: str | Path) -> bool:
    """A Decathlon task folder: it holds ``imagesTr`` or ``imagesTs``."""
    folder = Path(folder)
    return any((folder / sub).is_dir() for sub in DECATHLON_IMAGE_FOLDERS)


def decathlon_cases(root: str | Path) -> list[Case]:
    """The cases of a Decathlon Task01 folder (``imagesTr/``, ``imagesTs/``, ``labelsTr/``),
    sorted by case id. Each case's four modalities point to its one 4-D image, with
    :attr:`Case.channels` saying which channel is which (from ``dataset.json`` when it names
    them, else Task01's order); the label, when ``labelsTr/`` has one, uses the ``decathlon``
    scheme (1 edema, 2 non-enhancing, 3 enhancing), which :mod:`bratseg.data.decathlon` reads.

    Raises :class:`InvalidCaseError` when ``root`` is not a Decathlon folder or its
    ``dataset.json`` lacks FLAIR or T1ce.
    """
    root = Path(root)
    if not is_decathlon_folder(root):
        raise InvalidCaseError(root, "is not a Decathlon task folder (no imagesTr/ or imagesTs/)")
    channels = _decathlon_channels(root)
    cases = []
    for sub in DECATHLON_IMAGE_FOLDERS:
        for path in sorted((root / sub).glob("*.nii*")):
            stem = nifti_stem(path)
            if stem is None or stem.startswith("."):  # macOS "._" copies beside the real files
                continue
            label = root / "labelsTr" / path.name
            images = dict.fromkeys(channels, path)
            cases.append(
                Case(stem, images, label if label.is_file() else None, "decathlon", root / sub, dict(channels))
            )
    return sorted(cases, key=lambda c: c.case_id)


def _decathlon_channels(root: Path) -> dict[str, int]:
    """Modality -> channel from ``dataset.json``'s ``modality`` (or ``channel_names``) map."""
    import json

    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        return dict(DECATHLON_CHANNELS)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidCaseError(meta_path, f"unreadable dataset.json ({exc})") from None
    names = meta.get("modality") or meta.get("channel_names") or {}
    known = {"flair": "flair", "t2f": "flair", "t1w": "t1", "t1": "t1", "t1n": "t1", "t1gd": "t1ce", "t1c": "t1ce"}
    known |= {"t1ce": "t1ce", "t2w": "t2", "t2": "t2"}
    channels = {}
    for index, name in names.items():
        modality = known.get(str(name).lower())
        if modality is not None:
            channels[modality] = int(index)
    if not names:
        return dict(DECATHLON_CHANNELS)
    missing = [m for m in REQUIRED_MODALITIES if m not in channels]
    if missing:
        raise InvalidCaseError(meta_path, f"its modalities {sorted(names.values())} lack {', '.join(missing)}")
    return channels
