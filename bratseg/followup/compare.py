"""Two time points compared: ``bratseg followup BASELINE FOLLOWUP --out DIR``.

Each time point is segmented on its own path (:mod:`bratseg.followup.timepoint`) and
measured on its own grid (:func:`bratseg.measurement.rano.measure`: RANO diameters, SPD,
volumes). The follow-up T1ce is registered rigidly to the baseline T1ce, both brain-masked
(:func:`bratseg.native.registration.coregister_rigid`, started from the brains' centres of
mass); through that transform the follow-up lesions are matched to the baseline's targets
(:mod:`bratseg.followup.tracking`: the follow-up SPD compared is theirs, measured again,
and a far measurable lesion is new), and the follow-up label map is resampled onto the
baseline grid (nearest neighbour) to show both on one grid and to map new / resolved / stable
tumour. The category comes from :mod:`bratseg.measurement.response`.

``DIR`` receives ``followup.json`` (:meth:`FollowupResult.to_json`), ``baseline_seg.nii.gz``
(baseline grid), ``followup_seg.nii.gz`` (the follow-up's own grid),
``followup_seg_on_baseline.nii.gz``, ``difference.nii.gz`` (baseline grid, whole tumour: 0 none,
1 new, 2 resolved, 3 stable) and, when a ``report`` writer is given (the command passes
:func:`bratseg.reporting.followup_report.write_followup_report`), ``report.pdf``. The
comparison itself draws nothing: the writer gets the result and the :class:`ReportMaps` and
runs before ``followup.json`` is written, so the JSON's ``seconds`` covers the report too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bratseg.errors import InvalidCaseError, OutputError
from bratseg.followup.timepoint import (
    TimePoint,
    TimePointSource,
    as_case_or_study,
    given_timepoint,
    segment_timepoint,
)
from bratseg.followup.tracking import track
from bratseg.measurement.rano import Measurement, measure
from bratseg.measurement.response import CRITERIA, classify, percent_change

DIFFERENCE_LABELS = {0: "none", 1: "new", 2: "resolved", 3: "stable"}
"""Values of ``difference.nii.gz`` (whole tumour, on the baseline grid)."""
FILES = {
    "json": "followup.json",
    "baseline_seg": "baseline_seg.nii.gz",
    "followup_seg": "followup_seg.nii.gz",
    "followup_seg_on_baseline": "followup_seg_on_baseline.nii.gz",
    "difference": "difference.nii.gz",
    "report": "report.pdf",
}


@dataclass
class Registration:
    """The follow-up -> baseline alignment: ``transform`` maps baseline points to follow-up
    points (ITK's convention, what resampling onto the baseline grid needs)."""

    transform: sitk.Transform
    similarity: float
    similarity_before: float
    rotation_deg: float
    translation_mm: float

    def to_json(self) -> dict:
        return {
            "similarity": round(self.similarity, 3),
            "similarity_before": round(self.similarity_before, 3),
            "rotation_deg": round(self.rotation_deg, 2),
            "translation_mm": round(self.translation_mm, 2),
        }


@dataclass
class FollowupResult:
    """A follow-up comparison (module docstring); ``to_json`` is ``followup.json``."""

    baseline: Measurement
    followup: Measurement
    change: dict
    response: str
    criteria: str
    flagged: bool
    confidence: dict
    out_dir: Path
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    registration: dict = field(default_factory=dict)
    difference_cm3: dict = field(default_factory=dict)
    new_measurable_lesions: int = 0
    sources: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        def point(name: str, measurement: Measurement) -> dict:
            return {**self.sources.get(name, {}), **measurement.to_json(), "confidence": self.confidence.get(name)}

        return {
            "baseline": point("baseline", self.baseline),
            "followup": point("followup", self.followup),
            "change": self.change,
            "response": self.response,
            "criteria": self.criteria,
            "reasons": list(self.reasons),
            "flagged": self.flagged,
            "confidence": self.confidence,
            "new_measurable_lesions": self.new_measurable_lesions,
            "difference_cm3": self.difference_cm3,
            "registration": self.registration,
            "notes": list(self.notes),
            "files": dict(FILES),
            "seconds": round(self.seconds, 1),
        }


@dataclass
class ReportMaps:
    """What a follow-up report draws besides the :class:`FollowupResult`: both time points, the
    follow-up label map on the baseline grid, the difference map (``difference.nii.gz``) and the
    T1ce of each time point on the baseline grid (``images``: ``baseline``, ``followup``) and the
    follow-up's on its own label grid (``followup_own``)."""

    baseline: TimePoint
    followup: TimePoint
    followup_on_baseline: np.ndarray
    difference: np.ndarray
    images: dict[str, np.ndarray]


ReportWriter = Callable[[FollowupResult, ReportMaps, Path], object]
"""Writes the report of a comparison to the path given
(:func:`bratseg.reporting.followup_report.write_followup_report`)."""


def register_followup(baseline: TimePoint, followup: TimePoint) -> Registration:
    """Rigid registration of the follow-up T1ce to the baseline T1ce, both brain-masked,
    started with the brains' centres of mass on one another (two sessions' scanner
    coordinates need not agree)."""
    from bratseg.native.registration import coregister_rigid, similarity_region
    from bratseg.native.space import chain, rigid_ras_matrix

    def masked(point: TimePoint) -> tuple[sitk.Image, sitk.Image]:
        image = sitk.Cast(point.t1ce, sitk.sitkFloat32)
        brain = sitk.Resample(point.brain, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        if not np.any(sitk.GetArrayViewFromImage(brain)):
            raise InvalidCaseError(None, f"{point.name}: empty brain mask, nothing to register")
        return sitk.Mask(image, brain), brain

    fixed, fixed_brain = masked(baseline)
    moving, moving_brain = masked(followup)
    if _same_image(fixed, moving):  # one scan given twice (two label maps of it compared): nothing to align
        return Registration(sitk.Euler3DTransform(), 2.0, 2.0, 0.0, 0.0)
    shift = np.subtract(_centroid(fixed_brain), _centroid(moving_brain))  # moved follow-up = follow-up + shift
    moved = sitk.Image(moving)
    moved.SetOrigin(tuple(float(o) for o in np.add(moving.GetOrigin(), shift)))
    result = coregister_rigid(fixed, moved, similarity_region(fixed_brain))
    back = sitk.TranslationTransform(3, tuple(float(-s) for s in shift))
    if result.similarity <= result.similarity_before:  # aligned already (the same scan, say): keep it so
        result.transform, result.similarity = sitk.Euler3DTransform(), result.similarity_before
    transform = chain(result.transform, back)
    matrix = rigid_ras_matrix(transform)
    rotation = float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1.0, 1.0))))
    centre = np.append(_centroid(fixed_brain) * np.array([-1, -1, 1]), 1.0)  # LPS -> RAS
    translation = float(np.linalg.norm((matrix @ centre - centre)[:3]))
    return Registration(transform, result.similarity, result.similarity_before, rotation, translation)


def _same_image(a: sitk.Image, b: sitk.Image) -> bool:
    """The same voxels on the same grid."""
    same_grid = a.GetSize() == b.GetSize() and all(
        np.allclose(x, y, atol=1e-4)
        for x, y in (
            (a.GetSpacing(), b.GetSpacing()),
            (a.GetOrigin(), b.GetOrigin()),
            (a.GetDirection(), b.GetDirection()),
        )
    )
    return same_grid and np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


def _centroid(mask: sitk.Image) -> np.ndarray:
    """Centre of mass (LPS, mm) of a binary mask."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    return np.array(stats.GetCentroid(1))


def _grid(point: TimePoint) -> sitk.Image:
    from bratseg.native.space import grid_image

    try:
        return grid_image(point.labels.shape, point.affine)
    except ValueError as exc:
        raise InvalidCaseError(None, f"{point.name}: the label map's grid cannot be resampled onto ({exc})") from None


def resample_onto(image: sitk.Image, point: TimePoint, transform: sitk.Transform, labels: bool) -> np.ndarray:
    """``image`` resampled onto the grid of ``point``'s label map through ``transform``
    (nearest neighbour for ``labels``, else linear)."""
    kind = (sitk.sitkNearestNeighbor, sitk.sitkUInt8) if labels else (sitk.sitkLinear, sitk.sitkFloat32)
    resampled = sitk.Resample(image, _grid(point), transform, kind[0], 0, kind[1])
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


def _save(image: nib.Nifti1Image, path: Path) -> None:
    from bratseg.data.io import save_nifti

    save_nifti(image, path)


def _like_baseline(data: np.ndarray, baseline: TimePoint) -> nib.Nifti1Image:
    header = baseline.header.copy()
    header.set_data_dtype(np.uint8)
    return nib.Nifti1Image(data.astype(np.uint8), baseline.affine, header)


def _prepare_out_dir(out_dir: Path, sources: list) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    for source in sources:
        if isinstance(source, (str, Path)) and Path(source).exists() and Path(source).resolve() == out_dir.resolve():
            raise OutputError(f"{out_dir}: is one of the inputs; choose another --out folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    return out_dir


def run_followup(
    segmenter,
    baseline: TimePointSource,
    followup: TimePointSource,
    out_dir: str | Path,
    *,
    baseline_seg: str | Path | None = None,
    followup_seg: str | Path | None = None,
    preprocess: str = "auto",
    log: Callable[[str], None] | None = None,
    report: ReportWriter | None = None,
) -> FollowupResult:
    """Compare ``followup`` with ``baseline`` and write the results to ``out_dir`` (module
    docstring). ``segmenter`` segments the time points whose label map is not given (None:
    the shipped model, loaded when needed); ``report`` writes ``report.pdf`` (None: no
    report). Raises :class:`~bratseg.errors.BratsegError` subclasses, naming the file, for
    unusable input."""
    started = time.perf_counter()
    out_dir = _prepare_out_dir(Path(out_dir), [baseline, followup, baseline_seg, followup_seg])
    say = log or (lambda line: None)
    # Both inputs checked before either is segmented: a mistake in the second costs no minute.
    baseline, followup = as_case_or_study(baseline), as_case_or_study(followup)
    for seg in (baseline_seg, followup_seg):
        if seg is not None and not Path(seg).is_file():
            raise InvalidCaseError(seg, "label map not found")
    points = {}
    for name, source, seg in (("baseline", baseline, baseline_seg), ("followup", followup, followup_seg)):
        if seg is not None:
            points[name] = given_timepoint(source, seg, preprocess, log=say)
            say(f"{name}: label map given ({Path(seg).name})")
            continue
        if segmenter is None:
            from bratseg.inference.predictor import Segmenter

            segmenter = Segmenter.from_pretrained()
        points[name] = segment_timepoint(segmenter, source, preprocess, log=lambda line, n=name: say(f"{n}: {line}"))
        say(f"{name}: segmented on the {points[name].path} path in {points[name].seconds:.1f} s")
    base, follow = points["baseline"], points["followup"]
    measurements = {name: measure(point.labels, point.affine) for name, point in points.items()}

    registration = register_followup(base, follow)
    say(
        f"follow-up registered to baseline: {registration.rotation_deg:.1f} deg, {registration.translation_mm:.1f} mm, "
        f"NMI {registration.similarity_before:.3f} -> {registration.similarity:.3f}"
    )
    from bratseg.native.space import to_sitk

    follow_on_base = resample_onto(to_sitk(follow.labels, follow.affine), base, registration.transform, True)
    before, after = base.labels > 0, follow_on_base > 0
    difference = np.zeros(base.labels.shape, np.uint8)
    difference[after & ~before] = 1
    difference[before & ~after] = 2
    difference[before & after] = 3
    voxel_cm3 = abs(float(np.linalg.det(base.affine[:3, :3]))) / 1000.0
    difference_cm3 = {DIFFERENCE_LABELS[v]: round(float((difference == v).sum()) * voxel_cm3, 3) for v in (1, 2, 3)}

    b, f = measurements["baseline"], measurements["followup"]
    tracking = track(base, follow, b, f, registration.transform)
    new = tracking.new_measurable
    change = {
        "volumes_percent": {k: percent_change(b.volumes_cm3[k], f.volumes_cm3[k]) for k in b.volumes_cm3},
        "spd_percent": percent_change(b.spd_mm2, tracking.spd_mm2),
        # RANO follows the baseline's targets: the follow-up SPD compared is theirs, measured again.
        "followup_spd_of_baseline_targets_mm2": round(tracking.spd_mm2, 1),
    }
    response, reasons = classify(
        change,
        baseline_et_cm3=b.volumes_cm3["enhancing tumour"],
        followup_et_cm3=f.volumes_cm3["enhancing tumour"],
        baseline_measurable=b.measurable_disease,
        followup_measurable=f.measurable_disease,
        new_measurable=new,
    )
    confidence = {name: None if p.confidence is None else p.confidence.to_dict() for name, p in points.items()}
    notes = _notes(points, registration)
    flagged = any(c is not None and c["low"] for c in confidence.values())
    flagged = flagged or any(note.startswith("registration") for note in notes)
    sources = {
        name: {"source": point.name, "path": point.path, "warnings": list(point.warnings)}
        for name, point in points.items()
    }
    result = FollowupResult(
        b, f, change, response, CRITERIA, flagged, confidence, out_dir, reasons, notes,
        registration.to_json(), difference_cm3, new, sources,
    )  # fmt: skip
    _save(base.label_image(), out_dir / FILES["baseline_seg"])
    _save(follow.label_image(), out_dir / FILES["followup_seg"])
    _save(_like_baseline(follow_on_base, base), out_dir / FILES["followup_seg_on_baseline"])
    _save(_like_baseline(difference, base), out_dir / FILES["difference"])
    if report is not None:
        maps = _report_maps(base, follow, follow_on_base, difference, registration.transform)
        report(result, maps, out_dir / FILES["report"])
    result.seconds = time.perf_counter() - started
    _write_json(result, out_dir / FILES["json"])
    return result


def _report_maps(
    base: TimePoint, follow: TimePoint, follow_on_base: np.ndarray, difference: np.ndarray, transform: sitk.Transform
) -> ReportMaps:
    """The maps a report draws, the T1ce images resampled only when a report is asked for."""
    identity = sitk.Transform()
    images = {
        "baseline": resample_onto(base.t1ce, base, identity, False),
        "followup": resample_onto(follow.t1ce, base, transform, False),
        "followup_own": resample_onto(follow.t1ce, follow, identity, False),
    }
    return ReportMaps(base, follow, follow_on_base, difference, images)


def _notes(points: dict[str, TimePoint], registration: Registration) -> list[str]:
    from bratseg.native.checks import MIN_COREGISTERED_NMI

    notes = []
    if registration.similarity < MIN_COREGISTERED_NMI:
        notes.append(
            f"registration doubtful: the T1ce scans still look unrelated after it (normalised mutual information "
            f"{registration.similarity:.3f}, aligned scans score above {MIN_COREGISTERED_NMI}); is it the same patient?"
        )
    for name, point in points.items():
        if point.confidence is not None and point.confidence.low:
            notes.append(f"{name}: {point.confidence.describe()}")
        if point.confidence is None:
            notes.append(f"{name}: label map given, not segmented here: no confidence score")
    return notes


def _write_json(result: FollowupResult, path: Path) -> None:
    from bratseg.data.io import atomic_write_bytes

    text = json.dumps(result.to_json(), indent=2) + "\n"
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
