"""Reproduce the metrics in model_card.md with the bratseg commands themselves.

1. With ``--split``, the validation cases of a model's split (``split.json`` of the brats18
   cache it trained on) are linked into a temporary folder, predicted with all four
   modalities and with FLAIR + T1ce alone, and evaluated against their expert labels. The
   shipped model trained on all 27 labelled cases, so it has none: its unseen-case figures
   are the 27-case cross-validation of its recipe (bench/cross_validation.py).
2. The TCGA case (BraTS Toolkit naming, no expert label) is predicted and evaluated against
   the majority-vote consensus of five BraTS 2020 algorithms; each algorithm is evaluated
   against the same consensus, for scale.

    python bench/model_card_metrics.py --data ../shared/data --out outputs/model_card

Every command it runs is printed first; the reports land in OUT/<name>/ (summary.md,
metrics.csv, boxplot.png).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def run(*args: str | Path) -> None:
    cmd = ["bratseg", *map(str, args)]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "bratseg", *map(str, args)], check=True)


def link_cases(src: Path, cases: list[str], dst: Path, only: tuple[str, ...] | None = None) -> Path:
    """A folder of case folders whose files are symlinks to ``src``'s (scans stay put)."""
    for case in cases:
        folder = dst / case
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted((src / case).iterdir()):
            keep = only is None or any(f.name.endswith(f"_{m}.nii.gz") for m in only)
            if keep and not (folder / f.name).exists():
                (folder / f.name).symlink_to(f.resolve())
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--split", type=Path, help="a cache's split.json: also score the model on its validation cases")
    parser.add_argument("--out", type=Path, default=Path("outputs/model_card"))
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    out = args.out.resolve()

    if args.split is not None:
        val = json.loads(args.split.read_text())["val"]
        all4 = link_cases(args.data / "brats18", val, out / "cases" / "all4")
        pair = link_cases(args.data / "brats18", val, out / "cases" / "flair_t1ce", only=("flair", "t1ce", "seg"))
        for name, cases in (("val_all4", all4), ("val_flair_t1ce", pair)):
            run("predict", cases, "--output", out / "pred" / name, "--quiet", *model)
            run("evaluate", "--pred", out / "pred" / name, "--ref", cases, "--out", out / name)

    tcga = args.data / "tcga" / "TCGA-DU-7294"
    seg = tcga / "segmentation"
    run("predict", tcga, "--output", out / "pred" / "tcga" / "TCGA-DU-7294.nii.gz", "--quiet", *model)
    run(
        "evaluate",
        "--pred",
        out / "pred" / "tcga" / "TCGA-DU-7294.nii.gz",
        "--ref",
        seg / "consensus-mav.nii.gz",
        "--out",
        out / "tcga_bratseg",
    )
    for algo in sorted(p for p in seg.glob("*-20.nii.gz")):
        run("evaluate", "--pred", algo, "--ref", seg / "consensus-mav.nii.gz", "--out", out / f"tcga_{algo.name[:-7]}")


if __name__ == "__main__":
    main()
