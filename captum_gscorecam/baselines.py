"""Captum's attributions, and the uniform map, as explainers of CLIP's image-text score.

Each runs Captum's own method through :class:`~captum_gscorecam.clip.CLIPSimilarity` (the
forward function ``logit_scale * cos(image, text)``), never a re-implementation, and gives the
call every explainer of the registry has: ``attribute(images, target=text)`` with ``text``
``(N, T, D)``, maps ``(N, T, h, w)``. Captum's methods explain one prompt per call, so the T
prompts are explained one after the other. They run as ours do: one call per model at a time,
in eval mode, the model's modes restored afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion, Saliency
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_gscorecam.clip import CLIPSimilarity
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.grids import grid_tap

__all__ = [
    "CLIPIntegratedGradients",
    "CLIPLayerGradCam",
    "CLIPOcclusion",
    "CLIPSaliency",
    "Uniform",
]

# Occlusion's window is this fraction of the image side; it moves by half a window.
OCCLUSION_WINDOW = 1 / 7
IG_STEPS = 32
BATCH = 64


class CLIPLayerGradCam:
    """Captum's ``LayerGradCam`` at a layer of the image tower, ReLU applied.

    ``map = relu(sum_c mean_ij(dS / dA_cij) A_c)``; on a ViT the layer's tokens are seen as a
    grid (:func:`~captum_gscorecam.grids.grid_tap`).
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        r"""
        Args:

            model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
            layer (torch.nn.Module): The layer to explain, e.g. ``gradcam_layer(model)`` (the
                        block before the last on class-token ViTs, where the last block's map
                        is zero).
        """
        self.model = model
        self.layer = layer

    def attribute(self, inputs: Tensor, target: Tensor) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)``.
            target (Tensor): Text embeddings ``(N, T, D)``.

        Returns:
            *Tensor* ``(N, T, h, w)``: the maps on the layer's grid, detached.
        """
        similarity = CLIPSimilarity(self.model)
        model = self.model
        with exclusive(model), restored(model), grid_tap(model, self.layer) as grid_layer:
            gradcam = LayerGradCam(similarity, grid_layer)
            maps = [
                gradcam.attribute(
                    inputs, additional_forward_args=(target[:, t],), relu_attributions=True
                )
                for t in range(target.shape[1])
            ]
        return torch.cat(maps, dim=1).detach()


class _PixelAttribution:
    """A Captum pixel attribution of ``logit_scale * cos(image, text)``, summed over colour.

    ``map = sum_c attr_c``. The baseline of Occlusion and IntegratedGradients is 0, the mean
    colour of CLIP's normalised images.
    """

    def __init__(self, model: nn.Module) -> None:
        r"""
        Args:

            model (torch.nn.Module): A CLIP model (open_clip or Hugging Face).
        """
        self.model = model

    def attribute(self, inputs: Tensor, target: Tensor, **options: object) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)``.
            target (Tensor): Text embeddings ``(N, T, D)``.
            **options: The method's own options (Occlusion's ``perturbations_per_eval`` and
                        ``show_progress``).

        Returns:
            *Tensor* ``(N, T, H, W)``: the maps at the input's resolution, detached.
        """
        similarity = CLIPSimilarity(self.model)
        with exclusive(self.model), restored(self.model):
            maps = [
                self._one_prompt(similarity, inputs, target[:, t], **options).sum(dim=1)
                for t in range(target.shape[1])
            ]
        return torch.stack(maps, dim=1).detach()

    def _one_prompt(
        self, similarity: CLIPSimilarity, images: Tensor, text: Tensor, **options: object
    ) -> Tensor:
        """Attributions ``(N, 3, H, W)`` for one prompt ``text`` ``(N, D)``."""
        raise NotImplementedError


class CLIPOcclusion(_PixelAttribution):
    """Captum's ``Occlusion``: the score's drop when a window takes the mean colour.

    The window is a seventh of the image side and moves by half a window.
    """

    def attribute(
        self,
        inputs: Tensor,
        target: Tensor,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)``.
            target (Tensor): Text embeddings ``(N, T, D)``.
            perturbations_per_eval (int, optional): Occluded images per forward pass.
                        Default: None (64)
            show_progress (bool, optional): A progress bar over the forward passes of all
                        prompts: ``T * (1 + ceil(windows / perturbations_per_eval))``.
                        Default: False

        Returns:
            *Tensor* ``(N, T, H, W)``: the summed score drops, detached.
        """
        batch = perturbations_per_eval or BATCH
        window, stride = _occlusion_window(inputs)
        sides = zip(inputs.shape[2:], window[1:], stride[1:], strict=True)
        windows = math.prod(-(-(side - size) // step) + 1 for side, size, step in sides)
        passes = target.shape[1] * (1 + -(-windows // batch))
        # Captum's own bar counts pixels, not passes (0/2353 for 4 passes at 224 px)
        with tqdm(total=passes, desc="Occlusion", unit="pass", disable=not show_progress) as bar:
            return super().attribute(inputs, target, perturbations_per_eval=batch, progress=bar)

    def _one_prompt(
        self, similarity: CLIPSimilarity, images: Tensor, text: Tensor, **options: Any
    ) -> Tensor:
        progress = options.pop("progress")

        def counted(*args: Tensor) -> Tensor:
            scores = similarity(*args)
            progress.update()
            return scores

        window, stride = _occlusion_window(images)
        return Occlusion(counted).attribute(
            images,
            sliding_window_shapes=window,
            strides=stride,
            additional_forward_args=(text,),
            **options,
        )


def _occlusion_window(images: Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Occlusion's window and stride over ``(3, H, W)``: a seventh of a side, half-window steps."""
    channels, height, width = images.shape[1:]
    window = (
        channels,
        max(1, round(height * OCCLUSION_WINDOW)),
        max(1, round(width * OCCLUSION_WINDOW)),
    )
    return window, (channels, max(1, window[1] // 2), max(1, window[2] // 2))


class CLIPIntegratedGradients(_PixelAttribution):
    """Captum's ``IntegratedGradients`` from the mean-colour image, in 32 steps; signed
    (positive: evidence for the prompt).
    """

    def _one_prompt(
        self, similarity: CLIPSimilarity, images: Tensor, text: Tensor, **options: object
    ) -> Tensor:
        return IntegratedGradients(similarity).attribute(
            images, additional_forward_args=(text,), n_steps=IG_STEPS, internal_batch_size=BATCH
        )


class CLIPSaliency(_PixelAttribution):
    """Captum's ``Saliency``: ``|dS / dx|``."""

    def _one_prompt(
        self, similarity: CLIPSimilarity, images: Tensor, text: Tensor, **options: object
    ) -> Tensor:
        # A leaf that requires grad, so Captum need not flip (and warn about) the caller's tensor.
        leaf = images.detach().requires_grad_(True)
        return Saliency(similarity).attribute(leaf, additional_forward_args=(text,), abs=True)


class Uniform:
    """The constant map ``1`` at the input's resolution: the baseline that knows nothing."""

    def __init__(self, model: nn.Module) -> None:
        r"""
        Args:

            model (torch.nn.Module): The model (not used: the map does not depend on it).
        """
        self.model = model

    def attribute(self, inputs: Tensor, target: Tensor) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Images ``(N, 3, H, W)``.
            target (Tensor): Text embeddings ``(N, T, D)``.

        Returns:
            *Tensor* ``(N, T, H, W)`` of ones.
        """
        return inputs.new_ones(inputs.shape[0], target.shape[1], *inputs.shape[-2:])
