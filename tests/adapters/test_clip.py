"""The CLIP adapter: similarity, text encoding, default layers, token grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_gscorecam import CLIPSimilarity, default_layer, encode_text
from captum_gscorecam.grids import LayerGrid
from tests.helpers import images_for, texts


def test_similarity_equals_open_clip_logits(rn, tokenizer):
    x = images_for(rn, 3)
    tokens = tokenizer(["a dog", "a cat"])
    with torch.no_grad():
        image_features, text_features, scale = rn(x, tokens)
        expected = scale * image_features @ text_features.T  # open_clip normalises both
        text = encode_text(rn, tokenizer, ["a dog", "a cat"])
        similarity = CLIPSimilarity(rn)
        torch.testing.assert_close(similarity(x, text[1]), expected[:, 1])
        torch.testing.assert_close(similarity(x, text[[0, 1, 1]]), expected[[0, 1, 2], [0, 1, 1]])
        torch.testing.assert_close(similarity(x, text.expand(3, -1, -1)), expected)


def test_similarity_normalises_text(rn):
    x = images_for(rn, 2)
    text = texts(2, 1)[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(CLIPSimilarity(rn)(x, 7 * text), CLIPSimilarity(rn)(x, text))


def test_encode_text(rn, tokenizer):
    text = encode_text(rn, tokenizer, ["a dog", "a frisbee", "a red circle"])
    assert text.shape == (3, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    assert encode_text(rn, tokenizer, "a dog").shape == (1, 32)
    torch.testing.assert_close(encode_text(rn, tokenizer, "a dog")[0], text[0])
    with pytest.raises(ValueError, match="prompts: expected at least one prompt"):
        encode_text(rn, tokenizer, [])


def test_a_tokenizer_that_fails_is_named(rn):
    with pytest.raises(TypeError, match=r"tokenizer: expected the model's .* raised TypeError"):
        encode_text(rn, str.upper, ["a"])

    def broken(_prompts: list[str]) -> None:
        raise KeyError("no vocabulary")

    with pytest.raises(TypeError, match="raised KeyError: 'no vocabulary'") as error:
        encode_text(rn, broken, ["a"])
    assert isinstance(error.value.__cause__, KeyError)


def test_default_layers(rn, vit):
    assert default_layer(rn) is rn.visual.layer4
    assert default_layer(vit) is vit.visual.transformer.resblocks[-1]
    assert default_layer(CLIPSimilarity(vit)) is vit.visual.transformer.resblocks[-1]
    with pytest.raises(TypeError, match="model: expected a CLIP model with a `visual` tower"):
        default_layer(nn.Linear(2, 2))
    odd = nn.Module()
    odd.visual = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="model: no default layer for a Linear image tower"):
        default_layer(odd)


def test_similarity_rejects_non_clip():
    with pytest.raises(TypeError, match="model: expected a CLIP model"):
        CLIPSimilarity(nn.Linear(2, 2))


def test_layer_grid_reads_open_clip_vit(vit):
    grid = LayerGrid.for_model(vit)
    assert grid == LayerGrid(batch_first=True, prefix_tokens=1, grid=(4, 4), pools_class_token=True)
    assert LayerGrid.for_model(None) == LayerGrid()


@pytest.mark.parametrize("batch_first", [True, False, None])
def test_token_layouts_agree(batch_first):
    n, side, d = 2, 3, 5
    tokens = torch.randn(n, 1 + side * side, d)
    layout = tokens if batch_first in (True, None) else tokens.transpose(0, 1)
    grid = LayerGrid(batch_first=batch_first)
    acts = grid.activations(layout, n)
    assert acts.shape == (n, d, side, side)
    # patch token k sits at row k // side, column k % side
    torch.testing.assert_close(acts[:, :, 1, 2], tokens[:, 1 + 1 * side + 2])
    torch.testing.assert_close(
        grid.importance(layout, n), tokens[:, 1:].mean(1)
    )  # patches have gradient
    class_only = torch.zeros_like(tokens)
    class_only[:, 0] = tokens[:, 0]
    layout = class_only if batch_first in (True, None) else class_only.transpose(0, 1)
    torch.testing.assert_close(grid.importance(layout, n), tokens[:, 0])  # only the class token has


def test_declared_grid_may_be_rectangular():
    tokens = torch.randn(1, 1 + 2 * 3, 4)
    acts = LayerGrid(grid=(2, 3)).activations(tokens, 1)
    assert acts.shape == (1, 4, 2, 3)
    with pytest.raises(ValueError, match=r"do not fill the model's 3 x 3 grid"):
        LayerGrid(grid=(3, 3)).activations(tokens, 1)


def test_tokens_without_the_batch_dimension():
    with pytest.raises(ValueError, match="has no batch dimension of 2"):
        LayerGrid().activations(torch.randn(5, 7, 4), 2)


def test_feature_maps_pass_through():
    maps = torch.randn(2, 3, 4, 4)
    assert LayerGrid().activations(maps, 2) is maps
    torch.testing.assert_close(LayerGrid().importance(maps, 2), maps.mean(dim=(2, 3)))


def test_similarity_is_differentiable(rn):
    x = images_for(rn, 1).requires_grad_(True)
    CLIPSimilarity(rn)(x, F.normalize(torch.randn(32), dim=0)).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0
