"""explain_photo: one photo against T prompts, as ``gscorecam explain`` and the app see it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms

from captum_gscorecam.clip import CLIPSimilarity
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.photos import explain_photo
from captum_gscorecam.visualization import to_photo
from tests.helpers import texts


def _open_clip_preprocess(size: int) -> transforms.Compose:
    """open_clip's default: shortest side to ``size``, centre crop, normalise."""
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
        ]
    )


@pytest.mark.parametrize("method", ["gscorecam", "gradcam", "saliency"])
def test_maps_on_the_photo_and_scores_of_the_preprocessed_photo(rn, method):
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (80, 128, 3), dtype=np.uint8))  # wide: cropped
    preprocess = _open_clip_preprocess(64)
    text = texts(1, 3)[0]  # (3, D)
    result = explain_photo(rn, preprocess, photo, text, method, topk=0.25)
    assert result.maps.dtype == np.float32
    assert result.maps.shape == (3, 80, 128)
    # the crop keeps the middle 80 of 128 columns: the 24 on each side have no value
    assert np.isnan(result.maps[:, :, :24]).all()
    assert np.isnan(result.maps[:, :, -24:]).all()
    assert np.isfinite(result.maps[:, :, 24:-24]).all()
    images = preprocess(photo)[None]
    maps = explain_maps(rn, images, text[None], method, 0.25)
    np.testing.assert_allclose(result.maps, to_photo(maps[0], photo.size, preprocess), rtol=1e-5)
    with torch.no_grad():
        scores = CLIPSimilarity(rn)(images, text[None])[0].numpy()
    assert result.scores.dtype == np.float32
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5)


def test_layer_and_chunks_reach_the_method(rn):
    photo = Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    preprocess = _open_clip_preprocess(64)
    text = texts(1, 2)[0]
    layer3 = explain_photo(rn, preprocess, photo, text, "scorecam", layer=rn.visual.layer3)
    images = preprocess(photo)[None]
    expected = explain_maps(rn, images, text[None], "scorecam", None, layer=rn.visual.layer3)
    assert expected.shape[-2:] == (4, 4)  # layer3 of the 64 px ResNet tower, not layer4's 2
    np.testing.assert_allclose(
        layer3.maps, to_photo(expected[0], photo.size, preprocess), rtol=1e-5
    )
    chunked = explain_photo(rn, preprocess, photo, text, "scorecam", perturbations_per_eval=3)
    default = explain_photo(rn, preprocess, photo, text, "scorecam")
    np.testing.assert_allclose(chunked.maps, default.maps, rtol=1e-4, atol=1e-6)
    chunked = explain_maps(rn, images, text[None], "scorecam", None, perturbations_per_eval=7)
    whole = explain_maps(rn, images, text[None], "scorecam", None, perturbations_per_eval=256)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)
    assert not np.allclose(layer3.maps, default.maps)
