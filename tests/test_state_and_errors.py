"""The model is left as found, and every bad input raises a clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import images_for, texts, tiny_rn, tiny_vit
from torch import nn

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer


def snapshot(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        [p.grad for p in model.parameters()],
    )


def mixed_state(model: nn.Module) -> nn.Module:
    model.train()
    next(iter(model.visual.children())).eval()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 3 != 0)
    return model


@pytest.mark.parametrize("method", [GScoreCAM, ScoreCAM])
def test_model_left_as_found(method):
    model = mixed_state(tiny_rn(seed=1))
    before = snapshot(model)
    method(model, default_layer(model)).attribute(images_for(model, 2), target=texts(2, 2))
    after = snapshot(model)
    assert after[:3] == before[:3]
    assert all(g is None for g in after[3])


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


def test_state_restored_after_error():
    model = mixed_state(tiny_vit(seed=1))
    before = snapshot(model)
    cam = GScoreCAM(model, default_layer(model))
    with pytest.raises(ValueError, match="target"):
        cam.attribute(images_for(model, 2), target=torch.randn(2, 7))  # wrong width
    after = snapshot(model)
    assert after[:3] == before[:3]


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
        (True, TypeError, "bool"),
        (torch.tensor(3), TypeError, "Tensor"),
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


@pytest.mark.parametrize("dtype", ["bf16", torch.int8])
def test_bad_autocast(rn_cam, dtype):
    model, cam = rn_cam
    with pytest.raises(TypeError, match=r"autocast: expected None or a floating torch\.dtype"):
        cam.attribute(images_for(model, 1), target=texts(1, 1)[0, 0], autocast=dtype)
