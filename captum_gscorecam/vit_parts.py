"""What the attention methods read in a CLIP ViT image tower: its blocks and their attention, the
token layout, how the tower pools its tokens, and the tokens of every block.

The tower itself is read by :func:`~captum_gscorecam.towers.vit_tower` (blocks, pooling,
readout); this module adds each block's attention module and the patch grid, and the helpers
the attention methods share (their ``forward_func``, ``start_layer`` and block outputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from captum_gscorecam.attention import attention_of, is_attention
from captum_gscorecam.clip import CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.towers import Pooling, is_clip_model, vit_tower

__all__ = ["ViTParts", "block_tokens", "check_start_layer", "clip_forward", "vit_parts"]


@dataclass(frozen=True)
class ViTParts:
    """The parts of a ViT image tower that attention methods read.

    What :class:`~captum_gscorecam.towers.ViTTower` reads (``blocks``, ``batch_first``,
    ``pooling``, ``pool_attention``, ``readout``), with each block's attention module in
    ``attentions``, first to last; ``prefix_tokens`` tokens (class token first, then registers)
    come before the patches, which fill ``grid`` (a :class:`LayerGrid`, batch first).
    """

    blocks: tuple[nn.Module, ...]
    attentions: tuple[nn.Module, ...]
    batch_first: bool
    prefix_tokens: int
    grid: LayerGrid
    pooling: Pooling
    pool_attention: nn.Module | None
    readout: Callable[[Tensor], Tensor]


def clip_forward(
    forward_func: Callable[..., Tensor] | nn.Module, method: str
) -> CLIPSimilarity | ZeroShotClassifier:
    """``forward_func`` as a CLIPSimilarity (a CLIP model is wrapped) or ZeroShotClassifier."""
    if is_clip_model(forward_func):
        forward_func = CLIPSimilarity(forward_func)
    if not isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
        raise TypeError(
            f"forward_func: {method} expected a CLIP model with a ViT image tower (or its "
            f"CLIPSimilarity or ZeroShotClassifier), got {type(forward_func).__name__}"
        )
    return forward_func


def vit_parts(model: nn.Module, method: str) -> ViTParts:
    """The :class:`ViTParts` of a CLIP model's image tower; errors name ``forward_func``.

    Raises a ValueError for towers without transformer blocks (ResNet, ConvNeXt), for
    poolings no attention method here reads (:func:`~captum_gscorecam.towers.vit_tower`) and
    for attention modules whose attention cannot be recorded.
    """
    tower = vit_tower(model, method)
    attentions = []
    for i, block in enumerate(tower.blocks):
        attention = attention_of(block)
        if attention is None:
            raise ValueError(
                f"forward_func: block {i} ({type(block).__name__}) of the image tower has no "
                f"attention module whose attention {method} can read"
            )
        attentions.append(attention)
    if tower.pool_attention is not None and not is_attention(tower.pool_attention):
        raise ValueError(
            f"forward_func: the tower's attention pooling ({type(tower.pool_attention).__name__}) "
            f"is no attention module whose attention {method} can read"
        )
    grid = dataclasses.replace(LayerGrid.for_model(model), batch_first=True)
    return ViTParts(
        blocks=tower.blocks,
        attentions=tuple(attentions),
        batch_first=tower.batch_first,
        prefix_tokens=grid.prefix_tokens,
        grid=grid,
        pooling=tower.pooling,
        pool_attention=tower.pool_attention,
        readout=tower.readout,
    )


def check_start_layer(start_layer: object, depth: int) -> int:
    """``start_layer`` (negative counts from the end) as a block index in ``[0, depth)``."""
    if isinstance(start_layer, bool) or not isinstance(start_layer, int):
        raise TypeError(f"start_layer: expected an int, got {type(start_layer).__name__}")
    if not -depth <= start_layer < depth:
        raise ValueError(
            f"start_layer: expected a block index in [{-depth}, {depth - 1}], got {start_layer}"
        )
    return start_layer % depth


@contextmanager
def block_tokens(blocks: Sequence[nn.Module], batch_first: bool) -> Iterator[list[Tensor]]:
    """Inside the context, each block's output tokens are appended, batch first ``(N, L, D)``,
    to the yielded list (the first item of a tuple output, as Hugging Face layers return
    before transformers 5). The hooks are removed on exit.
    """
    tokens: list[Tensor] = []

    def keep(_module: nn.Module, _args: tuple[object, ...], output: object) -> None:
        out = output[0] if isinstance(output, tuple) else output
        tokens.append(out if batch_first else out.transpose(0, 1))

    handles = []
    try:
        for block in blocks:
            handles.append(block.register_forward_hook(keep))
        yield tokens
    finally:
        for handle in handles:
            handle.remove()
