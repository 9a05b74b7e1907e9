"""The maps equal the paper's formula, computed naively, one channel at a time."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer
from tests.helpers import images_for, reference_gscorecam, texts, tiny_rn, tiny_vit

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)


def _compare(model, topk, ppe, n, seed):
    x = images_for(model, n, seed=seed)
    text = texts(n, 1, seed=seed + 1)
    ours = GScoreCAM(model, default_layer(model)).attribute(
        x, target=text[:, 0], topk=topk, perturbations_per_eval=ppe
    )
    for i in range(n):
        expected = reference_gscorecam(model, x[i], text[i, 0], topk)
        torch.testing.assert_close(ours[i, 0], expected, atol=1e-5, rtol=1e-4)


@SETTINGS
@given(
    topk=st.integers(1, 40),
    ppe=st.integers(1, 50),
    n=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_resnet_matches_reference(rn, topk, ppe, n, seed):
    _compare(rn, topk, ppe, n, seed)


@SETTINGS
@given(
    topk=st.integers(1, 32),
    ppe=st.integers(1, 40),
    n=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_vit_matches_reference(vit, topk, ppe, n, seed):
    _compare(vit, topk, ppe, n, seed)


@pytest.mark.parametrize("make", [tiny_rn, tiny_vit])
def test_scorecam_matches_reference(make):
    model = make(seed=3)
    x = images_for(model, 1, seed=5)
    text = texts(1, 1, seed=6)
    ours = ScoreCAM(model, default_layer(model)).attribute(x, target=text[0])
    torch.testing.assert_close(
        ours[0, 0], reference_gscorecam(model, x[0], text[0, 0], None), atol=1e-5, rtol=1e-4
    )


def test_fraction_topk_rounds_up(rn):
    # 256 channels: 0.1 -> ceil(25.6) = 26 channels
    x = images_for(rn, 1, seed=2)
    text = texts(1, 1, seed=3)[:, 0]
    cam = GScoreCAM(rn, default_layer(rn))
    torch.testing.assert_close(
        cam.attribute(x, target=text, topk=0.1), cam.attribute(x, target=text, topk=26)
    )
    assert not torch.allclose(
        cam.attribute(x, target=text, topk=0.1), cam.attribute(x, target=text, topk=25)
    )
