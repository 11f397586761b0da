"""Teacher probabilities for a slice cache (:mod:`bratseg.inference.teacher`, ``bratseg
soft-targets``): the teachers' mean, on the chosen cases only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bratseg.cli import main
from bratseg.errors import CacheError, ModelLoadError
from bratseg.inference.predictor import SHIPPED_MODEL, Segmenter
from bratseg.inference.teacher import write_soft_targets
from bratseg.preprocessing.cache import read_manifest
from bratseg.preprocessing.soft_targets import check_soft_targets, description_path
from bratseg.training.config import TrainConfig
from bratseg.training.trainer import load_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_soft_targets_are_the_teachers_mean_on_the_chosen_cases_only(tiny_cache, tiny_teachers, tiny_soft_targets):
    soft = np.load(tiny_soft_targets)
    desc = json.loads(description_path(tiny_soft_targets).read_text())
    train_cases = load_split(tiny_cache, TrainConfig(fold=0, num_folds=2))["train"]
    assert desc["cases"] == sorted(train_cases) and len(desc["teachers"]) == 2
    rows = read_manifest(tiny_cache)
    chosen = [r["index"] for r in rows if r["case"] in train_cases]
    others = [r["index"] for r in rows if r["case"] not in train_cases]
    assert others and np.isnan(soft[others]).all() and not np.isnan(soft[chosen]).any()
    images = np.load(tiny_cache / "images.npy")
    x = torch.from_numpy(images[chosen[:4]].astype(np.float32))
    members = [Segmenter.from_pretrained(t, brain_box_margin=None) for t in tiny_teachers]
    expected = (members[0].slice_probabilities(x) + members[1].slice_probabilities(x)) / 2
    assert not torch.allclose(members[0].slice_probabilities(x), expected, atol=1e-3)  # two different teachers
    np.testing.assert_allclose(soft[chosen[:4]].astype(np.float32), expected.numpy(), atol=2e-3)


def test_a_teacher_that_prepares_its_input_otherwise_is_refused(tiny_cache, tmp_path):
    with pytest.raises(ModelLoadError, match="prepares its input differently"):
        write_soft_targets(tiny_cache, [SHIPPED_MODEL], tmp_path / "soft.npy", progress=False)
    assert not (tmp_path / "soft.npy").exists()


def test_cli_writes_a_folds_soft_targets(tiny_cache, tiny_teachers, tiny_soft_targets, tmp_path, capsys):
    out = tmp_path / "soft.npy"
    argv = ["soft-targets", "--cache", str(tiny_cache), "--models", *map(str, tiny_teachers), "--out", str(out)]
    assert main([*argv, "--fold", "0", "--num-folds", "2", "--quiet"]) == 0
    assert "soft targets written" in capsys.readouterr().out
    assert (
        json.loads(description_path(out).read_text())["cases"]
        == json.loads(description_path(tiny_soft_targets).read_text())["cases"]
    )
    np.testing.assert_array_equal(np.load(out), np.load(tiny_soft_targets))
    assert main([*argv, "--fold", "2", "--num-folds", "2"]) == 2
    assert "split.json: fold 2 is not one of 0..1" in capsys.readouterr().err


def test_a_killed_rewrite_leaves_no_description_of_another_array(tiny_cache, tiny_teachers, tmp_path, monkeypatch):
    out = tmp_path / "soft.npy"
    write_soft_targets(tiny_cache, tiny_teachers, out, progress=False)
    assert description_path(out).is_file()

    def killed(self, x):
        raise KeyboardInterrupt

    monkeypatch.setattr(Segmenter, "slice_probabilities", killed)
    with pytest.raises(KeyboardInterrupt):
        write_soft_targets(tiny_cache, tiny_teachers, out, cases=["SYNTHETIC_000"], progress=False)
    # The old array may stay; its old description may not, or a run would trust it.
    assert not description_path(out).exists()
    with pytest.raises(CacheError, match=r"soft\.json: missing"):
        check_soft_targets(out, tiny_cache, ["SYNTHETIC_000"])


def test_a_folder_that_is_no_cache_is_a_clear_error(tiny_teachers, tmp_path, capsys):
    argv = ["soft-targets", "--cache", str(tmp_path / "typo"), "--models", str(tiny_teachers[0])]
    assert main([*argv, "--out", str(tmp_path / "soft.npy")]) == 2
    err = capsys.readouterr().err
    assert "typo" in err and "Traceback" not in err
