"""GenEval: the 553-prompt protocol, detector interface, colour classifier, scoring and summary."""

from infinity_eval.geneval.prompts import COLORS, TASKS, load_metadata, object_names
from infinity_eval.geneval.scoring import (
    Detection,
    GenEvalSummary,
    GenEvalThresholds,
    evaluate,
    filter_detections,
    relative_position,
    summarize,
)

__all__ = [
    "COLORS",
    "TASKS",
    "Detection",
    "GenEvalSummary",
    "GenEvalThresholds",
    "evaluate",
    "filter_detections",
    "load_metadata",
    "object_names",
    "relative_position",
    "summarize",
]
