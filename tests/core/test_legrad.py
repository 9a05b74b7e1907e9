"""LeGrad equals the reference package legrad-torch, and the rule on Hugging Face's attention."""

from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from captum_gscorecam import encode_text
from captum_gscorecam.legrad import LeGrad, min_max
from captum_gscorecam.shapes import load_shapes_clip, render_scene
from tests.helpers import images_for, texts, tiny_vit
from tests.tower_models import WIDTH, hf_clip, timm_clip

legrad = pytest.importorskip("legrad")

# legrad-torch 1.1 against LeGrad here: the largest difference measured was 1.4e-6 (shapes-vit)
TOLERANCE = 1e-5


def reference_wrapper(model: nn.Module, layer_index: int) -> nn.Module:
    """legrad-torch's LeWrapper on a copy (it patches the model it wraps).

    The reference was written for open_clip <= 2.23, whose blocks ran sequence first; it
    feeds them (L, N, D) tokens. Today's open_clip builds batch-first attention, which would
    read those tokens the wrong way round in the blocks the wrapper leaves unpatched (those
    before ``layer_index``), so the copy's attention modules are made sequence first again.
    """
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, nn.MultiheadAttention):
            module.batch_first = False
    with contextlib.redirect_stdout(io.StringIO()):  # it prints while patching
        return legrad.LeWrapper(copied, layer_index=layer_index)


def reference_clip(model: nn.Module, image: torch.Tensor, text: torch.Tensor, start: int):
    """legrad-torch's CLIP maps ``(T, H, W)`` for one image and its prompts ``(T, D)``."""
    wrapper = reference_wrapper(model, start)
    return wrapper.compute_legrad_clip(text_embedding=text, image=image[None]).detach()[0]


def at_pixels(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Our grid maps ``(T, h, w)`` as the reference gives them: upsampled, then min-max."""
    return min_max(F.interpolate(maps[None], scale_factor=patch, mode="bilinear"))[0]


@given(
    seed=st.integers(0, 2**16),
    start=st.sampled_from([0, 1, -1, -2]),
    n=st.integers(1, 2),
    t=st.integers(1, 3),
)
@settings(max_examples=8, deadline=None)
def test_equals_legrad_torch_on_random_open_clip_vits(seed, start, n, t):
    model = tiny_vit(seed=seed % 3, layers=3)
    images = images_for(model, n, seed=seed)
    text = texts(n, t, seed=seed + 1)
    maps = LeGrad(model).attribute(images, target=text, start_layer=start)
    assert maps.shape == (n, t, 4, 4)
    for i in range(n):
        expected = reference_clip(model, images[i], text[i], start)
        assert (at_pixels(maps[i], 8) - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("start", [0, -2])
def test_equals_legrad_torch_on_the_shapes_vit(start):
    model, preprocess, tokenizer = load_shapes_clip("vit")
    scenes = [render_scene(seed, n_objects=3) for seed in (11, 12)]
    images = torch.stack([preprocess(Image.fromarray(scene.image)) for scene in scenes])
    text = torch.stack([encode_text(model, tokenizer, scene.captions) for scene in scenes])
    maps = LeGrad(model).attribute(images, target=text, start_layer=start)
    assert maps.shape == (2, 3, 7, 7)
    for i in range(2):
        expected = reference_clip(model, images[i], text[i], start)
        assert (at_pixels(maps[i], 32) - expected).abs().max() < TOLERANCE


def timm_siglip(seed: int) -> nn.Module:
    """A tiny SigLIP-style timm tower: no class token, attention pooling, no head."""
    torch.manual_seed(seed)
    trunk = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=WIDTH,
        depth=3,
        num_heads=2,
        num_classes=0,
        class_token=False,
        global_pool="map",
    )
    return timm_clip(trunk, 32)


@pytest.mark.parametrize("start", [0, -2])
def test_equals_legrad_torch_on_a_timm_siglip_tower(start):
    model = timm_siglip(seed=2)
    images = images_for(model, 2, seed=3)
    text = texts(2, 2, seed=4, width=WIDTH)
    maps = LeGrad(model).attribute(images, target=text, start_layer=start)
    for i in range(2):
        for j in range(2):  # the reference's SigLIP path sums its prompts: one at a time
            wrapper = reference_wrapper(model, start)
            expected = wrapper.compute_legrad_siglip(
                text_embedding=text[i, j : j + 1], image=images[i : i + 1], apply_correction=False
            ).detach()[0, 0]
            got = F.interpolate(maps[i, j][None, None], scale_factor=8, mode="bilinear")[0, 0]
            assert (got - expected).abs().max() < TOLERANCE


def hf_reference_legrad(model: nn.Module, image: torch.Tensor, text: torch.Tensor, start: int):
    """The rule on Hugging Face's eager attention: each layer's hidden states, token mean,
    post_layernorm, projection; gradient on that layer's attention; relu, mean, sum, min-max.
    """
    vision = model.vision_model
    out = vision(pixel_values=image[None], output_attentions=True, output_hidden_states=True)
    total = torch.zeros(out.attentions[0].shape[-1])
    for layer in range(start % len(out.attentions), len(out.attentions)):
        hidden = out.hidden_states[layer + 1]  # [0] is the embeddings
        emb = model.visual_projection(vision.post_layernorm(hidden.mean(dim=1)))
        score = model.logit_scale.exp() * F.cosine_similarity(emb[0], text, dim=0)
        (grad,) = torch.autograd.grad(score, out.attentions[layer], retain_graph=True)
        total += grad[0].clamp(min=0).mean(dim=(0, 1))
    patches = total[1:].reshape(4, 4)
    return (patches - patches.min()) / (patches.max() - patches.min())


@pytest.mark.parametrize("start", [0, -1])
def test_follows_the_rule_on_hf_clip_attention(start):
    model = hf_clip(seed=1, attention="eager")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    text = texts(2, 2, width=WIDTH)
    maps = LeGrad(model).attribute(images, target=text, start_layer=start)
    for i in range(2):
        for j in range(2):
            expected = hf_reference_legrad(model, images[i], text[i, j], start)
            torch.testing.assert_close(maps[i, j], expected, atol=1e-5, rtol=1e-4)


def test_min_max_maps_each_map_to_the_unit_interval_and_flat_maps_to_zero():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    expected = torch.tensor([[[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(min_max(maps), expected)
