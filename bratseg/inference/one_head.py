"""Do the sequences of a BraTS-space case come from one head? Two patients' scans, both
registered to the same atlas, overlap coarsely; one patient's sequences line up to the voxel.
So each pair is compared as given and shifted by 3 mm in-plane: the brain outlines' Dice and
the intensities' normalised mutual information both drop under the shift for one head, and
not for two. For :mod:`bratseg.inference.guards`; the native path checks the same after its
registration (:mod:`bratseg.native.checks`).

A pair counts as one head when either measure shows that alignment; the case is refused when
its sequences fall apart into groups with no such pair between them (a BraTS 2023 case with a
weak T1-T2 pair is still one head through its FLAIR).

Example:
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> from bratseg.inference.case_signals import CaseSignals
    >>> rng = np.random.default_rng(0)
    >>> x, y, z = np.mgrid[:48, :48, :72]
    >>> outline = (x - 24) ** 2 / 400 + (y - 24) ** 2 / 300 < 1
    >>> tissue, elsewhere = (ndimage.gaussian_filter(rng.random((48, 48, 72)), 1.5) for _ in range(2))
    >>> head = (outline * (1 + tissue)).astype(np.float32)
    >>> head_groups(CaseSignals({"flair": head, "t1ce": (outline * (2 - tissue)).astype(np.float32)}, np.eye(4)))
    [['flair', 't1ce']]
    >>> other = (np.roll(outline, 4, axis=0) * (1 + elsewhere)).astype(np.float32)  # another head, not quite aligned
    >>> head_groups(CaseSignals({"flair": head, "t1ce": other}, np.eye(4)))
    [['flair'], ['t1ce']]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bratseg.inference.case_signals import CaseSignals

SHIFT_VOXELS = 3
# Outline Dice as given minus the best of the four 3-voxel in-plane shifts: 0.0039-0.038 for
# the pairs of the 31 real BraTS-space cases (0.03-0.04 where one mask was applied to all), at
# most 0.0063 between two real patients' sequences (60 pairings); one head when at least this.
# A case is refused only when a sequence has no such link to any other: on the 27 labelled
# cases each sequence's strongest link is at least 4x a threshold (bench/content_probes.py real).
MIN_OUTLINE_GAIN = 0.008
# Normalised mutual information (32 intensity-rank bins) as given minus the best shifted: at
# most 0.0017 between two patients, -0.0026 to 0.09 in the real cases, where every pair with an
# outline gain under MIN_OUTLINE_GAIN still gains at least 0.0040, but one (a BraTS 2023 T1-T2
# pair: 0.0004, joined through the FLAIR).
MIN_NMI_GAIN = 0.003
# Brain slices below which the check decides nothing: on slabs the gains of one head and of two
# overlap (a 40-slice crop around the tumour of Brats18_2013_20_1, whose FLAIR covers part of
# the brain, scores outline 0.0006 / NMI 0.0015; crops of two patients up to 0.0013 / 0.0005).
MIN_BRAIN_SLICES = 64
_BINS = 32
_SAMPLE = 40_000


@dataclass
class PairAlignment:
    """How two sequences line up: each gain is the measure as given minus its best shifted."""

    first: str
    second: str
    outline_gain: float
    nmi_gain: float

    @property
    def one_head(self) -> bool:
        return self.outline_gain >= MIN_OUTLINE_GAIN or self.nmi_gain >= MIN_NMI_GAIN


def pair_alignments(signals: CaseSignals) -> list[PairAlignment]:
    """Every pair of sequences, in the order of ``signals.images``."""
    names = list(signals.images)
    box = signals.box
    brain = signals.mask[box]
    if len(names) < 2 or brain.shape[0] <= 2 * SHIFT_VOXELS or brain.shape[1] <= 2 * SHIFT_VOXELS:
        return []
    masks = {m: signals.masks[m][box][:, :, ::2] for m in names}
    samples = _sample_coordinates(brain, box)
    ranks = {m: _rank_bins(signals.images[m], samples) for m in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            given = _nmi(ranks[a][0], ranks[b][0])
            shifted = max(_nmi(ranks[a][0], ranks[b][k]) for k in range(1, len(samples)))
            pairs.append(PairAlignment(a, b, _outline_gain(masks[a], masks[b]), given - shifted))
    return pairs


def head_groups(signals: CaseSignals, pairs: list[PairAlignment] | None = None) -> list[list[str]]:
    """The sequences grouped by head: one group when they all come from one (through pairs
    that line up), several when they do not; one group, undecided, when the brain spans fewer
    than :data:`MIN_BRAIN_SLICES` slices."""
    box = signals.box
    if box[2].stop - box[2].start < MIN_BRAIN_SLICES:
        return [list(signals.images)]  # too thin a slab to tell: one group, nothing refused
    pairs = pair_alignments(signals) if pairs is None else pairs
    group = {m: {m} for m in signals.images}
    for pair in pairs:
        if pair.one_head and group[pair.first] is not group[pair.second]:
            merged = group[pair.first] | group[pair.second]
            for m in merged:
                group[m] = merged
    order = list(signals.images)
    seen: list[set[str]] = []
    for m in order:
        if not any(group[m] is g for g in seen):
            seen.append(group[m])
    return [sorted(g, key=order.index) for g in seen]


def _outline_gain(a: np.ndarray, b: np.ndarray) -> float:
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 0.0
    k = SHIFT_VOXELS
    given = np.count_nonzero(a & b)
    shifted = max(
        np.count_nonzero(a[k:] & b[:-k]),
        np.count_nonzero(a[:-k] & b[k:]),
        np.count_nonzero(a[:, k:] & b[:, :-k]),
        np.count_nonzero(a[:, :-k] & b[:, k:]),
    )
    return 2 * (int(given) - int(shifted)) / total


Coordinates = tuple[np.ndarray, np.ndarray, np.ndarray]


def _sample_coordinates(brain: np.ndarray, box: tuple[slice, ...]) -> list[Coordinates]:
    """Voxel coordinates (in the whole volume) of a sample of the brain voxels in ``box`` at
    least :data:`SHIFT_VOXELS` from its in-plane faces, as given and under each of the four
    in-plane shifts (which so stay inside the box)."""
    k = SHIFT_VOXELS
    inner = np.zeros_like(brain)
    inner[k:-k, k:-k] = brain[k:-k, k:-k]
    found = np.flatnonzero(inner)
    found = found[:: max(1, found.size // _SAMPLE)]
    x, y, z = (c + b.start for c, b in zip(np.unravel_index(found, brain.shape), box))
    return [(x, y, z), (x + k, y, z), (x - k, y, z), (x, y + k, z), (x, y - k, z)]


def _rank_bins(data: np.ndarray, samples: list[Coordinates]) -> list[np.ndarray]:
    """The intensity-rank bin (0 to :data:`_BINS` - 1) of ``data`` at each set of coordinates;
    the bin edges are the quantiles of the first (unshifted) set."""
    values = [data[coordinates] for coordinates in samples]
    edges = np.quantile(values[0], np.linspace(0, 1, _BINS + 1)[1:-1]).astype(values[0].dtype)  # no casts
    return [np.searchsorted(edges, v, side="right") for v in values]


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (H(a) + H(b)) / H(a, b) of two bin arrays."""
    joint = np.bincount(a * _BINS + b, minlength=_BINS * _BINS).astype(np.float64)
    joint /= joint.sum()
    table = joint.reshape(_BINS, _BINS)
    both = _entropy(joint)
    return (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / both if both > 0 else 1.0


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))
