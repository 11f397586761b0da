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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import segmentation_models_pytorch as smp

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # SMP's default


def unet_kwargs(train_config: Mapping, in_channels: int) -> dict:
    """:func:`build_unet`'s arguments for a run's ``train_config.json`` (runs written before
    ``decoder_channels`` existed used SMP's default): three outputs, one per region (WT, TC, ET)."""
    return dict(
        encoder_name=train_config["encoder"],
        in_channels=in_channels,
        classes=3,
        decoder_channels=tuple(train_config.get("decoder_channels", DEFAULT_DECODER_CHANNELS)),
    )


def build_unet(
    encoder_name: str = "resnet18",
    in_channels: int = 4,
    classes: int = 3,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
) -> smp.Unet:
    """An SMP ``Unet`` trained from scratch (no encoder weights can be downloaded here)."""
    import segmentation_models_pytorch as smp  # here, so that configs import without it

    return smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        decoder_channels=list(decoder_channels),
        in_channels=in_channels,
        classes=classes,
    )
