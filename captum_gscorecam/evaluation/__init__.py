"""Localization and faithfulness metrics for saliency maps."""

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

__all__ = [
    "box_accuracy",
    "box_iou",
    "deletion_auc",
    "energy_pointing",
    "insertion_auc",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_game",
]
