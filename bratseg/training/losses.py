"""The training loss: Dice + cross-entropy over the overlapping regions (sigmoid outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch import nn
from torch.nn import functional as F


class RegionDiceBCELoss(nn.Module):
    """Soft Dice over the batch plus binary cross-entropy, per overlapping region
    (nnU-Net's BraTS recipe).

    Args:
        region_weights: one weight per output channel (WT, TC, ET); the loss is the weighted
            mean of the regions' Dice + BCE terms. Equal weights give the plain mean.

    Example:
        >>> target = torch.zeros(2, 3, 8, 8); target[:, :, :4] = 1
        >>> logits = 20 * (2 * target - 1); logits[:, 1] = 0  # right on WT and ET, unsure on TC
        >>> plain, tc_heavy = RegionDiceBCELoss(), RegionDiceBCELoss([1.0, 2.0, 1.0])
        >>> bool(tc_heavy(logits, target) > plain(logits, target))
        True
    """

    def __init__(self, region_weights: Sequence[float] = ()):
        super().__init__()
        if any(w < 0 for w in region_weights) or (region_weights and sum(region_weights) == 0):
            raise ValueError(f"region weights {list(region_weights)}: need non-negative weights, not all 0")
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()
        # Equal weights keep the unweighted expression, so runs before the option resume bit-exactly.
        weighted = len(set(region_weights)) > 1
        self.register_buffer("weights", torch.tensor(region_weights, dtype=torch.float32) if weighted else None)
        if weighted:
            self.region_dice = DiceLoss(sigmoid=True, batch=True, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return self.dice(logits, target) + self.bce(logits, target)
        if len(self.weights) != logits.shape[1]:
            raise ValueError(f"{len(self.weights)} region weights for {logits.shape[1]} output channels")
        dice = self.region_dice(logits, target).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(0, 2, 3))
        weights = self.weights.to(logits.device)
        return ((dice + bce) * weights).sum() / weights.sum()
