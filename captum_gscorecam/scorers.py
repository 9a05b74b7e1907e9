"""Scorers: what the engine calls for the capture pass and the masked passes.

A scorer maps images ``(B, 3, H, W)`` that came from input images ``image_index`` ``(B,)`` to
scores ``(B, T)``, one per prompt of that input image (:class:`~captum_gscorecam.engine.Scorer`):

- :class:`TextScorer`: a CLIP model against each input image's text embeddings;
- :class:`ReducedTextScorer`: the same scores from a reduced-precision copy of the image tower;
- :class:`TargetScorer`: any forward function at Captum's ``target``, with its
  ``additional_forward_args``.

:func:`make_scorer` picks one from an attribution call's Captum-style arguments,
:func:`model_of` names the model the call touches, and :func:`model_images` checks and
converts the images for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Integral
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from captum_gscorecam.checks import check_not_meta, describe
from captum_gscorecam.clip import MIN_TEXT_NORM, CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.engine import Scorer
from captum_gscorecam.towers import tower_images

if TYPE_CHECKING:
    from captum_gscorecam.precision import ReducedTower

__all__ = [
    "ReducedTextScorer",
    "TargetScorer",
    "TextScorer",
    "make_scorer",
    "model_images",
    "model_of",
    "target_index",
]


class TextScorer:
    """Scores images against the text embeddings of the input image they belong to.

    A masked image of input n gets ``(T,)`` scores, one per prompt, from a single pass through
    the image tower. The images are the caller's, already checked (:func:`model_images`).

    Args:

        similarity (CLIPSimilarity): The CLIP model's score.
        text (Tensor): Text embeddings ``(N, T, D)``, T prompts per input image.
        name (str, optional): The argument the text came from, named in errors.
                    Default: ``"target"``
    """

    def __init__(self, similarity: CLIPSimilarity, text: Tensor, name: str = "target") -> None:
        self.similarity = similarity
        self.text = text
        self.name = name

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        """Scores ``(B, T)``: ``logit_scale * cos`` with the prompts of each image's input."""
        image_emb = self.similarity.embed_images(images)
        return self.similarity.score_embeddings(image_emb, self.text[image_index], self.name)


class ReducedTextScorer:
    """:class:`TextScorer`'s scores with the image embeddings of a reduced-precision tower copy:
    ``logit_scale * cos`` in float32, shape ``(B, T)``.

    Args:

        tower (ReducedTower): The copy of the model's image tower in bf16 or fp16.
        scorer (TextScorer): The full-precision scorer whose texts and scale are used.
    """

    def __init__(self, tower: ReducedTower, scorer: TextScorer) -> None:
        self.tower = tower
        self.similarity = scorer.similarity
        self.text = scorer.text

    def calibrate(self, images: Tensor) -> None:
        """Calibrate the copy (its int8 activation ranges) on masked images of this call."""
        self.tower.calibrate(images)

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        """Scores ``(B, T)`` of ``images`` against their input images' prompts."""
        embeddings = self.tower.embed_images(images)
        return self.similarity.score_embeddings(embeddings, self.text[image_index])


def target_index(target: object, n: int, device: torch.device) -> Tensor:
    """Captum's target as an index tensor ``(N, r)`` into the output ``(N, *dims)`` (r = len(dims)).

    ``None`` -> ``(N, 0)``; an int or a one-element integer tensor -> the same index for every
    example; a tuple of ints -> the same multi-index; a list of N ints (or 0-dim integer
    tensors) or N tuples of one length, or an integer tensor of N elements -> one per example.
    Indices are integers: bools, floats, strings, None, nested lists and ragged lists are
    refused, never rounded or coerced.

    Args:

        target (object): Captum's ``target``.
        n (int): The number of examples N.
        device (torch.device): The device of the index tensor.

    Returns:
        A long tensor ``(N, r)``.
    """
    if target is None:
        return torch.zeros((n, 0), dtype=torch.long, device=device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                "target: a tensor target must hold integer indices (a floating-point tensor is "
                "a text embedding, which needs a CLIP model as forward_func)"
            )
        check_not_meta(target, "target")
        if target.numel() == 1:
            return target.reshape(1, 1).to(device, torch.long).expand(n, 1)
        if target.dim() == 1 and target.numel() == n:
            return target.reshape(n, 1).to(device, torch.long)
        raise ValueError(
            f"target: expected an integer tensor of 1 or {n} elements, "
            f"got shape {tuple(target.shape)}"
        )
    if isinstance(target, tuple):
        row = _index_row(target, "")
        return torch.tensor([row], dtype=torch.long, device=device).expand(n, len(row))
    if isinstance(target, list):
        if len(target) != n:
            raise ValueError(
                f"target: a list target needs one entry per example ({n}), got {len(target)}"
            )
        rows = [
            _index_row(entry if isinstance(entry, tuple) else (entry,), f" in entry {i}")
            for i, entry in enumerate(target)
        ]
        if len({len(row) for row in rows}) != 1:
            raise ValueError(
                "target: every entry of a list target must index the same number of dims, "
                f"got lengths {sorted({len(row) for row in rows})}"
            )
        return torch.tensor(rows, dtype=torch.long, device=device)
    if isinstance(target, Integral):  # a bool too, which _index refuses
        return torch.full((n, 1), _index(target, ""), dtype=torch.long, device=device)
    raise TypeError(
        f"target: expected None, an int, a tuple, a list or a tensor, got {describe(target)}"
    )


def _is_index(value: object) -> bool:
    """An int (not a bool) or a 0-dim integer tensor."""
    if isinstance(value, Tensor):
        return value.dim() == 0 and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        )
    return isinstance(value, Integral) and not isinstance(value, bool)


def _index(value: object, where: str) -> int:
    """``value`` as an int64 index; anything else is an error naming ``target`` (and ``where``)."""
    if not _is_index(value):
        raise TypeError(
            "target: expected integer indices (an int, or a 0-dim integer tensor; not a bool, "
            f"float, string or list), got {describe(value)}{where}"
        )
    if isinstance(value, Tensor):
        check_not_meta(value, "target")
    index = int(value)
    if not -(2**63) <= index < 2**63:
        raise ValueError(f"target: index {index}{where} is out of range for any output")
    return index


def _index_row(row: tuple, where: str) -> tuple[int, ...]:
    """A multi-index: a non-empty tuple of integer indices."""
    if not row:
        raise ValueError(f"target: an empty tuple{where} indexes nothing")
    return tuple(_index(value, where) for value in row)


class TargetScorer:
    """Scores ``forward_func(images, *additional_forward_args)`` at Captum's ``target``.

    Tensor arguments whose first dimension is N are indexed per masked image; all other
    arguments are passed as they are.

    Args:

        forward_func (Callable): Returns scores ``(B,)`` or ``(B, *dims)`` for images ``(B, ...)``.
        target (object): Captum's ``target`` (see :func:`target_index`).
        additional_forward_args (Any): Captum's ``additional_forward_args``.
        n (int): The number of input images N.
        device (torch.device): The device of the target index.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        target: object,
        additional_forward_args: Any,
        n: int,
        device: torch.device,
    ) -> None:
        self.forward_func = forward_func
        self.index = target_index(target, n, device)
        if additional_forward_args is None:
            additional_forward_args = ()
        elif not isinstance(additional_forward_args, tuple):
            additional_forward_args = (additional_forward_args,)
        _check_arity(forward_func, len(additional_forward_args))
        # tensors made under torch.inference_mode cannot be saved for the backward pass
        self.args = tuple(
            arg.clone() if isinstance(arg, Tensor) and arg.is_inference() else arg
            for arg in additional_forward_args
        )
        self.n = n

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        """Scores ``(B, 1)`` of ``forward_func`` at the target of each image's source."""
        args = [
            arg[image_index]
            if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == self.n
            else arg
            for arg in self.args
        ]
        output = self.forward_func(images, *args)
        return self._select(output, image_index).unsqueeze(1)

    def _select(self, output: Tensor, image_index: Tensor) -> Tensor:
        b = image_index.shape[0]
        if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != b:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                "forward_func: expected a tensor of scores with one row per example "
                f"({b}), got {shape}"
            )
        if not output.is_floating_point():
            raise TypeError(f"forward_func: expected floating-point scores, got {output.dtype}")
        rank = self.index.shape[1]
        if rank == 0:
            if output.numel() != b:
                raise ValueError(
                    f"target: forward_func returns {tuple(output.shape)} per batch; "
                    "a target is needed to pick one score per example"
                )
            return output.reshape(b)
        if output.dim() - 1 != rank:
            raise ValueError(
                f"target: indexes {rank} output dim(s), but forward_func returns shape "
                f"{tuple(output.shape)}"
            )
        rows = self.index[image_index].to(output.device)
        sizes = torch.tensor(output.shape[1:], device=output.device)
        outside = (rows >= sizes) | (rows < -sizes)
        if bool(outside.any()):
            row, dim = outside.nonzero()[0].tolist()
            raise ValueError(
                f"target: index {int(rows[row, dim])} is out of range for dim {dim + 1} of "
                f"forward_func's output of shape {tuple(output.shape)}"
            )
        return output[(torch.arange(b, device=output.device), *rows.unbind(1))]


def _check_arity(forward_func: Callable[..., Tensor], n_args: int) -> None:
    """Raise naming ``additional_forward_args`` if ``forward_func(inputs, *args)`` cannot bind."""
    function = forward_func.forward if isinstance(forward_func, nn.Module) else forward_func
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins and C extensions may have none
        return
    try:
        signature.bind(None, *([None] * n_args))
    except TypeError:
        raise TypeError(
            f"additional_forward_args: forward_func{signature} cannot take the inputs and "
            f"{n_args} additional argument(s)"
        ) from None


def model_of(forward_func: Callable[..., Tensor]) -> nn.Module | None:
    """The model an attribution call touches (hooks, modes), whose lock the call holds.

    Args:

        forward_func (Callable): A :class:`CLIPSimilarity` or :class:`ZeroShotClassifier`
                    (their CLIP model), another module (itself), a bound method such as
                    ``model.forward`` (its module) or a plain callable.

    Returns:
        The model, or None for a plain callable, whose model cannot be seen.
    """
    if isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
        return forward_func.model
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def model_images(forward_func: Callable[..., Tensor], images: Tensor) -> Tensor:
    """The images as ``forward_func`` takes them, usable by autograd.

    For a CLIP model (its :class:`CLIPSimilarity` or :class:`ZeroShotClassifier`): checked
    against the tower's channels and size and converted to its dtype and device. Images made
    under ``torch.inference_mode`` are copied (autograd cannot record them).

    Args:

        forward_func (Callable): The attribution's forward function.
        images (Tensor): The checked inputs ``(N, C, H, W)``.

    Returns:
        The images ``(N, C, H, W)`` for ``forward_func``.
    """
    if isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
        images = tower_images(forward_func.model, images, "inputs")
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

    Args:

        forward_func (Callable): The attribution's forward function.
        images (Tensor): The images from :func:`model_images` ``(N, C, H, W)``.
        target (object): The call's ``target``: a text embedding or Captum's index.
        additional_forward_args (Any): The call's ``additional_forward_args``.

    Returns:
        A :class:`TextScorer` or a :class:`TargetScorer`.
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
    check_not_meta(text, name)
    if not bool(text.isfinite().all()):
        raise ValueError(f"{name}: the text embedding contains NaN or infinite values")
    if bool((text.norm(dim=-1) <= MIN_TEXT_NORM).any()):
        raise ValueError(f"{name}: a text embedding is all zeros (it matches no image)")
    if text.dim() == 1:
        return text.expand(n, 1, -1)
    return text.unsqueeze(1) if text.dim() == 2 else text
