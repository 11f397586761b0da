"""Training configuration: a dataclass loaded from JSON, overridable from the command line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from bratseg.model.unet import DEFAULT_DECODER_CHANNELS


@dataclass
class TrainConfig:
    """Every knob of a training run.

    Args:
        encoder: SMP encoder name (trained from scratch).
        decoder_channels: the U-Net decoder's channels, deepest first; SMP's default
            (256, 128, 64, 32, 16) costs more than the resnet18 encoder on the CPU, so lighter
            decoders are what pay for 2.5-D input or an ensemble.
        target: ``regions``, sigmoid outputs for WT, TC and ET as nnU-Net does for BraTS: the
            only kind bratseg trains (kept so that every run's ``train_config.json`` says so).
        epochs: maximum epochs; training stops earlier after ``patience`` epochs without a
            better validation mean Dice.
        modality_dropout: probability of zeroing T1 and T2 in a training sample, so one model
            serves FLAIR + T1ce alone and all four modalities.
        intensity_augment: also the intensity augmentations nnU-Net uses against differences
            between scanners (Gaussian noise, Gaussian blur, simulated low resolution, gamma).
        init_weights: a model folder (``bratseg export`` output) whose weights start the run
            instead of a random initialisation (fine-tuning); its architecture and
            preprocessing must match this run's.
        fold: train one fold of a ``num_folds``-fold cross-validation over all the cache's
            cases (``bratseg.preprocessing.cache.fold_split``) instead of the cache's own
            train/validation split; ``None`` uses that split.
        inner_fold: with ``fold``, train one fold of an ``inner_num_folds``-fold
            cross-validation over that fold's training cases only (nested cross-validation:
            the teachers of a distilled student must not see the student's validation cases).
        all_cases: train on every case of the cache with no validation cases (nnU-Net's
            fold "all", how a configuration chosen by cross-validation is trained to ship);
            without validation Dice the best epoch is the one of lowest training loss.
        patch_size: train on random ``[height, width]`` crops of the cached slices instead of
            whole slices (nnU-Net's patch training: a cheaper step, so a longer schedule fits);
            prediction still runs on the whole window (the network is fully convolutional).
            Empty: whole slices.
        foreground_fraction: with ``patch_size``, the probability that a crop is centred on a
            random tumour voxel (nnU-Net forces a third of its patches to hold foreground).
        region_loss_weights: weights of the WT, TC and ET terms of the loss
            (:class:`~bratseg.training.losses.RegionDiceBCELoss`); empty: equal weights.
        deep_supervision: decoder stages before the last that get a training-only output head
            scored against the downsampled target (nnU-Net's deep supervision,
            :mod:`bratseg.training.deep_supervision`); 0 turns it off.
        soft_targets: a ``bratseg soft-targets`` file of teacher probabilities for the cache's
            slices (knowledge distillation); empty: none.
        soft_target_weight: the training target is ``(1 - w) * expert regions + w * teacher
            probabilities``; the validation target stays the expert label.
        ema_decay: keep an exponential moving average of the weights with this decay
            (``torch.optim.swa_utils``); validation, ``best.safetensors`` and the exported
            model use the averaged weights, ``last.pt`` keeps both. 0 turns it off.
        amp: ``auto`` uses bf16 autocast on CPUs that support it and on CUDA.
        num_workers: data-loading worker processes; threads: torch compute threads
            (0 = torch's default).
    """

    encoder: str = "resnet18"
    decoder_channels: list[int] = field(default_factory=lambda: list(DEFAULT_DECODER_CHANNELS))
    target: Literal["regions"] = "regions"
    epochs: int = 30
    patience: int = 5
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    modality_dropout: float = 0.3
    augment: bool = True
    intensity_augment: bool = False
    patch_size: list[int] = field(default_factory=list)
    foreground_fraction: float = 0.33
    region_loss_weights: list[float] = field(default_factory=list)
    deep_supervision: int = 0
    ema_decay: float = 0.0
    soft_targets: str = ""
    soft_target_weight: float = 0.5
    init_weights: str = ""
    fold: int | None = None
    num_folds: int = 5
    inner_fold: int | None = None
    inner_num_folds: int = 3
    all_cases: bool = False
    amp: Literal["auto", "off"] = "auto"
    num_workers: int = 1
    threads: int = 0
    seed: int = 0
    max_train_batches: int = 0  # 0 = whole epoch; a positive value caps it (smoke runs)

    def __post_init__(self) -> None:
        if self.target != "regions":
            raise ValueError(f"target {self.target!r}: bratseg trains 'regions' models only (sigmoid WT, TC, ET)")
        if self.region_loss_weights and len(self.region_loss_weights) != 3:
            raise ValueError(f"region_loss_weights {self.region_loss_weights}: give three weights (WT, TC, ET)")
        if not 0 < self.soft_target_weight <= 1:
            raise ValueError(f"soft_target_weight {self.soft_target_weight}: must be in (0, 1]")
        if self.inner_fold is not None and self.fold is None:
            raise ValueError("inner_fold splits the training cases of a fold: give fold too")

    @classmethod
    def from_json(cls, path: str | Path, **overrides) -> TrainConfig:
        data = json.loads(Path(path).read_text()) if path else {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
