"""Typed errors: every problem with user input names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path


class BratsegError(Exception):
    """Base class of every error bratseg raises on purpose."""


class InvalidCaseError(BratsegError):
    """A case (a set of co-registered NIfTI files) cannot be used.

    The message always names the offending file (or case folder) and the problem, so
    a user can fix the input without reading a traceback.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path.name}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")

    def __reduce__(self):
        # The default reduce re-creates the error from its message alone, which this
        # __init__ does not accept; an error raised in a cache worker process would then
        # fail to unpickle and surface as BrokenProcessPool instead of this error.
        return (type(self), (self.path, self.problem))


class MissingModalityError(InvalidCaseError):
    """A modality the model needs (FLAIR or T1ce) is absent."""


class ModelLoadError(BratsegError):
    """A model folder is missing a file or its files do not agree."""


class CacheError(BratsegError):
    """A slice cache is missing, incomplete or inconsistent."""


class ConfidenceError(BratsegError):
    """A confidence map or score cannot be computed (no region probabilities, or ones that do
    not match the label map)."""


class ReportError(BratsegError):
    """A report cannot be written (unwritable path, label map that does not fit the case)."""


class UntrustworthyInputError(InvalidCaseError):
    """Input the model was not made for, so that any answer on it would be untrustworthy: not
    BraTS-space-like (voxel size, skull, background, slice orientation, brain outside the
    model's window). The native path can fix it; inconsistent modalities (one mirrored, T1
    given as T1ce) are :class:`InconsistentModalitiesError`, which no preprocessing fixes."""


class UntrustworthyResultError(InvalidCaseError):
    """A prediction that cannot be right (tumour filling much of the brain), refused instead of
    reported."""


class NativeScanError(InvalidCaseError):
    """A scan as it came off the scanner cannot be brought into BraTS space: slices too thick,
    a skull strip or a registration that failed; the message names the file and the step."""


class DicomError(InvalidCaseError):
    """A DICOM folder, zip or series cannot be read as a 3-D scan, or its sequences cannot be
    told apart."""


class OutputError(BratsegError):
    """An output path that must not or cannot be written: one of the inputs, a folder that
    refuses new files, or a file bratseg did not write (found before the model loads)."""


class InconsistentModalitiesError(InvalidCaseError):
    """Modalities of a case that contradict each other (one mirrored left-right against the
    others, the same image given twice, T1 and T1ce swapped). Unlike
    :class:`UntrustworthyInputError` no preprocessing can fix it (registration would align a
    mirrored brain with the tumour on the wrong side), so every path refuses it."""


class ImplausibleScanError(InvalidCaseError):
    """A sequence whose content no scan of its kind has: no anatomy (one value over the brain,
    or over most of it), a handful of values (a label map or mask given as an image), inverted
    contrast (a negative ``scl_slope``, a flipped grey scale). Like
    :class:`InconsistentModalitiesError` no preprocessing fixes it, so every path refuses it."""


class EvaluationError(BratsegError):
    """Predictions and references cannot be evaluated together (nothing pairs up, mismatched
    arrays, contradictory options, an unknown label scheme)."""
