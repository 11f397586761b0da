"""Which follow-up lesion is which baseline lesion, once the two scans are registered.

RANO follows the target lesions chosen at baseline: at follow-up the same lesions are measured
again, whatever their size, and a new measurable lesion means progression. Here each follow-up
enhancing lesion within :data:`~bratseg.measurement.response.NEW_LESION_MM` of the baseline
enhancing tumour belongs to one baseline lesion: a target it overlaps, else the nearest
baseline lesion. The products of the follow-up lesions that belong to a target are summed
(a lesion that split counts with all its fragments, as RANO sums them); a follow-up lesion
nearest to a baseline lesion that was not a target does not enter the SPD. A measurable
follow-up lesion farther than that from all baseline enhancing tumour is new. Distances are
taken in the baseline's world coordinates through the registration (follow-up voxel ->
follow-up world -> baseline world).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy.spatial import cKDTree

from bratseg.followup.timepoint import TimePoint
from bratseg.measurement.rano import Measurement, enhancing_components
from bratseg.measurement.response import NEW_LESION_MM


@dataclass
class Tracking:
    """``spd_mm2``: the sum of the products of the follow-up lesions that belong to the baseline
    targets (the follow-up SPD RANO compares); ``per_target`` the same per baseline target, in
    the baseline's target order; ``new_measurable``: measurable follow-up lesions far from all
    baseline enhancing tumour."""

    spd_mm2: float = 0.0
    per_target: list[float] = field(default_factory=list)
    new_measurable: int = 0


def _world(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.c_[voxels, np.ones(len(voxels))] @ np.asarray(affine).T[:, :3]


_OVERLAP_MM = 1.0  # a follow-up voxel this near a baseline voxel overlaps it (registered, resampled)


def track(
    baseline: TimePoint,
    followup: TimePoint,
    baseline_measurement: Measurement,
    followup_measurement: Measurement,
    transform: sitk.Transform,
) -> Tracking:
    """Match the follow-up lesions to the baseline targets (module docstring); ``transform``
    maps baseline points to follow-up points (ITK's convention)."""
    from bratseg.native.space import rigid_ras_matrix

    targets = baseline_measurement.targets
    tracking = Tracking(per_target=[0.0] * len(targets))
    if not followup_measurement.lesions:
        return tracking
    baseline_components, _ = enhancing_components(baseline.labels)
    enhancing = np.argwhere(baseline_components > 0)
    owner = baseline_components[tuple(enhancing.T)]  # the baseline lesion of each enhancing voxel
    tree = cKDTree(_world(enhancing, baseline.affine)) if len(enhancing) else None
    slot = {lesion.component: i for i, lesion in enumerate(targets)}
    followup_components, _ = enhancing_components(followup.labels)
    to_baseline = np.linalg.inv(rigid_ras_matrix(transform)) @ followup.affine  # follow-up voxel -> baseline world
    for lesion in followup_measurement.lesions:
        points = _world(np.argwhere(followup_components == lesion.component), to_baseline)
        if tree is None:
            distance = np.full(len(points), np.inf)
        else:  # queries stop looking beyond the reach (infinite distance, index past the end)
            distance, index = tree.query(points, distance_upper_bound=NEW_LESION_MM + 1.0)
        near = distance <= NEW_LESION_MM
        if not near.any():
            tracking.new_measurable += lesion.measurable
            continue
        # The baseline lesion it belongs to: a target it overlaps (the one it overlaps most: a
        # merged lesion counts for its target), else the nearest baseline lesion. A lesion
        # nearest to a baseline lesion that was no target stays with it (not added to the SPD).
        hit = owner[index[near]]
        overlapping = [slot[c] for c in hit[distance[near] <= _OVERLAP_MM] if c in slot]
        if overlapping:
            chosen = max(set(overlapping), key=overlapping.count)
        else:
            nearest = int(hit[np.argmin(distance[near])])
            if nearest not in slot:
                continue
            chosen = slot[nearest]
        tracking.per_target[chosen] += lesion.product_mm2
    tracking.spd_mm2 = float(sum(tracking.per_target))
    return tracking
