"""Layer outputs as channel grids ``(N, C, h, w)``: a tower's token layout applied to a layer's
output and gradient (:class:`LayerGrid`), a user's ``reshape_transform`` (:class:`CustomGrid`),
and a module that shows Captum the grid of a ViT layer (:func:`grid_tap`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captum_gscorecam.towers import TokenLayout, token_layout

__all__ = ["CustomGrid", "LayerGrid", "grid_tap"]


@dataclass(frozen=True)
class LayerGrid(TokenLayout):
    """How a layer's output becomes a channel grid ``(N, C, h, w)`` and channel importances.

    Convolutional outputs ``(N, C, h, w)`` are used as they are, with
    ``alpha_c = mean_{h,w} G_c``. Token outputs ``(N, L, D)`` or ``(L, N, D)`` lose their
    ``prefix_tokens`` (class token first) and the rest is reshaped to the patch grid,
    channels = D. Their importance is the gradient at the class token when the tower pools
    that token, else the mean patch-token gradient; ``pools_class_token=None`` decides from
    the gradient itself (patch tokens with no gradient at all mean the class token is pooled).
    """

    @classmethod
    def for_model(cls, model: nn.Module | None) -> LayerGrid:
        """The grid of ``model``'s tower (:func:`~captum_gscorecam.towers.token_layout`).

        Args:

            model (torch.nn.Module, optional): A CLIP model or a wrapper of one; None (or any
                        other model) has the generic layout.
        """
        return cls(**dataclasses.asdict(token_layout(model)))

    def activations(self, output: Tensor, n: int) -> Tensor:
        """The layer output as ``(N, C, h, w)``."""
        if output.dim() == 4:
            return output
        patches = self._tokens(output, n)[:, self.prefix_tokens :]
        h, w = self._grid(patches.shape[1])
        return patches.transpose(1, 2).reshape(n, patches.shape[2], h, w)

    def importance(self, grad: Tensor, n: int) -> Tensor:
        """Channel importance ``alpha`` ``(N, C)`` from the gradient of the layer output."""
        if grad.dim() == 4:
            return grad.mean(dim=(2, 3))
        tokens = self._tokens(grad, n)
        patch_grad = tokens[:, self.prefix_tokens :]
        pools = self.pools_class_token
        if pools is None:
            pools = self.prefix_tokens > 0 and not bool(patch_grad.any())
        return tokens[:, 0] if pools else patch_grad.mean(dim=1)

    def _tokens(self, output: Tensor, n: int) -> Tensor:
        if output.dim() != 3:
            raise ValueError(
                "layer: expected its output to be (N, C, h, w) feature maps or (N, L, D) / "
                f"(L, N, D) tokens, got shape {tuple(output.shape)}"
            )
        batch_first = self.batch_first
        if batch_first is None:
            batch_first = output.shape[0] == n
        tokens = output if batch_first else output.transpose(0, 1)
        if tokens.shape[0] != n:
            raise ValueError(
                f"layer: token output of shape {tuple(output.shape)} has no batch dimension of {n}"
            )
        return tokens

    def _grid(self, n_patches: int) -> tuple[int, int]:
        if self.grid is not None:
            h, w = self.grid
            if h * w != n_patches:
                raise ValueError(
                    f"layer: {n_patches} patch tokens do not fill the model's {h} x {w} grid"
                )
            return h, w
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(
                f"layer: {n_patches} patch tokens (after {self.prefix_tokens} prefix token(s)) "
                "do not form a square grid; pass reshape_transform to map them to (N, C, h, w)"
            )
        return side, side


@dataclass(frozen=True)
class CustomGrid:
    """A user's ``reshape_transform`` (layer output -> ``(N, C, h, w)``), as in pytorch-grad-cam.

    Gradients go through the same transform, and ``alpha_c`` is their spatial mean.
    """

    reshape_transform: Callable[[Tensor], Tensor]

    def activations(self, output: Tensor, n: int) -> Tensor:
        """The layer output as ``(N, C, h, w)``, through ``reshape_transform``."""
        return self._grid(output, n)

    def importance(self, grad: Tensor, n: int) -> Tensor:
        """Channel importance ``(N, C)``: the spatial mean of the transformed gradient."""
        return self._grid(grad, n).mean(dim=(2, 3))

    def _grid(self, output: Tensor, n: int) -> Tensor:
        grid = self.reshape_transform(output)
        if not isinstance(grid, Tensor) or grid.dim() != 4 or grid.shape[0] != n:
            shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            raise ValueError(
                f"reshape_transform: expected it to return a ({n}, C, h, w) tensor, got {shape}"
            )
        return grid


@contextmanager
def grid_tap(model: nn.Module, layer: nn.Module) -> Iterator[nn.Module]:
    """A module whose output is ``layer``'s output as a ``(N, C, h, w)`` grid, for Captum.

    Captum's layer methods read dim 1 as channels; ViT tokens have them last. For a ViT tower,
    inside the context, ``layer``'s tokens pass through an identity module on the patch grid
    (the values do not change), which Captum can hook. For other towers it is the layer itself.
    A layer returning a tuple (Hugging Face layers before transformers 5) has its first item
    rerouted.

    Examples::

        >>> with grid_tap(model, gradcam_layer(model)) as tap:
        ...     maps = LayerGradCam(CLIPSimilarity(model), tap).attribute(
        ...         images, additional_forward_args=(text,))  # (N, 1, h, w)
    """
    grid = LayerGrid.for_model(model)
    if grid.grid is None:
        yield layer
        return
    tap = nn.Identity()

    def reroute_tokens(output: Tensor) -> Tensor:
        batch_first = grid.batch_first is not False
        tokens = output if batch_first else output.transpose(0, 1)
        patches = tap(grid.activations(tokens, tokens.shape[0])).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens[:, : grid.prefix_tokens], patches], dim=1)
        return tokens if batch_first else tokens.transpose(0, 1)

    def reroute(_module: nn.Module, _args: tuple[object, ...], output: object) -> object:
        if isinstance(output, tuple):
            return (reroute_tokens(output[0]), *output[1:])
        return reroute_tokens(output)

    handle = layer.register_forward_hook(reroute)
    try:
        yield tap
    finally:
        handle.remove()
