"""HilaCAM: explicit attention equals the fused one, the relevance rule, state, errors, planted."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_gscorecam import CLIPSimilarity, HilaCAM
from captum_gscorecam.hila import explicit_attention
from tests.helpers import images_for, texts, tiny_rn, tiny_vit
from tests.tower_models import WIDTH, timm_vit


def reference_hilacam(model: nn.Module, image: torch.Tensor, text: torch.Tensor, start: int):
    """One image, one prompt; each block's attention rebuilt head by head from its weights."""
    blocks = model.visual.transformer.resblocks
    maps: list[torch.Tensor] = []

    def naive_attention(block):
        mha = block.attn

        def attention(q_x, k_x=None, v_x=None, attn_mask=None):
            width, heads = mha.embed_dim, mha.num_heads
            d = width // heads
            w_q, w_k, w_v = mha.in_proj_weight.split(width)
            b_q, b_k, b_v = mha.in_proj_bias.split(width)
            x = q_x[0]  # (L, D), one image
            probs, values = [], []
            for h in range(heads):
                cols = slice(h * d, (h + 1) * d)
                q = x @ w_q[cols].T + b_q[cols]
                k = x @ w_k[cols].T + b_k[cols]
                values.append(x @ w_v[cols].T + b_v[cols])
                probs.append(torch.softmax(q @ k.T / math.sqrt(d), dim=-1))
            a = torch.stack(probs)  # (H, L, L), the tensor the output is computed from
            maps.append(a)
            outs = [a[h] @ values[h] for h in range(heads)]
            return mha.out_proj(torch.cat(outs, dim=-1))[None]

        return attention

    originals = {}
    for block in blocks:
        originals[block] = block.__dict__.get("attention")
        block.attention = naive_attention(block)
    try:
        x = image[None].clone().requires_grad_(True)
        emb = F.normalize(model.encode_image(x), dim=-1)[0]
        score = model.logit_scale.exp() * (emb @ F.normalize(text, dim=-1))
        used = maps[start % len(blocks) :]
        grads = torch.autograd.grad(score, used)
    finally:
        for block in blocks:
            del block.attention
    length = maps[0].shape[-1]
    relevance = torch.eye(length)
    for a, g in zip(used, grads, strict=True):
        relevance = relevance + (g * a).clamp(min=0).mean(dim=0) @ relevance
    side = math.isqrt(length - 1)
    return relevance[0, 1:].reshape(side, side)


@given(
    seed=st.integers(0, 2**16),
    start=st.sampled_from([0, 1, -1, -3]),
    n=st.integers(1, 3),
    t=st.integers(1, 3),
)
@settings(max_examples=12, deadline=None)
def test_matches_the_reference_rule(seed, start, n, t):
    model = tiny_vit(seed=seed % 3, layers=3)
    images = images_for(model, n, seed=seed)
    text = texts(n, t, seed=seed + 1)
    maps = HilaCAM(model).attribute(images, target=text, start_layer=start)
    assert maps.shape == (n, t, 4, 4)
    for i in range(n):
        for j in range(t):
            expected = reference_hilacam(model, images[i], text[i, j], start)
            torch.testing.assert_close(maps[i, j], expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_explicit_attention_equals_the_fused_forward(batch_first, masked):
    torch.manual_seed(0)
    block = nn.Module()
    block.attn = nn.MultiheadAttention(24, 3, batch_first=batch_first).eval()
    x = torch.randn(2, 7, 24) if batch_first else torch.randn(7, 2, 24)
    mask = torch.randn(7, 7) if masked else None
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, -2:] = True
    with torch.no_grad():
        expected, weights = block.attn(x, x, x, attn_mask=mask, key_padding_mask=padding)
        with explicit_attention([block]) as maps:
            got, got_weights = block.attn(x, x, x, attn_mask=mask, key_padding_mask=padding)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_weights, weights, atol=1e-6, rtol=1e-5)
    assert maps[0].shape == (2, 3, 7, 7)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 3, 7))
    assert "forward" not in block.attn.__dict__


def test_explicit_attention_leaves_the_tower_unchanged(vit):
    images = images_for(vit, 3)
    with torch.no_grad():
        expected = vit.encode_image(images)
        with explicit_attention(vit.visual.transformer.resblocks) as maps:
            got = vit.encode_image(images)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(maps) == len(vit.visual.transformer.resblocks)


@pytest.mark.parametrize("target_shape", ["d", "nd", "ntd"])
def test_shape_and_non_negativity(vit, target_shape):
    images = images_for(vit, 2)
    text = texts(2, 3)
    target = {"d": text[0, 0], "nd": text[:, 0], "ntd": text}[target_shape]
    maps = HilaCAM(vit).attribute(images, target=target)
    t = 3 if target_shape == "ntd" else 1
    assert maps.shape == (2, t, 4, 4)
    assert (maps >= 0).all()
    assert maps.sum() > 0
    assert not maps.requires_grad


def test_prompts_together_equal_one_at_a_time(vit):
    images = images_for(vit, 2)
    text = texts(2, 3)
    cam = HilaCAM(vit)
    together = cam.attribute(images, target=text)
    for j in range(3):
        torch.testing.assert_close(together[:, j : j + 1], cam.attribute(images, target=text[:, j]))


def test_captum_target_indexes_the_similarity_output(vit):
    images = images_for(vit, 2)
    text = texts(1, 3)[0]
    expected = HilaCAM(vit).attribute(images, target=text[1])
    got = HilaCAM(CLIPSimilarity(vit)).attribute(
        images, target=1, additional_forward_args=(text.expand(2, 3, -1),)
    )
    torch.testing.assert_close(got, expected)


def test_model_left_as_found_after_success_and_error(model_state):
    model = tiny_vit(layers=2).train()
    model.visual.transformer.resblocks[0].requires_grad_(False)
    before = model_state(model)
    cam = HilaCAM(model)
    cam.attribute(images_for(model, 2), target=texts(2, 1)[:, 0])
    assert model_state(model) == before
    with pytest.raises(ValueError, match="target"):
        cam.attribute(images_for(model, 2), target=torch.randn(2, 7))  # wrong width
    assert model_state(model) == before


def test_errors_name_the_argument(vit):
    images = images_for(vit, 1)
    text = texts(1, 1)[0, 0]
    cam = HilaCAM(vit)
    with pytest.raises(ValueError, match="start_layer"):
        cam.attribute(images, target=text, start_layer=2)
    with pytest.raises(ValueError, match="start_layer"):
        cam.attribute(images, target=text, start_layer=-3)
    with pytest.raises(TypeError, match="start_layer"):
        cam.attribute(images, target=text, start_layer=0.5)
    with pytest.raises(ValueError, match="inputs"):
        cam.attribute(images[0], target=text)
    with pytest.raises(ValueError, match="forward_func"):
        HilaCAM(tiny_rn())
    with pytest.raises(ValueError, match="forward_func"):
        HilaCAM(tiny_vit(attentional_pool=True))
    with pytest.raises(TypeError, match="forward_func"):
        HilaCAM(lambda x: x)
    with pytest.raises(TypeError, match="blocks"):
        HilaCAM(vit, [nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="blocks"):
        HilaCAM(vit, [])


PALETTE = torch.cat([torch.eye(3), -torch.eye(3)])
QUADRANTS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def planted_vit(quadrant: tuple[int, int]) -> nn.Module:
    """A one-block ViT whose class token attends only to the patches of one quadrant.

    Patch tokens carry colour detectors (dims 2-7) and, in the seen quadrant, a key feature
    (dim 0) that matches the class token's query (dim 1); values pass the colours only, the
    MLP is off and the projection is the identity, so the embedding is the seen colours.
    """
    model = tiny_vit(layers=1)
    visual = model.visual
    width = visual.class_embedding.shape[0]
    row, col = quadrant
    with torch.no_grad():
        visual.conv1.weight.zero_()
        visual.conv1.weight[2:8] = PALETTE[:, :, None, None] / 64
        visual.class_embedding.zero_()
        visual.class_embedding[1] = 4
        visual.positional_embedding.zero_()
        grid = visual.positional_embedding[1:].view(4, 4, width)
        grid[2 * row : 2 * row + 2, 2 * col : 2 * col + 2, 0] = 4
        block = visual.transformer.resblocks[0]
        weight, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
        weight.zero_()
        bias.zero_()
        head_dim = width // block.attn.num_heads
        for h in range(block.attn.num_heads):
            weight[h * head_dim, 1] = 1.3
            weight[width + h * head_dim, 0] = 1.3
        for d in range(2, 8):
            weight[2 * width + d, d] = 1.0
        block.attn.out_proj.weight.copy_(torch.eye(width))
        block.attn.out_proj.bias.zero_()
        for p in block.mlp.parameters():
            p.zero_()
        visual.proj.copy_(torch.eye(width))
    return model


def planted_scenes(n: int, quadrant: tuple[int, int]) -> torch.Tensor:
    """One square per quadrant; the seen quadrant's colour appears again in an unseen one."""
    g = torch.Generator().manual_seed(7)
    images = 0.05 * torch.randn(n, 3, 32, 32, generator=g)
    seen = QUADRANTS.index(quadrant)
    for i in range(n):
        colours = PALETTE[torch.randperm(6, generator=g)[:4]]
        twin = (seen + 1 + i % 3) % 4
        colours[twin] = colours[seen]
        for (row, col), colour in zip(QUADRANTS, colours, strict=True):
            images[i, :, 16 * row : 16 * row + 8, 16 * col : 16 * col + 8] = colour[:, None, None]
    return images


@pytest.mark.parametrize("quadrant", QUADRANTS)
def test_planted_map_lands_on_the_object_the_model_sees(quadrant):
    model = planted_vit(quadrant)
    images = planted_scenes(6, quadrant)
    row, col = quadrant
    seen = images[:, :, 16 * row + 4, 16 * col + 4]
    text = torch.zeros(6, 32)
    text[torch.arange(6), 2 + (seen @ PALETTE.T).argmax(dim=1)] = 1.0
    maps = HilaCAM(model).attribute(images, target=text)[:, 0]
    region = torch.zeros(4, 4)
    region[2 * row : 2 * row + 2, 2 * col : 2 * col + 2] = 1
    inside = (maps * region).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    # the same colour sits in an unseen quadrant too: a map blind to the model would split it
    assert (inside > 0.8).all(), inside
    peak = maps.flatten(1).argmax(dim=1)
    assert (peak == (2 * row) * 4 + 2 * col).all()  # the object's patch


def timm_forward(model: nn.Module, image: torch.Tensor):
    """The image embedding and each block's attention, as timm's unfused attention computes
    it (its probabilities seen by ``attn_drop``)."""
    attention: list[torch.Tensor] = []
    blocks = model.visual.trunk.blocks
    handles = []
    for block in blocks:
        block.attn.fused_attn = False
        handles.append(
            block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: attention.append(out))
        )
    try:
        emb = F.normalize(model.encode_image(image[None]), dim=-1)[0]
    finally:
        for handle in handles:
            handle.remove()
    return emb, attention


def test_timm_trunks_follow_the_rule_on_timm_attention():
    model = timm_vit(seed=2, global_pool="token", reg_tokens=2)
    x = images_for(model, 2, seed=3)
    text = texts(2, 2, seed=4, width=WIDTH)
    maps = HilaCAM(model).attribute(x, target=text)
    for i in range(2):
        for j in range(2):
            emb, attention = timm_forward(model, x[i])
            score = model.logit_scale.exp() * (emb @ text[i, j])
            grads = torch.autograd.grad(score, attention)
            relevance = torch.eye(attention[0].shape[-1])
            for a, g in zip(attention, grads, strict=True):
                relevance = relevance + (g[0] * a[0]).clamp(min=0).mean(dim=0) @ relevance
            expected = relevance[0, 3:].reshape(4, 4)  # after the class token and 2 registers
            torch.testing.assert_close(maps[i, j], expected, atol=1e-6, rtol=1e-4)
