"""One photo against T prompts: the maps placed on the photo, and CLIP's score for each prompt.

``gscorecam explain`` and ``gscorecam app`` both call :func:`explain_photo`, so a map saved by one
is the map the other shows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from captum_gscorecam.clip import CLIPSimilarity
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.visualization import PhotoMaps

__all__ = ["PhotoExplanation", "explain_photo"]


class PhotoExplanation(NamedTuple):
    """What :func:`explain_photo` returns."""

    maps: PhotoMaps
    """float32 ``(T, height, width)`` on the photo, placed one prompt at a time when indexed or
    iterated (``np.asarray`` for all at once); NaN where the preprocess cropped it away."""
    scores: np.ndarray
    """float32 ``(T,)``: ``logit_scale * cos(image, prompt)`` of the whole preprocessed photo."""


def explain_photo(
    model: nn.Module,
    preprocess: Any,
    photo: Image.Image,
    text: Tensor,
    method: str,
    topk: int | float | None = None,
    show_progress: bool = False,
    layer: nn.Module | None = None,
    perturbations_per_eval: int | None = None,
    precision: str | torch.dtype | None = None,
) -> PhotoExplanation:
    """Explain ``photo`` against each of the prompts ``text`` ``(T, D)`` with ``method``.

    The photo goes through ``preprocess`` (a torchvision ``Compose``, as ``load_clip`` returns)
    onto the model's device; ``methods.explain_maps`` makes the maps (``topk``, ``layer``,
    ``perturbations_per_eval`` and ``precision`` mean what they mean there),
    ``visualization.PhotoMaps`` places them on the photo, one prompt at a time when asked, so
    a large photo with many prompts holds one map at its size, not ``T``.
    """
    device = next(model.parameters()).device
    images = preprocess(photo)[None].to(device)
    prompts = text[None].to(device)
    maps = explain_maps(
        model,
        images,
        prompts,
        method,
        topk,
        show_progress=show_progress,
        layer=layer,
        perturbations_per_eval=perturbations_per_eval,
        precision=precision,
    )
    with torch.no_grad():
        scores = CLIPSimilarity(model)(images, prompts)[0]
    placed = PhotoMaps(maps[0], photo.size, preprocess)
    return PhotoExplanation(placed, scores.float().cpu().numpy())
