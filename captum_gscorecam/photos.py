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
    r"""Explain ``photo`` against each of the prompts ``text`` with ``method``.

    The photo goes through ``preprocess`` onto the model's device;
    :func:`~captum_gscorecam.methods.explain_maps` makes the maps,
    :class:`~captum_gscorecam.visualization.PhotoMaps` places them on the photo, one prompt at a
    time when asked, so a large photo with many prompts holds one map at its size, not ``T``.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        preprocess (Callable): A torchvision ``Compose``, as ``load_clip`` returns.
        photo (PIL.Image.Image): The photo.
        text (Tensor): Text embeddings ``(T, D)``, one per prompt.
        method (str): A key of the registry (``registry.SPECS``).
        topk (int or float, optional): gScoreCAM's channel count or fraction.
                    Default: None (the tower's default)
        show_progress (bool, optional): A progress bar, for the methods that have one.
                    Default: False
        layer (torch.nn.Module, optional): The layer of a method that takes one.
                    Default: None (the method's default)
        perturbations_per_eval (int, optional): Masked or occluded images per forward pass.
                    Default: None (the method's default)
        precision (str or torch.dtype, optional): The precision of the masked passes of the
                    methods that have them.
                    Default: None (fp32)

    Returns:
        *PhotoExplanation*: the maps on the photo and the CLIP score of each prompt.

    Raises:
        ValueError: ``method`` is unknown or cannot explain ``model``, or a bad option.
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
