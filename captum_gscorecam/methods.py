"""The explainers the command line and the evaluation compare, behind one call."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam
from torch import Tensor, nn

from captum_gscorecam.attribution import GScoreCAM, ScoreCAM
from captum_gscorecam.clip import CLIPSimilarity, default_layer, grid_tap

__all__ = ["METHODS", "explain_maps"]

METHODS = {"gscorecam": "gScoreCAM", "scorecam": "ScoreCAM", "gradcam": "LayerGradCam"}


def explain_maps(
    model: nn.Module,
    images: Tensor,
    text: Tensor,
    method: str,
    topk: int | float,
    show_progress: bool = False,
) -> Tensor:
    """Maps ``(N, T, h, w)`` of one method for T prompts per image (``text`` is ``(N, T, D)``).

    LayerGradCam is Captum's, through CLIPSimilarity. At a class-token-pooled ViT's last block
    it is zero everywhere (the patch tokens do not reach the output), so on ViT towers it runs
    at the block before.
    """
    layer = default_layer(model)
    if method == "gscorecam":
        return GScoreCAM(model, layer).attribute(
            images, target=text, topk=topk, show_progress=show_progress
        )
    if method == "scorecam":
        return ScoreCAM(model, layer).attribute(images, target=text, show_progress=show_progress)
    blocks = getattr(getattr(model.visual, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks) > 1:
        layer = blocks[-2]
    similarity = CLIPSimilarity(model)
    with grid_tap(model, layer) as grid_layer:
        gradcam = LayerGradCam(similarity, grid_layer)
        maps = [
            gradcam.attribute(images, additional_forward_args=(text[:, t],), relu_attributions=True)
            for t in range(text.shape[1])
        ]
    return torch.cat(maps, dim=1).detach()
