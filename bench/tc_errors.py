"""Where tumour core is lost: the TC error analysis of a cross-validation report.

    python bench/tc_errors.py outputs/screen3_e10_last/report [--json out.json]

For every case of the report (``bratseg evaluate``'s ``cases.csv``: prediction and reference
paths) it counts, in voxels:

- the reference tumour core (NCR + ET) the prediction calls edema, calls background, or gets;
- the predicted tumour core that the reference calls edema or background (false core);
- the connected pieces (26-connectivity, at least 10 voxels) of the core in each map,
  to tell a core split into pieces from one drawn too small.

Prints one row per case (worst TC Dice first) and the totals over all cases: the shares of
missed core that went to edema and to background, and of false core that came from each.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from bratseg.data.io import load_volume
from bratseg.data.labels import ED, ET, NCR, to_internal

MIN_PIECE_VOXELS = 10


def _pieces(mask: np.ndarray) -> int:
    """Connected pieces of at least MIN_PIECE_VOXELS voxels (26-connectivity)."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return 0
    sizes = np.bincount(labelled.ravel())[1:]
    return int((sizes >= MIN_PIECE_VOXELS).sum())


def core_errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Voxel counts of where the reference core went and where the predicted core came from.

    Both maps carry internal labels (0 background, 1 NCR, 2 ED, 3 ET).

    Example:
        >>> ref = np.zeros((4, 4, 4), np.uint8); ref[0] = 1; ref[1] = 2
        >>> pred = np.zeros_like(ref); pred[0, :2] = 2; pred[0, 2:] = 3; pred[1, :1] = 1
        >>> e = core_errors(pred, ref)
        >>> e["ref_core"], e["core_hit"], e["core_as_edema"], e["false_core_from_edema"]
        (16, 8, 8, 4)
    """
    ref_core = (ref == NCR) | (ref == ET)
    pred_core = (pred == NCR) | (pred == ET)
    hit = int((ref_core & pred_core).sum())
    return {
        "ref_core": int(ref_core.sum()),
        "pred_core": int(pred_core.sum()),
        "core_hit": hit,
        "core_as_edema": int((ref_core & (pred == ED)).sum()),
        "core_as_background": int((ref_core & (pred == 0)).sum()),
        "false_core_from_edema": int((pred_core & (ref == ED)).sum()),
        "false_core_from_background": int((pred_core & (ref == 0)).sum()),
        "tc_dice": 2 * hit / max(int(ref_core.sum() + pred_core.sum()), 1),
        "ref_pieces": _pieces(ref_core),
        "pred_pieces": _pieces(pred_core),
    }


def read_cases(report: Path) -> list[dict[str, str]]:
    path = report / "cases.csv"
    if not path.is_file():
        sys.exit(f"{path}: not found (give a `bratseg evaluate` report folder)")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _labels(path: str, scheme: str) -> np.ndarray:
    return to_internal(load_volume(path, dtype=np.float32).data, scheme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--json", type=Path, help="write the per-case counts here")
    args = parser.parse_args()
    rows = []
    for case in read_cases(args.report):
        errors = core_errors(_labels(case["pred"], case["pred_scheme"]), _labels(case["ref"], case["ref_scheme"]))
        rows.append({"case": case["case"], **errors})
    rows.sort(key=lambda r: r["tc_dice"])
    print(
        "| case | TC Dice | ref core ml | pred core ml | missed as edema | missed as background "
        "| false from edema | false from background | pieces ref / pred |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['tc_dice']:.3f} | {r['ref_core'] / 1000:.1f} | {r['pred_core'] / 1000:.1f} "
            f"| {r['core_as_edema'] / 1000:.1f} | {r['core_as_background'] / 1000:.1f} "
            f"| {r['false_core_from_edema'] / 1000:.1f} | {r['false_core_from_background'] / 1000:.1f} "
            f"| {r['ref_pieces']} / {r['pred_pieces']} |"
        )
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("case", "tc_dice")}
    missed = total["core_as_edema"] + total["core_as_background"]
    false = total["false_core_from_edema"] + total["false_core_from_background"]
    print(f"\n{len(rows)} cases, mean TC Dice {np.mean([r['tc_dice'] for r in rows]):.3f}")
    print(
        f"missed core: {missed / total['ref_core']:.1%} of the reference core; "
        f"{total['core_as_edema'] / max(missed, 1):.0%} of it called edema, "
        f"{total['core_as_background'] / max(missed, 1):.0%} background"
    )
    print(
        f"false core: {false / total['pred_core']:.1%} of the predicted core; "
        f"{total['false_core_from_edema'] / max(false, 1):.0%} of it reference edema, "
        f"{total['false_core_from_background'] / max(false, 1):.0%} background"
    )
    split = sum(r["pred_pieces"] > r["ref_pieces"] for r in rows)
    print(f"cases with the core in more pieces than the reference: {split} of {len(rows)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
