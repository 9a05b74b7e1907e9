"""HilaCAM: gradient-weighted attention relevance through the blocks of a CLIP ViT tower.

For blocks b = start_layer .. B-1 with post-softmax attention ``A_b`` ``(H, L, L)`` and the
gradient of the score ``s`` with respect to it:

    ``Abar_b = mean_heads clamp(dA_b * A_b, min=0)``;  ``R <- R + Abar_b R``, from ``R = I``

The map is the class token's row of R over the patch tokens, on the patch grid.

Chefer, Gur and Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers", ICCV 2021. https://arxiv.org/abs/2103.15679
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gscorecam.attribution import check_inputs
from captum_gscorecam.checks import describe
from captum_gscorecam.clip import (
    CLIPSimilarity,
    LayerGrid,
    ZeroShotClassifier,
    is_clip_model,
    token_blocks,
)
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.scorers import make_scorer, model_images, model_of

__all__ = ["HilaCAM", "explicit_attention"]


class HilaCAM(GradientAttribution):
    r"""HilaCAM (Chefer et al., ICCV 2021): relevance propagated through the attention maps.

    ``Abar_b = mean_h clamp(grad(A_b) * A_b, min=0)``, ``R <- R + Abar_b R`` over the blocks
    from ``R = I``; the map is ``R[cls, patches]`` on the patch grid. Works on ViT towers that
    pool the class token: open_clip's (blocks with an ``nn.MultiheadAttention`` ``attn``) and
    Hugging Face's ``CLIPModel`` (blocks with a ``self_attn`` of ``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``).
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor] | nn.Module,
        blocks: Sequence[nn.Module] | None = None,
    ) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model with a ViT image tower
                        (open_clip or Hugging Face; wrapped in :class:`CLIPSimilarity`), or
                        a ``CLIPSimilarity`` or ``ZeroShotClassifier`` of one.
            blocks (sequence of torch.nn.Module, optional): The attention blocks, first to
                        last, each with an ``attn`` ``nn.MultiheadAttention`` (open_clip) or
                        a Hugging Face ``self_attn``.
                        Default: the tower's blocks (``visual.transformer.resblocks`` or
                        ``vision_model.encoder.layers``)
        """
        if is_clip_model(forward_func):
            forward_func = CLIPSimilarity(forward_func)
        if not isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
            raise TypeError(
                "forward_func: expected a CLIP model with a ViT image tower (or its "
                f"CLIPSimilarity or ZeroShotClassifier), got {type(forward_func).__name__}"
            )
        model = forward_func.model
        if blocks is None:
            blocks = token_blocks(model)
            if blocks is None:
                raise ValueError(
                    "forward_func: HilaCAM needs a ViT image tower; this model has no "
                    "transformer blocks (a ResNet or ConvNeXt tower?)"
                )
        try:
            blocks = list(blocks)
        except TypeError:
            raise TypeError(
                f"blocks: expected a sequence of attention blocks, got {describe(blocks)}"
            ) from None
        if not blocks:
            raise ValueError("blocks: expected at least one attention block")
        for i, block in enumerate(blocks):
            if _attention_of(block) is None:
                raise TypeError(
                    f"blocks: block {i} ({type(block).__name__}) has no `attn` "
                    "nn.MultiheadAttention nor a Hugging Face `self_attn` (q_proj, k_proj, "
                    "v_proj, out_proj) whose attention map HilaCAM can capture"
                )
        grid = LayerGrid.for_model(model)
        if grid.pools_class_token is False:
            raise ValueError(
                "forward_func: HilaCAM reads the class token's relevance, but this ViT tower "
                "pools its tokens another way (attention pooling or average)"
            )
        super().__init__(forward_func)
        self.blocks = blocks
        self.grid = dataclasses.replace(grid, batch_first=True)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the gScoreCAM paper writes it."""
        return "HilaCAM"

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object = None,
        additional_forward_args: Any = None,
        start_layer: int = 0,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)`` at the tower's size; they
                        are converted to the model's dtype and device.
            target (Tensor, int, tuple, list, optional): As in :meth:`GScoreCAM.attribute`:
                        a text embedding ``(D,)``, ``(N, D)`` or ``(N, T, D)``, or Captum's
                        index into the output of ``forward_func``.
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``.
                        Default: None
            start_layer (int, optional): The first block whose attention enters R; negative
                        counts from the end (``-1``: the last block only, the authors' later
                        default).
                        Default: 0 (all blocks, as the gScoreCAM paper compared)

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)`` at the patch grid, non-negative,
            float32, on the inputs' device.
        """
        images = check_inputs(inputs)
        depth = len(self.blocks)
        if isinstance(start_layer, bool) or not isinstance(start_layer, int):
            raise TypeError(f"start_layer: expected an int, got {type(start_layer).__name__}")
        if not -depth <= start_layer < depth:
            raise ValueError(
                f"start_layer: expected a block index in [{-depth}, {depth - 1}], got {start_layer}"
            )
        used = self.blocks[start_layer % depth :]
        n = images.shape[0]
        with exclusive(model_of(self.forward_func)), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            with (
                restored(self.forward_func),
                explicit_attention(used) as maps,
                torch.enable_grad(),
            ):
                scores = scorer(x.detach().requires_grad_(True), torch.arange(n, device=x.device))
            if len(maps) != len(used):
                raise ValueError(
                    f"blocks: {len(maps)} of {len(used)} blocks ran in the forward pass; "
                    "they must belong to forward_func's image tower"
                )
            if not bool(scores.isfinite().all()):
                raise ValueError("forward_func: the score of an input image is NaN or infinite")
            relevance = []
            with torch.enable_grad():
                for t in range(scores.shape[1]):
                    grads = torch.autograd.grad(
                        scores[:, t].sum(), maps, retain_graph=t + 1 < scores.shape[1]
                    )
                    relevance.append(_class_relevance(maps, grads))
            rows = torch.stack(relevance, dim=1).detach().float()  # (N, T, L)
        if not bool(rows.isfinite().all()):
            raise ValueError("forward_func: the attention relevance is NaN or infinite")
        n_prompts = rows.shape[1]
        tokens = rows.reshape(n * n_prompts, -1, 1)
        grid = self.grid.activations(tokens, n * n_prompts)
        return grid.reshape(n, n_prompts, *grid.shape[-2:]).to(images.device)


def _class_relevance(maps: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Row 0 of ``R`` ``(N, L)``: ``R = I``, then ``R <- R + mean_h relu(dA * A) R`` per block."""
    n, _, length, _ = maps[0].shape
    relevance = torch.eye(length, dtype=maps[0].dtype, device=maps[0].device).expand(n, -1, -1)
    for attention, grad in zip(maps, grads, strict=True):
        weighted = (grad * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance[:, 0]


@contextmanager
def explicit_attention(blocks: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Inside the context, each block's attention computes ``softmax(Q K^T / sqrt(d)) V``
    explicitly and appends its attention ``(N, H, L, S)`` to the yielded list (fused kernels
    never expose it). Blocks hold an ``nn.MultiheadAttention`` ``attn`` (open_clip) or a
    Hugging Face ``self_attn``. The forwards are restored on exit.
    """
    maps: list[Tensor] = []
    saved = []
    try:
        for block in blocks:
            attn = _attention_of(block)
            if attn is None:
                raise TypeError(f"blocks: {type(block).__name__} has no attention to capture")
            if isinstance(attn, nn.MultiheadAttention):
                if attn.bias_k is not None or attn.add_zero_attn:
                    raise ValueError(
                        "blocks: nn.MultiheadAttention with add_bias_kv or add_zero_attn is "
                        "not supported"
                    )
                forward = _explicit_forward(attn, maps)
            else:
                forward = _explicit_hf_forward(attn, maps)
            saved.append((attn, attn.__dict__.get("forward")))
            attn.forward = forward
        yield maps
    finally:
        for attn, original in saved:
            if original is None:
                del attn.forward
            else:
                attn.forward = original


def _attention_of(block: nn.Module) -> nn.Module | None:
    """The block's attention module: open_clip's ``attn`` MHA or a Hugging Face ``self_attn``."""
    attn = getattr(block, "attn", None)
    if isinstance(attn, nn.MultiheadAttention):
        return attn
    attn = getattr(block, "self_attn", None)
    parts = ("q_proj", "k_proj", "v_proj", "out_proj")
    if isinstance(attn, nn.Module) and all(hasattr(attn, part) for part in parts):
        return attn
    return None


def _explicit_hf_forward(attn: nn.Module, maps: list[Tensor]) -> Callable[..., Any]:
    """A drop-in forward for a Hugging Face CLIP/SigLIP attention that records its attention.

    Computes ``softmax(q k^T * scale + masks) v`` as the eager implementation does, for the
    call conventions of transformers 4.40+ (``causal_attention_mask``) and 5 (``**kwargs``);
    float masks are added, boolean masks keep the positions that are True.
    """

    def forward(
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        causal_attention_mask: Tensor | None = None,
        *_: Any,
        **__: Any,
    ) -> tuple[Tensor, Tensor]:
        n, length, width = hidden_states.shape
        heads = attn.num_heads
        q, k, v = (
            proj(hidden_states).reshape(n, length, heads, -1).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        logits = q @ k.transpose(-2, -1) * attn.scale
        for mask in (causal_attention_mask, attention_mask):
            if mask is not None:  # a Hugging Face boolean mask is True where it may attend
                logits = _apply_mask(logits, ~mask if mask.dtype == torch.bool else mask)
        attention = logits.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        maps.append(attention)
        out = (attention @ v).transpose(1, 2).reshape(n, length, width)
        return attn.out_proj(out), attention

    return forward


def _explicit_forward(attn: nn.MultiheadAttention, maps: list[Tensor]) -> Callable[..., Any]:
    """A drop-in forward for ``attn`` that records its post-softmax attention in ``maps``."""

    def forward(
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if not attn.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        heads, width = attn.num_heads, attn.embed_dim
        q, k, v = _projections(attn, query, key, value)
        n, length, source = q.shape[0], q.shape[1], k.shape[1]
        head_dim = width // heads
        q, k, v = (x.reshape(n, x.shape[1], heads, head_dim).transpose(1, 2) for x in (q, k, v))
        logits = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            mask = (
                attn_mask.reshape(-1, heads, length, source) if attn_mask.dim() == 3 else attn_mask
            )
            logits = _apply_mask(logits, mask)
        if key_padding_mask is not None:
            logits = _apply_mask(logits, key_padding_mask[:, None, None, :])
        attention = logits.softmax(dim=-1)
        maps.append(attention)
        out = (attention @ v).transpose(1, 2).reshape(n, length, width)
        out = attn.out_proj(out)
        if not attn.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attention.mean(dim=1) if average_attn_weights else attention
        return out, weights

    return forward


def _projections(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    width = attn.embed_dim
    bias = attn.in_proj_bias
    biases = (None, None, None) if bias is None else bias.split(width)
    if attn.in_proj_weight is not None:
        weights = attn.in_proj_weight.split(width)
    else:
        weights = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
    return tuple(
        F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True)
    )


def _apply_mask(logits: Tensor, mask: Tensor) -> Tensor:
    if mask.dtype == torch.bool:
        return logits.masked_fill(mask, float("-inf"))
    return logits + mask.to(logits.dtype)
