"""How visible is each case's annotated tumour on its own images?

For every expert-labelled case, the median intensity of the voxels labelled enhancing tumour
(ET), necrotic / non-enhancing core (NCR) and edema (ED), on each modality, as a percentile of
that modality's brain intensities (non-zero voxels). Enhancing tumour is by definition bright
on T1ce: in a typical BraTS case its median lies near the 95th-98th percentile of the brain.
A case far below that carries an ET annotation its T1ce does not show, which no image-based
model can reproduce; this explains a validation case's low ET Dice better than the model does.

    python bench/label_contrast.py --data ../shared/data/brats18

``--data`` defaults to ``$BRATSEG_DATA/brats18`` (``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from bratseg.data.io import load_case
from bratseg.data.labels import ED, ET, NCR
from bratseg.data.layout import find_cases

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
# (structure, modality) columns: the three structures on T1ce, then the contrasts that
# define ET and NCR on the other sequences.
COLUMNS = [("ET", ET, "t1ce"), ("NCR", NCR, "t1ce"), ("ED", ED, "t1ce"), ("ET", ET, "flair"), ("NCR", NCR, "t2")]


def median_percentile(image: np.ndarray, mask: np.ndarray) -> float:
    """The median of ``image`` over ``mask`` as a percentile of the brain's intensities."""
    brain = image[image > 0]
    if not mask.any() or brain.size == 0:
        return float("nan")
    return 100.0 * np.count_nonzero(brain < np.median(image[mask])) / brain.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "brats18")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (set BRATSEG_DATA or pass --data)")
    header = ["case"] + [f"{name} on {modality}" for name, _, modality in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in find_cases(args.data):
        if case.label is None:
            continue
        vols = load_case(case)
        cells = [case.case_id] + [
            f"{median_percentile(vols.images[modality], vols.label == label):.0f}" for _, label, modality in COLUMNS
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
