"""Whole-volume prediction with a trained model folder.

Example:
    >>> import bratseg, tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "SYNTHETIC_1", shape=(96, 96, 40))
    >>> segmenter = bratseg.from_pretrained()          # the model shipped with bratseg
    >>> labels = segmenter.predict(case)               # BraTS 2020 labels 0/1/2/4
    >>> labels.shape, labels.dtype
    ((96, 96, 40), dtype('uint8'))
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bratseg.data.io import CaseVolumes, load_case, save_labels
from bratseg.data.labels import regions_to_labels, to_brats2020
from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import ModelLoadError
from bratseg.inference.regions import region_volumes
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.crop import resize_slices, uncrop_xy
from bratseg.preprocessing.pipeline import prepare_case

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "brats18-unet-resnet18"
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessing.json", "bratseg.json")


@dataclass
class Prediction:
    """A prediction and what a report needs: labels in BraTS 2020's 0/1/2/4 scheme on the
    input's grid, the input volumes, and the model's time in seconds."""

    labels: np.ndarray
    volumes: CaseVolumes
    seconds: float

    def region_volumes(self) -> dict[str, float]:
        return region_volumes(self.labels, self.volumes.spacing)

    def save(self, path: str | Path) -> Path:
        """Write the label map with the input's affine and header (atomically)."""
        from bratseg.data.labels import to_internal

        return save_labels(to_internal(self.labels, "brats2020"), self.volumes, path)


class Segmenter:
    """A model plus the preprocessing it was trained with.

    Args:
        model: the SMP U-Net.
        preprocessing: how inputs are prepared (from the model folder).
        target: ``regions`` (sigmoid WT/TC/ET) or ``classes`` (softmax over 4 labels).
        batch_size: slices per forward pass.
        precision: ``bf16`` (autocast; the default where the CPU supports it) or ``fp32``.
        flip_tta: average predictions over in-plane flips (slower).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: PreprocessingConfig,
        target: str = "regions",
        batch_size: int = 32,
        precision: str = "auto",
        flip_tta: bool = False,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device, memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        self.target = target
        self.batch_size = batch_size
        if precision == "auto":
            from bratseg.training.trainer import _cpu_has_bf16

            precision = "bf16" if self.device.type == "cuda" or _cpu_has_bf16() else "fp32"
        self.precision = precision
        self.flip_tta = flip_tta

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, **kwargs) -> Segmenter:
        """Load a model folder written by ``bratseg export``; None loads the shipped model.

        Only safetensors weights are read: nothing is unpickled.
        """
        import segmentation_models_pytorch as smp

        model_dir = Path(model_dir) if model_dir is not None else SHIPPED_MODEL
        if not model_dir.is_dir():
            raise ModelLoadError(f"{model_dir}: model folder not found")
        missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
        if missing:
            raise ModelLoadError(f"{model_dir}: missing {', '.join(missing)}; export the run with `bratseg export`")
        try:
            meta = json.loads((model_dir / "bratseg.json").read_text())
            prep = PreprocessingConfig.from_json(model_dir / "preprocessing.json")
            model = smp.from_pretrained(str(model_dir))
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"{model_dir}: the model files do not agree ({exc})") from None
        in_channels = model.encoder._in_channels if hasattr(model.encoder, "_in_channels") else None
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
        """Predict a case (folder, :class:`Case` or loaded volumes)."""
        if isinstance(case, (str, Path)):
            case = case_from_folder(case)
        volumes = case if isinstance(case, CaseVolumes) else load_case(case, with_label=False)
        t0 = time.perf_counter()
        labels = self._predict_volumes(volumes)
        return Prediction(labels, volumes, time.perf_counter() - t0)

    def predict(self, case: Case | CaseVolumes | str | Path) -> np.ndarray:
        """BraTS 2020 (0/1/2/4) label map of ``case`` on its own grid."""
        return self.segment(case).labels

    @torch.inference_mode()
    def _predict_volumes(self, volumes: CaseVolumes) -> np.ndarray:
        prep = prepare_case(volumes, self.preprocessing)
        window = prep.image.shape[1:3]
        zs = np.flatnonzero(prep.brain.any(axis=(0, 1)))  # empty slices stay background
        out = np.zeros(prep.brain.shape, dtype=np.uint8)
        for lo in range(0, len(zs), self.batch_size):
            z = zs[lo : lo + self.batch_size]
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(prep.image[..., z], 3, 0)))
            if self.preprocessing.resize is not None:
                x = resize_slices(x, self.preprocessing.resize)
            logits = self._forward(x.to(self.device))
            if self.preprocessing.resize is not None:
                logits = resize_slices(logits, window)
            out[..., z] = np.moveaxis(self._to_labels(logits), 0, 2)
        out &= prep.brain.astype(np.uint8) * 255  # nothing outside the brain
        return to_brats2020(uncrop_xy(out, prep.start, prep.full_shape))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.model(x).float()
            if self.flip_tta:
                for dims in ((2,), (3,), (2, 3)):
                    logits += self.model(x.flip(dims)).float().flip(dims)
                logits /= 4
        return logits

    def _to_labels(self, logits: torch.Tensor) -> np.ndarray:
        if self.target == "regions":
            regions = (logits > 0).cpu().numpy()  # [n, 3, H, W]
            return regions_to_labels(np.moveaxis(regions, 1, 0))
        return logits.argmax(1).to(torch.uint8).cpu().numpy()


def from_pretrained(model_dir: str | Path | None = None, **kwargs) -> Segmenter:
    """Load a :class:`Segmenter` from a model folder (default: the model shipped in bratseg)."""
    return Segmenter.from_pretrained(model_dir, **kwargs)
