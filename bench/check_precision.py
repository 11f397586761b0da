"""Whole-volume Dice of fp32, bf16 and flip-TTA inference on the validation cases of a split.

Checks that bf16 autocast (the default where the CPU has native bf16) costs no accuracy:
its Dice must stay within 0.005 of fp32 for WT, TC and ET; and measures whether flip TTA
gains enough to be worth its 4x time.

Usage:
    python bench/check_precision.py [--model MODEL_DIR] [--split cache/brats18/split.json]
                                    [--data DIR] [--configs fp32 bf16 bf16+tta]

The split file is only read. Cases are looked up by id under ``--data`` (default
``$BRATSEG_DATA/brats18``). Run it with the trained model: with the untrained placeholder the
figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BRATSEG_DATA", REPO.parent / "shared" / "data"))
CONFIGS = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp32+tta": {"precision": "fp32", "flip_tta": True},
    "bf16+tta": {"precision": "bf16", "flip_tta": True},
}


def region_dice(pred_internal: np.ndarray, ref_internal: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET (internal labels 0..3); two empty masks score 1 (BraTS)."""
    from bratseg.data.labels import REGIONS

    out = {}
    for name, members in REGIONS.items():
        p, r = np.isin(pred_internal, members), np.isin(ref_internal, members)
        denom = int(p.sum()) + int(r.sum())
        out[name] = 1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument("--split", type=Path, default=REPO / "cache" / "brats18" / "split.json")
    parser.add_argument("--data", type=Path, default=DATA / "brats18")
    parser.add_argument("--configs", nargs="+", default=["fp32", "bf16", "bf16+tta"], choices=list(CONFIGS))
    args = parser.parse_args()

    from bratseg.data.io import load_case
    from bratseg.data.labels import to_internal
    from bratseg.data.layout import case_from_folder
    from bratseg.inference.predictor import SHIPPED_MODEL, Segmenter, load_model

    val = json.loads(args.split.read_text())["val"]
    model_dir = args.model
    meta = load_model(model_dir or SHIPPED_MODEL)[1]
    cases = {cid: load_case(case_from_folder(args.data / cid)) for cid in val}
    results: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for name in args.configs:
        seg = Segmenter.from_pretrained(model_dir, **CONFIGS[name])
        if seg.precision != CONFIGS[name]["precision"]:
            sys.exit(f"{name}: this CPU ran {seg.precision}")
        results[name], seconds[name] = {}, []
        for cid, volumes in cases.items():
            t = time.perf_counter()
            pred = seg.segment(volumes)
            seconds[name].append(time.perf_counter() - t)
            results[name][cid] = region_dice(to_internal(pred.labels, "brats2020"), volumes.label)
        print(f"  {name} done", file=sys.stderr)

    print(f"\n## Inference precision and TTA: whole-volume Dice on {len(val)} validation cases\n")
    print(f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ")
    print(f"Model: {model_dir or 'shipped'} (epoch {meta.get('epoch', meta.get('best_epoch'))})\n")
    print("| config | Dice WT | Dice TC | Dice ET | mean | median s/case |")
    print("|---|---|---|---|---|---|")
    means = {}
    for name in args.configs:
        per = results[name].values()
        m = {r: statistics.mean(d[r] for d in per) for r in ("WT", "TC", "ET")}
        means[name] = m
        print(
            f"| {name} | {m['WT']:.4f} | {m['TC']:.4f} | {m['ET']:.4f} | {statistics.mean(m.values()):.4f} | "
            f"{statistics.median(seconds[name]):.2f} |"
        )
    print("\nper case:")
    for cid in val:
        print(
            f"- {cid}: "
            + "; ".join(
                f"{n} " + " ".join(f"{results[n][cid][r]:.4f}" for r in ("WT", "TC", "ET")) for n in args.configs
            )
        )
    if "fp32" in means and "bf16" in means:
        worst = max(abs(means["bf16"][r] - means["fp32"][r]) for r in ("WT", "TC", "ET"))
        per_case = max(abs(results["bf16"][c][r] - results["fp32"][c][r]) for c in val for r in ("WT", "TC", "ET"))
        verdict = "within" if worst <= 0.005 else "NOT within"
        print(
            f"\nbf16 vs fp32: largest mean-Dice difference {worst:.4f} ({verdict} 0.005); "
            f"largest per case {per_case:.4f}"
        )


if __name__ == "__main__":
    main()
