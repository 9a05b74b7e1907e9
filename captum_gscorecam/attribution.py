"""gScoreCAM and ScoreCAM as Captum layer attributions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import GradientAttribution, LayerAttribution, PerturbationAttribution
from torch import Tensor, nn

from captum_gscorecam.checks import (
    check_flag,
    check_not_meta,
    check_perturbations_per_eval,
    check_tolerance,
    check_topk,
    describe,
)
from captum_gscorecam.clip import CLIPSimilarity
from captum_gscorecam.engine import Scorer, default_chunk, exclusive, restored, score_cam
from captum_gscorecam.grids import CustomGrid, LayerGrid
from captum_gscorecam.precision import Precision, ReducedTower, resolve_precision, warn_if_slow
from captum_gscorecam.scorers import (
    ReducedTextScorer,
    TextScorer,
    make_scorer,
    model_images,
    model_of,
)
from captum_gscorecam.towers import is_clip_model

__all__ = ["GScoreCAM", "ScoreCAM"]


class _MaskedLayerCAM(LayerAttribution):
    """Argument handling shared by GScoreCAM and ScoreCAM; the engine does the work."""

    def __init__(
        self,
        forward_func: Callable[..., Tensor] | nn.Module,
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        if device_ids is not None:
            raise ValueError(
                "device_ids: DataParallel models are not supported; pass the underlying model"
            )
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer: expected a torch.nn.Module, got {type(layer).__name__}")
        if is_clip_model(forward_func):
            forward_func = CLIPSimilarity(forward_func)
        elif not callable(forward_func):
            raise TypeError(
                "forward_func: expected a CLIP model or a callable, "
                f"got {type(forward_func).__name__}"
            )
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        # the model the calls touch: locked, put in eval mode, its tower's token layout read
        self.model = model_of(self.forward_func)
        # the reduced-precision image tower of the last call with `precision`, kept for the next
        self.reduced_tower: ReducedTower | None = None

    def _attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object,
        additional_forward_args: Any,
        *,
        rank_by_gradient: bool,
        topk: int | float | None = None,
        perturbations_per_eval: int | None,
        relu_attributions: bool,
        attribute_to_layer_input: bool,
        reshape_transform: Callable[[Tensor], Tensor] | None,
        show_progress: bool,
        early_stop: float | None = None,
        authors_code: bool,
        precision: str | torch.dtype | None,
    ) -> Tensor:
        """The maps of :meth:`attribute`: arguments checked, the scorers made, the engine run."""
        images = check_inputs(inputs)
        authors_code = check_flag(authors_code, "authors_code")
        resolve_precision(precision, images.device)  # checked before the model is touched
        perturbations_per_eval = check_perturbations_per_eval(perturbations_per_eval)
        relu_attributions = check_flag(relu_attributions, "relu_attributions")
        attribute_to_layer_input = check_flag(attribute_to_layer_input, "attribute_to_layer_input")
        show_progress = check_flag(show_progress, "show_progress")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(
                "reshape_transform: expected None or a callable, "
                f"got {type(reshape_transform).__name__}"
            )
        view = (
            CustomGrid(reshape_transform)
            if reshape_transform is not None
            else LayerGrid.for_model(self.model)
        )
        with exclusive(self.model), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            # the copy serves text scores only: for anything else "auto" is the model itself
            tower_model = self.model if isinstance(scorer, TextScorer) else None
            resolved = resolve_precision(precision, x.device, tower_model)
            warn_if_slow(resolved, x.device, tower_model, stacklevel=3)
            masked_scorer = self._masked_scorer(scorer, resolved, x)
            with restored(self.model):
                maps = score_cam(
                    scorer,
                    self.layer,
                    x,
                    view,
                    rank_by_gradient=rank_by_gradient,
                    topk=topk,
                    perturbations_per_eval=perturbations_per_eval or default_chunk(x.device),
                    relu=relu_attributions,
                    layer_input=attribute_to_layer_input,
                    progress=self.get_name() if show_progress else None,
                    masked_scorer=masked_scorer,
                    early_stop=early_stop,
                    authors_code=authors_code,
                )
        return maps.to(images.device)

    def _masked_scorer(self, scorer: Scorer, precision: Precision, images: Tensor) -> Scorer | None:
        """The masked passes' scorer: a copy of the image tower for ``precision`` (cached on
        this object, remade when the model's tower changes; ``images`` probe which of its
        layers run) or None, the capture pass's scorer, for ``"fp32"``.
        """
        if precision.name == "fp32":
            return None
        if not isinstance(scorer, TextScorer):
            raise ValueError(
                "precision: a reduced-precision image tower needs a CLIP model as forward_func "
                f"and text embeddings as target (asked: {precision.name!r}); use precision=None"
            )
        copy = self.reduced_tower
        if copy is None or not copy.matches(self.model, precision.name):
            self.reduced_tower = None  # the stale copy goes before the next one is made
            self.reduced_tower = ReducedTower(self.model, precision.name, images[:1])
        return ReducedTextScorer(self.reduced_tower, scorer)


class GScoreCAM(_MaskedLayerCAM, GradientAttribution):
    r"""gScoreCAM: ScoreCAM over the channels with the largest mean gradient.

    For an image x and a text t, with the score ``s(x) = logit_scale * cos(f(x), t)``, layer
    activations ``A`` and their gradient ``G``: ``alpha_c = mean_{h,w} G_c``; S = the ``topk``
    channels of largest alpha; ``M_c = minmax(upsample(A_c))``; ``w = softmax_{c in S} s(x * M_c)``;
    the map is ``relu(sum_{c in S} w_c A_c)`` at the layer's resolution. Upsample it with
    ``LayerAttribution.interpolate``, or place it on the original photo with
    ``visualization.to_photo``.

    Calls on one model are serialised (a per-model lock), run in eval mode and leave the
    model's modes as found; they work under ``torch.no_grad()`` and ``torch.inference_mode()``.

    Chen et al., "gScoreCAM: What objects is CLIP looking at?", ACCV 2022.
    https://arxiv.org/abs/2210.02874
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor] | nn.Module,
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model (anything with
                        ``encode_image`` and ``logit_scale``, such as open_clip's CLIP), which
                        is wrapped in :class:`CLIPSimilarity`, or any forward function that
                        returns scores ``(N,)`` or ``(N, K)``.
            layer (torch.nn.Module): The layer whose channels make the masks and the map,
                        e.g. ``default_layer(model)``. Its output is ``(N, C, h, w)`` or
                        ViT tokens ``(N, L, D)`` / ``(L, N, D)``.
            device_ids (list[int], optional): Kept for Captum's signature; DataParallel
                        models are not supported, so it must be None.
        """
        _MaskedLayerCAM.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, self.forward_func)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the paper writes it."""
        return "gScoreCAM"

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object = None,
        additional_forward_args: Any = None,
        topk: int | float | None = None,
        perturbations_per_eval: int | None = None,
        relu_attributions: bool = True,
        attribute_to_layer_input: bool = False,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        show_progress: bool = False,
        early_stop: float | None = None,
        authors_code: bool = False,
        precision: str | torch.dtype | None = None,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Images ``(N, 3, H, W)``, float, already preprocessed for the
                        model (CLIP-normalised, at the size its tower takes, see
                        :func:`~captum_gscorecam.towers.image_input`). With a CLIP model they
                        are converted to the model's dtype and device.
            target (Tensor, int, tuple, list, optional): With a CLIP model, a floating-point
                        tensor is a text embedding: ``(D,)`` for every image or ``(N, D)`` one
                        per image (output ``(N, 1, h, w)``), or ``(N, T, D)``, T prompts per
                        image (output ``(N, T, h, w)``); it must be finite and not zero.
                        Anything else has Captum's meaning: the index of the score returned
                        by ``forward_func`` (a CLIP model then needs the text embedding as
                        ``additional_forward_args``).
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``
                        after the inputs; tensors with N rows are split per example. For a
                        :class:`CLIPSimilarity` (Captum's way): the text embedding.
                        Default: None
            topk (int or float, optional): Channels kept by the gradient ranking: a count
                        (clipped to C) or a fraction of C in (0, 1], rounded up.
                        Default: None, ``checks.default_topk``: 10% of the channels of a
                        convolutional layer (the paper's choice, 300 of RN50x16's 3,072),
                        50% of a ViT token layer's, where the class token's gradient ranks
                        channels barely better than chance and every added channel helps
                        (``benchmarks/results/topk-vit.md``)
            perturbations_per_eval (int, optional): Masked images per forward pass. Memory
                        grows with it; results do not depend on it.
                        Default: None (16 on CPU, 64 on other devices)
            relu_attributions (bool, optional): Apply ReLU to the weighted sum.
                        Default: True
            attribute_to_layer_input (bool, optional): Use the layer's input instead of
                        its output.
                        Default: False
            reshape_transform (Callable, optional): Maps the layer output (and its
                        gradient) to ``(N, C, h, w)``. By default open_clip ViT tokens lose
                        their class token and take the square patch grid.
                        Default: None
            show_progress (bool, optional): Show a progress bar over the masked passes.
                        Default: False
            early_stop (float, optional): An opt-in approximation: score each image's
                        channels in descending gradient order, ``perturbations_per_eval``
                        at a time, and stop once a chunk changes no prompt's map by more
                        than this relative L1 amount; the map uses the channels scored so
                        far.
                        Default: None (exact: every kept channel is scored)
            authors_code (bool, optional): Reproduce the authors' released code, for
                        comparing with published numbers: masks upsampled with
                        ``align_corners=True``, and the softmax taken over all C channels
                        with score 0 for those outside the top k (which then enter the map
                        with that weight). False follows the paper's formula above.
                        Default: False
            precision (str or torch.dtype, optional): How the masked passes run (the
                        capture pass, the ranking and the weighting keep the model's own
                        precision): ``"fp32"`` on the model itself; ``"fp32-fast"`` (float
                        rounding apart, the same), ``"fp32-compiled"``, ``"bf16"``,
                        ``"fp16"`` or ``"int8"`` on a copy of its image tower
                        (:mod:`~captum_gscorecam.precision` says how each is made and when
                        it is faster), made on the first such call, kept in
                        ``reduced_tower`` (its memory: ``reduced_tower.nbytes``) and remade
                        whenever the model's image-tower weights change; ``"auto"`` the
                        fastest of these measured on this kind of device for this kind of
                        tower (:func:`~captum_gscorecam.precision.resolve_precision` says
                        which and why). ``torch.float32`` / ``bfloat16`` / ``float16`` name
                        ``"fp32"`` / ``"bf16"`` / ``"fp16"``. A precision that this device
                        runs slower than ``"fp32"`` warns. All but ``"fp32"`` and
                        ``"auto"`` need a CLIP model and text targets.
                        Default: None (``"fp32"``: the model's own precision, exact)

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)``, float32, on the inputs' device, at
            the layer's resolution (T = 1 unless the target holds T prompts per image).

        Examples::

            >>> cam = GScoreCAM(model, default_layer(model))
            >>> attr = cam.attribute(images, target=text_emb)  # (N, 1, h, w)
            >>> up = LayerAttribution.interpolate(attr, images.shape[-2:], "bilinear")
        """
        topk = check_topk(topk)
        early_stop = check_tolerance(early_stop, "early_stop", none_allowed=True)
        return self._attribute(
            inputs,
            target,
            additional_forward_args,
            rank_by_gradient=True,
            topk=topk,
            perturbations_per_eval=perturbations_per_eval,
            relu_attributions=relu_attributions,
            attribute_to_layer_input=attribute_to_layer_input,
            reshape_transform=reshape_transform,
            show_progress=show_progress,
            early_stop=early_stop,
            authors_code=authors_code,
            precision=precision,
        )


class ScoreCAM(_MaskedLayerCAM, PerturbationAttribution):
    r"""ScoreCAM: every channel of the layer, upsampled and min-max normalised, masks the
    input; the softmax of the masked scores weights the channels.

    ``map = relu(sum_c softmax_c(s(x * M_c)) A_c)``, with ``M_c = minmax(upsample(A_c))``.
    Same arguments as :class:`GScoreCAM` without ``topk`` and ``early_stop``; no backward pass
    is made. ``authors_code=True`` upsamples the masks with ``align_corners=True``, as
    pytorch-grad-cam's ScoreCAM (which the gScoreCAM authors compared) does.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020. https://arxiv.org/abs/1910.01279
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor] | nn.Module,
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        _MaskedLayerCAM.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, self.forward_func)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the paper writes it."""
        return "ScoreCAM"

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int | None = None,
        relu_attributions: bool = True,
        attribute_to_layer_input: bool = False,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        show_progress: bool = False,
        authors_code: bool = False,
        precision: str | torch.dtype | None = None,
    ) -> Tensor:
        """Maps ``(N, T, h, w)``; the arguments are those of :meth:`GScoreCAM.attribute`."""
        return self._attribute(
            inputs,
            target,
            additional_forward_args,
            rank_by_gradient=False,
            perturbations_per_eval=perturbations_per_eval,
            relu_attributions=relu_attributions,
            attribute_to_layer_input=attribute_to_layer_input,
            reshape_transform=reshape_transform,
            show_progress=show_progress,
            authors_code=authors_code,
            precision=precision,
        )


def check_inputs(inputs: Tensor | tuple[Tensor]) -> Tensor:
    """The image batch ``(N, C, H, W)`` of Captum-style ``inputs``, validated."""
    if isinstance(inputs, tuple) and len(inputs) == 1:
        inputs = inputs[0]
    if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        got = (
            f"a tuple of {len(inputs)} (these methods take one image tensor)"
            if isinstance(inputs, tuple)
            else describe(inputs)
        )
        raise ValueError(f"inputs: expected a 4-D float tensor (N, 3, H, W), got {got}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: expected at least one image, got an empty batch")
    check_not_meta(inputs, "inputs")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs: contains NaN or infinite values")
    return inputs
