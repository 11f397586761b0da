"""Deep supervision of the U-Net's decoder, as nnU-Net trains: 1 x 1 heads on the outputs of
the coarser decoder stages, each scored against the target downsampled to its resolution.

The heads are training-only: they live beside the network (not in it), so the network's
weights, its checkpoints' keys, the weight average and the exported model are those of a run
without them, and prediction is unchanged. The loss is the weighted sum of the main output's
and the heads' losses, the weights halving from the finest stage to the coarsest and summing
to 1 (nnU-Net's scheme).

Example:
    >>> import torch
    >>> from bratseg.model.unet import build_unet
    >>> from bratseg.training.losses import RegionDiceBCELoss
    >>> unet = build_unet(decoder_channels=[32, 16, 16, 8, 8]).train()
    >>> supervision = DeepSupervision(unet, levels=2)
    >>> [round(w, 3) for w in supervision.weights]  # main output, then the finer head first
    [0.571, 0.286, 0.143]
    >>> target = (torch.rand(2, 3, 64, 64) > 0.5).float()
    >>> loss = supervision.loss(RegionDiceBCELoss(), unet(torch.randn(2, 4, 64, 64)), target)
    >>> loss.backward(); supervision.heads[0].weight.grad is not None
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class DeepSupervision(nn.Module):
    """Heads on the ``levels`` decoder stages before the last one of an SMP ``Unet``.

    Args:
        unet: the network; forward hooks on its decoder keep the chosen stages' outputs of
            each training forward pass (not in eval mode).
        levels: how many stages get a head (1 to the decoder's stages minus one).
        classes: output channels of each head (the network's: WT, TC, ET).
    """

    def __init__(self, unet: nn.Module, levels: int, classes: int = 3):
        super().__init__()
        blocks = list(unet.decoder.blocks)
        if not 1 <= levels < len(blocks):
            raise ValueError(
                f"deep supervision of {levels} stages: the decoder has {len(blocks)}, give 1-{len(blocks) - 1}"
            )
        # Finest first: the stage just before the last, then coarser ones.
        stages = blocks[-2 : -2 - levels : -1]
        self.heads = nn.ModuleList(nn.Conv2d(_out_channels(stage), classes, kernel_size=1) for stage in stages)
        halving = [0.5**i for i in range(levels + 1)]
        self.weights = [w / sum(halving) for w in halving]
        self._features: list[torch.Tensor | None] = [None] * levels
        for index, stage in enumerate(stages):
            stage.register_forward_hook(self._keeper(index))

    def _keeper(self, index: int) -> Callable:
        def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if module.training:
                self._features[index] = output

        return keep

    def loss(self, loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted loss of the main output and of every head on the last training
        forward pass's stage outputs (the heads run in float32)."""
        if any(feature is None for feature in self._features):
            raise RuntimeError("deep supervision needs a training-mode forward pass of the network first")
        total = self.weights[0] * loss_fn(logits.float(), target)
        for weight, head, feature in zip(self.weights[1:], self.heads, self._features):
            aux = head(feature.float())
            total = total + weight * loss_fn(aux, F.interpolate(target, size=aux.shape[-2:], mode="nearest"))
        self._features = [None] * len(self._features)  # a stale stage output is never reused
        return total


def _out_channels(stage: nn.Module) -> int:
    """Channels a decoder stage puts out: those of its last convolution."""
    convolutions = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convolutions[-1].out_channels
