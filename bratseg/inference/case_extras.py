"""The per-case extras of ``bratseg predict`` (``--uncertainty``, ``--figures``): what each
writes beside a label map, and the hooks that write them.

A hook is called on the writer thread with the case's prediction and the path of its label
map, after the label map is written (an error in it fails that case). A native-path case's
uncertainty map is pulled back onto the patient's grid, beside its label map; its figure and
its confidence are those of the BraTS-space prediction, the grid the model saw.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bratseg.data.layout import nifti_stem

if TYPE_CHECKING:
    from bratseg.inference.prediction import Prediction

CaseHook = Callable[["Prediction", Path], None]


def case_hooks(args: argparse.Namespace) -> list[CaseHook]:
    """The per-case extras the arguments ask for, run after each label map is written."""
    hooks: list[CaseHook] = []
    if args.uncertainty:

        def write_uncertainty(prediction: Prediction, label_map: Path) -> None:
            from bratseg.inference.confidence import save_uncertainty

            # On the label map's own (patient) grid, as the web front ends show it.
            save_uncertainty(prediction.on_patient_grid(), uncertainty_path(label_map))

        hooks.append(write_uncertainty)
    if args.figures is not None:

        def write_figure(prediction: Prediction, label_map: Path) -> None:
            from bratseg.reporting.figures import key_slice_panel

            # A native-path case is shown in BraTS space, the grid the model saw.
            key_slice_panel(prediction.model_space, figure_path(args.figures, label_map))

        hooks.append(write_figure)
    return hooks


def figure_path(figures: Path, label_map: Path) -> Path:
    """``--figures DIR``'s panel for ``label_map``: ``DIR/<label map name>.png``."""
    return figures / f"{nifti_stem(label_map)}.png"


def extra_targets(args: argparse.Namespace, label_map: Path) -> list[Path]:
    """The files the per-case extras write beside ``label_map``'s."""
    extras = []
    if args.uncertainty:
        extras.append(uncertainty_path(label_map))
    if args.figures is not None:
        extras.append(figure_path(args.figures, label_map))
    return extras


def uncertainty_path(label_map: Path) -> Path:
    """``seg.nii.gz`` -> ``seg_uncertainty.nii.gz`` (the suffix's letter case kept)."""
    stem = nifti_stem(label_map) or label_map.name
    return label_map.with_name(f"{stem}_uncertainty{label_map.name[len(stem) :]}")
