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

Speed (BENCHMARKS.md): only slices that hold brain run, each batch of them on the brain's box
over those slices (brain_box) within the brain window; BatchNorm
is folded into the convolutions, and a fresh process rebuilds that network with torch alone
(network_cache); channels-last, bfloat16 where the CPU has native bf16 (AVX-512 BF16 / AMX).
"""

from __future__ import annotations

import functools
import numbers
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bratseg.data.io import CaseVolumes, load_case
from bratseg.data.labels import regions_to_labels, to_brats2020
from bratseg.data.layout import Case, case_from_folder
from bratseg.errors import ModelLoadError
from bratseg.inference import guards
from bratseg.inference.brain_box import DEFAULT_MARGIN, brain_box
from bratseg.inference.case_signals import CaseSignals
from bratseg.inference.model_folder import SHIPPED_MODEL, load_model, weights_version
from bratseg.inference.postprocessing import remove_small_components
from bratseg.inference.prediction import Prediction
from bratseg.model.hub import is_hub_id, push_model_folder, resolve_model, split_revision
from bratseg.model.metadata import DEFAULT_SETTINGS, TARGET, InferenceSettings, is_valid_threshold
from bratseg.model.precision import parse_device, resolve_precision
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.context import with_context
from bratseg.preprocessing.crop import resize_slices, uncrop_xy
from bratseg.preprocessing.pipeline import PreparedCase, prepare_case

# Slices per forward pass. On the 2-core CPU 8 and 16 are equally fast (within run-to-run noise
# of about 5 %), 4 and 32 slower (BENCHMARKS.md); 8 holds less memory.
DEFAULT_BATCH_SIZE = 8


@dataclass
class PreparedInput:
    """A case ready for the network (:meth:`Segmenter.prepare`): the model-ready slices
    ``[n, C, H, W]`` (channels-last, only slices that hold brain) and what
    :meth:`Segmenter.finish` needs to put the result back on the input's grid."""

    volumes: CaseVolumes
    prepared: PreparedCase
    slices: torch.Tensor
    slice_index: np.ndarray
    warnings: list[str]
    seconds: float
    brain_mask: np.ndarray | None = None  # the input's, for the result checks


@dataclass
class NetworkOutput:
    """What :meth:`Segmenter.run_network` gives :meth:`Segmenter.finish`: region
    probabilities ``[n, 3, H, W]`` (float32) of the prepared slices, and the network's time."""

    region_probabilities: torch.Tensor
    seconds: float


class Segmenter:
    """A model plus the preprocessing it was trained with.

    :meth:`segment` is :meth:`prepare` (checks, preprocessing), :meth:`run_network` and
    :meth:`finish` (labels, post-processing, result checks) in a row; a batch runner calls the
    three steps from different threads so that one case is read and prepared while another
    runs through the network (:mod:`bratseg.inference.batch`).

    Args:
        model: the U-Net (an SMP model, BatchNorm folded or not).
        preprocessing: how inputs are prepared (from the model folder).
        batch_size: slices per forward pass.
        precision: ``bf16`` (autocast), ``fp32``, or ``auto``: bf16 on a GPU or a CPU with
            native bf16, else fp32.
        flip_tta: average predictions over the three in-plane flips (4x the network time);
            :meth:`from_pretrained` takes it from the folder's ``bratseg.json`` (``"tta"``).
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
        threads: intra-op threads for torch (process-wide); None leaves torch's default
            (one per physical core).
        min_component_fraction: connected components of the whole tumour smaller than this
            fraction of the largest are removed (0 keeps everything); :meth:`from_pretrained`
            takes it from the folder's ``bratseg.json`` (``"postprocessing"``). The defaults of
            both are what cross-validation over the 27 labelled cases chose
            (:data:`bratseg.model.metadata.DEFAULT_SETTINGS`).
        model_dir: the model folder it was loaded from (None for a model built in memory).
        confidence_threshold: the confidence score below which its predictions are flagged,
            calibrated per model on cases it never saw (``bratseg.json``; None: the default).
        brain_box_margin: each batch of slices runs on the brain's box over those slices with
            this margin of background (voxels; :mod:`bratseg.inference.brain_box`); None runs
            the whole window.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: PreprocessingConfig,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str = "auto",
        flip_tta: bool = DEFAULT_SETTINGS.flip_tta,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        min_component_fraction: float = DEFAULT_SETTINGS.min_component_fraction,
        model_dir: str | Path | None = None,
        confidence_threshold: float | None = None,
        brain_box_margin: int | None = DEFAULT_MARGIN,
    ):
        if precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
        if brain_box_margin is not None:
            whole = isinstance(brain_box_margin, numbers.Integral) and not isinstance(brain_box_margin, bool)
            if not whole or brain_box_margin < 0:
                raise ValueError(f"brain_box_margin must be None or a number of voxels >= 0, not {brain_box_margin!r}")
            brain_box_margin = int(brain_box_margin)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = parse_device(device)
        self.model = model.float().eval().to(self.device, memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)
        self.flip_tta = flip_tta
        self.min_component_fraction = min_component_fraction
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.confidence_threshold = confidence_threshold
        self.brain_box_margin = brain_box_margin

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **kwargs,
    ) -> Segmenter:
        """Load a model folder written by ``bratseg export``, or a Hugging Face Hub repo id
        (``namespace/name``; :mod:`bratseg.model.hub`); None loads the shipped model, without
        touching the network.

        ``revision`` pins a Hub branch, tag or commit; ``cache_dir`` replaces the Hugging Face
        cache (``HF_HUB_CACHE``); ``local_files_only`` reads the cache only (as
        ``HF_HUB_OFFLINE=1`` does); ``token`` reads a private or gated repo. ``source`` is then
        what was asked for: the id (``@commit`` it resolved to) or the folder. Other keyword
        arguments go to :class:`Segmenter`; ``flip_tta``, ``min_component_fraction`` and
        ``confidence_threshold`` given there win over the folder's ``bratseg.json``
        (:mod:`bratseg.model.metadata`), whose own values win over the defaults.
        """
        hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
        folder = resolve_model(model_dir, **hub) if model_dir is not None else SHIPPED_MODEL
        hub_id = model_dir is not None and is_hub_id(model_dir)
        source = f"{split_revision(str(model_dir))[0]}@{folder.name}" if hub_id else str(folder)
        model_dir = folder
        model, meta, config = load_model(model_dir)
        prep_path = model_dir / "preprocessing.json"
        try:
            prep = PreprocessingConfig.from_json(prep_path)
        except (ValueError, TypeError, OSError) as exc:
            raise ModelLoadError(f"{prep_path}: not a valid preprocessing config ({exc})") from None
        in_channels = config.get("in_channels")
        channels = _input_channels(prep)
        if in_channels is not None and in_channels != len(channels):
            raise ModelLoadError(
                f"{model_dir}: config.json has {in_channels} input channels but preprocessing.json "
                f"gives {len(channels)} ({len(prep.modalities)} modalities)"
            )
        target = meta.get("target", TARGET)
        if target != TARGET:
            raise ModelLoadError(
                f"{model_dir}: bratseg.json's target {target!r} is not supported; bratseg predicts with "
                f"{TARGET!r} models (sigmoid maps of WT, TC and ET) only"
            )
        threshold = meta.get("confidence_threshold")
        if threshold is not None and not is_valid_threshold(threshold):
            raise ModelLoadError(f"{model_dir}: bratseg.json's confidence_threshold {threshold!r} is not in (0, 1]")
        try:
            settings = InferenceSettings.from_metadata(meta)
        except ValueError as exc:
            raise ModelLoadError(f"{model_dir}: bratseg.json's {exc}") from None
        kwargs.setdefault("confidence_threshold", threshold)
        kwargs.setdefault("flip_tta", settings.flip_tta)
        kwargs.setdefault("min_component_fraction", settings.min_component_fraction)
        segmenter = cls(model, prep, model_dir=model_dir, **kwargs)
        segmenter.source = source  # the Hub id and commit, or the folder: what predicted
        return segmenter

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        token: str | None = None,
        card: str | Path | None = None,
    ) -> str:
        """Publish the model folder this segmenter was loaded from as the Hub model repo
        ``repo_id`` (created if needed; ``private`` for a new one; ``revision`` a branch,
        created if needed), with its model card (``card``, a Markdown file, or the folder's
        own, or one built from ``bratseg.json``); returns the commit's URL
        (:func:`bratseg.model.hub.push_model_folder`)."""
        if self.model_dir is None:
            raise ModelLoadError("this model was built in memory; export it with `bratseg export` to publish it")
        return push_model_folder(
            self.model_dir,
            repo_id,
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            card=card,
        )

    @property
    def model_name(self) -> str:
        """The Hub repo id of a model loaded by id, else the model folder's name (``in-memory``
        for a model built in memory)."""
        source = getattr(self, "source", "")
        if "@" in source:  # "namespace/name@commit": the snapshot folder is named by the commit
            return source.split("@", 1)[0]
        return self.model_dir.name if self.model_dir is not None else "in-memory"

    @functools.cached_property
    def model_version(self) -> str:
        """``sha256:`` and the first 12 hex digits of the weights file: which weights
        predicted, whatever the folder is called."""
        return "unknown" if self.model_dir is None else weights_version(self.model_dir)

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
        prepared = self.prepare(case)
        return self.finish(prepared, self.run_network(prepared))

    def predict(self, case: Case | CaseVolumes | str | Path) -> np.ndarray:
        """BraTS 2020 (0/1/2/4) label map of ``case`` on its own grid."""
        return self.segment(case).labels

    def prepare(self, case: Case | CaseVolumes | str | Path) -> PreparedInput:
        """Read the case if needed, check it (:func:`guards.check_input`) and make the
        network's input. Safe to call from another thread while :meth:`run_network` runs."""
        if isinstance(case, (str, Path)):
            case = case_from_folder(case)
        volumes = case if isinstance(case, CaseVolumes) else load_case(case, with_label=False)
        t0 = time.perf_counter()
        # One set of measurements for the checks, the preprocessing and the result checks.
        signals = CaseSignals(volumes.images, volumes.affine)
        # The checks and the preprocessing only read the images: the preprocessing runs on a
        # second thread meanwhile (NumPy releases the GIL), and is dropped if the checks refuse.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bratseg-prepare") as pool:
            prepared = pool.submit(prepare_case, volumes, self.preprocessing, mask=signals.mask)
            warnings = guards.check_input(volumes, self.preprocessing, signals)
            prep = prepared.result()
        image = with_context(prep.image, getattr(self.preprocessing, "context_slices", 0))
        slice_index = np.flatnonzero(prep.brain.any(axis=(0, 1)))  # empty slices stay background
        # [C, X, Y, Z] -> [n, C, X, Y] in channels-last memory, in one gather: the layout the
        # network runs fastest in, and each batch is then a contiguous view.
        by_slice = torch.from_numpy(image).permute(3, 1, 2, 0)[torch.from_numpy(slice_index)]
        slices = by_slice.permute(0, 3, 1, 2)
        return PreparedInput(volumes, prep, slices, slice_index, warnings, time.perf_counter() - t0, signals.mask)

    @torch.inference_mode()
    def run_network(self, prepared: PreparedInput) -> NetworkOutput:
        """Region probabilities ``[n, 3, H, W]`` (float32, CPU) of the prepared slices."""
        t0 = time.perf_counter()
        window = tuple(prepared.slices.shape[2:])
        resize = self.preprocessing.resize
        cropping = resize is None and self.brain_box_margin is not None
        # Outside the brain box the probabilities stay zero, as finish() sets them anyway.
        out = (torch.zeros if cropping else torch.empty)((len(prepared.slice_index), 3, *window), dtype=torch.float32)
        brain = prepared.prepared.brain
        for batch in self._batches(np.arange(len(prepared.slice_index))):
            lo, hi = int(batch[0]), int(batch[-1]) + 1
            box = (slice(None), slice(None))
            if cropping:
                box = brain_box(brain[..., prepared.slice_index[lo:hi]], margin=self.brain_box_margin) or box
            x = prepared.slices[lo:hi, :, box[0], box[1]].to(self.device, non_blocking=True)
            if resize is not None:
                x = resize_slices(x, resize)
            p = self._forward(x)
            if resize is not None:
                p = resize_slices(p, window)
            out[lo:hi, :, box[0], box[1]] = p.float().cpu()
        return NetworkOutput(out, time.perf_counter() - t0)

    @torch.inference_mode()
    def slice_probabilities(self, slices: torch.Tensor) -> torch.Tensor:
        """Region probabilities ``[n, 3, H, W]`` (float32, CPU) of model-ready slices
        ``[n, C, H, W]`` (a slice cache's rows), in one forward pass: what teachers give a
        distilled student (:mod:`bratseg.inference.teacher`)."""
        return self._forward(slices.to(self.device)).float().cpu()

    def finish(self, prepared: PreparedInput, network: NetworkOutput) -> Prediction:
        """Labels, post-processing and probabilities on the input's grid, and the result checks
        (:func:`guards.check_result`)."""
        t0 = time.perf_counter()
        prep, zs = prepared.prepared, prepared.slice_index
        # Region probabilities in the window, [3, H, W, Z]: masked in float32 (float16
        # arithmetic in NumPy is emulated, and cost a third of the prediction time), then
        # rounded to float16 once; labels threshold the rounded values, so that they agree
        # with the probabilities returned.
        probs = np.zeros((3, *prep.brain.shape), dtype=np.float32)
        if len(zs):
            probs[..., zs] = network.region_probabilities.permute(1, 2, 3, 0).numpy()
        probs *= prep.brain  # nothing outside the brain
        # torch rounds to float16 with the CPU's conversion instructions: NumPy converts the
        # many subnormal values (probabilities under 6e-5) in software, 50x slower.
        half = torch.from_numpy(probs).half().numpy()
        del probs
        labels = regions_to_labels(half > 0.5)
        labels = _remove_small_components_in_box(labels, self.min_component_fraction)
        full_labels = uncrop_xy(to_brats2020(labels), prep.start, prep.full_shape)
        probabilities = np.zeros((3, *prep.full_shape), dtype=np.float16)
        for region in range(3):
            probabilities[region] = uncrop_xy(half[region], prep.start, prep.full_shape)
        seconds = prepared.seconds + network.seconds + (time.perf_counter() - t0)
        prediction = Prediction(
            full_labels, prepared.volumes, seconds, probabilities, list(prepared.warnings), self.confidence_threshold
        )
        prediction.warnings += guards.check_result(prediction, brain_mask=prepared.brain_mask)
        return prediction

    def _batches(self, zs: np.ndarray) -> list[np.ndarray]:
        """Split the slice indices into at most ``batch_size`` slices per batch, sizes
        differing by one at most (no tiny last batch)."""
        if len(zs) == 0:
            return []
        n = -(-len(zs) // self.batch_size)
        return np.array_split(zs, n)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's region probabilities (a sigmoid per region) for a batch, averaged
        over the in-plane flips with ``flip_tta``, as nnU-Net averages."""
        x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            probs = torch.sigmoid(self.model(x).float())
            if self.flip_tta:
                for dims in ((2,), (3,), (2, 3)):
                    probs += torch.sigmoid(self.model(x.flip(dims)).float()).flip(dims)
                probs /= 4
        return probs


def _input_channels(prep: PreprocessingConfig) -> list[str]:
    """The modality of each network input channel (context slices included)."""
    return list(getattr(prep, "channels", prep.modalities))


def _remove_small_components_in_box(labels: np.ndarray, min_fraction: float) -> np.ndarray:
    """:func:`remove_small_components` run on the bounding box of the tumour only: outside it
    every voxel is background, so the components, and the result, are the same, for a
    fraction of the work on a whole volume."""
    tumour = labels > 0
    if min_fraction <= 0 or not tumour.any():
        return labels
    box = tuple(
        slice(int(idx[0]), int(idx[-1]) + 1)
        for idx in (np.flatnonzero(tumour.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    )
    labels = labels.copy()
    labels[box] = remove_small_components(labels[box], min_fraction)
    return labels


from_pretrained = Segmenter.from_pretrained
"""Load a :class:`Segmenter` from a model folder or a Hugging Face Hub repo id (``namespace/name``,
pinned with ``revision``); with no argument the model shipped in bratseg, and no network."""
