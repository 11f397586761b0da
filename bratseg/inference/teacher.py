"""Teacher probabilities for a slice cache: the mean region probabilities of several models
(an ensemble) on the cache's slices, the soft targets a distilled student trains on.

The slices of a cache are already the network's input (normalised, cropped to the window,
context slices stacked), so the teachers run on them directly; they must have been trained on
input prepared as the cache's (``preprocessing.json``). The file format and its checks are in
:mod:`bratseg.preprocessing.soft_targets`.

For a cross-validation figure the teachers of a fold's student must not have seen that fold's
validation cases: nested folds (``bratseg train --fold K --inner-fold J``) give them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bratseg.data.io import atomic_write_bytes
from bratseg.errors import CacheError, ModelLoadError
from bratseg.inference.model_folder import weights_version
from bratseg.inference.predictor import Segmenter
from bratseg.preprocessing.cache import open_array, read_manifest
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.soft_targets import REGION_CHANNELS, cache_digest, description_path

# Rows per forward pass, and per write.
BATCH_ROWS = 16


def write_soft_targets(
    cache_dir: str | Path,
    teachers: Sequence[str | Path],
    out: str | Path,
    cases: Sequence[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
) -> Path:
    """Write ``out`` (``.npy``) and its description: the teachers' mean region probabilities
    for the rows of ``cases`` (default: every case of the cache), NaN elsewhere. Returns
    ``out``; both files appear only once complete."""
    cache_dir, out = Path(cache_dir), Path(out)
    if out.suffix != ".npy":
        raise CacheError(f"{out}: soft targets are written as a .npy file")
    if not teachers:
        raise ModelLoadError("soft targets need at least one teacher model folder")
    rows = read_manifest(cache_dir)  # a CacheError naming the folder when it is no cache
    cache_prep = _cache_preprocessing(cache_dir)
    members = [Segmenter.from_pretrained(t, flip_tta=False, brain_box_margin=None) for t in teachers]
    for folder, member in zip(teachers, members):
        if member.preprocessing != cache_prep:
            raise ModelLoadError(f"{folder}: prepares its input differently from the cache {cache_dir}")
    known = {r["case"] for r in rows}
    wanted = sorted(known if cases is None else set(cases))
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise CacheError(f"{cache_dir}: has no slices of {len(unknown)} case(s), e.g. {unknown[0]}")
    chosen_cases = set(wanted)
    chosen = np.array([r["index"] for r in rows if r["case"] in chosen_cases], dtype=np.int64)
    images = open_array(cache_dir / "images.npy")
    shape = (images.shape[0], REGION_CHANNELS, *images.shape[2:])
    # Known before the long write: a teacher given by Hub id is described by its resolved folder.
    description = {
        "cache": cache_digest(cache_dir),
        "rows": shape[0],
        "cases": wanted,
        "teachers": [{"model": member.source, "version": weights_version(member.model_dir)} for member in members],
    }

    def write(tmp: Path) -> None:
        soft = np.lib.format.open_memmap(tmp, "w+", np.float16, shape)
        for start in range(0, shape[0], 256):
            soft[start : start + 256] = np.nan
        batches = [chosen[i : i + batch_rows] for i in range(0, len(chosen), batch_rows)]
        for batch in tqdm(batches, desc="soft targets", unit="batch", disable=not progress):
            x = torch.from_numpy(np.asarray(images[batch], dtype=np.float32))
            mean = sum(member.slice_probabilities(x) for member in members) / len(members)
            soft[batch] = mean.numpy().astype(np.float16)
        soft.flush()
        del soft

    # The description goes first and comes back last: a run killed in between leaves a new
    # array without one (refused by check_soft_targets), never beside an older file's.
    description_path(out).unlink(missing_ok=True)
    atomic_write_bytes(out, write)
    text = json.dumps(description, indent=1) + "\n"
    atomic_write_bytes(description_path(out), lambda tmp: tmp.write_text(text))
    return out


def _cache_preprocessing(cache_dir: Path) -> PreprocessingConfig:
    path = cache_dir / "preprocessing.json"
    try:
        return PreprocessingConfig.from_json(path)
    except (OSError, ValueError, TypeError) as exc:
        raise CacheError(f"{path}: cannot be read as the cache's preprocessing ({exc})") from None
