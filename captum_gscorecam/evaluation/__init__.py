"""Localization and faithfulness metrics, evaluation datasets, scoring, and the runner comparing
methods.

Names are imported on first use, so importing the package (or its torch-free report) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    from captum_gscorecam.evaluation.report import markdown, summarize, write_report
    from captum_gscorecam.evaluation.runner import evaluate
    from captum_gscorecam.evaluation.scoring import MetricParams, score_map

_MODULES = {
    "Example": "datasets",
    "coco_examples": "datasets",
    "shapes_examples": "datasets",
    "box_accuracy": "metrics",
    "box_iou": "metrics",
    "deletion_auc": "metrics",
    "energy_pointing": "metrics",
    "insertion_auc": "metrics",
    "mask_iou": "metrics",
    "max_box_acc_v2": "metrics",
    "pointing_game": "metrics",
    "markdown": "report",
    "summarize": "report",
    "write_report": "report",
    "score_map": "scoring",
    "MetricParams": "scoring",
    "evaluate": "runner",
}

__all__ = [
    "Example",
    "MetricParams",
    "box_accuracy",
    "box_iou",
    "coco_examples",
    "deletion_auc",
    "energy_pointing",
    "evaluate",
    "insertion_auc",
    "markdown",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_game",
    "score_map",
    "shapes_examples",
    "summarize",
    "write_report",
]


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value
