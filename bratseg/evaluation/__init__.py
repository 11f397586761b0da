"""Evaluation of segmentations against references: BraTS metrics (:mod:`~bratseg.evaluation.metrics`),
pairing (:mod:`~bratseg.evaluation.pairing`), scores of files (:mod:`~bratseg.evaluation.scores`) and
the report files ``bratseg evaluate`` writes (:mod:`~bratseg.evaluation.summary`).

Example:
    >>> import numpy as np
    >>> from bratseg.evaluation import evaluate_case
    >>> ref = np.zeros((20, 20, 20), np.uint8); ref[5:10, 5:10, 5:10] = 2
    >>> evaluate_case(ref, ref, spacing=(1.0, 1.0, 1.0))["WT"]["dice"]
    1.0
"""

from bratseg.data.label_schemes import resolve_scheme, to_internal_labels
from bratseg.evaluation.metrics import (
    HD95_EMPTY,
    METRICS,
    STRUCTURE_LABELS,
    STRUCTURES,
    EvaluationError,
    binary_metrics,
    evaluate_case,
    evaluate_internal,
    hd95,
)
from bratseg.evaluation.pairing import Pair, Pairing, case_id_of, match_pairs, pairs_in_folders, read_pairs_csv
from bratseg.evaluation.scores import CaseResult, Evaluation, evaluate_files, evaluate_folder, evaluate_pairs
from bratseg.evaluation.summary import summary_table, write_report

__all__ = [
    "HD95_EMPTY",
    "METRICS",
    "STRUCTURE_LABELS",
    "STRUCTURES",
    "EvaluationError",
    "binary_metrics",
    "evaluate_case",
    "evaluate_internal",
    "hd95",
    "resolve_scheme",
    "to_internal_labels",
    "CaseResult",
    "Evaluation",
    "Pair",
    "Pairing",
    "case_id_of",
    "evaluate_files",
    "evaluate_folder",
    "evaluate_pairs",
    "match_pairs",
    "pairs_in_folders",
    "read_pairs_csv",
    "summary_table",
    "write_report",
]
