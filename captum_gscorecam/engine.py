"""The gScoreCAM / ScoreCAM computation: capture, channel ranking, masked scoring, weighting.

Per image n and prompt t, with layer activations ``A`` ``(C, h, w)`` and the gradient ``G``
of the score ``s``:

1. ``alpha_c = mean_{h,w} G_c``; ``S`` = the ``topk`` channels of largest alpha (all for ScoreCAM;
   by default ``checks.default_topk``: 10% of a convolutional layer's channels, 50% of a ViT's)
2. ``M_c = minmax(upsample_bilinear(A_c, (H, W)))``, ``minmax(u) = (u - min) / (max - min + 1e-6)``
3. ``s_c = s(x * M_c)`` (non-finite scores become 0, as in the authors' code, with a warning;
   a prompt whose masked scores are all non-finite is an error)
4. ``w = softmax_{c in S}(s_c)``
5. ``map = relu(sum_{c in S} w_c A_c)``

``authors_code=True`` reproduces the authors' released code instead of steps 2 and 4: masks
upsampled with ``align_corners=True``, and ``w = softmax`` over all C channels with score 0 for
the channels outside S (which then enter the sum with that weight).

Each masked image is scored once against all T prompts of its image: the channels scored
for image n are the union of its prompts' top-k sets. Masks are built chunk by chunk on the
inputs' device, so extra memory grows with the chunk size, not with C or k.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_gscorecam.checks import resolve_topk

__all__ = [
    "GridView",
    "Scorer",
    "channel_masks",
    "default_chunk",
    "exclusive",
    "restored",
    "score_cam",
]

MINMAX_EPS = 1e-6
# Masked images per forward pass when the caller does not say: on CPU small batches stay in
# cache (RN50 at 224 px: 16 per pass took 0.83x the time of 64, benchmarks/floor.py);
# accelerators want large ones.
CPU_CHUNK = 16
ACCELERATOR_CHUNK = 64
# Masked images per input image that calibrate a masked scorer's int8 activation ranges
# (besides the image itself)
CALIBRATION_MASKS = 3


def default_chunk(device: torch.device) -> int:
    """The default ``perturbations_per_eval`` on ``device``."""
    return CPU_CHUNK if device.type == "cpu" else ACCELERATOR_CHUNK


class Scorer(Protocol):
    """Scores images ``(B, 3, H, W)`` that belong to input images ``image_index`` ``(B,)``.

    Returns ``(B, T)``: one score per prompt of the image. A masked scorer with a
    ``calibrate(images)`` method (an int8 copy of a CNN tower) is given
    :func:`calibration_images` before the masked passes of each call.
    """

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        """Scores ``(B, T)``."""
        ...


class GridView(Protocol):
    """Turns a layer output into channel maps ``(N, C, h, w)`` and its gradient into ``(N, C)``."""

    def activations(self, output: Tensor, n: int) -> Tensor:
        """Channel maps ``(N, C, h, w)``."""
        ...

    def importance(self, grad: Tensor, n: int) -> Tensor:
        """Channel importance ``alpha`` ``(N, C)``."""
        ...


_LOCKS: weakref.WeakKeyDictionary[object, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
# forward functions whose model cannot be seen (plain callables) share one lock
_SHARED_LOCK = threading.RLock()


@contextmanager
def exclusive(model: object | None) -> Iterator[None]:
    """Hold ``model``'s re-entrant lock: one attribution call per model at a time.

    Hooks, train/eval modes and patched forwards are per model, so two threads explaining
    with one model take turns; the lock is re-entrant (a call may make nested calls) and
    weakly keyed (a model can still be freed). ``None`` shares a single lock.
    """
    if model is None:
        lock = _SHARED_LOCK
    else:
        with _LOCKS_GUARD:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
    with lock:
        yield


@contextmanager
def restored(module: nn.Module | None) -> Iterator[None]:
    """Run in eval mode; give every submodule its former train/eval mode back afterwards."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def capture(
    scorer: Scorer,
    layer: nn.Module,
    inputs: Tensor,
    view: GridView,
    *,
    with_gradient: bool,
    layer_input: bool,
) -> tuple[Tensor, Tensor | None, int, bool]:
    """One forward (and backward) pass with a hook on ``layer``.

    Returns the activations ``(N, C, h, w)``, the channel importance ``(N, T, C)`` (None
    without gradient, when the pass runs under ``no_grad``), the number of prompts T, and
    whether the layer gave tokens ``(N, L, D)`` / ``(L, N, D)`` rather than feature maps.
    The hook lives only for this pass.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[object, ...], output: object) -> None:
        value = args[0] if layer_input and args else output
        # Hugging Face encoder layers before transformers 5 return (hidden_states,)
        if isinstance(value, tuple) and len(value) == 1:
            (value,) = value
        if not isinstance(value, Tensor):
            raise ValueError(
                f"layer: expected its {'input' if layer_input else 'output'} to be a single "
                f"tensor, got {type(value).__name__}"
            )
        captured[:] = [value]

    n = inputs.shape[0]
    handle = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(with_gradient):
            images = inputs.detach().requires_grad_(with_gradient)
            scores = scorer(images, torch.arange(n, device=inputs.device))
    finally:
        handle.remove()
    if not captured:
        raise ValueError(
            "layer: no activation was captured; the layer is not part of the model's forward pass"
        )
    if not bool(scores.isfinite().all()):
        raise ValueError("forward_func: the score of an unmasked input image is NaN or infinite")
    output = captured[0]
    activations = view.activations(output.detach(), n)
    n_prompts = scores.shape[1]
    tokens = output.dim() == 3
    if not with_gradient:
        return activations, None, n_prompts, tokens
    if not scores.requires_grad:
        raise ValueError(
            "forward_func: its scores carry no gradient (detached, or not computed from the "
            "inputs by autograd); the channel ranking needs d score / d layer"
        )
    grads = []
    with torch.enable_grad():
        for t in range(n_prompts):
            (grad,) = torch.autograd.grad(
                scores[:, t].sum(), output, retain_graph=t + 1 < n_prompts, allow_unused=True
            )
            if grad is None:
                raise ValueError("layer: the score does not depend on this layer's output")
            grads.append(view.importance(grad, n))
    importance = torch.stack(grads, dim=1)
    if not bool(importance.isfinite().all()):
        raise ValueError("forward_func: the gradient of the score at the layer is NaN or infinite")
    return activations, importance, n_prompts, tokens


def channel_masks(
    activations: Tensor, size: tuple[int, int], align_corners: bool = False
) -> Tensor:
    """``minmax(upsample_bilinear(A_c, size))``: channel maps ``(B, h, w)`` -> ``(B, 1, H, W)``."""
    up = F.interpolate(
        activations.unsqueeze(1), size=size, mode="bilinear", align_corners=align_corners
    )
    low = up.amin(dim=(2, 3), keepdim=True)
    high = up.amax(dim=(2, 3), keepdim=True)
    return (up - low) / (high - low + MINMAX_EPS)


def masked_scores(
    scorer: Scorer,
    inputs: Tensor,
    activations: Tensor,
    pairs: Tensor,
    n_prompts: int,
    chunk: int,
    progress: str | None = None,
    out: Tensor | None = None,
    align_corners: bool = False,
) -> Tensor:
    """Scores ``(N, C, T)`` of the masked inputs for (image, channel) ``pairs`` ``(P, 2)``.

    Unscored pairs stay 0 (or keep their value in ``out``, which is filled in place);
    non-finite scores are kept (see :func:`_report_nonfinite`). ``progress`` names a progress
    bar; ``align_corners`` is the masks'.
    """
    n, c = activations.shape[:2]
    if out is None:
        out = inputs.new_zeros((n, c, n_prompts), dtype=torch.float32)
    size = (inputs.shape[2], inputs.shape[3])
    starts = range(0, pairs.shape[0], chunk)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None):
        image_index, channel = pairs[start : start + chunk].unbind(1)
        with torch.inference_mode():
            masks = channel_masks(activations[image_index, channel], size, align_corners)
            chunk_scores = scorer(inputs[image_index] * masks.to(inputs.dtype), image_index)
        out[image_index, channel] = chunk_scores.float()
    return out


def calibration_images(
    inputs: Tensor, activations: Tensor, selected: Tensor, align_corners: bool = False
) -> Tensor:
    """What a masked scorer that needs calibrating (an int8 copy's activation ranges) sees
    first: each input image, and it masked by ``CALIBRATION_MASKS`` of the channels selected
    for it ``(N, T, C)``, evenly spread over them in channel order.
    """
    size = (inputs.shape[2], inputs.shape[3])
    batch = []
    with torch.inference_mode():
        for n in range(inputs.shape[0]):
            channels = selected[n].any(dim=0).nonzero().squeeze(1)
            spread = torch.linspace(0, channels.shape[0] - 1, CALIBRATION_MASKS).round().long()
            masks = channel_masks(activations[n, channels[spread.unique()]], size, align_corners)
            batch += [inputs[n : n + 1], inputs[n : n + 1] * masks.to(inputs.dtype)]
        return torch.cat(batch)


def score_cam(
    scorer: Scorer,
    layer: nn.Module,
    inputs: Tensor,
    view: GridView,
    *,
    rank_by_gradient: bool,
    topk: int | float | None = None,
    perturbations_per_eval: int,
    relu: bool,
    layer_input: bool,
    progress: str | None = None,
    masked_scorer: Scorer | None = None,
    early_stop: float | None = None,
    authors_code: bool = False,
) -> Tensor:
    """Maps ``(N, T, h, w)``.

    With ``rank_by_gradient`` (gScoreCAM) the capture pass takes the gradient and only the
    ``topk`` channels of largest ``alpha`` are scored: ``topk`` is a channel count (clipped to
    C), a fraction of C in (0, 1], rounded up, or None for ``default_topk`` of the layer.
    Without it (ScoreCAM) every channel is scored and no backward pass is made.
    ``masked_scorer`` scores the masked images (default: ``scorer``, which also makes the
    capture pass). ``early_stop`` (see :func:`_early_stopped`) is an opt-in approximation; None
    is exact. ``authors_code`` switches to the authors' code's mask upsampling and softmax
    (module docstring).
    """
    activations, importance, n_prompts, tokens = capture(
        scorer, layer, inputs, view, with_gradient=rank_by_gradient, layer_input=layer_input
    )
    n, c = activations.shape[:2]
    if importance is None:
        selected = torch.ones((n, n_prompts, c), dtype=torch.bool, device=inputs.device)
    else:
        top = importance.topk(resolve_topk(topk, c, tokens), dim=2).indices
        selected = torch.zeros_like(importance, dtype=torch.bool).scatter_(2, top, True)
    masked_scorer = masked_scorer or scorer
    calibrate = getattr(masked_scorer, "calibrate", None)
    if calibrate is not None:
        calibrate(calibration_images(inputs, activations, selected, authors_code))
    if early_stop is not None and importance is not None:
        return _early_stopped(
            masked_scorer, inputs, activations, importance, selected, perturbations_per_eval,
            relu, progress, early_stop, authors_code,
        )  # fmt: skip
    pairs = selected.any(dim=1).nonzero()
    scores = masked_scores(
        masked_scorer, inputs, activations, pairs, n_prompts, perturbations_per_eval, progress,
        align_corners=authors_code,
    )  # fmt: skip
    _report_nonfinite(scores, selected)
    return _weighted_maps(scores, selected, activations, relu, authors_code)


def _report_nonfinite(scores: Tensor, selected: Tensor) -> None:
    """Raise if every scored channel of a prompt has a NaN / infinite score ``(N, C, T)``; warn
    once with their count if some have (they count as 0, as in the gScoreCAM authors' code).
    """
    bad = ~scores.isfinite() & selected.transpose(1, 2)
    if not bool(bad.any()):
        return
    bad_per_prompt = bad.sum(dim=1)  # (N, T)
    hopeless = (bad_per_prompt == selected.sum(dim=2)).nonzero()
    if hopeless.shape[0] > 0:
        image, prompt = hopeless[0].tolist()
        raise ValueError(
            f"forward_func: every masked score of image {image}, prompt {prompt} is NaN or "
            "infinite; no channel weights can be computed"
        )
    warnings.warn(
        f"{int(bad_per_prompt.sum())} of {int(selected.sum())} masked scores were NaN or "
        "infinite; they count as 0, as in the gScoreCAM authors' code",
        RuntimeWarning,
        stacklevel=2,
    )


def _weighted_maps(
    scores: Tensor, selected: Tensor, activations: Tensor, relu: bool, authors_code: bool = False
) -> Tensor:
    """``relu(sum_c softmax_{c in S}(s_c) A_c)`` per image and prompt, ``(N, T, h, w)``;
    non-finite scores count as 0. With ``authors_code`` the softmax runs over all C channels,
    unselected ones scoring 0.
    """
    scores = torch.where(scores.isfinite(), scores, 0.0)
    unselected = 0.0 if authors_code else float("-inf")
    logits = scores.transpose(1, 2).masked_fill(~selected, unselected)
    weights = logits.softmax(dim=2)
    maps = torch.einsum("ntc,nchw->nthw", weights, activations.float())
    return F.relu(maps) if relu else maps


def _early_stopped(
    scorer: Scorer,
    inputs: Tensor,
    activations: Tensor,
    importance: Tensor,
    selected: Tensor,
    chunk: int,
    relu: bool,
    progress: str | None,
    tolerance: float,
    authors_code: bool = False,
) -> Tensor:
    """GScoreCAM maps, scoring each image's channels in descending gradient order, ``chunk``
    at a time, and stopping once a chunk moves no prompt's map (before the ReLU) by more
    than ``tolerance`` (relative L1 change); the maps use the channels scored so far. An
    approximation: a channel ranked low by its gradient but scoring high is missed.
    """
    n, n_prompts, _ = importance.shape
    scores = inputs.new_zeros((n, activations.shape[1], n_prompts), dtype=torch.float32)
    scored_all = torch.zeros_like(selected)
    maps = []
    for i in tqdm(range(n), desc=progress, unit="image", disable=progress is None):
        # every prompt's top-k in its own gradient order, interleaved; repeats dropped
        k = int(selected[i, 0].sum())
        ranks = importance[i].masked_fill(~selected[i], float("-inf"))
        order = ranks.argsort(dim=1, descending=True)
        ranked = order[:, :k].T.flatten()
        position = torch.arange(ranked.shape[0], device=ranked.device)
        first = torch.full_like(selected[i, 0], ranked.shape[0], dtype=torch.long)
        first.scatter_reduce_(0, ranked, position, reduce="amin")
        channels = ranked[first[ranked] == position]
        scored = torch.zeros_like(selected[i : i + 1])
        previous = None
        for start in range(0, channels.shape[0], chunk):
            batch = channels[start : start + chunk]
            pairs = torch.stack([torch.full_like(batch, i), batch], dim=1)
            masked_scores(
                scorer, inputs, activations, pairs, n_prompts, chunk, None, scores,
                align_corners=authors_code,
            )  # fmt: skip
            scored[0, :, batch] = selected[i, :, batch]
            # convergence is judged before the ReLU, which can hide a change
            current = _weighted_maps(
                scores[i : i + 1], scored, activations[i : i + 1], False, authors_code
            )
            if previous is not None:
                change = (current - previous).abs().sum(dim=(2, 3))
                size = current.abs().sum(dim=(2, 3))  # a map still all zero has not converged
                if bool(((change <= tolerance * size) & (size > 0)).all()):
                    break
            previous = current
        maps.append(current)
        scored_all[i] = scored[0]
    _report_nonfinite(scores, scored_all)
    maps = torch.cat(maps)
    return F.relu(maps) if relu else maps
