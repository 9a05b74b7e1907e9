"""The model is left as found, and every bad input raises a clear error."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from captum.metrics import sensitivity_max
from torch import nn

from captum_gscorecam import (
    CLIPSimilarity,
    GScoreCAM,
    HilaCAM,
    ScoreCAM,
    default_layer,
    encode_text,
)
from captum_gscorecam.clip import image_features
from captum_gscorecam.engine import exclusive
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.towers import image_input
from tests.helpers import images_for, on_threads, texts, tiny_rn, tiny_vit
from tests.tower_models import TOWERS


def mixed_state(model: nn.Module) -> nn.Module:
    model.train()
    next(iter(model.visual.children())).eval()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 3 != 0)
    return model


@pytest.mark.parametrize("method", [GScoreCAM, ScoreCAM])
def test_model_left_as_found(method, model_state):
    model = mixed_state(tiny_rn(seed=1))
    before = model_state(model)
    method(model, default_layer(model)).attribute(images_for(model, 2), target=texts(2, 2))
    after = model_state(model)
    assert after == before
    assert all(g is None for g in after["grads"])


def test_runs_in_eval_mode_and_restores():
    # batch norm in eval mode: an image's map does not depend on the other images of the batch
    model = mixed_state(tiny_rn(seed=1))
    cam = GScoreCAM(model, default_layer(model))
    x, text = images_for(model, 2), texts(2, 1)
    together = cam.attribute(x, target=text, topk=10)
    alone = cam.attribute(x[:1], target=text[:1], topk=10)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-4)
    assert model.training
    assert not next(iter(model.visual.children())).training


def test_frozen_model_still_gets_gradients():
    model = tiny_rn(seed=2).requires_grad_(False)
    attr = GScoreCAM(model, default_layer(model)).attribute(
        images_for(model, 1), target=texts(1, 1), topk=5
    )
    assert attr.sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_state_restored_after_error(model_state):
    model = mixed_state(tiny_vit(seed=1))
    before = model_state(model)
    cam = GScoreCAM(model, default_layer(model))
    with pytest.raises(ValueError, match="target"):
        cam.attribute(images_for(model, 2), target=torch.randn(2, 7))  # wrong width
    assert model_state(model) == before


def test_hook_removed_when_the_forward_raises():
    model = tiny_rn(seed=3)
    layer = default_layer(model)

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.visual.attnpool = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        GScoreCAM(model, layer).attribute(images_for(model, 1), target=texts(1, 1))
    assert not layer._forward_hooks


@pytest.fixture(scope="module")
def rn_cam():
    model = tiny_rn()
    return model, GScoreCAM(model, default_layer(model))


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (torch.randn(3, 64, 64), "inputs: expected a 4-D float tensor"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.long), "inputs: expected a 4-D float tensor"),
        ([torch.randn(1, 3, 64, 64)], "inputs: expected a 4-D float tensor"),
        (torch.full((1, 3, 64, 64), float("nan")), "inputs: contains NaN"),
        (torch.empty(0, 3, 64, 64), "inputs: expected at least one image"),
    ],
)
def test_bad_inputs(rn_cam, inputs, match):
    _, cam = rn_cam
    with pytest.raises(ValueError, match=match):
        cam.attribute(inputs, target=texts(1, 1)[0, 0])


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (
            torch.randn(2, 16),
            "target: text embedding width 16 does not match the image embedding width 32",
        ),
        (torch.randn(3, 32), "target: text embeddings for 3 images, but inputs hold 2"),
        (torch.randn(3, 2, 32), "target: text embeddings for 3 images, but inputs hold 2"),
        (
            torch.randn(2, 2, 2, 32),
            r"target: expected a text embedding \(D,\), \(N, D\) or \(N, T, D\)",
        ),
    ],
)
def test_bad_text_targets(rn_cam, target, match):
    model, cam = rn_cam
    with pytest.raises(ValueError, match=match):
        cam.attribute(images_for(model, 2), target=target)


TOPK_EXPECTED = (
    r"topk: expected a channel count \(an int >= 1\) or a fraction of the channels in \(0, 1\]"
)


@pytest.mark.parametrize(
    ("topk", "error", "shown"),
    [
        (0, ValueError, "0"),
        (-3, ValueError, "-3"),
        (0.0, ValueError, "0.0"),
        (-0.5, ValueError, "-0.5"),
        (1.5, ValueError, "1.5"),
        (float("nan"), ValueError, "nan"),
        (float("inf"), ValueError, "inf"),
        ("10", TypeError, "'10'"),
        (True, TypeError, "True"),
        (torch.tensor(3), TypeError, r"a torch.int64 Tensor of shape \(\)"),
    ],
)
def test_bad_topk(rn_cam, topk, error, shown):
    model, cam = rn_cam
    with pytest.raises(error, match=f"{TOPK_EXPECTED}, got {shown}$"):
        cam.attribute(images_for(model, 1), target=texts(1, 1)[0, 0], topk=topk)


@pytest.mark.parametrize(("ppe", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_bad_perturbations_per_eval(rn_cam, ppe, error):
    model, cam = rn_cam
    with pytest.raises(error, match="perturbations_per_eval: expected None or an int >= 1"):
        cam.attribute(images_for(model, 1), target=texts(1, 1)[0, 0], perturbations_per_eval=ppe)


def test_layer_outside_the_forward(rn_cam):
    model, _ = rn_cam
    unused = model.transformer.resblocks[0]  # text tower: not run by encode_image
    with pytest.raises(ValueError, match="layer: no activation was captured"):
        GScoreCAM(model, unused).attribute(images_for(model, 1), target=texts(1, 1)[0, 0])


def test_layer_with_unusable_output(rn_cam):
    model, _ = rn_cam
    with pytest.raises(ValueError, match=r"layer: expected its output to be \(N, C, h, w\)"):
        GScoreCAM(model, model.visual.attnpool).attribute(
            images_for(model, 1), target=texts(1, 1)[0, 0]
        )


def test_layer_with_tuple_output():
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x), x

    block = TwoOutputs()
    with pytest.raises(
        ValueError, match="layer: expected its output to be a single tensor, got tuple"
    ):
        GScoreCAM(lambda x: block(x)[0].sum(dim=(1, 2, 3)), block).attribute(
            torch.randn(1, 3, 8, 8)
        )


def test_non_square_token_grid():
    class Tokens(nn.Module):  # (N, 1 + 2 * 3, D): a class token and a 2 x 3 grid
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 8)

        def forward(self, x):
            patches = nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)
            return self.proj(torch.cat([patches.mean(1, keepdim=True), patches], dim=1))

    tokens = Tokens()
    with pytest.raises(ValueError, match="do not form a square grid; pass reshape_transform"):
        GScoreCAM(lambda x: tokens(x).sum(dim=(1, 2)), tokens).attribute(torch.randn(1, 3, 8, 12))


def test_float_target_needs_a_clip_model():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match="target: a floating-point target is a text embedding"):
        GScoreCAM(lambda x: conv(x).mean(dim=(2, 3)), conv).attribute(
            torch.randn(1, 3, 8, 8), target=torch.randn(4)
        )


def test_device_ids_not_supported(rn_cam):
    model, _ = rn_cam
    with pytest.raises(ValueError, match="device_ids"):
        GScoreCAM(model, default_layer(model), device_ids=[0])


def test_layer_must_be_a_module(rn_cam):
    model, _ = rn_cam
    with pytest.raises(TypeError, match=r"layer: expected a torch\.nn\.Module"):
        GScoreCAM(model, "visual.layer4")


def test_additional_args_with_text_target(rn_cam):
    model, cam = rn_cam
    with pytest.raises(ValueError, match="additional_forward_args: must be None"):
        cam.attribute(images_for(model, 1), target=texts(1, 1)[0, 0], additional_forward_args=(1,))


# --- Calls inside torch.no_grad() / torch.inference_mode() ---------------------------------


def explainer(method: str, model: nn.Module):
    if method == "hilacam":
        return HilaCAM(model)
    return {"gscorecam": GScoreCAM, "scorecam": ScoreCAM}[method](model, default_layer(model))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam"])
def test_same_maps_under_no_grad_and_inference_mode(method, context):
    model = tiny_vit(seed=4) if method == "hilacam" else tiny_rn(seed=4)
    cam = explainer(method, model)
    x, text = images_for(model, 2, seed=4), texts(2, 2, seed=5)
    outside = cam.attribute(x, target=text)
    with context():
        # made inside: under inference_mode these are inference tensors
        inside = cam.attribute(x.clone(), target=text.clone())
    torch.testing.assert_close(inside, outside, atol=0, rtol=0)
    assert not inside.is_inference()


def test_captum_sensitivity_max_runs_on_gscorecam():
    # sensitivity_max explains under no_grad; like for Captum's LayerGradCam, a one-tensor
    # explanation goes in a tuple when several perturbations are drawn per example
    model = tiny_rn(seed=4)
    cam = GScoreCAM(model, default_layer(model))
    x, text = images_for(model, 2, seed=6), texts(2, 1, seed=7)[:, 0]
    sensitivity = sensitivity_max(
        lambda inputs, **kwargs: (cam.attribute(inputs, **kwargs),),
        x,
        target=text,
        topk=8,
        n_perturb_samples=3,
        perturb_radius=0.02,
    )
    assert sensitivity.shape == (2,)
    assert torch.isfinite(sensitivity).all()
    assert (sensitivity > 0).all()


# --- Threads sharing one model ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam", "gradcam", "saliency"])
def test_threads_sharing_a_model_get_sequential_maps(method, model_state):
    # train mode with BatchNorm (the ResNet) or attention swaps (HilaCAM on the ViT)
    model = mixed_state(tiny_vit(seed=5) if method == "hilacam" else tiny_rn(seed=5))
    assert any(isinstance(m, nn.BatchNorm2d) and m.training for m in model.modules()) or (
        method == "hilacam"
    )
    before = model_state(model)
    jobs = [(images_for(model, 1, seed=s), texts(1, 2, seed=s + 50)) for s in range(8)]
    sequential = [explain_maps(model, x, text, method, topk=8) for x, text in jobs]
    assert model_state(model) == before
    results, errors = on_threads(lambda i: explain_maps(model, *jobs[i], method, topk=8), len(jobs))
    assert errors == []
    for i, expected in enumerate(sequential):
        torch.testing.assert_close(results[i], expected, atol=0, rtol=0)
    assert model_state(model) == before


def test_train_mode_batchnorm_stats_do_not_move(model_state):
    model = tiny_rn(seed=6).train()
    before = model_state(model)
    GScoreCAM(model, default_layer(model)).attribute(images_for(model, 2), target=texts(2, 1))
    assert model_state(model) == before


def test_model_lock_is_reentrant_and_weak():
    model = tiny_rn(seed=6)
    cam = GScoreCAM(model, default_layer(model))
    with exclusive(model):  # the calling thread already holds it: no deadlock
        cam.attribute(images_for(model, 1), target=texts(1, 1), topk=4)
    freed = weakref.ref(model)
    del model, cam
    gc.collect()
    assert freed() is None


# --- Non-finite and degenerate text -----------------------------------------------------


def with_row(text: torch.Tensor, value: float) -> torch.Tensor:
    """``text`` ``(N, T, D)`` whose last prompt is all zeros (value 0) or holds ``value``."""
    bad = text.clone()
    if value == 0:
        bad[-1, -1] = 0.0
    else:
        bad[-1, -1, 0] = value
    return bad


@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam"])
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "target: the text embedding contains NaN or infinite values"),
        (float("inf"), "target: the text embedding contains NaN or infinite values"),
        (0.0, r"target: a text embedding is all zeros \(it matches no image\)"),
    ],
)
def test_non_finite_and_zero_text_rejected(method, value, match):
    model = tiny_vit(seed=7) if method == "hilacam" else tiny_rn(seed=7)
    cam = explainer(method, model)
    with pytest.raises(ValueError, match=match):
        cam.attribute(images_for(model, 2), target=with_row(texts(2, 2), value))
    with pytest.raises(ValueError, match=match):  # one text for every image, (D,)
        cam.attribute(images_for(model, 2), target=with_row(texts(1, 1), value)[0, 0])


class PoisonedScores(nn.Module):
    """Scores ``(N, 8)`` of a small conv net; the masked passes' scores are poisoned.

    The capture pass is left alone; in each masked batch (run in inference mode), row 0
    (``rows="first"``) or every row (``rows="all"``) gets ``value``.
    """

    def __init__(self, value: float, rows: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.value, self.rows = value, rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.conv(x).mean(dim=(2, 3))
        if not torch.is_inference_mode_enabled():
            return scores
        poisoned = torch.zeros_like(scores, dtype=torch.bool)
        poisoned[: 1 if self.rows == "first" else None] = True
        return torch.where(poisoned, self.value, scores)


@pytest.mark.parametrize("method", [GScoreCAM, ScoreCAM])
def test_some_non_finite_masked_scores_count_as_zero_with_one_warning(method):
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    nan, zero = PoisonedScores(float("nan"), "first"), PoisonedScores(0.0, "first")
    # 8 channels in chunks of 4: row 0 of each of the 2 masked batches is NaN
    kwargs = {"target": 0, "perturbations_per_eval": 4}
    if method is GScoreCAM:
        kwargs["topk"] = 8  # every channel, as ScoreCAM
    with pytest.warns(RuntimeWarning, match="2 of 8 masked scores were NaN or infinite") as seen:
        maps = method(nan, nan.conv).attribute(x, **kwargs)
    assert len(seen) == 1
    torch.testing.assert_close(maps, method(zero, zero.conv).attribute(x, **kwargs))
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_all_masked_scores_non_finite_is_an_error(value):
    model = PoisonedScores(value, "all")
    with pytest.raises(ValueError, match="forward_func: every masked score of image 0, prompt 0"):
        GScoreCAM(model, model.conv).attribute(torch.randn(1, 3, 12, 12), target=3)


def test_non_finite_unmasked_score_is_an_error():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="forward_func: the score of an unmasked input image"):
        GScoreCAM(lambda x: conv(x).mean(dim=(2, 3)) / 0.0, conv).attribute(
            torch.randn(1, 3, 8, 8), target=1
        )


# --- Every target form ------------------------------------------------------------------

CLIP_TARGET = "target: a CLIP model scores images against a text embedding"


@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam"])
@pytest.mark.parametrize("target", [None, 3, (0,), [0, 1], torch.tensor([1, 0])])
def test_clip_model_without_a_text_target(method, target):
    model = tiny_vit(seed=8) if method == "hilacam" else tiny_rn(seed=8)
    with pytest.raises(ValueError, match=CLIP_TARGET) as error:
        explainer(method, model).attribute(images_for(model, 2), target=target)
    assert "ZeroShotClassifier" in str(error.value)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (torch.randn(2, 0, 32), r"target: expected at least one prompt per image, got shape"),
        (torch.randn(0), r"target: expected a text embedding \(D,\), \(N, D\) or \(N, T, D\)"),
        (torch.randn(2, 0), r"target: expected a text embedding \(D,\), \(N, D\) or \(N, T, D\)"),
        (torch.tensor(1.0), r"target: expected a text embedding \(D,\), \(N, D\) or \(N, T, D\)"),
    ],
)
def test_empty_text_targets(rn_cam, target, match):
    model, cam = rn_cam
    with pytest.raises(ValueError, match=match):
        cam.attribute(images_for(model, 2), target=target)


@pytest.fixture(scope="module")
def scores_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    return conv, lambda x: conv(x).mean(dim=(2, 3))  # scores (N, 5)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (5, r"target: index 5 is out of range for dim 1 of forward_func's output of shape"),
        (-6, "target: index -6 is out of range for dim 1"),
        ([0, 9], "target: index 9 is out of range for dim 1"),
        (torch.tensor([7, 0]), "target: index 7 is out of range for dim 1"),
        ((1, 2), r"target: indexes 2 output dim\(s\), but forward_func returns shape"),
        ([0], r"target: a list target needs one entry per example \(2\), got 1"),
    ],
)
def test_target_index_errors(scores_model, target, match):
    conv, scores = scores_model
    with pytest.raises(ValueError, match=match):
        GScoreCAM(scores, conv).attribute(torch.randn(2, 3, 8, 8), target=target)


def test_negative_target_index_counts_from_the_end(scores_model):
    conv, scores = scores_model
    cam, x = GScoreCAM(scores, conv), torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(cam.attribute(x, target=-1), cam.attribute(x, target=4))


@pytest.mark.parametrize(
    ("forward", "error", "match"),
    [
        (lambda s: s.detach(), ValueError, "forward_func: its scores carry no gradient"),
        (lambda s: s.round().long(), TypeError, "forward_func: expected floating-point scores"),
        (lambda s: s > 0, TypeError, "forward_func: expected floating-point scores"),
    ],
)
def test_detached_or_integer_scores(scores_model, forward, error, match):
    conv, scores = scores_model
    with pytest.raises(error, match=match):
        GScoreCAM(lambda x: forward(scores(x)), conv).attribute(torch.randn(2, 3, 8, 8), target=0)


@pytest.mark.parametrize(
    ("forward", "args", "match"),
    [
        ("one", (1,), r"additional_forward_args: forward_func\(x\) cannot take the inputs and 1"),
        ("two", None, r"additional_forward_args: forward_func\(x, y\) cannot take the inputs and"),
        ("two", (1, 2), r"additional_forward_args: forward_func\(x, y\) cannot take the inputs"),
    ],
)
def test_additional_forward_args_count(scores_model, forward, args, match):
    conv, scores = scores_model
    functions = {"one": lambda x: scores(x), "two": lambda x, y: scores(x) * y}
    with pytest.raises(TypeError, match=match):
        GScoreCAM(functions[forward], conv).attribute(
            torch.randn(2, 3, 8, 8), target=0, additional_forward_args=args
        )


def test_clip_similarity_takes_the_text_as_its_additional_argument(rn_cam):
    model, cam = rn_cam
    captum_style = GScoreCAM(CLIPSimilarity(model), default_layer(model))
    x, text = images_for(model, 2), texts(2, 1)[:, 0]
    torch.testing.assert_close(
        captum_style.attribute(x, additional_forward_args=(text,), topk=20),
        cam.attribute(x, target=text, topk=20),
    )


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("a cat",), TypeError, "additional_forward_args: CLIPSimilarity takes one additional"),
        ((texts(2, 1)[:, 0],) * 2, TypeError, "additional_forward_args: CLIPSimilarity takes one"),
        (torch.ones(2, 32, dtype=torch.long), TypeError, "additional_forward_args: CLIPSimilarity"),
        (torch.zeros(2, 32), ValueError, "additional_forward_args: a text embedding is all zeros"),
        (torch.full((32,), float("nan")), ValueError, "additional_forward_args: the text embed"),
    ],
)
def test_clip_similarity_bad_additional_argument(rn_cam, args, error, match):
    model, _ = rn_cam
    with pytest.raises(error, match=match):
        GScoreCAM(CLIPSimilarity(model), default_layer(model)).attribute(
            images_for(model, 2), additional_forward_args=args
        )


# --- Images the model cannot take -------------------------------------------------------


@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam"])
@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 1, None), r"inputs: the model takes 3-channel images \(N, 3, H, W\), got shape"),
        ((1, 4, None), r"inputs: the model takes 3-channel images \(N, 3, H, W\), got shape"),
        ((1, 3, 48), r"inputs: the model takes (64 x 64|32 x 32) images \(its preprocess"),
        ((1, 3, 2), r"inputs: the model takes (64 x 64|32 x 32) images \(its preprocess"),
    ],
)
def test_images_the_tower_cannot_take(method, shape, match):
    model = tiny_vit(seed=9) if method == "hilacam" else tiny_rn(seed=9)
    size = shape[2] or image_input(model).size[0]
    with pytest.raises(ValueError, match=match):
        explainer(method, model).attribute(
            torch.randn(shape[0], shape[1], size, size), target=texts(1, 1)
        )


@pytest.mark.parametrize("method", ["gscorecam", "hilacam"])
def test_inputs_converted_to_the_model_dtype(method):
    model = tiny_vit(seed=10) if method == "hilacam" else tiny_rn(seed=10)
    x, text = images_for(model, 2, seed=10), texts(2, 1, seed=11)
    full = explainer(method, model).attribute(x, target=text)
    double = explainer(method, model).attribute(x.double(), target=text)
    torch.testing.assert_close(double, full, atol=0, rtol=0)
    low = explainer(method, model.to(torch.bfloat16)).attribute(x, target=text)
    assert low.dtype == torch.float32
    assert ((low - full).abs().max() / full.abs().max()) < 0.05


@pytest.mark.parametrize("name", list(TOWERS))
def test_image_input_says_which_sizes_each_tower_takes(name):
    build, size, *_ = TOWERS[name]
    model = build()
    spec = image_input(model)
    assert (spec.channels, spec.dtype, spec.device) == (3, torch.float32, torch.device("cpu"))
    assert spec.size == (None if name == "timm_convnext" else (size, size))
    cam = GScoreCAM(model, default_layer(model))
    other = torch.randn(1, 3, size + 16, size + 16)
    if spec.size is None:  # the claim "any size" holds: the tower runs, down to min_side
        assert cam.attribute(other, target=texts(1, 1), topk=4).shape[:2] == (1, 1)
        side = spec.min_side
        assert cam.attribute(torch.randn(1, 3, side, side + 5), target=texts(1, 1)).shape[0] == 1
        small = torch.randn(1, 3, side - 1, 2 * side)
        with pytest.raises(ValueError, match=f"inputs: the model takes images of at least {side}"):
            cam.attribute(small, target=texts(1, 1))
        with pytest.raises(RuntimeError):
            image_features(model, small)
    else:  # and so does "only this size": the tower itself fails on another
        with pytest.raises(ValueError, match=f"inputs: the model takes {size} x {size} images"):
            cam.attribute(other, target=texts(1, 1), topk=4)
        with pytest.raises((AssertionError, RuntimeError, ValueError)):  # timm asserts
            image_features(model, other)


# --- Tensors on the meta device (a shape, no values) --------------------------------------


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "hilacam"])
def test_tensors_on_the_meta_device_are_named(method):
    model = tiny_vit(seed=7) if method == "hilacam" else tiny_rn(seed=7)
    cam = explainer(method, model)
    x, text = images_for(model, 2), texts(2, 1)[:, 0]
    with pytest.raises(ValueError, match="inputs: a tensor on the meta device has no values"):
        cam.attribute(meta(*x.shape), target=text)
    with pytest.raises(ValueError, match="target: a tensor on the meta device has no values"):
        cam.attribute(x, target=meta(2, 32))
    similarity = GScoreCAM(CLIPSimilarity(model), default_layer(model))
    with pytest.raises(ValueError, match="additional_forward_args: a tensor on the meta"):
        similarity.attribute(x, additional_forward_args=(meta(2, 32),))


def test_meta_tensors_and_models_in_the_clip_adapter_are_named(rn, tokenizer):
    x, text = images_for(rn, 1), texts(1, 1)[0, 0]
    with pytest.raises(ValueError, match="images: a tensor on the meta device"):
        CLIPSimilarity(rn)(meta(*x.shape), text)
    with pytest.raises(ValueError, match="text_emb: a tensor on the meta device"):
        CLIPSimilarity(rn)(x, meta(32))
    on_meta = tiny_rn(seed=7).to("meta")
    with pytest.raises(ValueError, match="model: its parameters are on the meta device"):
        encode_text(on_meta, tokenizer, ["a cat"])
    with pytest.raises(ValueError, match="model: its parameters are on the meta device"):
        GScoreCAM(on_meta, default_layer(on_meta)).attribute(x, target=text)
