"""The soft-targets file and its checks (:mod:`bratseg.preprocessing.soft_targets`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bratseg.errors import CacheError
from bratseg.preprocessing.soft_targets import check_soft_targets, description_path
from bratseg.training.config import TrainConfig
from bratseg.training.dataset import SliceDataset
from bratseg.training.trainer import load_split


def test_soft_targets_of_another_cache_or_without_the_cases_are_refused(tiny_cache, tiny_soft_targets, tmp_path):
    outer = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))
    check_soft_targets(tiny_soft_targets, tiny_cache, outer["train"])  # its own cases: accepted
    with pytest.raises(CacheError, match="no teacher probabilities for 1 training case"):
        SliceDataset(tiny_cache, outer["train"] + outer["val"][:1], soft_targets=tiny_soft_targets)
    other = tmp_path / "other"
    shutil.copytree(tiny_cache, other)
    with open(other / "manifest.csv", "a") as fh:
        fh.write("\n")
    with pytest.raises(CacheError, match="made for another cache"):
        check_soft_targets(tiny_soft_targets, other, outer["train"])
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 64, 64), np.float16))
    shutil.copy(description_path(tiny_soft_targets), description_path(bad))
    with pytest.raises(CacheError, match=r"bad\.npy: holds float16 \(2, 3, 64, 64\)"):
        check_soft_targets(bad, tiny_cache, outer["train"])
    description_path(bad).unlink()
    with pytest.raises(CacheError, match=r"bad\.json: missing"):
        check_soft_targets(bad, tiny_cache, outer["train"])


def test_a_soft_targets_row_without_probabilities_is_refused_not_trained_on(tiny_cache, tiny_soft_targets, tmp_path):
    """A description that lists a case whose rows hold NaN (a damaged or hand-edited file)
    must not feed NaN into the loss."""
    outer = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))
    soft = tmp_path / "soft.npy"
    array = np.load(tiny_soft_targets)
    array[:] = np.nan
    np.save(soft, array)
    shutil.copy(description_path(tiny_soft_targets), description_path(soft))
    dataset = SliceDataset(tiny_cache, outer["train"], soft_targets=soft)
    with pytest.raises(CacheError, match=r"soft\.npy: row \d+ holds no teacher probabilities"):
        dataset[0]


def test_a_cache_rebuilt_with_other_preprocessing_is_another_cache(tiny_cache, tiny_soft_targets, tmp_path):
    outer = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(tiny_cache, rebuilt)
    prep = (rebuilt / "preprocessing.json").read_text()
    (rebuilt / "preprocessing.json").write_text(prep.replace("{", '{"_changed": 1, ', 1))
    with pytest.raises(CacheError, match="made for another cache"):
        check_soft_targets(tiny_soft_targets, rebuilt, outer["train"])
