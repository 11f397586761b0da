"""Dice + cross-entropy losses for region (sigmoid) and class (softmax) outputs."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn


class RegionDiceBCELoss(nn.Module):
    """Soft Dice over the batch plus binary cross-entropy, per overlapping region
    (nnU-Net's BraTS recipe)."""

    def __init__(self):
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target)


def build_loss(target: str) -> nn.Module:
    if target == "regions":
        return RegionDiceBCELoss()
    # Classes: softmax Dice + categorical cross-entropy; targets are [N, H, W] labels.
    loss = DiceCELoss(softmax=True, to_onehot_y=True, batch=True)
    return _AddChannel(loss)


class _AddChannel(nn.Module):
    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target[:, None])
