"""Invariants of the attribution over random images, prompts, k and chunk sizes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer, engine
from captum_gscorecam.engine import default_chunk
from tests.helpers import images_for, texts

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
MODELS = ["rn", "vit"]
GRID = {"rn": (256, 2, 2), "vit": (32, 4, 4)}


def cam_for(request, name):
    model = request.getfixturevalue(name)
    return model, GScoreCAM(model, default_layer(model))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(
    n=st.integers(1, 3),
    t=st.integers(1, 3),
    seed=st.integers(0, 1000),
    form=st.sampled_from(["D", "ND", "NTD"]),
)
def test_shape_nonnegative_finite(request, name, n, t, seed, form):
    model, cam = cam_for(request, name)
    x = images_for(model, n, seed)
    text = texts(n, t, seed + 1)
    target = {"D": text[0, 0], "ND": text[:, 0], "NTD": text}[form]
    attr = cam.attribute(x, target=target, topk=0.25)
    _, h, w = GRID[name]
    assert attr.shape == (n, t if form == "NTD" else 1, h, w)
    assert attr.dtype == torch.float32
    assert torch.isfinite(attr).all()
    assert (attr >= 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_all_channels_equal_scorecam(request, name):
    model, cam = cam_for(request, name)
    c = GRID[name][0]
    x = images_for(model, 2, seed=4)
    text = texts(2, 2, seed=5)
    score_cam = ScoreCAM(model, default_layer(model)).attribute(x, target=text)
    torch.testing.assert_close(cam.attribute(x, target=text, topk=c), score_cam, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        cam.attribute(x, target=text, topk=1.0), score_cam, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        cam.attribute(x, target=text, topk=10 * c), score_cam, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(ppe=st.integers(1, 70), topk=st.integers(1, 40), seed=st.integers(0, 1000))
def test_chunk_size_does_not_matter(request, name, ppe, topk, seed):
    model, cam = cam_for(request, name)
    x = images_for(model, 2, seed)
    text = texts(2, 2, seed + 1)
    a = cam.attribute(x, target=text, topk=topk, perturbations_per_eval=ppe)
    b = cam.attribute(x, target=text, topk=topk, perturbations_per_eval=64)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_default_chunk_is_small_on_cpu_and_large_elsewhere(rn, monkeypatch):
    assert default_chunk(torch.device("cpu")) == 16
    assert default_chunk(torch.device("cuda")) == default_chunk(torch.device("mps")) == 64
    seen = []
    real = engine.masked_scores

    def spy(*args, **kwargs):
        seen.append(args[5])  # the chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "masked_scores", spy)
    cam = GScoreCAM(rn, default_layer(rn))
    x, text = images_for(rn, 1), texts(1, 1)
    by_default = cam.attribute(x, target=text, topk=40)
    explicit = cam.attribute(x, target=text, topk=40, perturbations_per_eval=16)
    assert seen == [16, 16]
    torch.testing.assert_close(by_default, explicit, atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(n=st.integers(2, 3), t=st.integers(1, 4), topk=st.integers(1, 30), seed=st.integers(0, 1000))
def test_batch_and_prompts_equal_single_calls(request, name, n, t, topk, seed):
    model, cam = cam_for(request, name)
    x = images_for(model, n, seed)
    text = texts(n, t, seed + 1)
    together = cam.attribute(x, target=text, topk=topk)
    for i in range(n):
        for j in range(t):
            alone = cam.attribute(x[i : i + 1], target=text[i, j], topk=topk)
            torch.testing.assert_close(together[i, j], alone[0, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic(request, name):
    model, cam = cam_for(request, name)
    x = images_for(model, 2, seed=8)
    text = texts(2, 3, seed=9)
    assert torch.equal(
        cam.attribute(x, target=text, topk=17), cam.attribute(x, target=text, topk=17)
    )


def test_signed_sum_without_relu(vit):
    # ViT tokens take both signs (ResNet stages end in a ReLU, so their sums never go negative)
    model, cam = vit, GScoreCAM(vit, default_layer(vit))
    x = images_for(model, 2, seed=10)
    text = texts(2, 2, seed=11)
    signed = cam.attribute(x, target=text, topk=20, relu_attributions=False)
    torch.testing.assert_close(signed.clamp(min=0), cam.attribute(x, target=text, topk=20))
    assert (signed < 0).any()


def test_larger_k_scores_more_channels(rn):
    # the map with more channels differs: k takes part in the result
    x = images_for(rn, 1, seed=12)
    text = texts(1, 1, seed=13)[:, 0]
    cam = GScoreCAM(rn, default_layer(rn))
    assert not torch.allclose(
        cam.attribute(x, target=text, topk=1), cam.attribute(x, target=text, topk=100)
    )


@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_stays_close_to_full_precision(request, name):
    model, cam = cam_for(request, name)
    x = images_for(model, 3, seed=14)
    text = texts(3, 2, seed=15)
    full = cam.attribute(x, target=text, topk=0.25)
    half = cam.attribute(x, target=text, topk=0.25, precision=torch.bfloat16)
    assert half.dtype == torch.float32
    peak = full.flatten(2).amax(-1)[..., None, None]
    assert ((full - half).abs() / peak).max() < 0.05
    assert torch.nn.functional.cosine_similarity(full.flatten(1), half.flatten(1)).min() > 0.999
