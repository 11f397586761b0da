"""What a model folder's ``bratseg.json`` says about how its model is used, read and written
in one place: export (:mod:`bratseg.training.export`) writes it, and the segmenter's
``from_pretrained`` reads it.

Beside the record of the run (train config, epoch, validation Dice), ``bratseg.json`` holds:

- ``target``: what the network outputs; ``"regions"`` (sigmoid maps of WT, TC, ET) is the only
  kind bratseg trains and predicts with.
- ``confidence_threshold`` (optional): the confidence score below which a case is flagged,
  calibrated per model on cases it never saw.
- ``postprocessing`` and ``tta`` (optional): the post-processing and test-time augmentation
  chosen for the model, by cross-validation for the shipped one::

      "postprocessing": {"min_component_fraction": 0.1},
      "tta": "none"

  ``min_component_fraction``: 3-D connected components of the whole tumour smaller than this
  fraction of the largest are removed (0 keeps everything). ``tta``: ``"none"``, or
  ``"flips"`` to average the network's output over the three in-plane flips (4x the network
  time). A folder without them gets :data:`DEFAULT_SETTINGS`, the values cross-validation
  chose for the shipped recipe (BENCHMARKS.md, "Model v2").

Example:
    >>> settings = InferenceSettings.from_metadata({"target": "regions", "tta": "flips"})
    >>> settings.min_component_fraction, settings.flip_tta
    (0.1, True)
    >>> settings.to_metadata()
    {'postprocessing': {'min_component_fraction': 0.1}, 'tta': 'flips'}
    >>> InferenceSettings.from_metadata({"postprocessing": {"relabel_small_enhancing": 50}})
    Traceback (most recent call last):
    ...
    ValueError: postprocessing: unknown keys ['relabel_small_enhancing'] (known: ['min_component_fraction'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The only network output bratseg trains and predicts with: sigmoid maps of WT, TC and ET.
TARGET = "regions"
TTA_MODES = ("none", "flips")


def is_valid_threshold(value: object) -> bool:
    """Whether ``value`` can be a model's ``confidence_threshold``: a number in (0, 1]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


def _is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass(frozen=True)
class InferenceSettings:
    """The post-processing and test-time augmentation a model is used with (see the module
    docstring); invalid values raise ``ValueError``."""

    min_component_fraction: float = 0.1
    tta: str = "none"

    def __post_init__(self) -> None:
        if not _is_fraction(self.min_component_fraction):
            raise ValueError(
                f"postprocessing: min_component_fraction must be a number in [0, 1], "
                f"not {self.min_component_fraction!r}"
            )
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {list(TTA_MODES)}, not {self.tta!r}")

    @property
    def flip_tta(self) -> bool:
        """Whether predictions are averaged over the in-plane flips."""
        return self.tta == "flips"

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> InferenceSettings:
        """The settings a ``bratseg.json`` holds; the defaults for what it leaves out."""
        block = meta.get("postprocessing", {})
        if not isinstance(block, Mapping):
            raise ValueError(f"postprocessing must be an object, not {block!r}")
        known = {"min_component_fraction"}
        unknown = sorted(set(block) - known)
        if unknown:
            # A choice this bratseg cannot apply must not be silently dropped.
            raise ValueError(f"postprocessing: unknown keys {unknown} (known: {sorted(known)})")
        return cls(
            min_component_fraction=block.get("min_component_fraction", DEFAULT_SETTINGS.min_component_fraction),
            tta=meta.get("tta", DEFAULT_SETTINGS.tta),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The ``bratseg.json`` entries of these settings."""
        return {"postprocessing": {"min_component_fraction": self.min_component_fraction}, "tta": self.tta}


DEFAULT_SETTINGS = InferenceSettings()
"""What cross-validation over the 27 labelled cases chose (BENCHMARKS.md, "Model v2"): remove
whole-tumour components under 10 % of the largest (it never lowered Dice), no flip TTA (no better
Dice, for about 3x the prediction time)."""
