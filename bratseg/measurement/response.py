"""The RANO 2.0 response category of a follow-up scan against its baseline, from the imaging
alone (the enhancing disease of two automatic segmentations).

Rules, in this order (Wen et al., J Clin Oncol 2023, imaging part):

1. **complete response**: enhancing tumour at baseline, none at follow-up.
2. **progressive disease**: the SPD of the baseline's target lesions (measured again at
   follow-up, :mod:`bratseg.followup.tracking`) up by 25 % or more, or the enhancing
   tumour volume up by 40 % or more (both against a baseline with measurable disease), or a
   new measurable enhancing lesion (more than :data:`NEW_LESION_MM` from any baseline
   enhancement once the scans are registered), or, from a baseline without measurable
   disease, a measurable lesion at follow-up.
3. **partial response**: from a baseline with measurable disease, the SPD down by 50 % or more,
   or the enhancing volume down by 65 % or more.
4. **stable disease** otherwise. A baseline without measurable disease (no enhancing lesion
   of 10 x 10 mm on two slices) cannot give a partial response (RANO): at best stable disease,
   or complete response when all enhancement has gone; a baseline without any enhancing
   tumour gives stable disease unless a measurable lesion appears.

The baseline is the reference (RANO compares progression with the smallest SPD so far, which
two scans cannot know).

Example:
    >>> change = {"spd_percent": -55.0, "volumes_percent": {"enhancing tumour": -40.0}}
    >>> classify(change, baseline_et_cm3=5.0, followup_et_cm3=3.0, baseline_measurable=True,
    ...          followup_measurable=True, new_measurable=0)[0]
    'partial response'
"""

from __future__ import annotations

COMPLETE, PARTIAL, STABLE, PROGRESSIVE = (
    "complete response",
    "partial response",
    "stable disease",
    "progressive disease",
)
SPD_PROGRESSION, SPD_RESPONSE = 25.0, -50.0  # percent change of the SPD
VOLUME_PROGRESSION, VOLUME_RESPONSE = 40.0, -65.0  # percent change of the enhancing tumour volume
NEW_LESION_MM = 5.0
"""A follow-up measurable lesion farther than this from any baseline enhancement (after
registration) is new; nearer, it is the old lesion grown."""
ENHANCING = "enhancing tumour"

CRITERIA = (
    "RANO 2.0 categories (Wen et al., J Clin Oncol 2023) from the imaging alone, on automatic segmentations of "
    "both scans, with the baseline as the reference: complete response = enhancing tumour at baseline and none at "
    "follow-up; progressive disease = sum of products of perpendicular diameters (SPD) of the baseline's target "
    "lesions, measured again at follow-up, +25 % or more, or enhancing tumour volume +40 % or more, or a new "
    "measurable enhancing lesion; partial response = SPD -50 % or more, or enhancing volume -65 % or more; "
    "stable disease otherwise. A baseline without measurable disease (no enhancing lesion of at least 10 x 10 mm "
    "on two slices) cannot give a partial response, and progresses when a measurable lesion appears. NOT part of "
    "this category: the clinical status, the corticosteroid dose, the assessment of non-enhancing (T2/FLAIR) "
    "disease, the timing rules for pseudoprogression and the confirmation scans RANO 2.0 requires before a "
    "response or progression is declared. It is a measurement aid, not a diagnosis: a qualified reader must "
    "review the images."
)


def percent_change(before: float, after: float) -> float | None:
    """``after`` against ``before`` in percent (one decimal); None when ``before`` is 0.

    >>> percent_change(10.0, 12.5), percent_change(0.0, 3.0)
    (25.0, None)
    """
    if before <= 0:
        return None
    return round(100.0 * (after - before) / before, 1)


def classify(
    change: dict,
    *,
    baseline_et_cm3: float,
    followup_et_cm3: float,
    baseline_measurable: bool,
    followup_measurable: bool,
    new_measurable: int,
) -> tuple[str, list[str]]:
    """The response category and the reasons for it, one line each (module docstring)."""
    spd = change.get("spd_percent")
    volume = change.get("volumes_percent", {}).get(ENHANCING)
    if baseline_et_cm3 > 0 and followup_et_cm3 <= 0:
        return COMPLETE, [f"no enhancing tumour at follow-up (baseline {baseline_et_cm3:.2f} cm3)"]
    reasons = []
    if new_measurable:
        reasons.append(f"{new_measurable} new measurable enhancing lesion{'s' if new_measurable > 1 else ''}")
    if baseline_measurable:
        if spd is not None and spd >= SPD_PROGRESSION:
            reasons.append(f"SPD {spd:+.1f} % (progression from +{SPD_PROGRESSION:g} %)")
        if volume is not None and volume >= VOLUME_PROGRESSION:
            reasons.append(f"enhancing volume {volume:+.1f} % (progression from +{VOLUME_PROGRESSION:g} %)")
    elif followup_measurable and not new_measurable:
        reasons.append("measurable enhancing disease at follow-up where the baseline had none")
    if reasons:
        return PROGRESSIVE, reasons
    if not baseline_measurable:
        what = "no enhancing tumour" if baseline_et_cm3 <= 0 else "no measurable enhancing lesion"
        return STABLE, [f"{what} at baseline: no partial response possible, and no measurable lesion at follow-up"]
    if spd is not None and spd <= SPD_RESPONSE:
        reasons.append(f"SPD {spd:+.1f} % (response from {SPD_RESPONSE:g} %)")
    if volume is not None and volume <= VOLUME_RESPONSE:
        reasons.append(f"enhancing volume {volume:+.1f} % (response from {VOLUME_RESPONSE:g} %)")
    if reasons:
        return PARTIAL, reasons
    spd_text = "n/a" if spd is None else f"{spd:+.1f} %"
    volume_text = "n/a" if volume is None else f"{volume:+.1f} %"
    return STABLE, [f"SPD {spd_text}, enhancing volume {volume_text}: within the thresholds"]
