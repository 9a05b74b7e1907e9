"""Attention rollout equals a loop-by-loop transcription of Abnar and Zuidema's rule on the
attention PyTorch's own nn.MultiheadAttention returns; the map ignores the text."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_gscorecam.rollout import AttentionRollout
from tests.helpers import images_for, texts, tiny_rn, tiny_vit


def torch_attention(model: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention ``(H, L, L)`` for one image, as nn.MultiheadAttention returns
    it when asked for per-head weights.
    """
    maps = []
    handles = []
    for block in model.visual.transformer.resblocks:

        def keep(_module, _args, out, attn=block.attn):
            weights = attn(out, out, out, need_weights=True, average_attn_weights=False)[1]
            maps.append(weights[0])

        handles.append(block.ln_1.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model.encode_image(image[None])
    finally:
        for handle in handles:
            handle.remove()
    return maps


def reference_rollout(model: nn.Module, image: torch.Tensor, start: int, class_row: bool):
    """``R = prod_b rownorm(0.5 mean_h A_b + 0.5 I)`` entry by entry; the class row or the
    mean of the rows, over the patches.
    """
    maps = torch_attention(model, image)[start % len(model.visual.transformer.resblocks) :]
    length = maps[0].shape[-1]
    joint = [[float(i == j) for j in range(length)] for i in range(length)]
    for attention in maps:
        heads = attention.shape[0]
        mixed = [
            [
                0.5 * sum(float(attention[h, i, j]) for h in range(heads)) / heads + 0.5 * (i == j)
                for j in range(length)
            ]
            for i in range(length)
        ]
        mixed = [[value / sum(row) for value in row] for row in mixed]
        joint = [
            [sum(mixed[i][m] * joint[m][j] for m in range(length)) for j in range(length)]
            for i in range(length)
        ]
    if class_row:
        row = joint[0]
    else:
        row = [sum(joint[i][j] for i in range(length)) / length for j in range(length)]
    side = math.isqrt(length - 1)
    return torch.tensor(row[1:]).reshape(side, side)


@given(
    seed=st.integers(0, 2**16),
    start=st.sampled_from([0, 1, -1]),
    pool=st.sampled_from(["tok", "avg"]),
)
@settings(max_examples=6, deadline=None)
def test_matches_the_rule_on_torch_attention(seed, start, pool):
    model = tiny_vit(seed=seed % 3, layers=3, pool_type=pool)
    images = images_for(model, 2, seed=seed)
    maps = AttentionRollout(model).attribute(images, target=texts(2, 2), start_layer=start)
    assert maps.shape == (2, 2, 4, 4)
    for i in range(2):
        expected = reference_rollout(model, images[i], start, class_row=pool == "tok")
        torch.testing.assert_close(maps[i, 0], expected, atol=1e-6, rtol=1e-5)


def test_every_prompt_gets_the_same_map():
    model = tiny_vit(seed=1)
    images = images_for(model, 2, seed=2)
    maps = AttentionRollout(model).attribute(images, target=texts(2, 3))
    other = AttentionRollout(model).attribute(images, target=texts(1, 1, seed=9)[0, 0])
    assert torch.equal(maps, other.expand(2, 3, 4, 4))
    # each row of R sums to 1, so the patches' share is below 1 and positive
    assert ((maps > 0) & (maps.sum(dim=(2, 3)) < 1)[..., None, None]).all()


def test_a_resnet_tower_is_a_named_error():
    with pytest.raises(ValueError, match="forward_func: AttentionRollout needs a ViT image tower"):
        AttentionRollout(tiny_rn())
