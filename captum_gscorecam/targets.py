"""Captum's ``target`` and ``additional_forward_args`` for a forward function that returns scores.

A scorer built here serves the masked passes: each masked image carries the index of the input
image it came from, and takes that image's target and additional arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TargetScorer", "target_index"]


def target_index(target: object, n: int, device: torch.device) -> Tensor:
    """Captum's target as an index tensor ``(N, r)`` into the output ``(N, *dims)`` (r = len(dims)).

    ``None`` -> ``(N, 0)``; an int or a one-element integer tensor -> the same index for every
    example; a tuple -> the same multi-index; a list of N ints or tuples, or an integer tensor of
    N elements -> one per example.
    """
    if target is None:
        return torch.zeros((n, 0), dtype=torch.long, device=device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                "target: a tensor target must hold integer indices (a floating-point tensor is "
                "a text embedding, which needs a CLIP model as forward_func)"
            )
        if target.numel() == 1:
            return target.reshape(1, 1).to(device, torch.long).expand(n, 1)
        if target.dim() == 1 and target.numel() == n:
            return target.reshape(n, 1).to(device, torch.long)
        raise ValueError(
            f"target: expected an integer tensor of 1 or {n} elements, "
            f"got shape {tuple(target.shape)}"
        )
    if isinstance(target, bool):
        raise TypeError("target: expected an int, tuple, list or tensor, got bool")
    if isinstance(target, int):
        return torch.full((n, 1), target, dtype=torch.long, device=device)
    if isinstance(target, tuple):
        return torch.tensor([target], dtype=torch.long, device=device).expand(n, len(target))
    if isinstance(target, list):
        if len(target) != n:
            raise ValueError(
                f"target: a list target needs one entry per example ({n}), got {len(target)}"
            )
        rows = [row if isinstance(row, tuple) else (row,) for row in target]
        if len({len(row) for row in rows}) != 1:
            raise ValueError(
                "target: every entry of a list target must index the same number of dims"
            )
        return torch.tensor(rows, dtype=torch.long, device=device)
    raise TypeError(
        f"target: expected None, an int, a tuple, a list or a tensor, got {type(target).__name__}"
    )


class TargetScorer:
    """Scores ``forward_func(images, *additional_forward_args)`` at Captum's ``target``.

    Tensor arguments whose first dimension is N are indexed per masked image; all other
    arguments are passed as they are.
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
