"""ZeroShotClassifier: CLIP as a K-way classifier, unchanged in our methods, Captum's methods
and metrics, and pytorch-grad-cam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam, Saliency
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_gscorecam import (
    CLIPSimilarity,
    GScoreCAM,
    HilaCAM,
    ScoreCAM,
    ZeroShotClassifier,
    default_layer,
    encode_text,
)
from captum_gscorecam.grids import grid_tap
from tests.helpers import images_for, texts


@pytest.fixture(scope="module")
def prompts():
    return texts(1, 3, seed=7)[0]  # (K, D), K = 3


def test_logits_are_scaled_cosines(rn, prompts):
    x = images_for(rn, 2)
    similarity = CLIPSimilarity(rn)
    with torch.no_grad():
        logits = ZeroShotClassifier(rn, 5 * prompts)(x)
        expected = torch.stack([similarity(x, prompts[k]) for k in range(3)], dim=1)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected)
    assert ZeroShotClassifier(similarity, prompts).model is rn


def test_one_text_is_one_prompt(rn, prompts):
    x = images_for(rn, 2)
    with torch.no_grad():
        one = ZeroShotClassifier(rn, prompts[1])(x)
        three = ZeroShotClassifier(rn, prompts)(x)
    assert one.shape == (2, 1)
    torch.testing.assert_close(one[:, 0], three[:, 1])


def test_encode_text_recipe(rn, tokenizer):
    clf = ZeroShotClassifier(rn, encode_text(rn, tokenizer, ["a dog", "a cat"]))
    assert clf(images_for(rn, 1)).shape == (1, 2)


@pytest.mark.parametrize(
    ("model", "text", "error", "match"),
    [
        (nn.Linear(2, 2), None, TypeError, "model: expected a CLIP model"),
        ("rn", [1.0] * 32, TypeError, "text_emb: expected a floating-point tensor"),
        ("rn", torch.ones(3, 32, dtype=torch.long), TypeError, "text_emb: expected a floating"),
        ("rn", torch.ones(2, 3, 32), ValueError, r"text_emb: expected K >= 1 .* \(2, 3, 32\)"),
        ("rn", torch.ones(0, 32), ValueError, "text_emb: expected K >= 1"),
        ("rn", torch.full((2, 32), float("nan")), ValueError, "text_emb: contains NaN"),
        ("rn", torch.zeros(2, 32), ValueError, "text_emb: an embedding of norm 0"),
        ("rn", torch.full((2, 32), 1e-20), ValueError, r"text_emb: .* at most 1e-12\) has no"),
        ("rn", torch.empty(2, 32, device="meta"), ValueError, "text_emb: a tensor on the meta"),
    ],
)
def test_bad_arguments(rn, model, text, error, match):
    with pytest.raises(error, match=match):
        ZeroShotClassifier(rn if model == "rn" else model, text if text is not None else 1)


def test_text_width_must_match(rn):
    with pytest.raises(ValueError, match=r"text_emb: width 16 does not match .* width 32"):
        ZeroShotClassifier(rn, torch.ones(2, 16))(images_for(rn, 1))


@pytest.mark.slow
@pytest.mark.parametrize("cam_class", [GScoreCAM, ScoreCAM])
@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_our_cams_with_integer_targets(request, prompts, cam_class, tower):
    model = request.getfixturevalue(tower)
    x = images_for(model, 2)
    kwargs = {"topk": 9} if cam_class is GScoreCAM else {}
    clf = ZeroShotClassifier(model, prompts)
    layer = default_layer(model)
    by_text = cam_class(model, layer).attribute(x, target=prompts[[1, 2]], **kwargs)
    torch.testing.assert_close(cam_class(clf, layer).attribute(x, target=[1, 2], **kwargs), by_text)
    single = cam_class(model, layer).attribute(x, target=prompts[2], **kwargs)
    torch.testing.assert_close(cam_class(clf, layer).attribute(x, target=2, **kwargs), single)


def test_hilacam_with_integer_targets(vit, prompts):
    x = images_for(vit, 2)
    expected = HilaCAM(vit).attribute(x, target=prompts[[0, 2]])
    got = HilaCAM(ZeroShotClassifier(vit, prompts)).attribute(x, target=[0, 2])
    torch.testing.assert_close(got, expected)


def test_captum_methods(rn, prompts):
    x = images_for(rn, 2)
    clf = ZeroShotClassifier(rn, prompts)
    similarity = CLIPSimilarity(rn)
    layer = default_layer(rn)
    gradcam = LayerGradCam(clf, layer).attribute(x, target=1)
    expected = LayerGradCam(similarity, layer).attribute(x, additional_forward_args=(prompts[1],))
    torch.testing.assert_close(gradcam, expected)
    ig = IntegratedGradients(clf).attribute(x, target=[0, 2], n_steps=8)
    ig_text = IntegratedGradients(similarity).attribute(
        x, additional_forward_args=(prompts[[0, 2]],), n_steps=8
    )
    torch.testing.assert_close(ig, ig_text)


def test_captum_layer_method_on_a_vit_grid(vit, prompts):
    x = images_for(vit, 2)
    clf = ZeroShotClassifier(vit, prompts)
    with grid_tap(vit, default_layer(vit)) as tap:
        maps = LayerGradCam(clf, tap).attribute(x, target=0)
    assert maps.shape == (2, 1, 4, 4)


def test_captum_metrics(rn, prompts):
    x = images_for(rn, 2)
    clf = ZeroShotClassifier(rn, prompts)
    saliency = Saliency(clf)
    attributions = saliency.attribute(x, target=1)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0)) * 0.05
        return noise, inputs - noise

    infid = infidelity(clf, perturb, x, attributions, target=1, n_perturb_samples=4)
    sens = sensitivity_max(saliency.attribute, x, target=1, n_perturb_samples=3)
    assert infid.shape == sens.shape == (2,)
    assert torch.isfinite(infid).all()
    assert (sens > 0).all()


def test_pytorch_grad_cam(rn, prompts):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = images_for(rn, 2)
    clf = ZeroShotClassifier(rn, prompts)
    layer = default_layer(rn)
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(2)]
    with GradCAM(model=clf, target_layers=[layer]) as cam:
        got = cam(input_tensor=x, targets=targets)
    # Grad-CAM is relu(sum_c mean(G_c) A_c): Captum's LayerGradCam, min-max scaled and resized
    # with pytorch-grad-cam's own helper
    captum = LayerGradCam(clf, layer).attribute(x, target=[0, 2], relu_attributions=True)
    expected = scale_cam_image(captum[:, 0].detach().numpy(), (64, 64))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with PgcScoreCAM(model=clf, target_layers=[layer]) as cam:
        cam.batch_size = 64
        first = cam(input_tensor=x[:1], targets=[ClassifierOutputTarget(0)])
        other = cam(input_tensor=x[:1], targets=[ClassifierOutputTarget(1)])
    assert first.shape == (1, 64, 64)
    assert np.isfinite(first).all()
    assert not np.allclose(first, other)  # the target picks the prompt


# --- Strict targets: integer indices only, never coerced ----------------------------------


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ([0.9, 2.7], TypeError, r"target: expected integer indices .* got 0\.9 in entry 0"),
        ([True, False], TypeError, r"target: expected integer indices .* got True in entry 0"),
        (
            [torch.tensor([0, 1]), torch.tensor([2])],
            TypeError,
            r"target: .* got a torch\.int64 Tensor of shape \(2,\) in entry 0",
        ),
        ([[0], [1]], TypeError, "target: expected integer indices .* got list in entry 0"),
        (["a", "b"], TypeError, "target: expected integer indices .* got 'a' in entry 0"),
        ([None, 1], TypeError, "target: expected integer indices .* got None in entry 0"),
        ([(0,), (1, 0)], ValueError, r"target: every entry .* same number of dims, got lengths"),
        ([(), ()], ValueError, "target: an empty tuple in entry 0 indexes nothing"),
        ((), ValueError, "target: an empty tuple indexes nothing"),
        ((0.5,), TypeError, "target: expected integer indices .* got 0.5"),
        (0.5, TypeError, "target: expected None, an int, a tuple, a list or a tensor, got 0.5"),
        (True, TypeError, "target: expected integer indices .* got True"),
        ("a", TypeError, "target: expected None, an int, a tuple, a list or a tensor, got 'a'"),
        (10**30, ValueError, r"target: index 10{30} is out of range for any output"),
        (torch.tensor([0.0, 1.0]), TypeError, "target: a floating-point target is a text emb"),
        (torch.tensor([True, False]), TypeError, "target: a tensor target must hold integer"),
    ],
)
@pytest.mark.parametrize("cam_class", [GScoreCAM, ScoreCAM])
def test_integer_targets_must_be_integers(rn, prompts, cam_class, target, error, match):
    clf = ZeroShotClassifier(rn, prompts)
    with pytest.raises(error, match=match):
        cam_class(clf, default_layer(rn)).attribute(images_for(rn, 2), target=target)


def test_integer_like_targets_are_the_ints_they_hold(rn, prompts):
    clf = ZeroShotClassifier(rn, prompts)
    cam = GScoreCAM(clf, default_layer(rn))
    x = images_for(rn, 2)
    expected = cam.attribute(x, target=[0, 2], topk=4)
    for same in (
        [np.int64(0), np.int64(2)],
        [torch.tensor(0), torch.tensor(2)],
        [(0,), (2,)],
        [-3, -1],
        torch.tensor([0, 2]),
    ):
        torch.testing.assert_close(cam.attribute(x, target=same, topk=4), expected)
    torch.testing.assert_close(
        cam.attribute(x, target=np.int64(2), topk=4), cam.attribute(x, target=2, topk=4)
    )


@pytest.mark.parametrize("norm", [0.0, 1e-20, 1e-13, 1e-11, 1e-6, 1.0])
def test_the_classifier_refuses_the_text_rows_a_text_target_refuses(rn, prompts, norm):
    row = torch.ones(32, dtype=torch.float64) * norm / 32**0.5
    text = torch.cat([prompts.double(), row[None]]).float()
    cam = GScoreCAM(rn, default_layer(rn))
    if norm < 1e-12:
        with pytest.raises(ValueError, match=r"^target: a text embedding is all zeros"):
            cam.attribute(images_for(rn, 1), target=text[None], topk=4)
        with pytest.raises(ValueError, match=r"^text_emb: an embedding of norm 0 \(or at most"):
            ZeroShotClassifier(rn, text)
    else:
        cam.attribute(images_for(rn, 1), target=text[None], topk=4)
        ZeroShotClassifier(rn, text)
