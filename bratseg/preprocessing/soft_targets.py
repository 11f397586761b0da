"""Teacher probabilities for the slices of a cache (knowledge distillation): the file format.

A soft-targets file sits beside its description::

    NAME.npy    float16 [N, 3, H, W]  region probabilities (WT, TC, ET) of cache row 0..N-1;
                                      NaN in the rows of cases it was not made for
    NAME.json   {"cache": the cache's digest, "rows": N, "cases": [case ids],
                 "teachers": [{"model": folder or Hub id, "version": "sha256:..."}]}

:func:`bratseg.inference.teacher.write_soft_targets` writes it; a training run with
``soft_targets`` reads it (:class:`bratseg.training.dataset.SliceDataset`) after
:func:`check_soft_targets`, which refuses a file made for another cache or without the run's
training cases.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bratseg.errors import CacheError
from bratseg.preprocessing.cache import open_array

REGION_CHANNELS = 3


def description_path(path: str | Path) -> Path:
    """The JSON description beside a soft-targets ``.npy`` file."""
    return Path(path).with_suffix(".json")


def cache_digest(cache_dir: str | Path) -> str:
    """``sha256:`` of the cache's manifest (which slices, in which rows) and preprocessing
    (how they were prepared): a rebuild that changes either changes it."""
    digest = hashlib.sha256()
    for name in ("manifest.csv", "preprocessing.json"):
        path = Path(cache_dir) / name
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise CacheError(f"{path}: cannot be read ({exc.strerror}); build the cache with `bratseg cache`") from None
    return "sha256:" + digest.hexdigest()


def read_description(path: str | Path) -> dict:
    """The description of the soft-targets file ``path``; :class:`CacheError` when it is
    missing or unreadable."""
    desc = description_path(path)
    try:
        data = json.loads(desc.read_text())
    except FileNotFoundError:
        raise CacheError(f"{desc}: missing; write soft targets with `bratseg soft-targets`") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"{desc}: not a soft-targets description ({exc})") from None
    if not isinstance(data, dict) or not {"cache", "rows", "cases"} <= set(data):
        raise CacheError(f"{desc}: not a soft-targets description (it needs cache, rows and cases)")
    return data


def check_soft_targets(path: str | Path, cache_dir: str | Path, cases: list[str]) -> None:
    """Refuse, naming the file, soft targets made for another cache (or an older build of this
    one), of the wrong shape, or without rows for every case of ``cases``."""
    path = Path(path)
    data = read_description(path)
    if data["cache"] != cache_digest(cache_dir):
        raise CacheError(f"{path}: made for another cache than {cache_dir} (or before it was rebuilt)")
    missing = sorted(set(cases) - set(data["cases"]))
    if missing:
        raise CacheError(f"{path}: no teacher probabilities for {len(missing)} training case(s), e.g. {missing[0]}")
    soft = open_array(path)
    labels = open_array(Path(cache_dir) / "labels.npy")
    expected = (labels.shape[0], REGION_CHANNELS, *labels.shape[1:])
    if soft.shape != expected or soft.dtype != np.float16:
        raise CacheError(f"{path}: holds {soft.dtype} {soft.shape}; this cache needs float16 {expected}")
