"""Evaluation of tracking output: DAVIS J&F (:mod:`sam2s_ros.evaluation.davis`)."""

from sam2s_ros.evaluation.davis import (
    BOUND_TH,
    ObjectEvaluation,
    Statistics,
    Summary,
    aggregate,
    boundary_tolerance_px,
    evaluate_object,
    f_measure,
    jaccard,
    seg2bmap,
    summarize,
)

__all__ = [
    "BOUND_TH",
    "ObjectEvaluation",
    "Statistics",
    "Summary",
    "aggregate",
    "boundary_tolerance_px",
    "evaluate_object",
    "f_measure",
    "jaccard",
    "seg2bmap",
    "summarize",
]
