"""What the attention methods read in a CLIP ViT image tower: its blocks and their attention, the
token layout, how the tower pools its tokens, and the tokens of every block.

Towers: open_clip's VisionTransformer (a class token; pooled, averaged or attention-pooled),
timm ViT trunks inside open_clip (``global_pool`` ``token``, ``avg`` or ``map``, SigLIP's
attention pooling) and Hugging Face's CLIP and SigLIP vision transformers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from captum_gscorecam.attention import attention_of, is_attention
from captum_gscorecam.clip import CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.towers import is_clip_model

__all__ = ["ViTParts", "block_tokens", "check_start_layer", "clip_forward", "vit_parts"]

Pooling = Literal["class", "mean", "attention"]


@dataclass(frozen=True)
class ViTParts:
    """The parts of a ViT image tower that attention methods read.

    ``blocks`` and their ``attentions`` first to last; the blocks' outputs are batch first
    when ``batch_first``; ``prefix_tokens`` tokens (class token first, then registers) come
    before the patches, which fill ``grid`` (a :class:`LayerGrid`, batch first). ``pooling``
    says what the image embedding is made from: the class token, the mean of the patch tokens,
    or an attention-pooling head whose attention module is ``pool_attention``. ``readout``
    maps a block's tokens ``(N, L, D)`` to an image embedding ``(N, E)`` as LeGrad does: the
    tower's final norm and projection of the token mean (class-token and mean-pooled towers),
    or its attention-pooling head and projection (attention-pooled towers).
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

    Raises a ValueError for towers without transformer blocks (ResNet, ConvNeXt) and for
    poolings no attention method here reads.
    """
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    vision_model = getattr(model, "vision_model", None)
    if getattr(getattr(visual, "transformer", None), "resblocks", None) is not None:
        parts = _open_clip_parts(visual, method)
    elif all(hasattr(trunk, name) for name in ("patch_embed", "blocks", "num_prefix_tokens")):
        parts = _timm_parts(visual, method)
    elif getattr(getattr(vision_model, "encoder", None), "layers", None) is not None:
        parts = _hf_parts(model, method)
    else:
        raise ValueError(
            f"forward_func: {method} needs a ViT image tower; this model has no transformer "
            "blocks (a ResNet or ConvNeXt tower?)"
        )
    blocks, pooling, pool_attention, readout = parts
    if len(blocks) == 0:
        raise ValueError(f"forward_func: {method} needs a ViT tower with at least one block")
    attentions = []
    for i, block in enumerate(blocks):
        attention = attention_of(block)
        if attention is None:
            raise ValueError(
                f"forward_func: block {i} ({type(block).__name__}) of the image tower has no "
                f"attention module whose attention {method} can read"
            )
        attentions.append(attention)
    if pool_attention is not None and not is_attention(pool_attention):
        raise ValueError(
            f"forward_func: the tower's attention pooling ({type(pool_attention).__name__}) is "
            f"no attention module whose attention {method} can read"
        )
    grid = dataclasses.replace(LayerGrid.for_model(model), batch_first=True)
    return ViTParts(
        blocks=tuple(blocks),
        attentions=tuple(attentions),
        batch_first=_batch_first(visual),
        prefix_tokens=grid.prefix_tokens,
        grid=grid,
        pooling=pooling,
        pool_attention=pool_attention,
        readout=readout,
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


Parts = tuple[Sequence[nn.Module], Pooling, nn.Module | None, Callable[[Tensor], Tensor]]


def _open_clip_parts(visual: nn.Module, method: str) -> Parts:
    blocks = visual.transformer.resblocks

    def project(pooled: Tensor) -> Tensor:
        return pooled @ visual.proj if visual.proj is not None else pooled

    attn_pool = getattr(visual, "attn_pool", None)
    if attn_pool is None:
        pooling = "class" if getattr(visual, "pool_type", "tok") == "tok" else "mean"
        return blocks, pooling, None, lambda tokens: project(visual.ln_post(tokens.mean(dim=1)))
    if getattr(visual, "attn_pool_contrastive", None) is not None:
        raise ValueError(
            f"forward_func: {method} does not read open_clip's two-stage attention pooling "
            "(attn_pool_contrastive)"
        )
    # the pooled query 0, the only one trained with the contrastive loss
    return blocks, "attention", attn_pool.attn, lambda tokens: project(attn_pool(tokens)[:, 0])


def _timm_parts(visual: nn.Module, method: str) -> Parts:
    trunk = visual.trunk

    def project(pooled: Tensor) -> Tensor:
        return visual.head(trunk.head(trunk.head_drop(trunk.fc_norm(pooled))))

    pool = getattr(trunk, "global_pool", None)
    if pool == "map":
        return trunk.blocks, "attention", trunk.attn_pool, lambda t: project(trunk.attn_pool(t))
    if pool in ("token", "avg"):
        pooling = "class" if pool == "token" else "mean"
        return trunk.blocks, pooling, None, lambda t: project(trunk.norm(t.mean(dim=1)))
    raise ValueError(
        f"forward_func: {method} reads timm ViTs with global_pool 'token', 'avg' or 'map', "
        f"got {pool!r}"
    )


def _hf_parts(model: nn.Module, method: str) -> Parts:
    vision_model = model.vision_model
    layers = vision_model.encoder.layers
    head = getattr(vision_model, "head", None)
    if head is not None and getattr(vision_model, "use_head", True):
        return layers, "attention", head.attention, head
    projection = getattr(model, "visual_projection", None)
    if projection is None or not hasattr(vision_model, "post_layernorm"):
        raise ValueError(
            f"forward_func: {method} reads Hugging Face CLIP towers (a class token, "
            "post_layernorm, visual_projection) and SigLIP towers with their pooling head"
        )
    return layers, "class", None, lambda t: projection(vision_model.post_layernorm(t.mean(dim=1)))


def _batch_first(visual: nn.Module | None) -> bool:
    """open_clip towers before batch-first transformers ran their blocks sequence first."""
    transformer = getattr(visual, "transformer", None)
    if transformer is None:
        return True
    return bool(getattr(transformer, "batch_first", False))
