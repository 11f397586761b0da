"""Deep supervision: training-only heads on the decoder that change the training signal,
resume bit-exactly, and leave the exported model as a run without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bratseg.model.unet import build_unet
from bratseg.training.config import TrainConfig
from bratseg.training.deep_supervision import DeepSupervision
from bratseg.training.losses import RegionDiceBCELoss
from bratseg.training.trainer import train

SMALL = dict(epochs=2, batch_size=4, max_train_batches=2, threads=1, num_workers=0, deep_supervision=2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(decoder_channels=[32, 16, 16, 8, 8]).train()


def test_heads_sit_on_the_stages_before_the_last_and_see_the_target_at_their_size():
    unet = small_unet()
    supervision = DeepSupervision(unet, levels=3)
    seen = []
    loss_fn = RegionDiceBCELoss()

    def recording(logits, target):
        seen.append((tuple(logits.shape[-2:]), tuple(target.shape[-2:])))
        return loss_fn(logits, target)

    target = (torch.rand(2, 3, 64, 64) > 0.5).float()
    supervision.loss(recording, unet(torch.randn(2, 4, 64, 64)), target)
    # The main output at full size, then the heads from the finest stage (1/2) to the coarsest.
    assert seen == [((64, 64), (64, 64)), ((32, 32), (32, 32)), ((16, 16), (16, 16)), ((8, 8), (8, 8))]
    assert supervision.weights == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])


def test_the_loss_needs_a_fresh_training_forward_pass():
    unet = small_unet()
    supervision = DeepSupervision(unet, levels=1)
    target = (torch.rand(1, 3, 64, 64) > 0.5).float()
    logits = unet(torch.randn(1, 4, 64, 64))
    supervision.loss(RegionDiceBCELoss(), logits, target)
    with pytest.raises(RuntimeError, match="training-mode forward pass"):
        supervision.loss(RegionDiceBCELoss(), logits, target)  # the stage outputs were used up
    unet.eval()
    with torch.no_grad():
        logits = unet(torch.randn(1, 4, 64, 64))
    with pytest.raises(RuntimeError, match="training-mode forward pass"):
        supervision.loss(RegionDiceBCELoss(), logits, target)  # eval passes keep nothing


def test_levels_must_leave_the_last_stage(tmp_path: Path):
    with pytest.raises(ValueError, match="give 1-4"):
        DeepSupervision(small_unet(), levels=5)


def test_a_supervised_run_resumes_exactly_and_exports_the_plain_network(tiny_cache: Path, tmp_path: Path):
    reference = train(tiny_cache, tmp_path / "reference", TrainConfig(**SMALL))
    last = torch.load(reference / "last.pt", map_location="cpu", weights_only=True)
    assert set(last["supervision"]) == {f"heads.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    run = tmp_path / "run"
    train(tiny_cache, run, TrainConfig(**{**SMALL, "epochs": 1}))
    train(tiny_cache, run, TrainConfig(**SMALL), resume=True)
    resumed = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    for part in ("model", "supervision"):
        assert all(torch.equal(resumed[part][k], last[part][k]) for k in last[part]), part
    exported = load_file(str(reference / "model" / "model.safetensors"))
    assert exported.keys() == last["model"].keys()  # no head in the shipped network
    # The heads change the training: the same run without them ends elsewhere.
    plain = train(tiny_cache, tmp_path / "plain", TrainConfig(**{**SMALL, "deep_supervision": 0}))
    plain_last = torch.load(plain / "last.pt", map_location="cpu", weights_only=True)
    assert "supervision" not in plain_last
    assert any(not torch.equal(plain_last["model"][k], last["model"][k]) for k in last["model"])
