"""Running each batch of slices on the brain's box instead of the whole window: what it saves
and what it changes.

For every case under ``--data`` (folders with the four sequences and an expert label), the
case is prepared once and run through the network on the whole window and on the brain box
with each ``--margins`` value (:mod:`bratseg.inference.brain_box`). Prints, per setting, the
network's seconds (median over the cases, and the ratio to the whole window in the same
process), the pixels it ran (share of the whole window), the Dice of its label map against the
whole window's (WT, TC, ET; mean and worst case), and the mean Dice against the expert label.

Usage:
    python bench/brain_box_agreement.py [--data outputs/data27] [--model MODEL_DIR]
                                        [--margins 0 8 16] [--cases N] [--json OUT.json]

Run it on a quiet machine for the times; the agreement does not depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
REGIONS = ("WT", "TC", "ET")


def region_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET between two internal label maps (0..3); two empty masks score 1."""
    from bratseg.data.labels import REGIONS as MEMBERS

    out = {}
    for name in REGIONS:
        p, r = np.isin(a, MEMBERS[name]), np.isin(b, MEMBERS[name])
        denom = int(p.sum()) + int(r.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "outputs" / "data27")
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument("--margins", type=int, nargs="+", default=[0, 8, 16])
    parser.add_argument("--cases", type=int, help="only the first N cases")
    parser.add_argument("--json", type=Path, help="write the per-case figures here")
    args = parser.parse_args()

    from bratseg.data.io import load_case
    from bratseg.data.labels import to_internal
    from bratseg.data.layout import case_from_folder
    from bratseg.inference.predictor import Segmenter

    folders = sorted(p for p in args.data.iterdir() if p.is_dir())[: args.cases]
    if not folders:
        sys.exit(f"{args.data}: no case folders")
    segmenter = Segmenter.from_pretrained(args.model)
    settings: list[int | None] = [None, *args.margins]
    names = ["whole window" if m is None else f"box, margin {m}" for m in settings]
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for folder in folders:
        volumes = load_case(case_from_folder(folder))
        prepared = segmenter.prepare(volumes)
        whole = None
        for name, margin in zip(names, settings):
            segmenter.brain_box_margin = margin
            t0 = time.perf_counter()
            network = segmenter.run_network(prepared)
            seconds = time.perf_counter() - t0
            labels = to_internal(segmenter.finish(prepared, network).labels, "brats2020")
            whole = labels if whole is None else whole
            pixels = _pixels(segmenter, prepared, margin)
            rows[name].append(
                {
                    "case": folder.name,
                    "seconds": seconds,
                    "pixels": pixels,
                    "agreement": region_dice(labels, whole),
                    "expert": region_dice(labels, volumes.label),
                }
            )
        print(f"  {folder.name} done", file=sys.stderr)

    base = rows[names[0]]
    print(f"{len(folders)} cases, model {segmenter.model_name} ({segmenter.precision})")
    print(
        "| setting | network s (median) | ratio | pixels | agreement WT / TC / ET (mean) | worst "
        "| expert WT / TC / ET |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        r = rows[name]
        ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(r, base))
        agree = " / ".join(f"{statistics.mean(x['agreement'][k] for x in r):.4f}" for k in REGIONS)
        worst = " / ".join(f"{min(x['agreement'][k] for x in r):.4f}" for k in REGIONS)
        expert = " / ".join(f"{statistics.mean(x['expert'][k] for x in r):.4f}" for k in REGIONS)
        pixels = statistics.mean(x["pixels"] for x in r)
        median = statistics.median(x["seconds"] for x in r)
        print(f"| {name} | {median:.3f} | {ratio:.3f} | {pixels:.3f} | {agree} | {worst} | {expert} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _pixels(segmenter, prepared, margin: int | None) -> float:
    """Share of the whole window's slice pixels that ``margin``'s boxes run."""
    from bratseg.inference.brain_box import brain_box

    window = prepared.slices.shape[2] * prepared.slices.shape[3]
    total = ran = 0
    for batch in segmenter._batches(np.arange(len(prepared.slice_index))):
        brain = prepared.prepared.brain[..., prepared.slice_index[batch]]
        box = None if margin is None else brain_box(brain, margin=margin)
        area = window if box is None else (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        total += len(batch) * window
        ran += len(batch) * area
    return ran / total


if __name__ == "__main__":
    main()
