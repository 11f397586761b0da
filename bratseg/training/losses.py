"""The training loss: Dice + cross-entropy over the overlapping regions (sigmoid outputs)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
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
