"""The network: a segmentation-models-pytorch U-Net.

The constructor's arguments are the config: they are what SMP's ``save_pretrained`` writes to
``config.json`` and what ``from_pretrained`` rebuilds from.

Example:
    >>> import torch
    >>> model = build_unet(encoder_name="resnet18", in_channels=4, classes=3)
    >>> model(torch.zeros(1, 4, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import segmentation_models_pytorch as smp


def build_unet(
    encoder_name: str = "resnet18",
    in_channels: int = 4,
    classes: int = 3,
    encoder_depth: int = 5,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
) -> smp.Unet:
    """An SMP ``Unet`` trained from scratch (no encoder weights can be downloaded here)."""
    return smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        decoder_channels=list(decoder_channels),
        in_channels=in_channels,
        classes=classes,
    )
