"""A one- or two-page PDF report of a prediction, to hand to a supervisor or attach to a lab
notebook.

It holds the case name (no other identifier), the input sequences used, the preprocessing
applied, the region volumes, the RANO sum of products of perpendicular diameters (SPD), the
confidence score and its flag, the key-slice panel of :mod:`bratseg.reporting.figures` (three
planes with the label overlay, its legend and the uncertainty map), the model's name, version
and weights hash, the date, and the disclaimer. When the label map has enhancing lesions, a
second page lists the RANO measurements (:mod:`bratseg.measurement.rano`): every lesion's two
diameters, product, volume, whether it is measurable and a target, the notes, and each target
lesion on its axial slice with its two diameters drawn.
matplotlib draws it (no pyplot: safe in a web server's threads); text is embedded as
TrueType, so it can be searched and copied.

Example:
    >>> import bratseg, tempfile, pathlib                                   # doctest: +SKIP
    >>> prediction = bratseg.from_pretrained().segment("Brats18_2013_11_1")  # doctest: +SKIP
    >>> write_report(prediction, pathlib.Path(tempfile.mkdtemp()) / "report.pdf")  # doctest: +SKIP
    PosixPath('/tmp/.../report.pdf')
"""

from __future__ import annotations

import datetime
import hashlib
import json
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import ReportError
from bratseg.preprocessing.config import PreprocessingConfig

if TYPE_CHECKING:
    from bratseg.inference.confidence import Confidence
    from bratseg.inference.prediction import Prediction
    from bratseg.measurement.rano import Measurement

DISCLAIMER = "Research use only; not a medical device. Not for diagnosis, treatment or any clinical decision."
DEFAULT_PREPROCESSING = ["BraTS space input: brain mask, z-score, 160x192 window"]
_MODALITY_NAMES = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1", "t2": "T2"}
_PAGE = (8.27, 11.69)  # A4 portrait, inches
_RED = "#b00020"
_GREY = "#444444"
_LESION_ROWS = 14  # lesions listed on the measurement page; the rest are counted
RANO_METHOD = (
    "Enhancing lesions are the 3-D connected components of the enhancing tumour (label 4). Each is measured "
    "on the axial slice where the product of its longest diameter and the longest diameter perpendicular to it "
    "is largest (mm, from the voxel spacing); it is measurable when both are at least 10 mm (more on thick "
    "slices) and it spans at least two slices. Up to three measurable lesions with the largest products are "
    "the targets; the SPD is the sum of their products (RANO 2.0, Wen et al., J Clin Oncol 2023). These are "
    "automatic measurements of a predicted label map: check them against the images."
)
MATPLOTLIB_LOCK = threading.Lock()
"""Held while a PDF is drawn: matplotlib's rc settings are global, and the web servers write
reports from several threads."""


@dataclass
class ModelInfo:
    """What the report says about the model that made the prediction."""

    name: str
    folder: str
    version: str
    weights_sha256: str
    package_version: str


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("bratseg")
    except PackageNotFoundError:  # running from a source tree that is not installed
        import bratseg

        return bratseg.__version__


def weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 (hex) of a model folder's ``model.safetensors``."""
    path = Path(model_dir) / "model.safetensors"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read the model weights ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _model_name(model_dir: Path, meta: dict) -> str:
    """``name`` from bratseg.json, else the first heading of the folder's README, else the
    folder's name."""
    if meta.get("name"):
        return str(meta["name"])
    readme = model_dir / "README.md"
    if readme.is_file():
        for line in readme.read_text(errors="replace").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return model_dir.name


def model_info(model_dir: str | Path | None = None) -> ModelInfo:
    """Name, version and weights hash of a model folder (default: the shipped model)."""
    from bratseg.inference.predictor import SHIPPED_MODEL

    model_dir = Path(model_dir) if model_dir is not None else SHIPPED_MODEL
    try:
        meta = json.loads((model_dir / "bratseg.json").read_text())
    except (OSError, ValueError):
        meta = {}  # a report can still name the folder and hash the weights
    package = _package_version()
    # Exported folders carry no version number yet: the folder and its epoch identify it
    # (folders exported before the "epoch" key named it "best_epoch").
    epoch = meta.get("epoch", meta.get("best_epoch", "?"))
    version = str(meta.get("version") or f"{model_dir.name} (epoch {epoch}, {meta.get('checkpoint', 'best')})")
    return ModelInfo(_model_name(model_dir, meta), model_dir.name, version, weights_sha256(model_dir), package)


def native_steps(steps: list[str], model_dir: str | Path | None = None) -> list[str]:
    """A native-path case's report lines: the pipeline's ``steps``, then the model's own."""
    return [*steps, *preprocessing_steps(model_dir)]


def preprocessing_steps(model_dir: str | Path | None = None) -> list[str]:
    """The BraTS-space preprocessing a model folder's ``preprocessing.json`` describes, as
    report lines; :data:`DEFAULT_PREPROCESSING` when it cannot be read."""
    from bratseg.inference.predictor import SHIPPED_MODEL

    path = (Path(model_dir) if model_dir is not None else SHIPPED_MODEL) / "preprocessing.json"
    try:
        config = PreprocessingConfig.from_json(path)
    except (OSError, ValueError, TypeError):
        return list(DEFAULT_PREPROCESSING)
    width, height = config.crop_size
    step = f"BraTS space input: brain mask, z-score, {width}x{height} window"
    if config.resize is not None:
        step += f", resized to {config.resize[0]}x{config.resize[1]}"
    return [step]


def sequences_line(prediction: Prediction, model_modalities: list[str] | None = None) -> str:
    """``FLAIR, T1ce, T1, T2``, or with absent optional ones ``FLAIR, T1ce (T1, T2 absent:
    fed as zeros)``."""
    present = [m for m in _MODALITY_NAMES if m in prediction.volumes.images]
    expected = model_modalities or list(_MODALITY_NAMES)
    line = ", ".join(_MODALITY_NAMES[m] for m in present)
    absent = [_MODALITY_NAMES.get(m, m) for m in expected if m not in prediction.volumes.images]
    return f"{line} ({', '.join(absent)} absent: fed as zeros)" if absent else line


class PageWriter:
    """Text placed down a page from the top, wrapping long lines."""

    def __init__(self, figure, top: float = 0.955, left: float = 0.07):
        self.figure, self.y, self.left = figure, top, left

    def line(self, text: str, size: float = 10, indent: float = 0.0, **style) -> None:
        for i, piece in enumerate(textwrap.wrap(text, width=int(920 / size)) or [""]):
            self.figure.text(self.left + indent + (0.02 if i else 0.0), self.y, piece, fontsize=size, va="top", **style)
            self.y -= size * 1.45 / (72 * _PAGE[1])

    def space(self, points: float = 6) -> None:
        self.y -= points / (72 * _PAGE[1])

    def cells(self, values: list[str], columns: list[float], size: float = 10, **style) -> None:
        """One table row: each value at its column's x (right-aligned past the page's first third)."""
        for value, x in zip(values, columns):
            self.figure.text(x, self.y, value, fontsize=size, va="top", ha="right" if x > 0.3 else "left", **style)
        self.y -= size * 1.45 / (72 * _PAGE[1])


def _confidence_lines(writer: PageWriter, confidence: Confidence | None) -> None:
    writer.line("Confidence", 12, weight="bold")
    if confidence is None:
        writer.line("not computed: the model's probabilities were not available for this label map", 10)
        return
    flag = f" — {confidence.message}" if confidence.low else ""
    writer.line(
        f"score {confidence.score:.2f} (cases below {confidence.threshold:.2f} are flagged){flag}",
        10,
        color=_RED if confidence.low else "black",
        weight="bold" if confidence.low else "normal",
    )
    writer.line(
        "The score is the share of the possible tumour the model is sure of: of the voxels it gives at least a "
        "1-in-10 chance of being tumour, the fraction it gives more than 9 in 10. It tracked the actual "
        "whole-tumour Dice on unseen cases (Spearman 0.85 on 27 cross-validated cases); it is not a guarantee.",
        8,
        color="#444444",
    )


def spd_line(measurement: Measurement) -> str:
    """One line on the RANO SPD of a measurement, as the report's first page gives it."""
    targets = sum(1 for lesion in measurement.lesions if lesion.target)
    if not measurement.lesions:
        return "RANO: no enhancing lesion; SPD 0 mm²"
    plural = "lesion" if targets == 1 else "lesions"
    return (
        f"RANO: SPD {measurement.spd_mm2:.1f} mm² over {targets} target {plural} "
        f"({len(measurement.lesions)} enhancing in all; measurements on page 2)"
    )


def _draw_page(
    figure,
    prediction: Prediction,
    info: ModelInfo,
    steps: list[str],
    confidence: Confidence | None,
    measurement: Measurement,
) -> None:
    from bratseg.reporting.figures import key_slice_image

    w = PageWriter(figure)
    w.line("Brain tumour segmentation report", 16, weight="bold")
    w.line(DISCLAIMER, 9, color=_RED, weight="bold")
    w.space(8)
    w.line(f"Case: {prediction.volumes.case_id}", 12, weight="bold")
    w.line(f"Input sequences: {sequences_line(prediction)}", 10)
    w.line("Preprocessing:", 10)
    # A native case lists every step of its pipeline: smaller, so the key slices keep their room.
    size = 10 if len(steps) <= 3 else 7
    for step in steps:
        w.line(f"- {step}", size, indent=0.02)
    w.space(6)
    w.line("Region volumes (cm³)", 12, weight="bold")
    for name, value in prediction.region_volumes().items():
        w.figure.text(w.left + 0.02, w.y, name, fontsize=10, va="top")
        w.figure.text(w.left + 0.32, w.y, f"{value:.1f}", fontsize=10, va="top", ha="right")
        w.space(10 * 1.45)
    w.line(spd_line(measurement), 10, weight="bold")
    w.space(6)
    _confidence_lines(w, confidence)
    for warning in prediction.warnings:
        w.line(f"Warning: {warning}", 9, color=_RED)
    w.space(6)

    footer = 0.13  # figure fraction kept for the model lines and the disclaimer
    panel = key_slice_image(prediction, scale=2)
    axes_height = w.y - footer - 0.01
    axes = figure.add_axes((0.05, footer, 0.90, axes_height))
    axes.imshow(panel, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title("Key slices (largest tumour area per plane)", fontsize=10, loc="left")

    _footer(figure, info, footer)


def _footer(figure, info: ModelInfo, footer: float) -> None:
    f = PageWriter(figure, top=footer - 0.005)
    f.line(f"Model: {info.name}, version {info.version}", 8)
    f.line(f"Weights SHA-256: {info.weights_sha256}", 8, family="monospace")
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    f.line(f"bratseg {info.package_version}; report generated {date}", 8)
    f.line(DISCLAIMER, 8, color=_RED, weight="bold")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _draw_measurement_page(figure, prediction: Prediction, info: ModelInfo, measurement: Measurement) -> None:
    """The second page: the RANO measurements and the target lesions with their diameters."""
    from bratseg.reporting.figures import draw_target_lesions

    w = PageWriter(figure)
    w.line(f"RANO measurements: {prediction.volumes.case_id}", 16, weight="bold")
    w.line(DISCLAIMER, 9, color=_RED, weight="bold")
    w.space(8)
    targets = [lesion for lesion in measurement.lesions if lesion.target]
    w.line(
        f"Sum of products of perpendicular diameters (SPD) of the {len(targets)} target "
        f"{'lesion' if len(targets) == 1 else 'lesions'}: {measurement.spd_mm2:.1f} mm²",
        12,
        weight="bold",
    )
    volumes = measurement.volumes_cm3
    w.line(
        f"Enhancing tumour {volumes['enhancing tumour']:.2f} cm³; tumour core {volumes['tumour core']:.2f} cm³; "
        f"FLAIR abnormality (whole tumour) {volumes['whole tumour']:.2f} cm³",
        10,
    )
    w.line(f"Axial slices along voxel axis {measurement.axial_axis}, {measurement.slice_thickness_mm:.2f} mm apart", 9)
    w.space(6)
    columns = (
        "lesion",
        "longest (mm)",
        "perpendicular (mm)",
        "product (mm²)",
        "volume (cm³)",
        "measurable",
        "target",
        "slice",
    )
    stops = (0.0, 0.07, 0.2, 0.37, 0.52, 0.66, 0.77, 0.84)
    for x, title in zip(stops, columns):
        figure.text(w.left + x, w.y, title, fontsize=8.5, va="top", weight="bold")
    w.space(8.5 * 1.5)
    for number, lesion in enumerate(measurement.lesions[:_LESION_ROWS], start=1):
        cells = (
            str(number),
            f"{lesion.longest_mm:.1f}",
            f"{lesion.perpendicular_mm:.1f}",
            f"{lesion.product_mm2:.1f}",
            f"{lesion.volume_cm3:.3f}",
            _yes(lesion.measurable),
            _yes(lesion.target),
            str(lesion.slice),
        )
        for x, cell in zip(stops, cells):
            figure.text(w.left + x, w.y, cell, fontsize=8.5, va="top", weight="bold" if lesion.target else "normal")
        w.space(8.5 * 1.45)
    rest = measurement.lesions[_LESION_ROWS:]
    if rest:
        w.line(f"... and {len(rest)} smaller lesions ({sum(lesion.measurable for lesion in rest)} measurable)", 8.5)
    for note in measurement.notes:
        w.line(f"Note: {note}", 9, color=_RED)
    w.space(4)
    w.line(RANO_METHOD, 8, color=_GREY)
    w.space(6)
    footer = 0.1
    if targets:
        w.line("Target lesions: longest diameter in cyan, perpendicular diameter in magenta", 10, weight="bold")
        height = min(0.3, w.y - footer - 0.06)
        draw_target_lesions(
            figure, (0.05, w.y - height - 0.045, 0.9, height), prediction.volumes, prediction.labels, measurement
        )
    _footer(figure, info, footer)


def write_report(
    prediction: Prediction,
    path: str | Path,
    *,
    model_dir: str | Path | None = None,
    preprocessing: list[str] | None = None,
    confidence: Confidence | None = None,
    measurement: Measurement | None = None,
) -> Path:
    """Write the PDF report of ``prediction`` to ``path`` atomically and return the path.

    Args:
        prediction: what :meth:`bratseg.Segmenter.segment` returned (or a label map wrapped in
            a :class:`~bratseg.inference.predictor.Prediction`).
        path: the PDF to write.
        model_dir: the model folder that made the prediction, for its name and weights hash
            (default: the prediction's ``model_dir`` attribute when it has one, else the
            shipped model).
        preprocessing: the preprocessing steps applied, one line each (default: those of
            ``model_dir``'s preprocessing.json, e.g. :data:`DEFAULT_PREPROCESSING`).
        confidence: the case's confidence (default: :func:`bratseg.inference.confidence.assess`
            when the prediction carries probabilities; without them the report says so).
        measurement: the RANO measurement of ``prediction.labels`` on its grid (default:
            :func:`bratseg.measurement.rano.measure` of them).
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from bratseg.inference.confidence import assess
    from bratseg.measurement.rano import measure

    path = Path(path)
    if model_dir is None:  # a prediction that records its model folder names it
        model_dir = getattr(prediction, "model_dir", None)
    info = model_info(model_dir)
    steps = list(preprocessing) if preprocessing is not None else preprocessing_steps(model_dir)
    if confidence is None and prediction.probabilities is not None:
        confidence = assess(prediction)
    if measurement is None:
        measurement = measure(prediction.labels, prediction.volumes.affine)

    def write(tmp: Path) -> None:
        # TrueType text (not matplotlib's default Type 3) keeps the PDF's text extractable.
        # rcParams are process-wide: the lock keeps concurrent web requests from mixing them.
        with MATPLOTLIB_LOCK, matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
            figure = Figure(figsize=_PAGE)
            _draw_page(figure, prediction, info, steps, confidence, measurement)
            metadata = {"Title": f"bratseg report: {prediction.volumes.case_id}", "Creator": "bratseg"}
            with PdfPages(tmp, metadata=metadata) as pdf:
                pdf.savefig(figure)
                if measurement.lesions:
                    page = Figure(figsize=_PAGE)
                    _draw_measurement_page(page, prediction, info, measurement)
                    pdf.savefig(page)

    try:
        atomic_write_bytes(path, write)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    return path
