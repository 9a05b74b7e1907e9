"""Attention made explicit: the maps, queries, keys and values that fused kernels never expose.

Inside :func:`recorded_attention`, each given attention module computes
``softmax(Q K^T * scale) V`` step by step, records what it computed in an
:class:`AttentionRecord` and returns what its own forward would. The modules are open_clip's
``nn.MultiheadAttention``, Hugging Face CLIP / SigLIP attention (``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``), timm's ``Attention`` (``qkv``, ``proj``) and timm's
``AttentionPoolLatent`` (SigLIP's pooling head). Dropout is left out: the methods that record
attention run in eval mode. The forwards are restored on exit, even after an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionRecord",
    "attention_of",
    "explicit_attention",
    "is_attention",
    "recorded_attention",
]


@dataclass(frozen=True)
class AttentionRecord:
    """What one attention call computed, every tensor part of the forward's autograd graph.

    ``attention`` ``(N, H, L, S)``: post-softmax attention of L queries over S keys;
    ``query`` ``(N, H, L, d)``, ``key`` and ``value`` ``(N, H, S, d)``: the projections per head
    (the query before any scaling); ``heads`` ``(N, L, H * d)``: ``attention @ value`` with the
    heads side by side, the tensor the output projection is applied to.
    """

    attention: Tensor
    query: Tensor
    key: Tensor
    value: Tensor
    heads: Tensor


Record = Callable[[AttentionRecord], None]


def attention_of(block: nn.Module) -> nn.Module | None:
    """The attention module of a transformer block, or None.

    open_clip's ``attn`` (``nn.MultiheadAttention``), timm's ``attn`` (``qkv`` and ``proj``)
    or a Hugging Face ``self_attn`` (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
    """
    for name in ("attn", "self_attn"):
        module = getattr(block, name, None)
        if isinstance(module, nn.Module) and _kind(module) in ("mha", "hf", "timm"):
            return module
    return None


def is_attention(module: object) -> bool:
    """True for the attention modules :func:`recorded_attention` can make explicit."""
    return isinstance(module, nn.Module) and _kind(module) is not None


@contextmanager
def recorded_attention(modules: Sequence[nn.Module]) -> Iterator[list[AttentionRecord]]:
    """Inside the context, every call of one of ``modules`` appends its
    :class:`AttentionRecord` to the yielded list, in call order.
    """
    records: list[AttentionRecord] = []
    with _explicit(modules, records.append):
        yield records


@contextmanager
def explicit_attention(blocks: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Inside the context, each block's attention computes ``softmax(Q K^T / sqrt(d)) V``
    explicitly and appends its attention ``(N, H, L, S)`` to the yielded list (fused kernels
    never expose it). Blocks hold an ``nn.MultiheadAttention`` ``attn`` (open_clip), a timm
    ``attn`` or a Hugging Face ``self_attn``. The forwards are restored on exit.
    """
    modules = []
    for block in blocks:
        attn = attention_of(block)
        if attn is None:
            raise TypeError(f"blocks: {type(block).__name__} has no attention to capture")
        modules.append(attn)
    maps: list[Tensor] = []
    with _explicit(modules, lambda record: maps.append(record.attention)):
        yield maps


@contextmanager
def _explicit(modules: Sequence[nn.Module], record: Record) -> Iterator[None]:
    saved = []
    try:
        for module in modules:
            kind = _kind(module)
            if kind is None:
                raise TypeError(
                    f"blocks: {type(module).__name__} is no attention module whose attention "
                    "can be made explicit"
                )
            if kind == "mha" and (module.bias_k is not None or module.add_zero_attn):
                raise ValueError(
                    "blocks: nn.MultiheadAttention with add_bias_kv or add_zero_attn is "
                    "not supported"
                )
            forward = _FORWARDS[kind](module, record)
            saved.append((module, module.__dict__.get("forward")))
            module.forward = forward
        yield
    finally:
        for module, original in saved:
            if original is None:
                del module.forward
            else:
                module.forward = original


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if all(hasattr(module, part) for part in ("q_proj", "k_proj", "v_proj", "out_proj")):
        return "hf"
    if all(hasattr(module, part) for part in ("qkv", "proj", "num_heads", "head_dim", "scale")):
        return "timm"
    if all(hasattr(module, part) for part in ("latent", "q", "kv", "proj", "num_heads")):
        return "timm_pool"
    return None


def _explicit_mha(attn: nn.MultiheadAttention, record: Record) -> Callable[..., Any]:
    """A drop-in forward for ``attn`` that records what it computes."""

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
        out = (attention @ v).transpose(1, 2).reshape(n, length, width)
        record(AttentionRecord(attention, q, k, v, out))
        out = attn.out_proj(out)
        if not attn.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attention.mean(dim=1) if average_attn_weights else attention
        return out, weights

    return forward


def _explicit_hf(attn: nn.Module, record: Record) -> Callable[..., Any]:
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
        out = (attention @ v).transpose(1, 2).reshape(n, length, width)
        record(AttentionRecord(attention, q, k, v, out))
        return attn.out_proj(out), attention

    return forward


def _explicit_timm(attn: nn.Module, record: Record) -> Callable[..., Any]:
    """A drop-in forward for timm's ``Attention`` (the ViT blocks' self-attention)."""

    def forward(x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("blocks: timm attention with a mask is not supported")
        n, length, _ = x.shape
        gate = getattr(attn, "gate", None)
        gate = gate(x).sigmoid() if gate is not None else None
        qkv = attn.qkv(x).reshape(n, length, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        attention = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(n, length, -1)
        record(AttentionRecord(attention, q, k, v, out))
        out = getattr(attn, "norm", nn.Identity())(out)
        if gate is not None:
            out = out * gate
        return attn.proj_drop(attn.proj(out))

    return forward


def _explicit_timm_pool(pool: nn.Module, record: Record) -> Callable[..., Any]:
    """A drop-in forward for timm's ``AttentionPoolLatent``: latent queries over the tokens."""

    def forward(x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if attn_mask is not None:
            raise ValueError("blocks: timm attention pooling with a mask is not supported")
        n, length, width = x.shape
        if pool.pos_embed is not None:
            x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
        latent = pool.latent.expand(n, -1, -1)
        queries = latent.shape[1]
        q = pool.q(latent).reshape(n, queries, pool.num_heads, pool.head_dim).transpose(1, 2)
        kv = pool.kv(x).reshape(n, length, 2, pool.num_heads, pool.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = pool.q_norm(q), pool.k_norm(k)
        attention = ((q * pool.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(n, queries, width)
        record(AttentionRecord(attention, q, k, v, out))
        out = pool.proj_drop(pool.proj(out))
        if getattr(pool, "mlp", None) is not None:
            out = out + pool.mlp(pool.norm(out))
        if pool.pool == "token":
            return out[:, 0]
        return out.mean(1) if pool.pool == "avg" else out

    return forward


_FORWARDS: dict[str, Callable[[Any, Record], Callable[..., Any]]] = {
    "mha": _explicit_mha,
    "hf": _explicit_hf,
    "timm": _explicit_timm,
    "timm_pool": _explicit_timm_pool,
}


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
