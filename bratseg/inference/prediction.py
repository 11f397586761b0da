"""The result of a prediction, on either path: labels on the input's grid, with what reports and
viewers need.

On the fast path the input is in BraTS space and the prediction is the model's own. On the
native path (:func:`bratseg.segment`, :func:`bratseg.inference.native_path.segment_native`) the
labels are on the grid of the patient's reference sequence (the T1ce unless named otherwise)
and :attr:`Prediction.native` holds what the way there and back did (:class:`NativeView`),
the BraTS-space prediction the model made included.

Example:
    >>> import numpy as np, nibabel as nib
    >>> from bratseg.data.io import CaseVolumes
    >>> grid = nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.diag([2.0, 2.0, 5.0, 1.0]))
    >>> brats = Prediction(np.zeros((8, 8, 4), np.uint8), CaseVolumes("c", {"t1ce": np.zeros((8, 8, 4))},
    ...     np.eye(4), nib.Nifti1Header()), 1.0, np.zeros((3, 8, 8, 4), np.float16))
    >>> brats.model_space is brats, brats.on_patient_grid() is brats, brats.steps
    (True, True, [])
    >>> on_grid = CaseVolumes("c", {"t1ce": np.ones((8, 8, 4), np.float32)}, grid.affine, grid.header)
    >>> native = Prediction(np.zeros((8, 8, 4), np.uint8), on_grid, 2.0,
    ...     native=NativeView(grid, "t1ce", brats, grid, np.eye(4), steps=["read (0.10 s)"]))
    >>> native.model_space is brats, native.steps, native.to_nifti() is grid
    (True, ['read (0.10 s)'], True)
    >>> shown = native.on_patient_grid()
    >>> shown.volumes.spacing, shown.probabilities.shape, shown.native is native.native
    ((2.0, 2.0, 5.0), (3, 8, 8, 4), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from bratseg.data.io import CaseVolumes, label_image, save_nifti
from bratseg.data.labels import region_volumes


@dataclass
class Prediction:
    """A prediction and what a report needs: labels in BraTS 2020's 0/1/2/4 scheme on the
    input's grid, the input volumes, and the prediction's time in seconds (preprocessing,
    network and postprocessing; reading the files is not included).

    ``probabilities`` are the model's region probabilities ``[3, X, Y, Z]`` (WT, TC, ET,
    float16, on the input's grid, 0 outside the brain and the model's window) before
    post-processing: what confidence maps and resampling to another grid are computed from.
    ``warnings`` are the one-line flags of :mod:`bratseg.inference.guards` (empty when
    nothing looked wrong). ``confidence_threshold`` is the confidence score below which the
    model that predicted flags a case (its ``bratseg.json``; None: the default of
    :mod:`bratseg.inference.confidence`).

    ``native`` is None on the fast path. On the native path it is the :class:`NativeView`;
    ``labels`` are then on the reference sequence's grid and ``volumes`` hold the sequences
    co-registered onto it (with its affine and header), ``seconds`` is the whole pipeline's
    time, ``warnings`` are the pipeline's and the model's, and ``probabilities`` are None
    until :meth:`on_patient_grid` resamples the model's (tens of millions of voxels on a fine
    grid: only what shows confidence needs them).
    """

    labels: np.ndarray
    volumes: CaseVolumes
    seconds: float
    probabilities: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    confidence_threshold: float | None = None
    native: NativeView | None = None

    @property
    def model_space(self) -> Prediction:
        """The prediction on the grid the model saw (where the confidence score is calibrated):
        itself on the fast path, the BraTS-space prediction on the native path."""
        return self if self.native is None else self.native.model_space

    @property
    def steps(self) -> list[str]:
        """What the native path did, one line per step ([] on the fast path)."""
        return [] if self.native is None else list(self.native.steps)

    def on_patient_grid(self) -> Prediction:
        """The prediction on the grid of the scans the user gave, with region probabilities to
        draw confidence from: itself on the fast path; on the native path, these labels and
        co-registered scans with the model's region probabilities resampled onto the reference
        grid (linear), so that confidence maps follow the labels."""
        if self.native is None or self.probabilities is not None:
            return self
        model = self.native.model_space
        probabilities = None
        if model.probabilities is not None:
            import torch  # rounds to float16 in hardware; NumPy does subnormals in software, 50x slower

            # One region at a time into float16: a fine patient grid holds tens of millions of voxels.
            probabilities = np.empty((len(model.probabilities), *self.labels.shape), dtype=np.float16)
            for index, region in enumerate(model.probabilities):
                resampled = np.asarray(self.native.on_reference_grid(region).dataobj, dtype=np.float32)
                probabilities[index] = torch.from_numpy(resampled).half().numpy()
        return replace(self, probabilities=probabilities, warnings=list(self.warnings))

    def region_volumes(self) -> dict[str, float]:
        """Volume of each tumour region in cm3 (on the patient's grid on the native path)."""
        return region_volumes(self.labels, self.volumes.spacing)

    def save(self, path: str | Path) -> Path:
        """Write the label map with the input's affine and header (atomically); on the native
        path, the reference scan's."""
        return save_nifti(self.to_nifti(), path)

    def to_nifti(self) -> nib.Nifti1Image:
        """The label map as a NIfTI image with the input's affine and header (on the native
        path, the map the pipeline built on the reference grid)."""
        if self.native is not None:
            return self.native.labels
        return label_image(self.labels, self.volumes)


@dataclass
class NativeView:
    """What the native path did to get a :class:`Prediction` onto the patient's grid.

    ``labels`` are BraTS 2020 labels (0/1/2/4) on the grid of the ``reference`` sequence, with
    its affine and header (the arrays of the prediction's ``labels``); ``model_space`` is the
    BraTS-space prediction (its ``volumes`` hold the BraTS-space images); ``brain_mask`` is the
    skull strip on the reference grid. ``atlas_to_reference`` is the 4 x 4 matrix (RAS world
    coordinates, NiftyReg's convention) taking BraTS/atlas coordinates to the reference
    scan's, and ``t1ce_to_sequence`` holds, for every sequence, the matrix taking T1ce
    coordinates to that sequence's (the rigid co-registration). ``timings`` are seconds per
    step, in order (``cpu_seconds`` the CPU time of this process in each, all threads
    together: what a busy machine inflates least); ``steps`` say what each step did.
    """

    labels: nib.Nifti1Image
    reference: str
    model_space: Prediction
    brain_mask: nib.Nifti1Image
    atlas_to_reference: np.ndarray
    t1ce_to_sequence: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def on_reference_grid(self, brats_volume: np.ndarray, order: int = 1) -> nib.Nifti1Image:
        """A BraTS-space volume (say, the uncertainty map of :attr:`model_space`) resampled onto
        the reference grid through :attr:`atlas_to_reference` (linear by default), as float32
        with the reference scan's affine: what is shown beside the labels on the patient's scan
        (``order`` 0: nearest neighbour)."""
        from bratseg.native.to_patient import from_brats_space

        affine = self.model_space.volumes.affine
        return from_brats_space(brats_volume, affine, self.atlas_to_reference, self.labels, order)

    def save_brats_space(self, folder: str | Path, case_id: str | None = None) -> list[Path]:
        """Write the BraTS-space images, brain mask and labels in BraTS naming
        (``<case>_flair.nii.gz`` ... ``<case>_seg.nii.gz``), as BraTS Toolkit does, for other
        BraTS tools."""
        from bratseg.native.to_brats import save_brats_space

        return save_brats_space(folder, self.model_space.volumes, self.model_space.labels, case_id)
