"""gScoreCAM's opt-in early stop: exact at tolerance 0, the top channels only when it stops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam import GScoreCAM, default_layer
from tests.helpers import images_for, texts, tiny_rn

MODEL = tiny_rn()
CAM = GScoreCAM(MODEL, default_layer(MODEL))


@pytest.mark.slow
@given(seed=st.integers(0, 2**16), t=st.integers(1, 3), chunk=st.integers(1, 40))
@settings(max_examples=10, deadline=None)
def test_tolerance_zero_is_exact(seed, t, chunk):
    images, text = images_for(MODEL, 2, seed=seed), texts(2, t, seed=seed + 1)
    exact = CAM.attribute(images, target=text, topk=48)
    early = CAM.attribute(
        images, target=text, topk=48, early_stop=0.0, perturbations_per_eval=chunk
    )
    torch.testing.assert_close(early, exact, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@given(seed=st.integers(0, 2**16), chunk=st.integers(1, 30))
@settings(max_examples=10, deadline=None)
def test_a_loose_tolerance_stops_at_the_first_nonzero_map_after_two_chunks(seed, chunk):
    images, text = images_for(MODEL, 2, seed=seed), texts(2, 1, seed=seed + 1)
    early = CAM.attribute(
        images, target=text, topk=64, early_stop=1e9, perturbations_per_eval=chunk
    )
    for i in range(2):
        # the map of the top 2, 3, ... chunks of channels; an all-zero map never converges
        for chunks in range(2, 64 // chunk + 2):
            kept = min(chunks * chunk, 64)
            exact = CAM.attribute(
                images[i : i + 1], target=text[i : i + 1], topk=kept, relu_attributions=False
            )
            if exact.abs().sum() > 0 or kept == 64:
                break
        torch.testing.assert_close(early[i : i + 1], exact.relu(), atol=1e-5, rtol=1e-4)


def test_stopping_early_saves_masked_passes():
    images, text = images_for(MODEL, 1), texts(1, 1)
    seen = []
    handle = MODEL.visual.register_forward_hook(lambda _m, args, _o: seen.append(len(args[0])))
    try:
        CAM.attribute(images, target=text, topk=64, early_stop=1e9, perturbations_per_eval=8)
        early = sum(seen)
        seen.clear()
        CAM.attribute(images, target=text, topk=64, perturbations_per_eval=8)
        exact = sum(seen)
    finally:
        handle.remove()
    assert (early, exact) == (1 + 16, 1 + 64)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", True])
def test_bad_tolerance_names_the_argument(bad):
    expected = "early_stop: expected None or a finite number >= 0"
    with pytest.raises((TypeError, ValueError), match=expected):
        CAM.attribute(images_for(MODEL, 1), target=texts(1, 1), early_stop=bad)
