"""Grad-ECLIP equals a loop-by-loop transcription of the paper's equations, and the authors'
code where the two agree (one-head attention)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_gscorecam.grad_eclip import GradECLIP
from tests.helpers import images_for, texts, tiny_rn, tiny_vit


def last_block_by_hand(model: nn.Module, image: torch.Tensor, text: torch.Tensor):
    """The score of one image and the last block's attention, head by head, from its weights.

    Returns the score and, per head h, the class query q_h ``(d,)``, the keys and values
    ``(L, d)`` and the heads' output o ``(L, H * d)`` the score was computed from.
    """
    block = model.visual.transformer.resblocks[-1]
    mha = block.attn
    parts = {}

    def attention(q_x, k_x=None, v_x=None, attn_mask=None):
        width, heads = mha.embed_dim, mha.num_heads
        d = width // heads
        w_q, w_k, w_v = mha.in_proj_weight.split(width)
        b_q, b_k, b_v = mha.in_proj_bias.split(width)
        x = q_x[0]
        queries, keys, values, outs = [], [], [], []
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            q, k, v = x @ w_q[cols].T + b_q[cols], x @ w_k[cols].T + b_k[cols], x @ w_v[cols].T
            v = v + b_v[cols]
            outs.append(torch.softmax(q @ k.T / math.sqrt(d), dim=-1) @ v)
            queries.append(q[0])
            keys.append(k)
            values.append(v)
        o = torch.cat(outs, dim=-1)
        parts.update(queries=queries, keys=keys, values=values, o=o)
        return mha.out_proj(o)[None]

    block.attention = attention
    try:
        emb = F.normalize(model.encode_image(image[None]), dim=-1)[0]
    finally:
        del block.attention
    score = model.logit_scale.exp() * (emb @ F.normalize(text, dim=-1))
    return score, parts


def reference_grad_eclip(model: nn.Module, image: torch.Tensor, text: torch.Tensor):
    """``relu(sum_h lambda_hi sum_{c in h} w_c v_ic)`` patch by patch, head by head."""
    score, parts = last_block_by_hand(model, image, text)
    (grad,) = torch.autograd.grad(score, parts["o"])
    w = grad[0]  # the class token's channels
    length = parts["keys"][0].shape[0]
    d = parts["keys"][0].shape[1]
    heads = zip(parts["queries"], parts["keys"], parts["values"], strict=True)
    heads = [(q.detach(), k.detach(), v.detach()) for q, k, v in heads]
    values = []
    for p in range(1, length):
        total = 0.0
        for h, (q, k, v) in enumerate(heads):
            cosines = [float(F.cosine_similarity(q, k[i], dim=0)) for i in range(1, length)]
            low, high = min(cosines), max(cosines)
            loosened = (cosines[p - 1] - low) / (high - low)
            total += loosened * sum(float(w[h * d + c] * v[p, c]) for c in range(d))
        values.append(max(total, 0.0))
    side = math.isqrt(length - 1)
    return torch.tensor(values).reshape(side, side)


@given(seed=st.integers(0, 2**16), n=st.integers(1, 2), t=st.integers(1, 3))
@settings(max_examples=6, deadline=None)
def test_matches_the_papers_equations(seed, n, t):
    model = tiny_vit(seed=seed % 3, layers=2)
    images = images_for(model, n, seed=seed)
    text = texts(n, t, seed=seed + 1)
    maps = GradECLIP(model).attribute(images, target=text)
    assert maps.shape == (n, t, 4, 4)
    for i in range(n):
        for j in range(t):
            expected = reference_grad_eclip(model, images[i], text[i, j])
            torch.testing.assert_close(maps[i, j], expected, atol=1e-5, rtol=1e-4)


def authors_grad_eclip(model: nn.Module, image: torch.Tensor, text: torch.Tensor):
    """The authors' notebook (grad_eclip_image.ipynb) on a one-head last block: the gradient
    at the class token's attention output times the patch values and the min-max cosine of
    the class query with the patch keys, summed over channels, relu.
    """
    score, parts = last_block_by_hand(model, image, text)
    (grad,) = torch.autograd.grad(score, parts["o"])
    (q,), (k,), (v,) = parts["queries"], parts["keys"], parts["values"]
    cosine = (F.normalize(q[None], dim=-1) * F.normalize(k[1:], dim=-1)).sum(-1)
    cosine = (cosine - cosine.min()) / (cosine.max() - cosine.min())
    emap = F.relu((grad[:1] * v[1:] * cosine[:, None]).sum(-1))
    return emap.reshape(4, 4)


def test_equals_the_authors_code_on_one_head_attention():
    model = tiny_vit(seed=4, head_width=32)  # width 32: one head
    assert model.visual.transformer.resblocks[-1].attn.num_heads == 1
    images = images_for(model, 2, seed=5)
    text = texts(2, 2, seed=6)
    maps = GradECLIP(model).attribute(images, target=text)
    for i in range(2):
        for j in range(2):
            expected = authors_grad_eclip(model, images[i], text[i, j])
            torch.testing.assert_close(maps[i, j], expected, atol=1e-5, rtol=1e-4)


def test_towers_without_a_class_query_are_refused():
    with pytest.raises(ValueError, match="forward_func: GradECLIP weighs the class token"):
        GradECLIP(tiny_vit(pool_type="avg"))
    with pytest.raises(ValueError, match="forward_func: GradECLIP needs a ViT image tower"):
        GradECLIP(tiny_rn())
