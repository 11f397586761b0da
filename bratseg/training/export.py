"""Export a training run as a Hugging Face-style model folder.

``MODEL_DIR`` holds:
    model.safetensors, config.json   written by SMP's ``save_pretrained`` (hub mixin)
    preprocessing.json               modalities and order, normalisation, crop/resize, regions
    bratseg.json                     output kind, label scheme, metrics, confidence threshold,
                                     post-processing and TTA (:mod:`bratseg.model.metadata`)
    README.md                        the model card (:mod:`bratseg.model.card`): Hub metadata with
                                     the run's validation Dice as ``model-index``, then the description

``bratseg export RUN --out DIR --push-to-hub ID`` then publishes the folder
(:func:`bratseg.model.hub.push_model_folder`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from bratseg.errors import BratsegError, ModelLoadError
from bratseg.model.card import check_card, model_card_text
from bratseg.model.metadata import DEFAULT_SETTINGS, TARGET, InferenceSettings, is_valid_threshold
from bratseg.model.unet import build_unet, unet_kwargs
from bratseg.preprocessing.config import PreprocessingConfig
from bratseg.training.run_files import load_checkpoint

# Everything export_run writes; an existing folder holding anything else is not replaced.
MODEL_FILES = frozenset({"config.json", "model.safetensors", "preprocessing.json", "bratseg.json", "README.md"})
WEIGHT_DTYPES = ("float16", "bfloat16", "float32")
CHECKPOINTS = ("best", "last", "ema")


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    model_kwargs: dict | None = None,
    dtype: str = "float16",
    checkpoint: str = "best",
    confidence_threshold: float | None = None,
    repo_id: str = "",
    settings: InferenceSettings = DEFAULT_SETTINGS,
) -> Path:
    """Write the weights of ``run_dir`` as a model folder at ``out_dir`` (replaced
    atomically: a half-written folder never takes the place of a good one).

    ``checkpoint="best"`` takes the epoch that scored best on the run's validation cases;
    ``"last"`` the final epoch, as nnU-Net validates its folds: a cross-validation fold
    validates on its held-out cases, so choosing its epoch by them would flatter the CV.
    ``"ema"`` the final epoch's exponential moving average of the weights (runs trained with
    ``ema_decay``): the same rule as ``"last"``, for the averaged weights.
    Weights are stored as float16 by default (half the size; inference runs in bf16 or
    fp32 and loads them into fp32 parameters); ``dtype="float32"`` keeps them exact.
    ``confidence_threshold`` (calibrated on cases the model, or its recipe's fold models,
    never saw) goes into ``bratseg.json``; the segmenter flags cases scoring below it.
    ``settings`` (post-processing and test-time augmentation; by default what
    cross-validation chose for the shipped recipe) go there too, and the segmenter applies them.
    ``repo_id`` (the Hub repo it will be published as) names the model in its card.

    An existing ``out_dir`` is replaced only if it is empty or an earlier export (model files
    and nothing else), so a mistyped ``--out`` never deletes a run or another folder.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, not {dtype!r}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, not {checkpoint!r}")
    if confidence_threshold is not None and not is_valid_threshold(confidence_threshold):
        raise ValueError(f"confidence_threshold must be in (0, 1], not {confidence_threshold!r}")
    _check_replaceable(out_dir)
    weights_file = run_dir / ("best.safetensors" if checkpoint == "best" else "last.pt")
    if not weights_file.exists():
        raise ModelLoadError(f"{weights_file}: missing; the run has not finished an epoch")
    train_config = json.loads((run_dir / "train_config.json").read_text())
    prep = PreprocessingConfig.from_json(run_dir / "preprocessing.json")
    if train_config.get("target", TARGET) != TARGET:
        raise ModelLoadError(f"{run_dir}: a {train_config['target']!r} run; bratseg exports {TARGET!r} models only")
    if model_kwargs is None:
        model_kwargs = unet_kwargs(train_config, in_channels=len(prep.channels))
    model = build_unet(**model_kwargs)
    model.load_state_dict(_weights(weights_file, checkpoint))
    exported_record = _exported_record(run_dir, checkpoint)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)
    try:
        model.to(getattr(torch, dtype))
        overflow = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if overflow:
            # float16 tops out at 65504: a larger weight or BatchNorm variance would load as inf.
            names = ", ".join(overflow[:3])
            raise BratsegError(f"{weights_file}: {names} overflow {dtype}; export with dtype='float32'")
        model.save_pretrained(tmp)
        prep.to_json(tmp / "preprocessing.json")
        meta = {
            "target": TARGET,
            "regions": prep.regions,
            "output_label_scheme": "brats2020",
            "weights_dtype": dtype,
            "train_config": train_config,
            "checkpoint": checkpoint,
            "epoch": exported_record.get("epoch"),
            "validation_slice_dice": {k: exported_record.get(f"dice_{k}") for k in ("WT", "TC", "ET")},
        }
        if confidence_threshold is not None:
            meta["confidence_threshold"] = confidence_threshold
        meta.update(settings.to_metadata())
        (tmp / "bratseg.json").write_text(json.dumps(meta, indent=2) + "\n")
        card = model_card_text(meta, list(prep.modalities), tuple(prep.crop_size), prep.resize, repo_id=repo_id)
        check_card(card, source=f"{out_dir}/README.md")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out_dir.rename(backup)
            tmp.rename(out_dir)
            shutil.rmtree(backup)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _weights(weights_file: Path, checkpoint: str) -> dict:
    """The state dict ``checkpoint`` names in ``weights_file``."""
    if checkpoint == "best":
        return load_file(str(weights_file))
    if checkpoint == "last":
        return load_checkpoint(weights_file)["model"]
    return _averaged_weights(load_checkpoint(weights_file), weights_file)


def _exported_record(run_dir: Path, checkpoint: str) -> dict:
    """The metrics.jsonl record of the exported epoch (the best one for ``best``, else the
    last one); empty for a run without metrics."""
    history = []
    if (run_dir / "metrics.jsonl").exists():
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if not history:
        return {}
    if checkpoint == "best":
        return max(history, key=lambda h: h["val_mean_dice"])
    return history[-1]


def _averaged_weights(ckpt: dict, weights_file: Path) -> dict:
    """The network's state dict inside an ``AveragedModel``'s (keys under ``module.``, plus
    its ``n_averaged`` counter, which the network does not have)."""
    if "ema" not in ckpt:
        raise ModelLoadError(f"{weights_file}: holds no weight average; the run trained without ema_decay")
    prefix = "module."
    return {k[len(prefix) :]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)}


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; pick another --out")
    names = {p.name for p in out_dir.iterdir()}
    if names and not ("bratseg.json" in names and names <= MODEL_FILES):
        # E.g. --out pointing at the run itself or at the folder of all runs: replacing it
        # would delete them.
        other = ", ".join(sorted(names - MODEL_FILES)[:5]) or "no bratseg.json"
        raise FileExistsError(f"{out_dir}: exists and is not a bratseg model folder ({other}); pick another --out")
