"""Which prediction goes with which reference label map, for ``bratseg evaluate``.

Pairing (:func:`match_pairs`), by case id:

* PRED is a label map or a folder of label maps ``<case>.nii.gz`` (as ``bratseg predict``
  writes them; a ``_seg`` / ``-seg`` suffix is ignored);
* REF is a label map, a folder of case folders (each case's label file, see
  :func:`bratseg.data.layout.find_cases`; the case id is the folder name) or a folder of
  label files ``<case>_seg.nii.gz``, ``<case>-seg.nii.gz`` or ``<case>.nii.gz``.
  Two single files are paired whatever their names.

Irregular names can be paired explicitly: :func:`read_pairs_csv` (``--pairs``, a CSV with
columns ``case,pred,ref``) or :func:`pairs_in_folders` (``--pairs-in-folders``, one folder per
case holding one ``*_seg``/``*-seg`` reference and one prediction, as in BraTS' evaluation
samples).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from bratseg.data.layout import find_cases, modality_of, nifti_stem
from bratseg.errors import InvalidCaseError
from bratseg.evaluation.metrics import EvaluationError

_SEG_SUFFIX = re.compile(r"[_-]seg$", re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    """A prediction and its reference label map."""

    case_id: str
    pred: Path
    ref: Path


@dataclass
class Pairing:
    """The pairs to score and the cases found on one side only (case id, the file found)."""

    pairs: list[Pair]
    missing_pred: list[tuple[str, Path]] = field(default_factory=list)
    missing_ref: list[tuple[str, Path]] = field(default_factory=list)


def case_id_of(path: str | Path) -> str:
    """The case id of a label-map file: its name without ``.nii[.gz]`` and a ``_seg``/``-seg``
    suffix.

    Example:
        >>> case_id_of("Brats18_2013_11_1_seg.nii.gz"), case_id_of("BraTS-GLI-00001-000.nii.gz")
        ('Brats18_2013_11_1', 'BraTS-GLI-00001-000')
    """
    stem = nifti_stem(path) or Path(path).name
    return _SEG_SUFFIX.sub("", stem)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and nifti_stem(p) is not None)


def _by_case_id(files: list[Path], folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        case_id = case_id_of(path)
        if case_id in found:
            raise InvalidCaseError(folder, f"two label maps for case {case_id}: {found[case_id].name} and {path.name}")
        found[case_id] = path
    return found


def _predictions(pred: Path) -> dict[str, Path]:
    if pred.is_file():
        return {case_id_of(pred): pred}
    if not pred.is_dir():
        raise InvalidCaseError(pred, "prediction path does not exist")
    files = _nifti_files(pred)
    if not files:
        raise InvalidCaseError(pred, "holds no label maps (*.nii.gz or *.nii)")
    return _by_case_id(files, pred)


def _references(ref: Path) -> dict[str, Path]:
    if ref.is_file():
        return {case_id_of(ref): ref}
    if not ref.is_dir():
        raise InvalidCaseError(ref, "reference path does not exist")
    cases = find_cases(ref)
    if cases:
        labelled = {c.case_id: c.label for c in cases if c.label is not None}
        if not labelled:
            raise InvalidCaseError(ref, f"none of its {len(cases)} case folders holds a label file (*_seg / *-seg)")
        return labelled
    files = _nifti_files(ref)
    if not files:
        raise InvalidCaseError(ref, "holds neither case folders nor label maps (*.nii.gz or *.nii)")
    return _by_case_id(files, ref)


def match_pairs(pred: str | Path, ref: str | Path) -> Pairing:
    """Pair predictions with references by case id (see the module docstring for the layouts).

    Raises :class:`EvaluationError` when no case has both.
    """
    pred, ref = Path(pred), Path(ref)
    preds, refs = _predictions(pred), _references(ref)
    if pred.is_file() and ref.is_file():
        # Two explicit files: the user paired them, whatever their names.
        return Pairing([Pair(case_id_of(ref), pred, ref)])
    common = sorted(set(preds) & set(refs))
    if not common:
        raise EvaluationError(
            f"no prediction in {pred.name} matches a reference in {ref.name} by case id: "
            f"predictions {_examples(preds)}, references {_examples(refs)} "
            "(use --pairs or --pairs-in-folders for irregular names)"
        )
    return Pairing(
        [Pair(c, preds[c], refs[c]) for c in common],
        missing_pred=[(c, refs[c]) for c in sorted(set(refs) - set(preds))],
        missing_ref=[(c, preds[c]) for c in sorted(set(preds) - set(refs))],
    )


def _examples(ids: dict[str, Path], k: int = 3) -> str:
    names = sorted(ids)
    more = f" and {len(names) - k} more" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def pairs_in_folders(root: str | Path) -> Pairing:
    """Pairs from a folder of case folders, each holding exactly one reference named
    ``*_seg`` / ``*-seg`` and one other label map, the prediction; the case id is the folder
    name. Sub-folders without any NIfTI file are ignored.

    This is the layout of BraTS' evaluation samples, e.g. ``BraTS-MET-00132-000/`` with
    ``BraTS-MET-00132-000-seg.nii.gz`` (reference) and ``00132-000.nii.gz`` (prediction).
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidCaseError(root, "is not a folder of case folders")
    pairs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = _nifti_files(folder)
        if not files:
            continue
        refs = [f for f in files if (hit := modality_of(f)) is not None and hit[0] == "seg"]
        preds = [f for f in files if f not in refs]
        if len(refs) != 1 or len(preds) != 1:
            raise InvalidCaseError(
                folder,
                f"expected one reference (*_seg / *-seg) and one prediction, found references "
                f"{[f.name for f in refs]} and predictions {[f.name for f in preds]}",
            )
        pairs.append(Pair(folder.name, preds[0], refs[0]))
    if not pairs:
        raise EvaluationError(f"{root.name}: no case folder holds a reference and a prediction")
    return Pairing(pairs)


def read_pairs_csv(path: str | Path) -> Pairing:
    """Pairs from a CSV with columns ``pred`` and ``ref`` (and optionally ``case``; default the
    reference's case id). Relative paths are relative to the CSV's folder.

    Example CSV::

        case,pred,ref
        BraTS-MET-00132-000,metrics/BraTS-MET-00132-000/00132-000.nii.gz,metrics/BraTS-MET-00132-000/BraTS-MET-00132-000-seg.nii.gz
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidCaseError(path, "pairs CSV not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip() for c in reader.fieldnames or []}
        if not {"pred", "ref"} <= columns:
            raise InvalidCaseError(path, f"needs columns pred and ref (and optionally case), found {sorted(columns)}")
        pairs: dict[str, Pair] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            files = {}
            for side in ("pred", "ref"):
                if not row[side]:
                    raise InvalidCaseError(path, f"line {line}: empty {side} path")
                file = Path(row[side]) if Path(row[side]).is_absolute() else path.parent / row[side]
                if not file.is_file():
                    raise InvalidCaseError(path, f"line {line}: {side} file {row[side]} not found")
                files[side] = file
            case_id = row.get("case") or case_id_of(files["ref"])
            if case_id in pairs:
                raise InvalidCaseError(path, f"line {line}: case {case_id} is listed twice")
            pairs[case_id] = Pair(case_id, files["pred"], files["ref"])
    if not pairs:
        raise InvalidCaseError(path, "lists no pairs")
    return Pairing(list(pairs.values()))


# ----------------------------------------------------------------------------- scoring
