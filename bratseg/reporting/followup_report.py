"""The PDF report of a follow-up comparison (:func:`bratseg.followup.run_followup`, which calls
:func:`write_followup_report` when its caller passes it as ``report``).

Page 1: both time points (source, path, confidence), the response category and why, the
measurements side by side (SPD, region volumes) with their changes, the new / resolved /
stable tumour, the registration, the criteria and the disclaimer. Page 2: matched axial slices
of the baseline grid, the baseline and the registered follow-up side by side with their labels,
and the difference map. Page 3 (when either time point has target lesions): each target lesion
on its own scan's axial slice with its two diameters drawn. matplotlib draws it without
pyplot; text is embedded as TrueType.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bratseg.data.io import CaseVolumes, atomic_write_bytes
from bratseg.errors import ReportError
from bratseg.reporting.render import display_slice, orientation, render_overlay, voxel_axis
from bratseg.reporting.report import DISCLAIMER, MATPLOTLIB_LOCK, PageWriter

if TYPE_CHECKING:
    from bratseg.followup.compare import FollowupResult, ReportMaps
    from bratseg.followup.timepoint import TimePoint

_PAGE = (8.27, 11.69)  # A4 portrait, inches
_RED = "#b00020"
_GREY = "#444444"
# new: red, resolved: blue, stable: yellow (difference.nii.gz values 1, 2, 3)
DIFFERENCE_COLOURS = {1: (230, 30, 30), 2: (40, 110, 255), 3: (250, 215, 40)}
_ALPHA = 0.55
_MATCHED_ROWS = 3


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _summary_page(figure, result: FollowupResult) -> None:
    data = result.to_json()
    w = PageWriter(figure)
    w.line("Follow-up comparison (RANO measurements)", 16, weight="bold")
    w.line(DISCLAIMER, 9, color=_RED, weight="bold")
    w.space(8)
    for name, title in (("baseline", "Baseline"), ("followup", "Follow-up")):
        point = data[name]
        confidence = point["confidence"]
        conf = (
            "label map given (no confidence score)" if confidence is None else f"confidence {confidence['score']:.2f}"
        )
        if confidence is not None and confidence["low"]:
            conf += ", low confidence: review carefully"
        w.line(f"{title}: {point.get('source', '')} ({point.get('path', '')} path); {conf}", 10)
    w.space(8)
    w.line(f"Response (imaging only): {result.response}", 14, weight="bold")
    for reason in result.reasons:
        w.line(f"- {reason}", 10, indent=0.02)
    if result.flagged:
        w.line("FLAGGED: a time point has low confidence or the registration is doubtful; review carefully", 10,
               color=_RED, weight="bold")  # fmt: skip
    w.space(8)
    columns = [w.left, 0.52, 0.70, 0.88]
    w.cells(["", "baseline", "follow-up", "change"], columns, 10, weight="bold")
    b, f = result.baseline, result.followup
    tracked = result.change.get("followup_spd_of_baseline_targets_mm2", f.spd_mm2)
    w.cells(["SPD of the baseline targets (mm²)", f"{b.spd_mm2:.1f}", f"{tracked:.1f}",
             _percent(result.change["spd_percent"])], columns)  # fmt: skip
    w.cells(["SPD of each scan's own targets (mm²)", f"{b.spd_mm2:.1f}", f"{f.spd_mm2:.1f}", ""], columns)
    w.cells(["target / measurable / all enhancing lesions",
             f"{len(b.targets)} / {sum(x.measurable for x in b.lesions)} / {len(b.lesions)}",
             f"{len(f.targets)} / {sum(x.measurable for x in f.lesions)} / {len(f.lesions)}", ""], columns)  # fmt: skip
    for region, before in b.volumes_cm3.items():
        change = result.change["volumes_percent"][region]
        w.cells([f"{region} (cm³)", f"{before:.2f}", f"{f.volumes_cm3[region]:.2f}", _percent(change)], columns)
    w.space(6)
    d = result.difference_cm3
    w.line(
        f"Whole tumour on the baseline grid: new {d['new']:.2f} cm³, resolved {d['resolved']:.2f} cm³, "
        f"stable {d['stable']:.2f} cm³; new measurable enhancing lesions: {result.new_measurable_lesions}",
        9,
    )
    r = result.registration
    w.line(
        f"Registration (follow-up T1ce to baseline T1ce, rigid, brain-masked): rotation {r['rotation_deg']:.1f}°, "
        f"shift {r['translation_mm']:.1f} mm, normalised mutual information {r['similarity_before']:.3f} -> "
        f"{r['similarity']:.3f}",
        9,
    )
    w.space(6)
    for name, measurement in (("Baseline", b), ("Follow-up", f)):
        for lesion_number, lesion in enumerate(measurement.targets, start=1):
            w.line(
                f"{name} target {lesion_number}: {lesion.longest_mm:.1f} x {lesion.perpendicular_mm:.1f} mm = "
                f"{lesion.product_mm2:.0f} mm² (axial slice {lesion.slice}), {lesion.volume_cm3:.2f} cm³",
                9,
            )
        for note in measurement.notes:
            w.line(f"{name}: {note}", 8, color=_GREY)
    for note in result.notes:
        w.line(f"Note: {note}", 8, color=_RED if "doubtful" in note or "low confidence" in note else _GREY)
    w.space(8)
    w.line("Criteria", 11, weight="bold")
    w.line(result.criteria, 8, color=_GREY)
    w.space(4)
    w.line(DISCLAIMER, 9, color=_RED, weight="bold")


def _volumes(point: TimePoint, t1ce: np.ndarray) -> CaseVolumes:
    return CaseVolumes(
        point.name, {"t1ce": t1ce.astype(np.float32, copy=False)}, point.affine, point.label_image().header
    )


def _matched_slices(base: TimePoint, follow_on_base: np.ndarray, axis: int, measurement) -> list[int]:
    """Up to three baseline-grid slices: the baseline targets', then the largest whole tumour
    at each time point; none closer than 4 slices to another."""
    others = tuple(a for a in range(3) if a != axis)
    candidates = [lesion.slice for lesion in measurement.targets] if measurement.axial_axis == axis else []
    for labels in (base.labels, follow_on_base):
        area = (labels > 0).sum(axis=others)
        if area.any():
            candidates.append(int(np.argmax(area)))
    if not candidates:
        candidates = [base.labels.shape[axis] // 2]
    chosen: list[int] = []
    for index in candidates:
        if all(abs(index - c) >= 4 for c in chosen):
            chosen.append(index)
    return sorted(chosen[:_MATCHED_ROWS])


def _difference_picture(volumes: CaseVolumes, difference: np.ndarray, index: int) -> np.ndarray:
    grey = render_overlay(volumes, np.zeros(difference.shape, np.uint8), "whole tumour", "axial", index, base="t1ce")
    shown = display_slice(difference, "axial", index, orientation(volumes.affine))
    picture = grey.astype(np.float32)
    for value, colour in DIFFERENCE_COLOURS.items():
        where = shown == value
        picture[where] = (1 - _ALPHA) * picture[where] + _ALPHA * np.asarray(colour, np.float32)
    return np.round(picture).astype(np.uint8)


def _matched_page(figure, result, base, follow_on_base, difference, images) -> None:
    from bratseg.reporting.figures import display_spacing

    w = PageWriter(figure)
    w.line("Matched axial slices (baseline grid)", 14, weight="bold")
    w.line(
        "Left: baseline; middle: follow-up registered onto the baseline; right: whole tumour new (red), "
        "resolved (blue), stable (yellow). Labels: necrotic core, edema and enhancing tumour in their colours.",
        9,
    )
    baseline_volumes = _volumes(base, images["baseline"])
    followup_volumes = _volumes(base, images["followup"])
    axis = voxel_axis("axial", orientation(base.affine))
    slices = _matched_slices(base, follow_on_base, axis, result.baseline)
    row_mm, col_mm = display_spacing("axial", base.affine, baseline_volumes.spacing)
    top, bottom = w.y - 0.01, 0.06
    height = (top - bottom) / len(slices)
    for row, index in enumerate(slices):
        pictures = [
            render_overlay(baseline_volumes, base.labels, "whole tumour", "axial", index, base="t1ce"),
            render_overlay(followup_volumes, follow_on_base, "whole tumour", "axial", index, base="t1ce"),
            _difference_picture(baseline_volumes, difference, index),
        ]
        titles = [f"baseline, slice {index}", f"follow-up, slice {index}", "difference"]
        for column, (picture, title) in enumerate(zip(pictures, titles)):
            axes = figure.add_axes((0.04 + column * 0.32, top - (row + 1) * height, 0.30, height - 0.025))
            axes.imshow(picture, interpolation="nearest", aspect=row_mm / col_mm)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(title, fontsize=8)
    figure.text(0.07, 0.03, DISCLAIMER, fontsize=8, color=_RED, weight="bold")


def _targets_page(figure, result, base, follow, images) -> None:
    from bratseg.reporting.figures import draw_target_lesions

    w = PageWriter(figure)
    w.line("Target lesions with their two diameters", 14, weight="bold")
    w.line("Each on its own scan's axial slice: longest diameter in cyan, perpendicular in magenta.", 9)
    rows = [
        ("Baseline", base, images["baseline"], result.baseline, 0.50),
        ("Follow-up", follow, images["followup_own"], result.followup, 0.08),
    ]
    for title, point, t1ce, measurement, bottom in rows:
        figure.text(0.07, bottom + 0.37, title, fontsize=12, weight="bold", va="bottom")
        drawn = draw_target_lesions(
            figure, (0.05, bottom, 0.90, 0.35), _volumes(point, t1ce), point.labels, measurement
        )
        if not drawn:
            figure.text(0.07, bottom + 0.30, "no target lesion drawn (none measurable)", fontsize=9, color=_GREY)
    figure.text(0.07, 0.03, DISCLAIMER, fontsize=8, color=_RED, weight="bold")


def write_followup_report(result: FollowupResult, maps: ReportMaps, path: str | Path) -> Path:
    """Write the follow-up report of ``result`` to ``path`` atomically; ``maps`` holds the time
    points, the label and difference maps and the T1ce images it draws
    (:class:`~bratseg.followup.compare.ReportMaps`)."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    path = Path(path)
    base, follow, images = maps.baseline, maps.followup, maps.images
    follow_on_base, difference = maps.followup_on_baseline, maps.difference

    def write(tmp: Path) -> None:
        with MATPLOTLIB_LOCK, matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
            metadata = {"Title": f"bratseg follow-up: {base.name} -> {follow.name}", "Creator": "bratseg"}
            with PdfPages(tmp, metadata=metadata) as pdf:
                page = Figure(figsize=_PAGE)
                _summary_page(page, result)
                pdf.savefig(page)
                page = Figure(figsize=_PAGE)
                _matched_page(page, result, base, follow_on_base, difference, images)
                pdf.savefig(page)
                if result.baseline.targets or result.followup.targets:
                    page = Figure(figsize=_PAGE)
                    _targets_page(page, result, base, follow, images)
                    pdf.savefig(page)

    try:
        atomic_write_bytes(path, write)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    return path
