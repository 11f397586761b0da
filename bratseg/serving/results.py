"""What a prediction leaves for its user to fetch: the label map, the uncertainty map, the
input scans the viewer shows and the PDF report, kept in memory for a while under an
unguessable id. The summary carries the RANO measurement of the label map as returned
(``rano``: :meth:`bratseg.measurement.rano.Measurement.to_json`, whose lesions hold the ends
of both diameters, which the viewer draws).

Shared by the Flask app (``/api/result/...``, the viewer) and the Gradio demo (which embeds
the same viewer). Nothing is written to disk: results are bytes in a bounded LRU, dropped
when it is full (by count or bytes) or when they are older than its lifetime.

Example:
    >>> store = ResultStore(max_items=2)
    >>> key = store.put(Result("case", {"labels.nii.gz": StoredFile(b"...", "application/gzip", "case_seg.nii.gz")}))
    >>> store.get(key).files["labels.nii.gz"].download_name
    'case_seg.nii.gz'
    >>> store.get("guess") is None
    True
"""

from __future__ import annotations

import gzip
import logging
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib

from bratseg.data.layout import MODALITIES
from bratseg.errors import BratsegError
from bratseg.inference.confidence import LOW_CONFIDENCE_MESSAGE, assess, uncertainty_image
from bratseg.inference.prediction import Prediction
from bratseg.measurement.rano import Measurement, measure
from bratseg.serving.uploads import safe_case_id

log = logging.getLogger(__name__)

LABELS = "labels.nii.gz"
UNCERTAINTY = "uncertainty.nii.gz"
REPORT = "report.pdf"
SCANS = {m: f"{m}.nii.gz" for m in MODALITIES}
# A follow-up comparison's files, kept with each of its two time points (bratseg.serving.followup_web)
FOLLOWUP_JSON = "followup.json"
DIFFERENCE = "difference.nii.gz"
FOLLOWUP_ON_BASELINE = "followup_seg_on_baseline.nii.gz"
RESULT_FILES = (LABELS, UNCERTAINTY, REPORT, *SCANS.values(), FOLLOWUP_JSON, DIFFERENCE, FOLLOWUP_ON_BASELINE)
"""Every file name a result may hold: the routes serve these and nothing else."""

DEFAULT_MAX_RESULTS = 32
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_AGE_S = 3600.0  # results hold patient scans: gone within the hour
_GZIP = b"\x1f\x8b"


@dataclass
class StoredFile:
    """One downloadable file of a result."""

    data: bytes
    mimetype: str
    download_name: str


@dataclass
class Result:
    """A prediction's files (keyed by a name of :data:`RESULT_FILES`) and its JSON summary."""

    case_id: str
    files: dict[str, StoredFile]
    summary: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    @property
    def scans(self) -> list[str]:
        """Modalities whose scan the result holds, in :data:`MODALITIES` order."""
        return [m for m, name in SCANS.items() if name in self.files]


class ResultStore:
    """A bounded, thread-safe LRU of :class:`Result` keyed by random ids.

    Ids are unguessable (128 random bits), so one user cannot fetch another's result. A
    result is dropped when more than ``max_items`` or ``max_bytes`` are held (oldest first)
    or once it is ``max_age_s`` seconds old.
    """

    def __init__(
        self,
        max_items: int = DEFAULT_MAX_RESULTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def max_result_bytes(self) -> int:
        """The most one result may hold, so that several fit at once."""
        return max(1, self.max_bytes // 4)

    def put(self, result: Result) -> str:
        """Store ``result``; returns its id."""
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._expire()
            self._items[key] = result
            self._bytes += result.nbytes
            while len(self._items) > 1 and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                _old, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return key

    def get(self, key: str) -> Result | None:
        """The result stored under ``key``, or None when unknown, evicted or expired."""
        with self._lock:
            self._expire()
            result = self._items.get(key)
            if result is not None:
                self._items.move_to_end(key)
            return result

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.max_age_s
        for key in [k for k, r in self._items.items() if r.created < cutoff]:
            self._bytes -= self._items.pop(key).nbytes

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)


def _gz(data: bytes, level: int = 1) -> bytes:
    # mtime=0: the same map gives the same bytes; level 1: a few times faster than 6 for
    # a few percent more bytes, and this runs while the user waits.
    return gzip.compress(data, compresslevel=level, mtime=0)


def labels_nifti_gz(prediction: Prediction) -> bytes:
    """The prediction's BraTS 2020 (0/1/2/4) label map as gzipped NIfTI bytes, with the
    input's affine and header, built in memory (no file on disk)."""
    return _gz(prediction.to_nifti().to_bytes(), 6)


def _scan_bytes(scan: Path | nib.Nifti1Image) -> bytes:
    """A scan as gzipped NIfTI bytes: a file as uploaded when it already is gzipped."""
    if isinstance(scan, nib.Nifti1Image):
        return _gz(scan.to_bytes())
    data = Path(scan).read_bytes()
    return data if data[:2] == _GZIP else _gz(data)


def _report_pdf(
    prediction: Prediction,
    confidence: Any,
    model_dir: Path | None,
    preprocessing: dict[str, Any] | None,
    measurement: Measurement | None,
) -> bytes:
    from bratseg.reporting.report import native_steps, write_report

    steps = None  # the model's own BraTS-space steps
    if preprocessing is not None and preprocessing.get("path") == "native":
        steps = native_steps(preprocessing.get("steps", []), model_dir)
    with tempfile.TemporaryDirectory(prefix="bratseg-report-") as folder:
        path = write_report(
            prediction,
            Path(folder) / REPORT,
            model_dir=model_dir,
            confidence=confidence,
            preprocessing=steps,
            measurement=measurement,
        )
        return path.read_bytes()


def build_result(
    prediction: Prediction,
    scans: dict[str, Path | nib.Nifti1Image] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES // 4,
    model_dir: Path | None = None,
    report: bool = True,
    model_space: Prediction | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Result:
    """The :class:`Result` of ``prediction``: label map, uncertainty map, PDF report, and the
    scans it is drawn over (``scans``: modality -> file, read now, so the files may go
    afterwards, or an image in memory).

    ``model_space`` is the prediction on the grid the model saw, when ``prediction`` was
    resampled onto the patient's (the native path): the confidence score is computed there,
    where it was calibrated. ``preprocessing`` (what ran before the model) joins the summary.

    Scans are added in :data:`MODALITIES` order while the result stays within ``max_bytes``
    (the label map, the uncertainty map and the report always are). A missing confidence
    (a prediction without probabilities) or a report that cannot be drawn costs only that
    file; the reason joins the summary's ``warnings``.
    """
    volumes = prediction.volumes
    case = safe_case_id(volumes.case_id)
    files = {LABELS: StoredFile(labels_nifti_gz(prediction), "application/gzip", f"{case}_seg.nii.gz")}
    warnings = list(prediction.warnings)
    measurement = None
    try:  # RANO on the label map as returned: the patient's grid for a native case
        measurement = measure(prediction.labels, volumes.affine)
    except Exception as exc:  # noqa: BLE001 - the measurement is an extra: the prediction still stands
        log.exception("RANO measurement of %s failed", case)
        warnings.append(f"no RANO measurement: {type(exc).__name__}: {exc}")
    confidence = None
    try:
        confidence = assess(model_space or prediction)
        uncertainty = _gz(uncertainty_image(prediction).to_bytes())
        files[UNCERTAINTY] = StoredFile(uncertainty, "application/gzip", f"{case}_uncertainty.nii.gz")
    except BratsegError as exc:
        warnings.append(f"no confidence map: {exc}")
    if confidence is not None and confidence.low:
        warnings.append(LOW_CONFIDENCE_MESSAGE)
    if report:
        try:
            files[REPORT] = StoredFile(
                _report_pdf(prediction, confidence, model_dir, preprocessing, measurement),
                "application/pdf",
                f"{case}_report.pdf",
            )
        except Exception as exc:  # noqa: BLE001 - the report is an extra: the prediction still stands
            log.exception("report of %s failed", case)
            warnings.append(f"no PDF report: {type(exc).__name__}: {exc}")
    used = sum(len(f.data) for f in files.values())
    for modality in MODALITIES:
        path = (scans or {}).get(modality)
        if path is None or modality not in volumes.images:
            continue
        data = _scan_bytes(path)
        if used + len(data) > max_bytes:
            warnings.append(f"the {modality} scan is too large to keep for the viewer")
            continue
        files[SCANS[modality]] = StoredFile(data, "application/gzip", f"{case}_{modality}.nii.gz")
        used += len(data)
    summary = {
        "case": volumes.case_id,
        "shape": list(volumes.shape),
        "spacing": [round(float(s), 4) for s in volumes.spacing],
        "modalities": sorted(volumes.images),
        "volumes_cm3": prediction.region_volumes(),
        "seconds": round(prediction.seconds, 3),
        "confidence": None if confidence is None else confidence.to_dict(),
        "rano": None if measurement is None else measurement.to_json(),
        "warnings": warnings,
    }
    if preprocessing is not None:
        summary["preprocessing"] = preprocessing
    return Result(volumes.case_id, files, summary)
