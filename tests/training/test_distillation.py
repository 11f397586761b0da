"""Knowledge distillation in training: nested folds for the teachers, soft targets mixed into
the training target (moved with the augmentation), and a student trained on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bratseg.cli import main
from bratseg.data.labels import labels_to_regions
from bratseg.errors import CacheError
from bratseg.preprocessing.cache import read_manifest
from bratseg.training.config import TrainConfig
from bratseg.training.dataset import SliceDataset
from bratseg.training.trainer import load_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_inner_folds_split_the_outer_folds_training_cases_only(tiny_cache: Path):
    outer = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))
    inner = [
        load_split(tiny_cache, TrainConfig(fold=0, num_folds=2, inner_fold=j, inner_num_folds=2)) for j in range(2)
    ]
    assert sorted(inner[0]["train"] + inner[0]["val"]) == sorted(outer["train"])
    assert inner[0]["val"] == inner[1]["train"] and inner[0]["train"] == inner[1]["val"]
    assert not set(outer["val"]) & set(inner[0]["train"] + inner[1]["train"])  # never the outer fold's cases
    with pytest.raises(ValueError, match="give fold too"):
        TrainConfig(inner_fold=0)


@pytest.mark.parametrize("text", ['{"train": "abc", "val": []}', '["a", "b"]', "{"])
def test_a_malformed_split_is_a_clear_error_for_train_and_soft_targets(tiny_cache, tmp_path, capsys, text):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    (cache / "split.json").write_text(text)
    with pytest.raises(CacheError, match=r"split\.json: (not a cache split|cannot be read as a cache split)"):
        load_split(cache, TrainConfig(fold=0, num_folds=2))
    argv = ["soft-targets", "--cache", str(cache), "--models", "unused", "--out", str(tmp_path / "s.npy")]
    assert main([*argv, "--fold", "0"]) == 2
    assert "split.json" in capsys.readouterr().err


def test_cli_refuses_an_inner_fold_without_its_fold(tiny_cache: Path, tmp_path: Path, capsys):
    assert main(["train", "--cache", str(tiny_cache), "--out", str(tmp_path / "run"), "--inner-fold", "0"]) == 2
    assert "training options: inner_fold splits the training cases of a fold" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_names_the_config_of_a_wrongly_typed_option(tiny_cache: Path, tmp_path: Path, capsys):
    config = tmp_path / "student.json"
    config.write_text(json.dumps({"soft_target_weight": "0.5"}))
    argv = ["train", "--cache", str(tiny_cache), "--out", str(tmp_path / "run"), "--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"training options: {config}: " in err and "Traceback" not in err
    assert main([*argv[:-1], str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_dataset_mixes_the_expert_regions_with_the_teachers(tiny_cache, tiny_soft_targets):
    cases = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))["train"]
    plain = SliceDataset(tiny_cache, cases)
    half = SliceDataset(tiny_cache, cases, soft_targets=tiny_soft_targets, soft_target_weight=0.5)
    only = SliceDataset(tiny_cache, cases, soft_targets=tiny_soft_targets, soft_target_weight=1.0)
    soft = np.load(tiny_soft_targets, mmap_mode="r")
    for i in (0, len(plain) // 2):
        hard = plain[i][1]
        teacher = torch.from_numpy(np.asarray(soft[plain.indices[i]], dtype=np.float32))
        assert torch.allclose(only[i][1], teacher)
        assert torch.allclose(half[i][1], 0.5 * hard + 0.5 * teacher)


def test_augmentation_and_patches_move_the_soft_targets_with_the_label(tiny_cache, tmp_path):
    """Soft targets equal to the expert regions, mixed half and half with them, must come out
    of every random flip, rotation, scaling and crop still agreeing with them: a pixel where
    one says tumour and the other not (a mixed value near 0.5) means the two were moved
    differently. Bilinear resampling of the soft edges leaves a few."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    labels = np.load(cache / "labels.npy")
    np.save(cache / "soft.npy", np.stack([labels_to_regions(s) for s in labels]).astype(np.float16))
    cases = sorted({r["case"] for r in read_manifest(cache)})
    description = {"cache": _digest(cache), "rows": len(labels), "cases": cases, "teachers": []}
    (cache / "soft.json").write_text(json.dumps(description))
    mixed = SliceDataset(
        cache, cases, augment=True, patch_size=(32, 32), foreground_fraction=1.0, soft_targets=cache / "soft.npy"
    )
    mixed.reseed(7)
    tumour = [i for i, r in enumerate(read_manifest(cache)) if r["WT"] > 50][:8]
    disagree = inside = 0
    for i in tumour * 3:
        target = mixed[i][1]
        assert target.shape == (3, 32, 32)
        disagree += int(((target - 0.5).abs() < 0.1).sum())
        inside += int((target > 0.25).sum())
    assert inside and disagree / inside < 0.05


def _digest(cache: Path) -> str:
    from bratseg.preprocessing.soft_targets import cache_digest

    return cache_digest(cache)


def test_a_student_trains_on_a_folds_soft_targets(tiny_cache, tiny_soft_targets, tmp_path, capsys):
    config = tmp_path / "student.json"
    student_config = dict(epochs=1, batch_size=8, max_train_batches=2, num_workers=0, threads=1)
    config.write_text(json.dumps({**student_config, "soft_targets": str(tiny_soft_targets), "soft_target_weight": 0.5}))
    run = tmp_path / "student"
    student = ["train", "--cache", str(tiny_cache), "--out", str(run), "--config", str(config)]
    assert main([*student, "--fold", "0", "--num-folds", "2"]) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["soft_targets"] == str(tiny_soft_targets) and saved["soft_target_weight"] == 0.5
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history and all(np.isfinite(h["train_loss"]) for h in history)
    # The other fold's student trains on cases the file has no teacher probabilities for.
    assert main([*student[:4], str(tmp_path / "x"), *student[5:], "--fold", "1", "--num-folds", "2"]) == 2
    assert "no teacher probabilities" in capsys.readouterr().err
