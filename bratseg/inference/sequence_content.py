"""Is each sequence a scan at all? Checks on one sequence's voxels inside the brain, for
:mod:`bratseg.inference.guards`: input that looks like a scan (the right file type, grid and
background) but from which no answer can be right.

- no anatomy: one constant value, or one value over most of the brain;
- a label map or a mask given as an image: a handful of distinct values;
- intensities too small to normalise;
- inverted contrast: a brain darker than its background (a negative ``scl_slope``, a grey
  scale flipped over the whole image), or, on FLAIR and T1, a brain outline brighter than the
  brain (a grey scale flipped inside the brain only).

Each measurement looks at a sample of the brain (every third voxel along each axis, or every
sixth slice), so the checks cost a few hundredths of a second per sequence on a BraTS case.
The thresholds and the real cases they were measured on are beside them;
``bench/content_probes.py`` reproduces the figures.

Example:
    >>> import numpy as np
    >>> from bratseg.inference.case_signals import CaseSignals
    >>> x, y, z = np.mgrid[:40, :40, :20]
    >>> anatomy = (100 + 50 * np.sin(x / 3.0) * np.cos(y / 4.0) + z).astype(np.float32)
    >>> anatomy[:5], anatomy[35:], anatomy[:, :5], anatomy[:, 35:] = 0, 0, 0, 0
    >>> label = np.where(anatomy > 120, 2.0, np.where(anatomy > 0, 1.0, 0.0)).astype(np.float32)
    >>> signals = CaseSignals({"flair": anatomy, "t1ce": label, "t2": -anatomy}, np.eye(4))
    >>> for modality in signals.images:
    ...     print(modality, [p.split(":")[0] for p in sequence_problems(measure_sequence(signals, modality))])
    flair []
    t1ce ['only 2 distinct intensities inside the brain (1, 2)']
    t2 ['darker than its background (0) in 100% of the brain']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bratseg.inference.case_signals import CaseSignals

# Distinct values in the sample of the brain (about 55,000 voxels on a BraTS case): 188-14,204
# in the 31 real BraTS-space cases (int16 scans); a label map has 3-4, a mask 1.
MIN_DISTINCT = 20
# Share of the brain sample holding the commonest value: at most 4.9 % in the real cases; a
# sequence painted with one value over most of the brain has no anatomy.
MAX_DOMINANT_SHARE = 0.5
# Standard deviation inside the brain below which z-scoring (floored at 1e-8) makes the image
# constant; real scans have tens to hundreds, already-normalised ones about 1.
MIN_SPREAD = 1e-6
# Share of the brain darker than the background: at most 0.2 % in the real cases (MR
# magnitudes are not negative; already z-scored input with a 0 background has about half);
# a negated image or a grey scale flipped over the whole image has all of it.
MAX_BELOW_BACKGROUND = 0.9
# Median rank (0-1, within the sequence's own brain intensities) of the brain outline's
# outermost voxels (partial volume with the stripped background, sulcal CSF): at most 0.40 on
# FLAIR and 0.34 on T1 in the real cases; a grey scale flipped inside the brain puts it at
# 0.60-0.98 on 27 of the 31 FLAIRs and 0.66-0.98 on 30 of the 31 T1s (T1ce reaches 0.60 and T2
# 0.80 on real cases: not checked). bratseg's synthetic cases have hard-edged masks, no partial
# volume, and outlines at 0.39-0.61 on every sequence: so the rule also asks for a real, dark
# outline on another sequence of the case (the darkest is at most 0.27 in every real case).
OUTLINE_RANK_CHECKED = ("flair", "t1")
MAX_OUTLINE_RANK = 0.6
DARK_OUTLINE_RANK = 0.36

_SLICE_STEP = 6  # slices sampled for the outline measurement


@dataclass
class SequenceContent:
    """What the checks measure on one sequence inside the brain (its own non-background
    voxels within the case's brain box). ``outline_rank`` is None for an empty brain."""

    modality: str
    voxels: int
    distinct: int
    values: tuple[float, ...]  # the distinct values when there are few, else empty
    dominant_value: float
    dominant_share: float
    spread: float
    background: float
    below_background: float
    outline_rank: float | None


def measure_sequence(signals: CaseSignals, modality: str) -> SequenceContent:
    """Measure ``modality`` of ``signals`` (its voxels that differ from its background)."""
    data = signals.images[modality][signals.box]
    own = signals.masks[modality][signals.box]
    background = float(signals.backgrounds[modality][0])
    sample = np.sort(data[::3, ::3, ::3][own[::3, ::3, ::3]])
    if sample.size == 0:
        return SequenceContent(modality, 0, 0, (), background, 0.0, 0.0, background, 0.0, None)
    changes = np.flatnonzero(np.diff(sample))
    distinct = int(changes.size) + 1
    runs = np.diff(np.concatenate(([0], changes + 1, [sample.size])))
    longest = int(np.argmax(runs))
    dominant = float(sample[0 if longest == 0 else changes[longest - 1] + 1])
    values = tuple(float(v) for v in np.unique(sample)) if distinct <= 8 else ()
    return SequenceContent(
        modality=modality,
        voxels=int(sample.size),
        distinct=distinct,
        values=values,
        dominant_value=dominant,
        dominant_share=float(runs[longest]) / sample.size,
        spread=float(sample.std(dtype=np.float64)),
        background=background,
        below_background=float(np.searchsorted(sample, background, side="left")) / sample.size,
        outline_rank=_outline_rank(data, signals, sample),
    )


def _outline_rank(data: np.ndarray, signals: CaseSignals, sample: np.ndarray) -> float | None:
    """Median rank, among the sequence's own brain intensities, of the outermost in-plane
    voxels of the case's brain mask, on every :data:`_SLICE_STEP`-th slice."""
    brain = signals.mask[signals.box][:, :, ::_SLICE_STEP]
    cross = ndimage.generate_binary_structure(3, 1)
    cross[:, :, 0] = cross[:, :, 2] = False  # in-plane only: slices are sampled
    shell = brain & ~ndimage.binary_erosion(brain, structure=cross, border_value=0)
    values = data[:, :, ::_SLICE_STEP][shell]
    if values.size == 0:
        return None
    return float(np.median(np.searchsorted(sample, values, side="left"))) / sample.size


def sequence_problems(content: SequenceContent) -> list[str]:
    """Why ``content`` cannot be a scan of its kind (empty when nothing is wrong), one clause
    each, checked in order of certainty: constant, few values, one value dominating, too small
    to normalise, darker than the background."""
    if content.voxels == 0:
        return []
    if content.distinct == 1:
        value = f"{content.dominant_value:g}"
        return [f"one constant value ({value}) inside the brain: no anatomy (a mask, or a blank export?)"]
    if content.distinct < MIN_DISTINCT:
        shown = f" ({', '.join(f'{v:g}' for v in content.values)})" if content.values else ""
        return [
            f"only {content.distinct} distinct intensities inside the brain{shown}: a label map or mask, not a scan"
        ]
    if content.dominant_share > MAX_DOMINANT_SHARE:
        return [
            f"one value ({content.dominant_value:g}) fills {content.dominant_share:.0%} of the brain (scans: at most "
            f"5 %): no anatomy there"
        ]
    if content.spread < MIN_SPREAD:
        return [
            f"intensities vary by only {content.spread:.2g} inside the brain: too little to normalise (a wrong "
            "scale in the header or the export)"
        ]
    if content.below_background > MAX_BELOW_BACKGROUND:
        return [
            f"darker than its background ({content.background:g}) in {content.below_background:.0%} of the brain: "
            "inverted contrast (a negative scl_slope, or a flipped grey scale)"
        ]
    return []


def outline_problem(content: SequenceContent, others: list[SequenceContent]) -> str | None:
    """A FLAIR or T1 whose brain outline is brighter than most of its brain while another
    sequence's outline is dark, as a skull-stripped scan's is: its grey scale was flipped inside
    the brain (the outline holds cerebrospinal fluid and partial volume with the background,
    dark on both)."""
    rank = content.outline_rank
    if content.modality not in OUTLINE_RANK_CHECKED or rank is None or rank <= MAX_OUTLINE_RANK:
        return None
    dark = [o for o in others if o.outline_rank is not None and o.outline_rank < DARK_OUTLINE_RANK]
    if not dark:
        return None
    return (
        f"its brain outline is brighter than {rank:.0%} of the brain, while it is dark on "
        f"{dark[0].modality.upper()} (real FLAIR and T1: at most 40 %, the outline holding dark fluid): "
        "inverted contrast (a flipped grey scale)"
    )
