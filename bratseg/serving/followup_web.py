"""The follow-up mode of the web front ends (the Flask API's ``/api/followup`` and the Gradio
demo's follow-up section): two time points compared by
:func:`bratseg.followup.run_followup`, its files kept in the
:class:`~bratseg.serving.results.ResultStore` for download and for the viewer.

Each time point becomes a viewer result of its own: its label map on its own grid, its T1ce on
that grid (read from the upload, resampled when the label map is on another grid) and its RANO
measurement, whose diameters the viewer draws. Both results also hold the comparison's files
(``report.pdf``, ``followup.json``, ``difference.nii.gz``, ``followup_seg_on_baseline.nii.gz``).

The model runs through the server's :class:`~bratseg.serving.service.InferenceService`: each
prediction takes one of its slots (:class:`SlotSegmenter`), as a single prediction does.

Example:
    >>> from bratseg.measurement.response import PARTIAL
    >>> response_markdown({"response": PARTIAL, "flagged": False, "reasons": ["SPD -60.0 %"], "criteria": "..."})
    '**RANO category (imaging only): partial response**\\n\\n- SPD -60.0 %\\n\\n<small>...</small>'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bratseg.data.layout import Case
from bratseg.errors import BratsegError
from bratseg.serving.results import (
    DIFFERENCE,
    FOLLOWUP_JSON,
    FOLLOWUP_ON_BASELINE,
    LABELS,
    REPORT,
    SCANS,
    Result,
    ResultStore,
    StoredFile,
    _gz,
)
from bratseg.serving.service import CaseProcessingError
from bratseg.serving.uploads import safe_case_id
from bratseg.serving.zips import DicomStudy

log = logging.getLogger(__name__)

TIME_POINTS = ("baseline", "followup")
TIME_POINT_NAMES = {"baseline": "baseline", "followup": "follow-up"}
_COMPARISON_FILES = {  # result file name -> the file run_followup writes, and its type
    REPORT: ("report.pdf", "application/pdf"),
    FOLLOWUP_JSON: ("followup.json", "application/json"),
    DIFFERENCE: ("difference.nii.gz", "application/gzip"),
    FOLLOWUP_ON_BASELINE: ("followup_seg_on_baseline.nii.gz", "application/gzip"),
}
_OWN_LABELS = {"baseline": "baseline_seg.nii.gz", "followup": "followup_seg.nii.gz"}


class SlotSegmenter:
    """The service's segmenter as :func:`~bratseg.followup.run_followup` uses it:
    every prediction (``segment``) waits for and holds one of the service's slots, so a
    follow-up never runs more predictions at once than the server allows."""

    def __init__(self, service: Any):
        self._service = service

    def segment(self, case: Any) -> Any:
        return self._service.segment(case, "none")  # the fast path's call, in a slot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service.segmenter, name)


@dataclass
class TimePointUpload:
    """One time point as uploaded: its scans (a case or an extracted DICOM study) and,
    optionally, its label map to use instead of segmenting."""

    source: Case | DicomStudy
    seg: Path | None = None

    @property
    def runnable(self) -> Case | Path:
        """What :func:`run_followup` takes: the case, or the DICOM study's folder."""
        return self.source.folder if isinstance(self.source, DicomStudy) else self.source


@dataclass
class Comparison:
    """A follow-up comparison as the web front ends answer it: ``body`` is ``followup.json``,
    ``keys`` the store ids of the two time points' results (``baseline``, ``followup``)."""

    body: dict[str, Any]
    keys: dict[str, str]
    files: dict[str, StoredFile] = field(default_factory=dict)


def compare(
    service: Any,
    points: dict[str, TimePointUpload],
    results: ResultStore,
    workdir: Path,
    preprocess: str = "auto",
) -> Comparison:
    """Run the follow-up comparison of ``points`` in ``workdir`` and keep its results in
    ``results``. Raises :class:`~bratseg.errors.BratsegError` subclasses only: the input's
    own errors, or :class:`CaseProcessingError` naming both time points for anything else."""
    from bratseg.followup import run_followup
    from bratseg.reporting.followup_report import write_followup_report

    base, follow = points["baseline"], points["followup"]
    out = Path(workdir) / "followup-out"
    try:
        result = run_followup(
            SlotSegmenter(service),
            base.runnable,
            follow.runnable,
            out,
            baseline_seg=base.seg,
            followup_seg=follow.seg,
            preprocess=preprocess,
            report=write_followup_report,
        )
        body = result.to_json()
        shared = {
            name: StoredFile((out / written).read_bytes(), mimetype, f"{_pair_name(points)}_{written}")
            for name, (written, mimetype) in _COMPARISON_FILES.items()
            if (out / written).is_file()
        }
        keys = {}
        for name in TIME_POINTS:
            measurement = result.baseline if name == "baseline" else result.followup
            keys[name] = results.put(
                _time_point_result(name, points[name], out / _OWN_LABELS[name], measurement, body, shared)
            )
    except BratsegError:
        raise
    except MemoryError:
        raise CaseProcessingError(f"{_pair_name(points)}: not enough memory to compare these scans now") from None
    except Exception as exc:
        log.exception("follow-up comparison of %s failed", _pair_name(points))
        raise CaseProcessingError(
            f"{_pair_name(points)}: the follow-up comparison failed ({type(exc).__name__}: {exc})"
        ) from exc
    return Comparison(body, keys, shared)


def _pair_name(points: dict[str, TimePointUpload]) -> str:
    return "_vs_".join(safe_case_id(points[name].source.case_id) for name in TIME_POINTS)


def _t1ce_on_grid(upload: TimePointUpload, labels: nib.Nifti1Image) -> bytes:
    """The time point's T1ce on its label map's grid, as gzipped NIfTI: the uploaded file
    itself when it is on that grid, else resampled (linear) through world coordinates."""
    import SimpleITK as sitk

    from bratseg.native.reader import read_scan
    from bratseg.native.space import grid_image

    if isinstance(upload.source, DicomStudy):
        from bratseg.native.inputs import dicom_inputs

        source = dicom_inputs(upload.source.folder).images["t1ce"]
    else:
        source = upload.source.images["t1ce"]
        img = nib.load(str(source))
        if img.shape[:3] == labels.shape[:3] and np.allclose(img.affine, labels.affine, atol=1e-3):
            data = Path(source).read_bytes()
            return data if data[:2] == b"\x1f\x8b" else _gz(data)
    scan = read_scan(source, "t1ce")
    grid = grid_image(labels.shape, labels.affine)
    resampled = sitk.Resample(scan.image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    data = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
    return _gz(nib.Nifti1Image(data, labels.affine).to_bytes())


def _time_point_result(
    name: str,
    upload: TimePointUpload,
    labels_path: Path,
    measurement: Any,
    body: dict[str, Any],
    shared: dict[str, StoredFile],
) -> Result:
    labels = nib.load(str(labels_path))
    case = safe_case_id(upload.source.case_id)
    files = {LABELS: StoredFile(labels_path.read_bytes(), "application/gzip", f"{case}_{name}_seg.nii.gz")}
    warnings = list(body.get(name, {}).get("warnings", []))
    try:
        files[SCANS["t1ce"]] = StoredFile(_t1ce_on_grid(upload, labels), "application/gzip", f"{case}_t1ce.nii.gz")
    except Exception as exc:  # noqa: BLE001 - the viewer then offers the files alone
        log.exception("the %s T1ce of %s could not be kept for the viewer", name, case)
        warnings.append(f"the T1ce is not shown: {type(exc).__name__}: {exc}")
    files.update(shared)
    summary = {
        "case": upload.source.case_id,
        "time_point": TIME_POINT_NAMES[name],
        "shape": list(labels.shape[:3]),
        "spacing": [round(float(s), 4) for s in labels.header.get_zooms()[:3]],
        "modalities": ["t1ce"] if SCANS["t1ce"] in files else [],
        "volumes_cm3": dict(measurement.volumes_cm3),
        "confidence": body.get("confidence", {}).get(name),
        "rano": measurement.to_json(),
        "followup": {"response": body.get("response"), "flagged": body.get("flagged")},
        "warnings": warnings,
    }
    return Result(upload.source.case_id, files, summary)


def response_markdown(body: dict[str, Any]) -> str:
    """The category, the reasons, the flag and the criteria of a ``followup.json``, as Markdown."""
    lines = [f"**RANO category (imaging only): {body['response']}**"]
    if body.get("flagged"):
        lines[0] += " — ⚠️ **flagged: review carefully**"
    reasons = "\n".join(f"- {reason}" for reason in body.get("reasons", []))
    parts = [lines[0], reasons] if reasons else [lines[0]]
    return "\n\n".join([*parts, f"<small>{body.get('criteria', '')}</small>"])


def measurement_rows(body: dict[str, Any]) -> list[list[Any]]:
    """Rows (measure, baseline, follow-up, change %) of a ``followup.json``: the SPD and the
    volumes RANO uses. The follow-up SPD shown is that of the baseline's targets measured again
    (what the change is computed from, as RANO follows the baseline targets) when the baseline
    has targets.

    >>> body = {"baseline": {"spd_mm2": 100.0, "volumes_cm3": {"enhancing tumour": 2.0}},
    ...         "followup": {"spd_mm2": 40.0, "volumes_cm3": {"enhancing tumour": 1.0}},
    ...         "change": {"spd_percent": -60.0, "volumes_percent": {"enhancing tumour": -50.0}}}
    >>> measurement_rows(body)
    [['SPD (mm²)', 100.0, 40.0, -60.0], ['enhancing tumour (cm³)', 2.0, 1.0, -50.0]]
    """
    base, follow, change = body["baseline"], body["followup"], body["change"]
    # Without baseline targets there is nothing to follow: the follow-up's own SPD is shown.
    tracked = change.get("followup_spd_of_baseline_targets_mm2") if base["spd_mm2"] else None
    follow_spd = follow["spd_mm2"] if tracked is None else tracked
    rows: list[list[Any]] = [["SPD (mm²)", base["spd_mm2"], follow_spd, change.get("spd_percent")]]
    for region in ("enhancing tumour", "tumour core", "whole tumour"):
        if region in base.get("volumes_cm3", {}):
            rows.append(
                [
                    f"{region} (cm³)",
                    base["volumes_cm3"][region],
                    follow["volumes_cm3"][region],
                    change.get("volumes_percent", {}).get(region),
                ]
            )
    return rows
