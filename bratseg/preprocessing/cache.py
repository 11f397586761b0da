"""The training slice cache: memory-mapped NumPy arrays, a manifest and a case-level split.

Layout of ``CACHE_DIR``::

    images.npy      float16 [N, C, H, W]   (np.load(..., mmap_mode="r"))
    labels.npy      uint8   [N, H, W]      internal labels 0..3
    manifest.csv    row per slice: index, case, slice, brain voxels, voxels of WT/TC/ET
    split.json      {"train": [case ids], "val": [case ids], "seed": ...}
    preprocessing.json
    parts/<case>.npz   one finished case each; a killed build resumes from them

Cases run in worker processes, one case per worker at a time, so memory stays flat.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bratseg.data.io import atomic_write_bytes, load_case
from bratseg.data.labels import labels_to_regions
from bratseg.data.layout import Case, find_cases
from bratseg.errors import CacheError
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.preprocessing.context import with_context
from bratseg.preprocessing.crop import resize_slices
from bratseg.preprocessing.pipeline import prepare_case
from bratseg.preprocessing.slices import select_slices

MANIFEST_FIELDS = ["index", "case", "slice", "brain_voxels", "WT", "TC", "ET"]


def _cache_one(case: Case, config: PreprocessingConfig, part: Path) -> str:
    """Preprocess one case and write its slices to ``part`` atomically."""
    volumes = load_case(case)
    if volumes.label is None:
        raise CacheError(f"{case.case_id}: no label file; the training cache needs labels")
    prepared = prepare_case(volumes, config)
    keep = select_slices(
        prepared.brain,
        prepared.label,
        config.min_brain_fraction,
        config.tumour_free_fraction,
        seed=case.case_id,
    )
    # 2.5-D neighbours come from the whole volume: the cache keeps only some slices.
    image = with_context(prepared.image, config.context_slices)
    images = np.moveaxis(image[..., keep], 3, 0)  # [n, C * (2k + 1), H, W]
    labels = np.moveaxis(prepared.label[..., keep], 2, 0)  # [n, H, W]
    brain = np.moveaxis(prepared.brain[..., keep], 2, 0)
    if config.resize is not None:
        images = resize_slices(torch.from_numpy(images), config.resize).numpy()
        labels = resize_slices(torch.from_numpy(labels[:, None]), config.resize, nearest=True)[:, 0].numpy()
        brain = resize_slices(torch.from_numpy(brain[:, None].astype(np.uint8)), config.resize, nearest=True)[
            :, 0
        ].numpy()
    regions = labels_to_regions(labels)  # [3, n, H, W]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                images=images.astype(np.float16),
                labels=labels.astype(np.uint8),
                slices=keep,
                brain_voxels=brain.sum(axis=(1, 2)),
                region_voxels=regions.sum(axis=(2, 3)).T,
            )

    atomic_write_bytes(part, write)
    return case.case_id


def _worker_context() -> multiprocessing.context.BaseContext:
    """Start method of the cache workers.

    A fresh process per case would otherwise be *spawned* (the default with
    ``max_tasks_per_child``), and each would import torch and the package again: seconds per
    case. Workers forked from a forkserver that has imported this module once start in
    milliseconds, still without inheriting the parent's memory.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def split_cases(case_ids: list[str], val_fraction: float, seed: int) -> dict:
    """Deterministic case-level split: the same ids and seed always give the same split."""
    ids = sorted(case_ids)
    rng = random.Random(seed)
    shuffled = ids[:]
    rng.shuffle(shuffled)
    n_val = max(1, round(len(ids) * val_fraction)) if len(ids) > 1 else 0
    val = sorted(shuffled[:n_val])
    return {"train": [c for c in ids if c not in val], "val": val, "seed": seed}


def fold_split(case_ids: list[str], num_folds: int, fold: int, seed: int) -> dict:
    """Fold ``fold`` of a deterministic ``num_folds``-fold cross-validation, as nnU-Net's
    five folds: the cases, shuffled by ``seed``, are dealt round-robin into folds; the fold's
    cases validate and all the others train. Every case validates in exactly one fold.

    Example:
        >>> ids = [f"case{i}" for i in range(7)]
        >>> folds = [fold_split(ids, 3, f, seed=0)["val"] for f in range(3)]
        >>> sorted(sum(folds, [])) == ids, [len(v) for v in folds]
        (True, [3, 2, 2])
    """
    if num_folds < 2:
        raise ValueError(f"{num_folds} fold(s): a cross-validation needs at least 2 (one trains, one validates)")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold {fold} is not one of 0..{num_folds - 1}")
    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise ValueError(f"{len(ids)} cases cannot make {num_folds} folds")
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    val = sorted(shuffled[fold::num_folds])
    return {"train": [c for c in ids if c not in val], "val": val, "seed": seed, "fold": fold, "num_folds": num_folds}


def build_cache(
    data_dir: str | Path,
    out_dir: str | Path,
    config: PreprocessingConfig | None = None,
    workers: int = 2,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Build (or resume building) the slice cache of every labelled case under ``data_dir``.

    Example:
        >>> import tempfile, pathlib
        >>> from bratseg.synthetic import write_synthetic_dataset
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_synthetic_dataset(root / "data", 3, shape=(64, 64, 24))
        >>> cfg = PreprocessingConfig(crop_size=(64, 64))
        >>> out = build_cache(root / "data", root / "cache", cfg, workers=1, progress=False)
        >>> np.load(out / "images.npy", mmap_mode="r").shape[1:]
        (4, 64, 64)
    """
    config = config or PreprocessingConfig()
    # Find and check the input before touching out_dir, so a wrong DATA_DIR leaves nothing behind.
    cases = [c for c in find_cases(data_dir) if c.label is not None]
    if not cases:
        raise CacheError(f"{data_dir}: no labelled cases found")
    folders: dict[str, Path | None] = {}
    for c in cases:
        if c.case_id in folders:
            # Parts, manifest rows and the split are keyed by case id: two folders of one
            # name would overwrite each other's slices and could land on both sides of the split.
            raise CacheError(f"{data_dir}: two case folders are named {c.case_id}: {folders[c.case_id]} and {c.folder}")
        folders[c.case_id] = c.folder

    out_dir = Path(out_dir)
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "preprocessing.json"
    if config_path.exists() and PreprocessingConfig.from_json(config_path) != config:
        raise CacheError(
            f"{config_path}: the cache was started with another preprocessing config; use a new --out folder"
        )
    # Atomic, so a build killed while writing it cannot leave a truncated JSON that blocks resuming.
    atomic_write_bytes(config_path, config.to_json)
    _remove_stale_temp_files(out_dir, parts_dir)

    todo = [c for c in cases if not (parts_dir / f"{c.case_id}.npz").exists()]
    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc="cache", unit="case", disable=not progress)
    try:
        if todo and workers > 1:
            # max_tasks_per_child=1 gives each case a fresh process: memory stays flat.
            with ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(), max_tasks_per_child=1) as pool:
                futures = [pool.submit(_cache_one, c, config, parts_dir / f"{c.case_id}.npz") for c in todo]
                try:
                    for fut in futures:
                        fut.result()
                        bar.update()
                except BaseException:
                    # Report a bad case now rather than after every queued case has run;
                    # the parts finished so far stay for the next (resumed) build.
                    pool.shutdown(cancel_futures=True)
                    raise
        else:
            for c in todo:
                _cache_one(c, config, parts_dir / f"{c.case_id}.npz")
                bar.update()
    finally:
        # Close before any error is printed, so the error is the last line on the terminal.
        bar.close()
    _consolidate([c.case_id for c in cases], parts_dir, out_dir)
    split = split_cases([c.case_id for c in cases], val_fraction, seed)
    atomic_write_bytes(out_dir / "split.json", lambda p: p.write_text(json.dumps(split, indent=2) + "\n"))
    return out_dir


def _remove_stale_temp_files(out_dir: Path, parts_dir: Path) -> None:
    """Delete the temp files a killed build left behind (``atomic_write_bytes`` names them
    ``.<name>.<random>.tmp``; the labels array is written beside the images one with a
    ``.labels`` ending): nothing reuses them, and an array's can be gigabytes."""
    for folder in (out_dir, parts_dir):
        for pattern in (".*.tmp", ".*.tmp.labels"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)


def _consolidate(case_ids: list[str], parts_dir: Path, out_dir: Path) -> None:
    """Concatenate the per-case parts into the two memory-mapped arrays, one case in memory
    at a time, then write the manifest. Arrays appear under their final names only once
    complete."""
    counts, shape = [], None
    for cid in case_ids:
        with np.load(parts_dir / f"{cid}.npz") as part:
            counts.append(len(part["slices"]))
            shape = part["images"].shape[1:]
    total = sum(counts)
    rows = []

    def write_arrays(tmp_images: Path) -> None:
        tmp_labels = tmp_images.with_name(tmp_images.name + ".labels")
        images = np.lib.format.open_memmap(tmp_images, "w+", np.float16, (total, *shape))
        labels = np.lib.format.open_memmap(tmp_labels, "w+", np.uint8, (total, *shape[1:]))
        pos = 0
        for cid, n in zip(case_ids, counts):
            with np.load(parts_dir / f"{cid}.npz") as part:
                images[pos : pos + n] = part["images"]
                labels[pos : pos + n] = part["labels"]
                for i in range(n):
                    wt, tc, et = (int(v) for v in part["region_voxels"][i])
                    rows.append([pos + i, cid, int(part["slices"][i]), int(part["brain_voxels"][i]), wt, tc, et])
            pos += n
        images.flush()
        labels.flush()
        del images, labels
        atomic_write_bytes(out_dir / "labels.npy", lambda p: tmp_labels.replace(p))

    atomic_write_bytes(out_dir / "images.npy", write_arrays)

    def write_manifest(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(MANIFEST_FIELDS)
            writer.writerows(rows)

    atomic_write_bytes(out_dir / "manifest.csv", write_manifest)


def read_manifest(cache_dir: str | Path) -> list[dict]:
    path = Path(cache_dir) / "manifest.csv"
    if not path.exists():
        raise CacheError(f"{path}: missing; build the cache with `bratseg cache` first")
    with open(path, newline="") as fh:
        return [{k: (v if k == "case" else int(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


__all__ = ["build_cache", "fold_split", "read_manifest", "split_cases", "MANIFEST_FIELDS"]


def open_array(path: str | Path) -> np.ndarray:
    """A cache's ``.npy`` array (``images.npy``, ``labels.npy``, soft targets), memory-mapped;
    :class:`CacheError` naming the file when it cannot be read as one."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: cannot be read as a NumPy array ({exc})") from None
