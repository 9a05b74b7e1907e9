"""The explainers the command line and the evaluation compare, behind one call."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion, Saliency
from torch import Tensor, nn

from captum_gscorecam.attribution import GScoreCAM, ScoreCAM
from captum_gscorecam.clip import CLIPSimilarity, default_layer, gradcam_layer, grid_tap
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.hila import HilaCAM
from captum_gscorecam.method_names import METHODS, PIXEL_METHODS

__all__ = ["METHODS", "applicable_methods", "check_method", "explain_maps"]

# Occlusion's window is this fraction of the image side; it moves by half a window.
OCCLUSION_WINDOW = 1 / 7
IG_STEPS = 32
BATCH = 64


def check_method(model: nn.Module, method: str) -> None:
    """Raise a ValueError naming ``method`` if it is unknown or cannot explain ``model``.

    HilaCAM needs a ViT tower that pools the class token, with open_clip's
    ``nn.MultiheadAttention`` or Hugging Face CLIP attention; every other method works on any
    CLIP tower.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {list(METHODS)}")
    if method == "hilacam":
        try:
            HilaCAM(model)
        except (TypeError, ValueError) as error:
            raise ValueError(f"method: hilacam cannot explain this model ({error})") from None


def applicable_methods(model: nn.Module) -> list[str]:
    """The keys of ``METHODS`` that can explain ``model``, in order."""
    usable = []
    for method in METHODS:
        try:
            check_method(model, method)
        except ValueError:
            continue
        usable.append(method)
    return usable


def explain_maps(
    model: nn.Module,
    images: Tensor,
    text: Tensor,
    method: str,
    topk: int | float | None,
    show_progress: bool = False,
    layer: nn.Module | None = None,
    perturbations_per_eval: int | None = None,
    precision: str | torch.dtype | None = None,
) -> Tensor:
    """Maps ``(N, T, h, w)`` of one method for T prompts per image (``text`` is ``(N, T, D)``).

    The CAMs give layer-resolution maps; Occlusion, IntegratedGradients and Saliency give
    pixel maps ``(N, T, H, W)``; ``uniform`` is the constant map ``1`` at image resolution,
    a baseline that carries no information. ``topk`` matters to gScoreCAM only (None: its
    per-tower default, ``checks.default_topk``). ``layer`` replaces the CAMs' layer;
    ``perturbations_per_eval`` (masked or occluded images per forward pass; None: the default)
    matters to gScoreCAM, ScoreCAM and Occlusion; so does ``precision`` to gScoreCAM and
    ScoreCAM (the precision of their masked passes, ``GScoreCAM.attribute``'s).

    Captum's methods run as ours do: one call per model at a time, in eval mode, the model's
    modes restored afterwards. LayerGradCam is Captum's, through CLIPSimilarity, at
    ``gradcam_layer(model)`` (the block before the last on class-token-pooled ViTs, where the
    last block's map is zero).
    """
    check_method(model, method)
    if method == "uniform":
        return images.new_ones(images.shape[0], text.shape[1], *images.shape[-2:])
    if method in PIXEL_METHODS:
        with exclusive(model), restored(model):
            return _pixel_maps(model, images, text, method, show_progress, perturbations_per_eval)
    if method == "gradcam":
        return _gradcam_maps(model, images, text, layer or gradcam_layer(model))
    if method == "hilacam":
        return HilaCAM(model).attribute(images, target=text)
    cam = GScoreCAM if method == "gscorecam" else ScoreCAM
    options = {"topk": topk} if method == "gscorecam" else {}
    return cam(model, layer or default_layer(model)).attribute(
        images,
        target=text,
        perturbations_per_eval=perturbations_per_eval,
        show_progress=show_progress,
        precision=precision,
        **options,
    )


def _gradcam_maps(model: nn.Module, images: Tensor, text: Tensor, layer: nn.Module) -> Tensor:
    """Captum's LayerGradCam at ``layer``, one prompt at a time."""
    similarity = CLIPSimilarity(model)
    with exclusive(model), restored(model), grid_tap(model, layer) as grid_layer:
        gradcam = LayerGradCam(similarity, grid_layer)
        maps = [
            gradcam.attribute(images, additional_forward_args=(text[:, t],), relu_attributions=True)
            for t in range(text.shape[1])
        ]
    return torch.cat(maps, dim=1).detach()


def _pixel_maps(
    model: nn.Module,
    images: Tensor,
    text: Tensor,
    method: str,
    show_progress: bool,
    perturbations_per_eval: int | None = None,
) -> Tensor:
    """Captum's pixel attributions, one prompt at a time, reduced over colour channels.

    ``map = sum_c attr_c``: Occlusion's score drops and IntegratedGradients' signed
    contributions (positive = evidence for the prompt); Saliency's ``|d s / d x|``. Both
    baselines are 0, the mean colour of CLIP's normalised images.
    """
    similarity = CLIPSimilarity(model)
    maps = [
        _pixel_attribution(
            similarity, images, text[:, t], method, show_progress, perturbations_per_eval
        )
        for t in range(text.shape[1])
    ]
    return torch.stack([m.sum(dim=1) for m in maps], dim=1).detach()


def _pixel_attribution(
    similarity: CLIPSimilarity,
    images: Tensor,
    text: Tensor,
    method: str,
    show_progress: bool,
    perturbations_per_eval: int | None = None,
) -> Tensor:
    """Attributions ``(N, 3, H, W)`` of ``logit_scale * cos(image, text)`` for one prompt."""
    if method == "occlusion":
        channels, height, width = images.shape[1:]
        window = (
            channels,
            max(1, round(height * OCCLUSION_WINDOW)),
            max(1, round(width * OCCLUSION_WINDOW)),
        )
        stride = (channels, max(1, window[1] // 2), max(1, window[2] // 2))
        return Occlusion(similarity).attribute(
            images,
            sliding_window_shapes=window,
            strides=stride,
            additional_forward_args=(text,),
            perturbations_per_eval=perturbations_per_eval or BATCH,
            show_progress=show_progress,
        )
    if method == "integrated_gradients":
        return IntegratedGradients(similarity).attribute(
            images, additional_forward_args=(text,), n_steps=IG_STEPS, internal_batch_size=BATCH
        )
    # A leaf that requires grad, so Captum need not flip (and warn about) the caller's tensor.
    leaf = images.detach().requires_grad_(True)
    return Saliency(similarity).attribute(leaf, additional_forward_args=(text,), abs=True)
