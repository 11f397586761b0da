"""Whole-volume prediction with a trained model folder: the one inference path behind the CLI,
the Flask API and the Gradio demo.

Example:
    >>> import bratseg, tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "SYNTHETIC_1", shape=(96, 96, 40))
    >>> segmenter = bratseg.from_pretrained()          # the model shipped with bratseg
    >>> labels = segmenter.predict(case)               # BraTS 2020 labels 0/1/2/4
    >>> labels.shape, labels.dtype
    ((96, 96, 40), dtype('uint8'))

Speed (see BENCHMARKS.md for the figures): only slices that hold brain are run, cropped to the
brain window; BatchNorm is folded into the convolutions; the network runs channels-last in
bfloat16 where the CPU has native bf16 (AVX-512 BF16 / AMX).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bratseg.data.io import CaseVolumes, label_image, load_case, save_nifti
from bratseg.data.labels import ED, ET, NCR, regions_to_labels, to_brats2020
from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import ModelLoadError
from bratseg.inference import guards
from bratseg.inference.postprocessing import remove_small_components
from bratseg.inference.regions import region_volumes
from bratseg.model.precision import cpu_has_bf16
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.crop import resize_slices, uncrop_xy
from bratseg.preprocessing.pipeline import prepare_case

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "brats18-unet-resnet18"
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessing.json", "bratseg.json")
# Slices per forward pass. On the 2-core CPU 8 and 16 are equally fast (within run-to-run noise
# of about 5 %), 4 and 32 slower (BENCHMARKS.md); 8 holds less memory.
DEFAULT_BATCH_SIZE = 8


@dataclass
class Prediction:
    """A prediction and what a report needs: labels in BraTS 2020's 0/1/2/4 scheme on the
    input's grid, the input volumes, and the prediction's time in seconds (preprocessing,
    network and postprocessing; reading the files is not included).

    ``probabilities`` are the model's region probabilities ``[3, X, Y, Z]`` (WT, TC, ET,
    float16, on the input's grid, 0 outside the brain and the model's window) before
    post-processing: what confidence maps and resampling to another grid are computed from.
    ``warnings`` are the one-line flags of :mod:`bratseg.inference.guards` (empty when
    nothing looked wrong).
    """

    labels: np.ndarray
    volumes: CaseVolumes
    seconds: float
    probabilities: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    def region_volumes(self) -> dict[str, float]:
        """Volume of each tumour region in cm3."""
        return region_volumes(self.labels, self.volumes.spacing)

    def save(self, path: str | Path) -> Path:
        """Write the label map with the input's affine and header (atomically)."""
        return save_nifti(self.to_nifti(), path)

    def to_nifti(self) -> nib.Nifti1Image:
        """The label map as a NIfTI image with the input's affine and header."""
        return label_image(self.labels, self.volumes)


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, dict, dict]:
    """The network of a model folder, ready for inference, its ``bratseg.json`` metadata and
    SMP's ``config.json``.

    The network loads through SMP's ``from_pretrained`` (safetensors only: nothing is
    unpickled), then torch.fx folds every BatchNorm into the convolution before it, which
    saves a pass over each feature map (BENCHMARKS.md).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model folder not found")
    missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: missing {', '.join(missing)}; export the run with `bratseg export`")
    try:
        meta = json.loads((model_dir / "bratseg.json").read_text())
        config = json.loads((model_dir / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{model_dir}: unreadable model metadata ({exc})") from None
    import segmentation_models_pytorch as smp
    from safetensors import SafetensorError

    try:
        model = smp.from_pretrained(str(model_dir)).float().eval()
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as exc:
        raise ModelLoadError(f"{model_dir}: the model files do not agree ({exc})") from None
    return fold_batchnorm(model), meta, config


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in eval mode) with each BatchNorm folded into the convolution before it, by
    torch.fx; a network that fx cannot trace is returned unchanged (folding only saves time)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:  # tracing failures have no common type; fall back to the eager model
        return model


class Segmenter:
    """A model plus the preprocessing it was trained with.

    Args:
        model: the U-Net (an SMP model, BatchNorm folded or not).
        preprocessing: how inputs are prepared (from the model folder).
        target: ``regions`` (sigmoid WT/TC/ET) or ``classes`` (softmax over 4 labels).
        batch_size: slices per forward pass.
        precision: ``bf16`` (autocast), ``fp32``, or ``auto``: bf16 on a GPU or a CPU with
            native bf16, else fp32.
        flip_tta: average predictions over the three in-plane flips (4x the network time).
        device: torch device.
        threads: intra-op threads for torch (process-wide); None leaves torch's default
            (one per physical core).
        min_component_fraction: connected components of the whole tumour smaller than this
            fraction of the largest are removed (0 keeps everything); chosen on the training
            cases, where it never lowered Dice, while it cut the validation HD95 from 31 to
            7 mm (model_card.md).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: PreprocessingConfig,
        target: str = "regions",
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str = "auto",
        flip_tta: bool = False,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        min_component_fraction: float = 0.1,
    ):
        if precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device, memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        self.target = target
        self.batch_size = batch_size
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" or cpu_has_bf16() else "fp32"
        self.precision = precision
        self.flip_tta = flip_tta
        self.min_component_fraction = min_component_fraction

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, **kwargs) -> Segmenter:
        """Load a model folder written by ``bratseg export``; None loads the shipped model."""
        model_dir = Path(model_dir) if model_dir is not None else SHIPPED_MODEL
        model, meta, config = load_model(model_dir)
        prep_path = model_dir / "preprocessing.json"
        try:
            prep = PreprocessingConfig.from_json(prep_path)
        except (ValueError, TypeError, OSError) as exc:
            raise ModelLoadError(f"{prep_path}: not a valid preprocessing config ({exc})") from None
        in_channels = config.get("in_channels")
        if in_channels is not None and in_channels != len(prep.modalities):
            raise ModelLoadError(
                f"{model_dir}: config.json has {in_channels} input channels but preprocessing.json "
                f"lists {len(prep.modalities)} modalities"
            )
        return cls(model, prep, meta.get("target", "regions"), **kwargs)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def segment(self, case: Case | CaseVolumes | str | Path) -> Prediction:
        """Predict a case (folder, :class:`Case` or loaded volumes).

        Every front end comes through here, so the input and result checks of
        :mod:`bratseg.inference.guards` apply to all of them: input the model cannot be
        trusted on raises :class:`bratseg.errors.BratsegError`; a doubtful result is returned
        with ``warnings``.
        """
        if isinstance(case, (str, Path)):
            case = case_from_folder(case)
        volumes = case if isinstance(case, CaseVolumes) else load_case(case, with_label=False)
        t0 = time.perf_counter()
        warnings = guards.check_input(volumes, self.preprocessing)
        labels, probabilities = self._predict_volumes(volumes)
        prediction = Prediction(labels, volumes, time.perf_counter() - t0, probabilities, warnings)
        prediction.warnings += guards.check_result(prediction)
        return prediction

    def predict(self, case: Case | CaseVolumes | str | Path) -> np.ndarray:
        """BraTS 2020 (0/1/2/4) label map of ``case`` on its own grid."""
        return self.segment(case).labels

    @torch.inference_mode()
    def _predict_volumes(self, volumes: CaseVolumes) -> tuple[np.ndarray, np.ndarray]:
        """BraTS 2020 labels and region probabilities ``[3, X, Y, Z]`` (float16) of a case."""
        prep = prepare_case(volumes, self.preprocessing)
        window = prep.image.shape[1:3]
        zs = np.flatnonzero(prep.brain.any(axis=(0, 1)))  # empty slices stay background
        probs = np.zeros((3, *prep.brain.shape), dtype=np.float16)
        for z in self._batches(zs):
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(prep.image[..., z], 3, 0)))
            if self.preprocessing.resize is not None:
                x = resize_slices(x, self.preprocessing.resize)
            p = self._forward(x.to(self.device))
            if self.preprocessing.resize is not None:
                p = resize_slices(p, window)
            probs[..., z] = np.moveaxis(self._to_region_probabilities(p).cpu().numpy(), 0, 3)
        probs *= prep.brain  # nothing outside the brain
        labels = regions_to_labels(probs > 0.5)
        labels = remove_small_components(uncrop_xy(labels, prep.start, prep.full_shape), self.min_component_fraction)
        full = np.zeros((3, *prep.full_shape), dtype=np.float16)
        for region in range(3):
            full[region] = uncrop_xy(probs[region], prep.start, prep.full_shape)
        return to_brats2020(labels), full

    def _batches(self, zs: np.ndarray) -> list[np.ndarray]:
        """Split the slice indices into at most ``batch_size`` slices per batch, sizes
        differing by one at most (no tiny last batch)."""
        if len(zs) == 0:
            return []
        n = -(-len(zs) // self.batch_size)
        return np.array_split(zs, n)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's probabilities (sigmoid per region, or softmax over classes) for a
        batch, averaged over the in-plane flips with ``flip_tta``, as nnU-Net averages."""
        x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            probs = self._activation(self.model(x).float())
            if self.flip_tta:
                for dims in ((2,), (3,), (2, 3)):
                    probs += self._activation(self.model(x.flip(dims)).float()).flip(dims)
                probs /= 4
        return probs

    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.target == "regions" else torch.softmax(logits, dim=1)

    def _to_region_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        """``[n, 3, H, W]`` WT, TC, ET probabilities; a 4-class softmax is summed into them."""
        if self.target == "regions":
            return probs
        ncr, ed, et = probs[:, NCR], probs[:, ED], probs[:, ET]
        return torch.stack([ncr + ed + et, ncr + et, et], dim=1)


def from_pretrained(model_dir: str | Path | None = None, **kwargs) -> Segmenter:
    """Load a :class:`Segmenter` from a model folder (default: the model shipped in bratseg)."""
    return Segmenter.from_pretrained(model_dir, **kwargs)
