"""gScoreCAM and ScoreCAM as Captum layer attributions."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import GradientAttribution, LayerAttribution, PerturbationAttribution
from torch import Tensor, nn

from captum_gscorecam.checks import (
    check_flag,
    check_perturbations_per_eval,
    check_tolerance,
    check_topk,
    describe,
)
from captum_gscorecam.clip import (
    CLIPSimilarity,
    CustomGrid,
    LayerGrid,
    TextScorer,
    ZeroShotClassifier,
    is_clip_model,
)
from captum_gscorecam.clip import model_images as clip_model_images
from captum_gscorecam.engine import (
    ALL_CHANNELS,
    Scorer,
    default_chunk,
    exclusive,
    restored,
    score_cam,
)
from captum_gscorecam.precision import (
    AutocastScorer,
    ReducedTextScorer,
    ReducedTower,
    resolve_precision,
)
from captum_gscorecam.targets import TargetScorer

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
        # the reduced-precision image tower of the last call with `precision`, kept for the next
        self.reduced_tower: ReducedTower | None = None

    def _attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object,
        additional_forward_args: Any,
        topk: int | float | str | None,
        perturbations_per_eval: int | None,
        relu_attributions: bool,
        attribute_to_layer_input: bool,
        reshape_transform: Callable[[Tensor], Tensor] | None,
        show_progress: bool,
        autocast: torch.dtype | None,
        early_stop: float | None = None,
        authors_code: bool = False,
        precision: str | torch.dtype | None = None,
    ) -> Tensor:
        images = check_inputs(inputs)
        authors_code = check_flag(authors_code, "authors_code")
        if autocast is not None:
            precision = _deprecated_autocast(autocast, precision)
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
        model = getattr(self.forward_func, "model", None)
        view = (
            CustomGrid(reshape_transform)
            if reshape_transform is not None
            else LayerGrid.for_model(model)
        )
        module = self.forward_func if isinstance(self.forward_func, nn.Module) else None
        with exclusive(model_of(self.forward_func)), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            dtype = resolve_precision(precision, x.device)
            masked_scorer = self._masked_scorer(scorer, dtype, autocast)
            with restored(module):
                maps = score_cam(
                    scorer,
                    self.layer,
                    x,
                    view,
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

    def _masked_scorer(
        self, scorer: Scorer, dtype: torch.dtype | None, autocast: torch.dtype | None
    ) -> Scorer | None:
        """The masked passes' scorer: the image tower copied in ``dtype`` (cached on this
        object, remade when the model's tower changes) or None, the capture pass's scorer.
        """
        if dtype is None:
            return None
        if not isinstance(scorer, TextScorer):
            if autocast is not None:  # the deprecated option on a non-CLIP forward function
                return AutocastScorer(scorer, autocast)
            raise ValueError(
                "precision: a reduced-precision image tower needs a CLIP model as forward_func "
                "and text embeddings as target; use precision=None"
            )
        model = scorer.similarity.model
        if self.reduced_tower is None or not self.reduced_tower.matches(model, dtype):
            self.reduced_tower = None  # the stale copy goes before the next one is made
            self.reduced_tower = ReducedTower(model, dtype)
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
        autocast: torch.dtype | None = None,
        early_stop: float | None = None,
        authors_code: bool = False,
        precision: str | torch.dtype | None = None,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Images ``(N, 3, H, W)``, float, already preprocessed for the
                        model (CLIP-normalised, at the size its tower takes, see
                        :func:`~captum_gscorecam.clip.image_input`). With a CLIP model they
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
                        Default: None (16 on CPU, where small batches measured fastest,
                        64 on other devices)
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
            autocast (torch.dtype, optional): Deprecated: use ``precision``, which it
                        now means (with a FutureWarning) for CLIP models; other forward
                        functions keep ``torch.autocast`` until it is removed.
                        Default: None
            early_stop (float, optional): An opt-in approximation: score each image's
                        channels in descending gradient order, ``perturbations_per_eval``
                        at a time, and stop once a chunk changes no prompt's map by more
                        than this relative L1 amount; the map uses the channels scored so
                        far. The README states the measured error and saving.
                        Default: None (exact: every kept channel is scored)
            authors_code (bool, optional): Reproduce the authors' released code, for
                        comparing with published numbers: masks upsampled with
                        ``align_corners=True``, and the softmax taken over all C channels
                        with score 0 for those outside the top k (which then enter the map
                        with that weight). False follows the paper's formula above.
                        Default: False
            precision (str or torch.dtype, optional): The precision of the masked passes:
                        ``torch.bfloat16`` / ``"bf16"`` or ``torch.float16`` / ``"fp16"``
                        run them on a copy of the image tower in that dtype (channels-last
                        on CPU), made on the first such call, kept in ``reduced_tower``
                        (its memory: ``reduced_tower.nbytes``) and remade when the model's
                        weights change in place; ``"auto"`` picks what
                        :func:`~captum_gscorecam.precision.resolve_precision` picks for the
                        model's device. The capture pass, the ranking and the weighting keep
                        the model's precision. Needs a CLIP model and text targets. The
                        README states the measured speed and map change.
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
            topk,
            perturbations_per_eval,
            relu_attributions,
            attribute_to_layer_input,
            reshape_transform,
            show_progress,
            autocast,
            early_stop,
            authors_code,
            precision,
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
        autocast: torch.dtype | None = None,
        authors_code: bool = False,
        precision: str | torch.dtype | None = None,
    ) -> Tensor:
        """Maps ``(N, T, h, w)``; the arguments are those of :meth:`GScoreCAM.attribute`."""
        return self._attribute(
            inputs,
            target,
            additional_forward_args,
            ALL_CHANNELS,
            perturbations_per_eval,
            relu_attributions,
            attribute_to_layer_input,
            reshape_transform,
            show_progress,
            autocast,
            authors_code=authors_code,
            precision=precision,
        )


def _deprecated_autocast(
    autocast: torch.dtype, precision: str | torch.dtype | None
) -> str | torch.dtype | None:
    """``precision`` as the deprecated ``autocast`` asks for it, with a FutureWarning."""
    if not (isinstance(autocast, torch.dtype) and autocast.is_floating_point):
        raise TypeError(f"autocast: expected None or a floating torch.dtype, got {autocast!r}")
    if precision is not None:
        raise ValueError("autocast: deprecated in favour of precision; pass only precision")
    warnings.warn(
        f"autocast is deprecated and will be removed; use precision={autocast} (a copy of the "
        "image tower in that dtype, faster than torch.autocast on every tower measured)",
        FutureWarning,
        stacklevel=4,
    )
    return autocast


def model_of(forward_func: Callable[..., Tensor]) -> nn.Module | None:
    """The model an attribution call touches (hooks, modes), whose lock the call holds.

    None for a plain callable, whose model cannot be seen.
    """
    if isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
        return forward_func.model
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)  # a bound method such as model.forward
    return owner if isinstance(owner, nn.Module) else None


def model_images(forward_func: Callable[..., Tensor], images: Tensor) -> Tensor:
    """The images as ``forward_func`` takes them, usable by autograd.

    For a CLIP model (its CLIPSimilarity or ZeroShotClassifier): checked against the tower's
    channels and size and converted to its dtype and device
    (:func:`~captum_gscorecam.clip.model_images`). Images made under ``torch.inference_mode``
    are copied (autograd cannot record them).
    """
    if isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
        images = clip_model_images(forward_func.model, images, "inputs")
    return images.clone() if images.is_inference() else images


def make_scorer(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    target: object,
    additional_forward_args: Any,
) -> Scorer:
    """The per-image scorer of a call: text embeddings with a CLIP model, else Captum's target.

    With a :class:`CLIPSimilarity` the text embedding is the target, or (Captum's way) the one
    additional forward argument, with ``target`` indexing its scores.
    """
    n = images.shape[0]
    clip = isinstance(forward_func, CLIPSimilarity)
    if isinstance(target, Tensor) and target.is_floating_point():
        if not clip:
            raise TypeError(
                "target: a floating-point target is a text embedding and needs a CLIP model "
                "(or CLIPSimilarity) as forward_func; use integer targets for other models"
            )
        if additional_forward_args is not None:
            raise ValueError(
                "additional_forward_args: must be None when target is a text embedding"
            )
        text = _text_per_image(target, n, "target").to(images.device)
        return TextScorer(forward_func, text.clone() if text.is_inference() else text)
    if clip and additional_forward_args is None:
        raise ValueError(
            "target: a CLIP model scores images against a text embedding; expected a float "
            "tensor (D,), (N, D) or (N, T, D) such as encode_text(model, tokenizer, prompts), "
            f"got {describe(target)} (for class indices, wrap the model and the class texts "
            "in ZeroShotClassifier(model, text_emb))"
        )
    if clip:
        args = additional_forward_args
        args = args if isinstance(args, tuple) else (args,)
        if len(args) != 1 or not (isinstance(args[0], Tensor) and args[0].is_floating_point()):
            raise TypeError(
                "additional_forward_args: CLIPSimilarity takes one additional argument, a "
                "float text embedding (D,), (N, D) or (N, T, D), got "
                f"{', '.join(describe(arg) for arg in args) or 'none'}"
            )
        text = _text_per_image(args[0], n, "additional_forward_args")
        if target is None:  # Captum's way: the text embedding as the forward's argument
            text = text.to(images.device)
            text = text.clone() if text.is_inference() else text
            return TextScorer(forward_func, text, "additional_forward_args")
    return TargetScorer(forward_func, target, additional_forward_args, n, images.device)


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
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs: contains NaN or infinite values")
    return inputs


def _text_per_image(text: Tensor, n: int, name: str) -> Tensor:
    """A text embedding (the argument ``name``) as ``(N, T, D)``, checked: finite, not zero."""
    if text.dim() not in (1, 2, 3) or text.shape[-1] == 0:
        raise ValueError(
            f"{name}: expected a text embedding (D,), (N, D) or (N, T, D), "
            f"got shape {tuple(text.shape)}"
        )
    if text.dim() > 1 and text.shape[0] != n:
        raise ValueError(
            f"{name}: text embeddings for {text.shape[0]} images, but inputs hold {n} "
            "(use shape (D,) for one text for every image)"
        )
    if text.dim() == 3 and text.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one prompt per image, got shape {tuple(text.shape)}"
        )
    if not bool(text.isfinite().all()):
        raise ValueError(f"{name}: the text embedding contains NaN or infinite values")
    # F.normalize's eps: below it, the cosine is 0 for every image (a constant score)
    if bool((text.norm(dim=-1) <= 1e-12).any()):
        raise ValueError(f"{name}: a text embedding is all zeros (it matches no image)")
    if text.dim() == 1:
        return text.expand(n, 1, -1)
    return text.unsqueeze(1) if text.dim() == 2 else text
