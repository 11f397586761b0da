"""``bratseg measure SEG.nii.gz [--json]``: RANO measurements of a label map.

A table of the enhancing lesions (both diameters, product, volume, slice, measurable, target),
the sum of products of the target lesions and the region volumes; ``--json`` prints the
measurement contract instead (:meth:`bratseg.measurement.rano.Measurement.to_json`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHOWN_ROWS = 10  # lesions listed in the table; the rest are summed up in one line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "measure",
        help="RANO measurements of a label map: lesion diameters, sum of products, volumes",
        description="Measure the enhancing lesions of a BraTS label map (2017-2020 0/1/2/4 or 2023 0/1/2/3, any "
        "grid and orientation) as RANO does: the longest diameter on the axial slice where the product is largest "
        "and the longest diameter perpendicular to it, measurability (both at least 10 mm), the up to 3 target "
        "lesions and their sum of products (SPD), and the region volumes.",
    )
    p.add_argument("seg", type=Path, metavar="SEG.nii.gz", help="the label map")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.add_argument(
        "--scheme",
        choices=("auto", "brats2020", "brats2023"),
        default="auto",
        help="label values on disk (auto: from the file name, else the values)",
    )
    p.set_defaults(func=run_measure)
    return p


def run_measure(args: argparse.Namespace) -> None:
    from bratseg.measurement.rano import measure_file

    measurement = measure_file(args.seg, scheme=args.scheme)
    if args.json:
        print(json.dumps(measurement.to_json(), indent=2))
    else:
        print(format_table(measurement, args.seg.name))


def format_table(measurement, name: str = "") -> str:
    """The measurements as a readable table (the command's default output).

    >>> import numpy as np
    >>> from bratseg.measurement.rano import measure
    >>> labels = np.zeros((40, 40, 10), np.uint8); labels[10:30, 14:26, 4:7] = 4
    >>> print(format_table(measure(labels, np.eye(4)), "seg.nii.gz").splitlines()[0])
    seg.nii.gz: 1 enhancing lesion, 1 measurable, 1 target; SPD 326.4 mm2
    """
    lesions = measurement.lesions
    measurable = sum(lesion.measurable for lesion in lesions)
    head = f"{name}: " if name else ""
    lines = [
        f"{head}{len(lesions)} enhancing lesion{'s' if len(lesions) != 1 else ''}, {measurable} measurable, "
        f"{len(measurement.targets)} target{'s' if len(measurement.targets) != 1 else ''}; "
        f"SPD {measurement.spd_mm2:.1f} mm2"
    ]
    if lesions:
        lines.append(
            f"{'#':>3}  {'target':<6}  {'longest mm':>10}  {'perp. mm':>8}  {'product mm2':>11}  "
            f"{'volume cm3':>10}  {'slice':>5}  measurable"
        )
        for number, lesion in enumerate(lesions[:SHOWN_ROWS], start=1):
            lines.append(
                f"{number:>3}  {'yes' if lesion.target else '':<6}  {lesion.longest_mm:>10.1f}  "
                f"{lesion.perpendicular_mm:>8.1f}  {lesion.product_mm2:>11.1f}  {lesion.volume_cm3:>10.3f}  "
                f"{lesion.slice:>5}  {'yes' if lesion.measurable else 'no'}"
            )
        rest = lesions[SHOWN_ROWS:]
        if rest:
            volume = sum(lesion.volume_cm3 for lesion in rest)
            lines.append(f"     ... {len(rest)} smaller lesions ({volume:.3f} cm3 together; --json lists them)")
    volumes = ", ".join(f"{region} {value:.2f}" for region, value in measurement.volumes_cm3.items())
    lines.append(f"volumes (cm3): {volumes}")
    lines.append(
        f"slices: axis {measurement.axial_axis} of the array, {measurement.slice_thickness_mm:.2f} mm apart "
        "(slice numbers count along it from 0)"
    )
    lines.extend(f"note: {note}" for note in measurement.notes)
    return "\n".join(lines)
