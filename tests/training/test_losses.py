"""The region loss: equal weights are the plain mean bit for bit, unequal ones scale each
region's gradient, and a run records the weights it trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bratseg.training.config import TrainConfig
from bratseg.training.losses import RegionDiceBCELoss
from bratseg.training.trainer import train


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, generator=generator)
    target = (torch.rand(4, 3, 16, 16, generator=generator) > 0.7).float()
    return logits, target


def region_gradients(loss: RegionDiceBCELoss) -> torch.Tensor:
    """The gradient's size on each output channel."""
    logits, target = batch()
    logits.requires_grad_(True)
    loss(logits, target).backward()
    return logits.grad.abs().sum(dim=(0, 2, 3))


def test_equal_weights_are_the_plain_loss_bit_for_bit():
    logits, target = batch()
    plain = RegionDiceBCELoss()(logits, target)
    assert torch.equal(RegionDiceBCELoss([1.0, 1.0, 1.0])(logits, target), plain)
    assert torch.equal(RegionDiceBCELoss([2.0, 2.0, 2.0])(logits, target), plain)


def test_the_weighted_mean_matches_the_plain_loss_when_weights_barely_differ():
    logits, target = batch()
    nearly = RegionDiceBCELoss([1.0, 1.0 + 1e-6, 1.0])(logits, target)
    assert torch.allclose(nearly, RegionDiceBCELoss()(logits, target), atol=1e-5)


def test_a_region_weight_scales_that_regions_gradient():
    plain = region_gradients(RegionDiceBCELoss())
    tc_heavy = region_gradients(RegionDiceBCELoss([1.0, 2.0, 1.0]))
    # Plain: each region counts 1/3; weighted: TC 2/4, WT and ET 1/4.
    assert torch.allclose(tc_heavy / plain, torch.tensor([0.75, 1.5, 0.75]), rtol=1e-4)


@pytest.mark.parametrize("weights", [[-1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
def test_negative_or_all_zero_weights_are_refused(weights):
    with pytest.raises(ValueError, match="non-negative"):
        RegionDiceBCELoss(weights)


def test_the_loss_refuses_weights_for_another_number_of_outputs():
    logits, target = batch()
    with pytest.raises(ValueError, match="2 region weights for 3 output channels"):
        RegionDiceBCELoss([1.0, 2.0])(logits, target)


def test_the_config_takes_three_weights(tmp_path: Path):
    with pytest.raises(ValueError, match="three weights"):
        TrainConfig(region_loss_weights=[1.0, 2.0])
    config = tmp_path / "tc.json"
    config.write_text(json.dumps({"region_loss_weights": [1, 2, 1]}))
    assert TrainConfig.from_json(config).region_loss_weights == [1, 2, 1]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_trains_with_and_records_its_region_weights(tiny_cache: Path, tmp_path: Path):
    config = TrainConfig(epochs=1, batch_size=4, max_train_batches=2, threads=1, region_loss_weights=[1, 2, 1])
    run = train(tiny_cache, tmp_path / "run", config)
    assert json.loads((run / "train_config.json").read_text())["region_loss_weights"] == [1, 2, 1]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train_loss"] > 0 and 0 <= record["val_mean_dice"] <= 1
