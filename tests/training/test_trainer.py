"""Training on a tiny synthetic cache: the loss falls, and a killed run resumes to the very
weights of an uninterrupted one.

Runs use 64 x 64 slices, resnet18, a few batches per epoch and one torch thread (on the busy
2-core test machine two threads contend with other processes and run several times slower).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bratseg.cli import main
from bratseg.errors import BratsegError, ModelLoadError
from bratseg.model.unet import build_unet
from bratseg.preprocessing.cache import build_cache
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.training import trainer
from bratseg.training.config import TrainConfig
from bratseg.training.export import export_run
from bratseg.training.trainer import epoch_seed, train

# The options of every run below, as TrainConfig fields and as `bratseg train` flags.
SMALL = dict(epochs=2, batch_size=4, max_train_batches=2, threads=1)
SMALL_FLAGS = ["--epochs", "2", "--batch-size", "4", "--max-train-batches", "2", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The model weights a run leaves: best.safetensors and the model of last.pt."""
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    return {"best": load_file(str(run_dir / "best.safetensors")), "last": last["model"]}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    for kind in ("best", "last"):
        assert wa[kind].keys() == wb[kind].keys()
        differ = [k for k in wa[kind] if not torch.equal(wa[kind][k], wb[kind][k])]
        assert not differ, f"{kind}: {len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def reference_run(tiny_cache: Path, tmp_path_factory) -> Path:
    """An uninterrupted run of SMALL with one data-loading worker (as the shipped config)."""
    return train(tiny_cache, tmp_path_factory.mktemp("reference") / "run", TrainConfig(**SMALL, num_workers=1))


def test_one_epoch_trains_and_the_loss_falls(tiny_cache: Path, tmp_path: Path):
    # No augmentation or modality dropout: the falling loss then shows learning, not luck.
    config = TrainConfig(
        epochs=2, batch_size=8, max_train_batches=4, num_workers=0, augment=False, modality_dropout=0.0, threads=1
    )
    t0 = time.perf_counter()
    run = train(tiny_cache, tmp_path / "run", config)
    first, second = metrics(run)
    assert first["seconds"] < 60, "one tiny epoch should take seconds"
    assert first["train_slices"] == second["train_slices"] == 4 * 8  # max_train_batches caps the epoch
    # Epoch 1 mixes the first random-init batches with the warm-up; epoch 2 must be clearly lower.
    assert second["train_loss"] < 0.95 * first["train_loss"], (first["train_loss"], second["train_loss"])
    assert 0 <= first["val_mean_dice"] <= 1 and first["val_loss"] > 0
    for name in ("last.pt", "best.safetensors", "learning_curve.png", "train_config.json", "preprocessing.json"):
        assert (run / name).is_file(), name
    assert (run / "model" / "model.safetensors").is_file()
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "scheduler", "state"} and ckpt["state"]["epoch"] == 2
    assert time.perf_counter() - t0 < 120


def test_kill_and_resume_reproduces_the_uninterrupted_run(tiny_cache: Path, reference_run: Path, tmp_path: Path):
    """SIGKILL a real `bratseg train` once epoch 1 is checkpointed, resume it, and get the
    reference run's weights bit for bit (per-epoch seeding; same threads and workers)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bratseg.cli", "train", "--cache", str(tiny_cache), "--out", str(run)]
    cmd += [*SMALL_FLAGS, "--num-workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8", errors="replace"
    )
    try:
        # metrics.jsonl is written right after last.pt: once it lists epoch 1, last.pt holds it.
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "metrics.jsonl").exists() and metrics(run):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:  # the deadline passed, or the test itself failed
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way (rc {proc.returncode}): {err[-2000:]}"
    killed_at = torch.load(run / "last.pt", weights_only=True)["state"]["epoch"]
    assert killed_at == 1, killed_at
    assert not (run / "model").exists()

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {run / 'last.pt'} after epoch {killed_at}" in resumed.stdout
    assert [m["epoch"] for m in metrics(run)] == [1, 2]
    assert_same_weights(run, reference_run)
    ref = {m["epoch"]: m for m in metrics(reference_run)}
    for m in metrics(run):
        assert m["train_loss"] == ref[m["epoch"]]["train_loss"] and m["lr"] == ref[m["epoch"]]["lr"]


def test_a_crash_after_the_checkpoint_resumes_exactly(tiny_cache: Path, tmp_path: Path, monkeypatch):
    """In-process, without workers: a crash between last.pt and metrics.jsonl (the worst spot:
    the epoch is checkpointed but not in the metrics) loses nothing on resume."""
    config = TrainConfig(**SMALL, num_workers=0)
    reference = train(tiny_cache, tmp_path / "reference", config)

    def crash(path, record):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer, "append_metrics", crash)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_cache, tmp_path / "run", config)
    run = tmp_path / "run"
    assert not (run / "metrics.jsonl").exists()
    train(tiny_cache, run, config, resume=True)
    assert [m["epoch"] for m in metrics(run)] == [1, 2]  # epoch 1 came back from last.pt
    assert_same_weights(run, reference)


def test_an_interrupted_checkpoint_write_keeps_the_previous_one(reference_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((reference_run / "last.pt").read_bytes())
    ckpt = torch.load(run / "last.pt", weights_only=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def half_write(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        trainer.write_checkpoint(run / "last.pt", model, optimizer, scheduler, {"epoch": 99})
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # no temporary left
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == ckpt["state"]["epoch"]


def test_patch_training_with_a_weight_average_resumes_exactly(tiny_cache: Path, tmp_path: Path):
    """Patches and an EMA of the weights: validation and best.safetensors use the average,
    last.pt keeps both, and a run stopped after epoch 1 and resumed ends bit-identical."""
    options = dict(SMALL, num_workers=0, patch_size=[32, 32], ema_decay=0.9)
    reference = train(tiny_cache, tmp_path / "reference", TrainConfig(**options))
    last = torch.load(reference / "last.pt", map_location="cpu", weights_only=True)
    assert int(last["ema"]["n_averaged"]) == 2 * SMALL["max_train_batches"]
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k != "n_averaged"}
    raw_differs = any(not torch.equal(averaged[k], v) for k, v in last["model"].items() if v.is_floating_point())
    assert raw_differs, "the average must not be the raw weights"
    best = load_file(str(reference / "best.safetensors"))
    best_epoch = max(metrics(reference), key=lambda m: m["val_mean_dice"])["epoch"]
    if best_epoch == 2:
        assert all(torch.equal(best[k], averaged[k]) for k in best)
    run = tmp_path / "run"
    train(tiny_cache, run, TrainConfig(**{**options, "epochs": 1}))
    train(tiny_cache, run, TrainConfig(**options), resume=True)
    assert_same_weights(run, reference)
    resumed = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["ema"]
    assert all(torch.equal(resumed[k], last["ema"][k]) for k in last["ema"])
    # --checkpoint ema exports the final average (not the raw weights); a run without one is refused.
    exported = load_file(
        str(export_run(reference, tmp_path / "ema_model", dtype="float32", checkpoint="ema") / "model.safetensors")
    )
    assert exported.keys() == averaged.keys()
    assert all(torch.equal(exported[k], averaged[k].float()) for k in exported)
    plain = train(tiny_cache, tmp_path / "plain", TrainConfig(**{**options, "ema_decay": 0.0, "epochs": 1}))
    with pytest.raises(ModelLoadError, match="no weight average"):
        export_run(plain, tmp_path / "plain_model", checkpoint="ema")


def test_resume_without_a_checkpoint_starts_fresh(tiny_cache: Path, tmp_path: Path, capsys):
    """What a SIGKILL during the first checkpoint write leaves: a temporary and no last.pt.
    The temporary is never taken for a checkpoint, and is cleared."""
    run = tmp_path / "run"
    run.mkdir()
    leftover = run / ".last.pt.k1ll3d00.tmp"
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    (run / ".metrics.jsonl.k1ll3d00.tmp").write_text('{"epoch": 7}\n')
    keep = run / "notes.tmp"  # not one of the trainer's temporaries
    keep.write_text("mine")
    config = TrainConfig(epochs=1, batch_size=4, max_train_batches=1, num_workers=0, threads=1)
    train(tiny_cache, run, config, resume=True)
    assert "no checkpoint at" in capsys.readouterr().out
    assert [m["epoch"] for m in metrics(run)] == [1]
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 1
    assert not list(run.glob(".*.tmp")) and keep.read_text() == "mine"


def test_training_into_an_existing_run_needs_resume(tiny_cache: Path, reference_run: Path, capsys):
    stamp = (reference_run / "last.pt").stat().st_mtime_ns
    args = ["train", "--cache", str(tiny_cache), "--out", str(reference_run), *SMALL_FLAGS, "--num-workers", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    # Resuming with options that change the course of the run is refused too.
    assert main([*args, "--resume", "--lr", "0.01"]) == 2
    assert "cannot resume with other training options (lr 0.002 -> 0.01)" in capsys.readouterr().err
    assert (reference_run / "last.pt").stat().st_mtime_ns == stamp


def test_an_unreadable_checkpoint_is_reported(tiny_cache: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"not a checkpoint")
    args = ["train", "--cache", str(tiny_cache), "--out", str(run), *SMALL_FLAGS, "--num-workers", "0", "--resume"]
    assert main(args) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err


def test_a_fold_trains_on_the_other_folds_cases(tiny_cache: Path, tmp_path: Path, capsys):
    split = json.loads((tiny_cache / "split.json").read_text())
    cases = sorted(split["train"] + split["val"])
    folds = [trainer.load_split(tiny_cache, TrainConfig(fold=f, num_folds=2)) for f in range(2)]
    assert sorted(folds[0]["val"] + folds[1]["val"]) == cases and folds[0]["val"] == folds[1]["train"]
    assert trainer.load_split(tiny_cache, TrainConfig()) == split  # no fold: the cache's split
    out = tmp_path / "run"
    assert (
        main(
            ["train", "--cache", str(tiny_cache), "--out", str(out), *SMALL_FLAGS, "--epochs", "1"]
            + ["--fold", "1", "--num-folds", "2"]
        )
        == 0
    )
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["fold"], saved["num_folds"]) == (1, 2)
    assert (
        main(["train", "--cache", str(tiny_cache), "--out", str(tmp_path / "bad"), "--fold", "2", "--num-folds", "2"])
        == 2
    )
    assert "split.json: fold 2 is not one of 0..1" in capsys.readouterr().err


def test_without_validation_cases_the_first_epoch_is_best(synthetic_root: Path, tmp_path: Path):
    """The score is then -train_loss, below -1 at first: best.safetensors must still be written."""
    cache = build_cache(
        synthetic_root, tmp_path / "cache", PreprocessingConfig(crop_size=(64, 64)), workers=1, progress=False
    )
    split = json.loads((cache / "split.json").read_text())
    (cache / "split.json").write_text(json.dumps({**split, "train": split["train"] + split["val"], "val": []}))
    config = TrainConfig(epochs=1, batch_size=4, max_train_batches=1, num_workers=0, threads=1)
    run = train(cache, tmp_path / "run", config)
    (record,) = metrics(run)
    assert record["train_loss"] > 1 and record["val_mean_dice"] < -1
    assert (run / "best.safetensors").is_file() and (run / "model").is_dir()


def test_all_cases_trains_on_every_case_of_the_cache(tiny_cache: Path, tmp_path: Path, capsys):
    from bratseg.training.trainer import load_split

    split = json.loads((tiny_cache / "split.json").read_text())
    everything = sorted(split["train"] + split["val"])
    assert split["val"] and load_split(tiny_cache, TrainConfig(all_cases=True))["train"] == everything
    assert main(["train", "--cache", str(tiny_cache), "--out", str(tmp_path / "run"), *SMALL_FLAGS, "--all-cases"]) == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["all_cases"] is True and [m["dice_WT"] for m in metrics(tmp_path / "run")] == [None, None]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert main(["train", "--cache", str(tiny_cache), "--out", str(tmp_path / "x"), "--all-cases", "--fold", "0"]) == 2
    assert "--all-cases trains on every case: it takes no --fold" in capsys.readouterr().err


def test_epoch_seeds_differ_per_epoch_and_rank():
    assert epoch_seed(0, 1) == 1  # rank 0 keeps the single-process formula of earlier runs
    seeds = {epoch_seed(s, e, r) for s in range(3) for e in range(1, 40) for r in range(8)}
    assert len(seeds) == 3 * 39 * 8
    assert len({epoch_seed(0, 5, r) % 2**32 for r in range(8)}) == 8  # distinct after MONAI's modulo


def test_init_weights_start_the_run_from_an_exported_model(reference_run: Path, tiny_cache: Path, tmp_path: Path):
    """With a learning rate too small to move them, a fine-tuned run's parameters stay those of
    the model it started from; a run from scratch starts elsewhere."""
    exported = load_file(str(reference_run / "model" / "model.safetensors"))
    tiny_steps = dict(SMALL, epochs=1, lr=1e-12, warmup_epochs=0, weight_decay=0.0)
    tuned = train(tiny_cache, tmp_path / "tuned", TrainConfig(**tiny_steps, init_weights=str(reference_run / "model")))
    scratch = train(tiny_cache, tmp_path / "scratch", TrainConfig(**tiny_steps))
    params = [k for k in exported if k.endswith(".weight") and exported[k].ndim == 4]  # convolutions
    for run, should_match in ((tuned, True), (scratch, False)):
        last = weights(run)["last"]
        close = all(torch.allclose(last[k], exported[k].float(), atol=1e-6) for k in params)
        assert close is should_match, run.name
    assert json.loads((tuned / "train_config.json").read_text())["init_weights"] == str(reference_run / "model")


def test_init_weights_refuse_another_architecture_or_preprocessing(reference_run: Path, tmp_path: Path):
    model_dir = reference_run / "model"
    prep = PreprocessingConfig.from_json(model_dir / "preprocessing.json")
    with pytest.raises(BratsegError, match=r"model\.safetensors: another architecture .*layer"):
        trainer.load_init_weights(build_unet("resnet34", in_channels=4, classes=3), model_dir, prep)
    with pytest.raises(BratsegError, match=r"preprocessing\.json: preprocessing differs .*crop_size"):
        trainer.load_init_weights(build_unet("resnet18", in_channels=4, classes=3), model_dir, PreprocessingConfig())
    with pytest.raises(BratsegError, match=r"model\.safetensors: missing"):
        trainer.load_init_weights(build_unet("resnet18", in_channels=4, classes=3), tmp_path, prep)


def test_bratseg_train_takes_init_weights_from_the_command_line(reference_run: Path, tiny_cache: Path, tmp_path: Path):
    out = tmp_path / "run"
    main(
        ["train", "--cache", str(tiny_cache), "--out", str(out), *SMALL_FLAGS, "--epochs", "1"]
        + ["--init-weights", str(reference_run / "model")]
    )
    assert json.loads((out / "train_config.json").read_text())["init_weights"] == str(reference_run / "model")


def test_only_region_models_are_trained(tmp_path: Path):
    """The softmax output is gone: a config asking for it is refused, as is exporting a run
    that trained one."""
    with pytest.raises(ValueError, match="'regions' models only"):
        TrainConfig(target="classes")
    config = tmp_path / "classes.json"
    config.write_text(json.dumps({"target": "classes"}))
    with pytest.raises(ValueError, match="'regions' models only"):
        TrainConfig.from_json(config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"")
    (run / "train_config.json").write_text(json.dumps({**TrainConfig().to_dict(), "target": "classes"}))
    PreprocessingConfig().to_json(run / "preprocessing.json")
    with pytest.raises(ModelLoadError, match="'classes' run"):
        export_run(run, tmp_path / "model")
