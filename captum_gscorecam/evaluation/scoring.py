"""Scoring one image: its prompts explained by each method, every map scored against the truth.

A row is one (image, prompt, method) with the localization metrics of
:mod:`~captum_gscorecam.evaluation.metrics` and, when asked, deletion / insertion AUC;
:func:`row_keys` lists the keys a run's rows carry, which the store checks on resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from captum_gscorecam.clip import CLIPSimilarity, encode_text
from captum_gscorecam.evaluation.datasets import Example
from captum_gscorecam.evaluation.metrics import (
    box_accuracy,
    box_iou_curve,
    deletion_auc,
    energy_pointing,
    insertion_auc,
    mask_iou,
    pointing_game,
)
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.visualization import upsample

__all__ = ["ROW_KEYS", "MetricParams", "evaluate_image", "faithfulness", "row_keys", "score_map"]

ROW_KEYS = (
    "image_id",
    "prompt",
    "n_objects",
    "method",
    "seconds",
    "pointing",
    "box_hit",
    "box_iou",
    "energy",
    "mask_iou",
    "iou_curve",
)


@dataclass(frozen=True)
class MetricParams:
    """Metric settings, stored with the results.

    Attributes:
        tolerance: Pointing game margin in pixels.
        iou_threshold: IoU a predicted box needs for box accuracy.
        iou_thresholds: MaxBoxAccV2's IoU thresholds ``delta``.
        faithfulness_steps: Steps of the deletion and insertion curves; None skips them.
    """

    tolerance: int = 15
    iou_threshold: float = 0.5
    iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    faithfulness_steps: int | None = None


def row_keys(params: MetricParams) -> tuple[str, ...]:
    """The keys every row of a run with these settings has."""
    faithful = ("deletion", "insertion") if params.faithfulness_steps is not None else ()
    return ROW_KEYS + faithful


def evaluate_image(
    model: nn.Module,
    preprocess: Callable[[Image.Image], Tensor],
    tokenizer: Callable[[Sequence[str]], Tensor],
    group: Sequence[Example],
    methods: Sequence[str],
    topk: int | float,
    params: MetricParams,
    precision: torch.dtype | None = None,
) -> list[dict[str, object]]:
    """The rows of one image: its T prompts explained together by each method, then scored;
    ``precision`` is gScoreCAM's and ScoreCAM's (``GScoreCAM.attribute``'s).
    """
    device = next(model.parameters()).device
    image = preprocess(Image.fromarray(group[0].load_image()))[None].to(device)
    size = group[0].size
    if tuple(image.shape[-2:]) != (size, size):
        raise ValueError(
            f"examples: built at {size} px, but the preprocess gives {tuple(image.shape[-2:])}; "
            "build them at the model's input size"
        )
    text = encode_text(model, tokenizer, [example.prompt for example in group])[None]
    rows = []
    for method in methods:
        start, cpu_start = time.perf_counter(), time.process_time()
        maps = explain_maps(model, image, text, method, topk, precision=precision)
        maps = upsample(maps, (size, size))[0]
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        for t, example in enumerate(group):
            row = {
                "image_id": example.image_id,
                "prompt": example.prompt,
                "n_objects": example.n_objects,
                "method": method,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                **score_map(maps[t], example, params),
            }
            if params.faithfulness_steps is not None:
                row |= faithfulness(model, image[0], text[0, t], maps[t], params.faithfulness_steps)
            rows.append(row)
    return rows


def score_map(saliency: np.ndarray, example: Example, params: MetricParams) -> dict[str, object]:
    """The localization metrics of one ``(S, S)`` map against an example's ground truth."""
    hit, iou = box_accuracy(saliency, example.boxes, params.iou_threshold)
    return {
        "pointing": pointing_game(saliency, example.boxes, params.tolerance),
        "box_hit": bool(hit),
        "box_iou": iou,
        "energy": energy_pointing(saliency, example.boxes),
        "mask_iou": None if example.mask is None else mask_iou(saliency, example.mask),
        "iou_curve": box_iou_curve(saliency, example.boxes).tolist(),
    }


def faithfulness(
    model: nn.Module, image: Tensor, text: Tensor, saliency: np.ndarray, steps: int
) -> dict[str, float]:
    """Deletion and insertion AUC of ``logit_scale * cos(image, text)`` for one map."""
    similarity = CLIPSimilarity(model)

    @torch.no_grad()
    def score(batch: np.ndarray) -> np.ndarray:
        return similarity(torch.from_numpy(batch).to(image.device), text).cpu().numpy()

    pixels = image.cpu().numpy()
    return {
        "deletion": deletion_auc(score, pixels, saliency, steps=steps),
        "insertion": insertion_auc(score, pixels, saliency, steps=steps),
    }
