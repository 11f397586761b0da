"""Export a run, load it back with ``bratseg.from_pretrained``: same predictions, no pickles.

A tiny run (synthetic cache, 64 x 64 slices, resnet18, a few batches) is trained once per
module; every test exports it into its own folder.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from model.test_hub import serving_fake_hub
from safetensors.torch import load_file

import bratseg
from bratseg.errors import ModelLoadError
from bratseg.inference.predictor import Segmenter
from bratseg.model.unet import build_unet
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.reporting.report import model_info
from bratseg.training.config import TrainConfig
from bratseg.training.export import MODEL_FILES, export_run
from bratseg.training.trainer import train

# Share of voxels on which a float16 export must agree with the float32 weights. Rounding the
# weights to float16 (11-bit mantissa) moves logits by ~1e-3 relative; only voxels whose
# logit sits that close to the 0 threshold can flip, a thin shell on the tumour borders.
FLOAT16_AGREEMENT = 0.999


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tiny_cache: Path, tmp_path_factory) -> Path:
    """Two short epochs: enough for a model whose logits are not all near zero."""
    config = TrainConfig(
        epochs=2, batch_size=8, max_train_batches=4, num_workers=0, augment=False, modality_dropout=0.0, threads=1
    )
    return train(tiny_cache, tmp_path_factory.mktemp("export_run") / "run", config)


@pytest.fixture(scope="module")
def case(synthetic_root: Path) -> Path:
    """A validation case of the tiny run (never trained on)."""
    return synthetic_root / "SYNTHETIC_002"


def direct_segmenter(run_dir: Path) -> Segmenter:
    """A Segmenter built from the run's best weights without any export."""
    config = json.loads((run_dir / "train_config.json").read_text())
    prep = PreprocessingConfig.from_json(run_dir / "preprocessing.json")
    model = build_unet(encoder_name=config["encoder"], in_channels=len(prep.modalities), classes=3)
    model.load_state_dict(load_file(str(run_dir / "best.safetensors")))
    return Segmenter(model, prep, precision="fp32")


def test_float32_export_is_exact(run_dir: Path, case: Path, tmp_path: Path):
    out = export_run(run_dir, tmp_path / "model", dtype="float32")
    # Only safetensors weights and JSON/Markdown: nothing in the folder is a pickle.
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    best, exported = load_file(str(run_dir / "best.safetensors")), load_file(str(out / "model.safetensors"))
    assert best.keys() == exported.keys()
    assert all(torch.equal(best[k], exported[k]) for k in best)
    assert json.loads((out / "bratseg.json").read_text())["weights_dtype"] == "float32"

    expected = direct_segmenter(run_dir).predict(case)
    loaded = bratseg.from_pretrained(out, precision="fp32")
    got = loaded.predict(case)
    # Several labels, so there are decision boundaries to disagree on.
    assert len(np.unique(expected)) >= 3, "the tiny model predicts one label: the comparison would be vacuous"
    np.testing.assert_array_equal(got, expected)


def test_float16_export_agrees(run_dir: Path, case: Path, tmp_path: Path):
    out = export_run(run_dir, tmp_path / "model")  # the default: float16 weights
    stored = load_file(str(out / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert json.loads((out / "bratseg.json").read_text())["weights_dtype"] == "float16"
    assert (out / "model.safetensors").stat().st_size < 0.6 * (run_dir / "best.safetensors").stat().st_size

    expected = direct_segmenter(run_dir).predict(case)
    got = bratseg.from_pretrained(out, precision="fp32").predict(case)
    agreement = float((got == expected).mean())
    assert agreement >= FLOAT16_AGREEMENT, f"float16 export agrees on {agreement:.5%} of voxels"


def test_the_run_exports_itself_at_the_end(run_dir: Path):
    assert {p.name for p in (run_dir / "model").iterdir()} == MODEL_FILES
    meta = json.loads((run_dir / "model" / "bratseg.json").read_text())
    assert meta["epoch"] in (1, 2) and meta["train_config"]["epochs"] == 2


class _Boom:
    """Unpickling this creates a marker folder: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def test_loading_never_unpickles(run_dir: Path, case: Path, tmp_path: Path, monkeypatch):
    out = export_run(run_dir, tmp_path / "model", dtype="float32")
    marker = tmp_path / "unpickled"
    # A stray PyTorch pickle beside the safetensors weights must be ignored, never loaded.
    (out / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained unpickled something")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    segmenter = bratseg.from_pretrained(out, precision="fp32")
    monkeypatch.undo()
    assert not marker.exists()
    np.testing.assert_array_equal(segmenter.predict(case), direct_segmenter(run_dir).predict(case))


def test_missing_weights_are_refused_even_beside_a_pickle(run_dir: Path, tmp_path: Path):
    out = export_run(run_dir, tmp_path / "model", dtype="float32")
    weights = load_file(str(out / "model.safetensors"))
    (out / "model.safetensors").unlink()
    torch.save(weights, out / "pytorch_model.bin")  # what a fallback to pickles would load
    with pytest.raises(ModelLoadError, match=r"missing model\.safetensors"):
        bratseg.from_pretrained(out)


def test_wrong_number_of_modalities_is_refused(run_dir: Path, tmp_path: Path):
    out = export_run(run_dir, tmp_path / "model", dtype="float32")
    prep = json.loads((out / "preprocessing.json").read_text())
    prep["modalities"] = ["flair", "t1ce"]
    (out / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(ModelLoadError, match=r"4 input channels but preprocessing\.json gives 2 \(2 modalities\)"):
        bratseg.from_pretrained(out)


def test_export_replaces_an_earlier_export_only(run_dir: Path, tmp_path: Path):
    out = export_run(run_dir, tmp_path / "model")
    (out / "README.md").write_text("stale")
    export_run(run_dir, out)  # an earlier export is replaced
    assert (out / "README.md").read_text() != "stale"
    assert not list(tmp_path.glob(".model*")), "temporary or backup folders left behind"

    # Anything else is refused: the run itself, the folder of runs, a folder with other files.
    before = sorted(p.name for p in run_dir.iterdir())
    for target in (run_dir, run_dir.parent):
        with pytest.raises(FileExistsError, match="not a bratseg model folder"):
            export_run(run_dir, target)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_run(run_dir, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_export(run_dir: Path, tmp_path: Path, capsys):
    from bratseg.cli import main

    assert main(["export", str(run_dir), "--out", str(tmp_path / "m")]) == 0
    assert "model written to" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--out", str(run_dir)]) == 2
    assert "not a bratseg model folder" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "m")


def test_last_checkpoint_exports_the_final_epoch(run_dir: Path, tmp_path: Path):
    # A cross-validation fold validates on its held-out cases, so its CV predictions must not
    # come from the epoch chosen on them: --checkpoint last takes the final epoch's weights.
    out = export_run(run_dir, tmp_path / "model", dtype="float32", checkpoint="last")
    final = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model"]
    exported = load_file(str(out / "model.safetensors"))
    assert final.keys() == exported.keys()
    assert all(torch.equal(final[k].float(), exported[k].float()) for k in final)
    meta = json.loads((out / "bratseg.json").read_text())
    assert meta["checkpoint"] == "last" and meta["epoch"] == 2
    # A report names the epoch and the checkpoint, not a "best epoch" the weights are not.
    assert model_info(out).version == "model (epoch 2, last)"
    with pytest.raises(ValueError, match="checkpoint"):
        export_run(run_dir, tmp_path / "other", checkpoint="middle")


def test_confidence_threshold_travels_with_the_model(run_dir: Path, case: Path, tmp_path: Path, capsys):
    from bratseg.cli import main
    from bratseg.inference.confidence import LOW_CONFIDENCE_THRESHOLD, assess, confidence_score

    out = tmp_path / "model"
    assert main(["export", str(run_dir), "--out", str(out), "--confidence-threshold", "0.55"]) == 0
    assert json.loads((out / "bratseg.json").read_text())["confidence_threshold"] == 0.55
    assert "0.55" in (out / "README.md").read_text()
    segmenter = bratseg.from_pretrained(out, precision="fp32")
    assert segmenter.confidence_threshold == 0.55
    prediction = segmenter.segment(case)
    confidence = assess(prediction)
    assert confidence.threshold == 0.55 and confidence.low == (confidence_score(prediction) < 0.55)
    # A model folder without a threshold keeps the default one.
    plain = export_run(run_dir, tmp_path / "plain")
    assert assess(bratseg.from_pretrained(plain).segment(case)).threshold == LOW_CONFIDENCE_THRESHOLD

    assert main(["export", str(run_dir), "--out", str(tmp_path / "bad"), "--confidence-threshold", "1.5"]) == 2
    assert "confidence_threshold" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    meta = json.loads((out / "bratseg.json").read_text())
    (out / "bratseg.json").write_text(json.dumps({**meta, "confidence_threshold": "high"}))
    with pytest.raises(ModelLoadError, match="bratseg.json's confidence_threshold"):
        bratseg.from_pretrained(out)


def test_the_card_carries_what_the_run_measured(run_dir: Path, tmp_path: Path):
    from huggingface_hub import ModelCard

    from bratseg.model.card import model_index_dice

    out = export_run(run_dir, tmp_path / "model", repo_id="bratseg-test/tiny")
    card = ModelCard.load(out / "README.md")  # parsed back as the Hub parses it
    assert card.data.library_name == "segmentation-models-pytorch" and card.data.license == "mit"
    assert {"bratseg", "medical-imaging", "research-only"} <= set(card.data.tags) and card.data.datasets
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda h: h["val_mean_dice"])
    assert model_index_dice(card) == {k: round(best[f"dice_{k}"], 4) for k in ("WT", "TC", "ET")}
    result = card.data.eval_results[0]
    assert result.dataset_split == "validation" and f"epoch {best['epoch']}" in result.metric_name
    assert card.data.model_name == "bratseg-test/tiny" and 'from_pretrained("bratseg-test/tiny")' in card.text


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch):
    """A local stand-in for the Hugging Face Hub that records what is sent (tests/model/test_hub.py)."""
    with serving_fake_hub(tmp_path / "hf", monkeypatch) as hub:
        yield hub


def test_cli_export_pushes_to_the_hub(run_dir: Path, tmp_path: Path, capsys, fake_hub, monkeypatch):
    """``--push-to-hub`` uploads to the local FakeHub, not the real Hub: it records what was sent."""
    from model.test_hub import TOKEN

    from bratseg.cli import main

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # as a logged-in user has it

    out = tmp_path / "m"
    assert main(["export", str(run_dir), "--out", str(out), "--private", "--revision", "x"]) == 2
    assert "go with --push-to-hub" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(run_dir), "--out", str(out), "--push-to-hub", "not/an/id"]) == 2
    assert "not a Hub repo id" in capsys.readouterr().err and not out.exists()

    argv = ["export", str(run_dir), "--out", str(out), "--push-to-hub", "bratseg-test/tiny", "--private"]
    assert main([*argv, "--revision", "exp1", "--commit-message", "tiny run, 2 epochs"]) == 0
    printed = capsys.readouterr().out
    assert "model published to bratseg-test/tiny: " in printed
    repo = fake_hub.repos["bratseg-test/tiny"]
    assert repo.private and set(repo.commits[repo.refs["exp1"]]) == MODEL_FILES
    assert {name: (out / name).read_bytes() for name in MODEL_FILES} == repo.commits[repo.refs["exp1"]]
    commit = next(r for r in fake_hub.requests if r.path.endswith("/commit/exp1"))
    assert json.loads(commit.body.decode().splitlines()[0])["value"]["summary"] == "tiny run, 2 epochs"
    assert commit.headers["authorization"] == f"Bearer {TOKEN}"


def test_export_writes_the_post_processing_and_tta(run_dir: Path, tmp_path: Path):
    """bratseg.json holds the post-processing and TTA: cross-validation's choice by default, or
    what export is told (API and CLI); the segmenter loaded from the folder applies them."""
    from bratseg.cli import main
    from bratseg.model.metadata import InferenceSettings

    default = json.loads((export_run(run_dir, tmp_path / "default") / "bratseg.json").read_text())
    assert default["postprocessing"] == {"min_component_fraction": 0.1} and default["tta"] == "none"
    chosen = export_run(run_dir, tmp_path / "chosen", settings=InferenceSettings(0.0, "flips"))
    meta = json.loads((chosen / "bratseg.json").read_text())
    assert meta["postprocessing"] == {"min_component_fraction": 0.0} and meta["tta"] == "flips"
    segmenter = bratseg.from_pretrained(chosen)
    assert segmenter.min_component_fraction == 0.0 and segmenter.flip_tta
    out = tmp_path / "cli"
    assert main(["export", str(run_dir), "--out", str(out), "--min-component-fraction", "0.2", "--tta", "flips"]) == 0
    meta = json.loads((out / "bratseg.json").read_text())
    assert meta["postprocessing"] == {"min_component_fraction": 0.2} and meta["tta"] == "flips"
    assert main(["export", str(run_dir), "--out", str(tmp_path / "bad"), "--min-component-fraction", "2"]) == 2
    assert not (tmp_path / "bad").exists()
