"""Localization and faithfulness metrics, evaluation datasets, and the runner comparing methods."""

from captum_gscorecam.evaluation.datasets import Example, coco_examples, shapes_examples
from captum_gscorecam.evaluation.metrics import (
    box_accuracy,
    box_iou,
    deletion_auc,
    energy_pointing,
    insertion_auc,
    mask_iou,
    max_box_acc_v2,
    pointing_game,
)
from captum_gscorecam.evaluation.report import markdown, summarize
from captum_gscorecam.evaluation.runner import (
    MetricParams,
    add_evaluate_parser,
    evaluate,
    evaluate_command,
)

__all__ = [
    "Example",
    "MetricParams",
    "add_evaluate_parser",
    "box_accuracy",
    "box_iou",
    "coco_examples",
    "deletion_auc",
    "energy_pointing",
    "evaluate",
    "evaluate_command",
    "insertion_auc",
    "markdown",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_game",
    "shapes_examples",
    "summarize",
]
