"""Context across slices (2.5-D input): each axial slice sees its neighbours.

A 2-D network cannot tell a small tumour from a vessel or a partial-volume artefact that a
neighbouring slice would explain. With ``context_slices = k`` every modality contributes the
``2k + 1`` slices around the one predicted, as extra input channels (modality-major: FLAIR at
z-k..z+k, then T1, ...). Slices beyond the volume's ends repeat the end slice, as a scanner's
volume would continue.

Example:
    >>> import numpy as np
    >>> image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)  # [C, X, Y, Z]
    >>> with_context(image, 1).shape
    (6, 1, 3, 4)
    >>> with_context(image, 1)[0:3, 0, 0, 0].tolist()  # FLAIR at z-1 (edge), z, z+1
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

import numpy as np


def with_context(image: np.ndarray, context_slices: int) -> np.ndarray:
    """``[C, X, Y, Z]`` to ``[C * (2k + 1), X, Y, Z]`` with ``k = context_slices`` (0 returns
    ``image`` itself)."""
    if context_slices <= 0:
        return image
    k = context_slices
    depth = image.shape[3]
    channels = []
    for c in range(image.shape[0]):
        for offset in range(-k, k + 1):
            z = np.clip(np.arange(depth) + offset, 0, depth - 1)
            channels.append(image[c][..., z])
    return np.stack(channels)


def channels_of(modalities: list[str], context_slices: int) -> list[str]:
    """The modality each input channel belongs to, in channel order."""
    return [m for m in modalities for _ in range(2 * max(context_slices, 0) + 1)]
