"""Captum interop: Captum's own methods through CLIPSimilarity, Captum targets, visualization."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, Occlusion
from captum.attr import visualization as viz
from torch import nn

from captum_gscorecam import CLIPSimilarity, GScoreCAM, ScoreCAM, default_layer
from captum_gscorecam.methods import explain_maps
from tests.helpers import images_for, texts, tiny_vit


def test_interpolate_and_visualize(rn):
    x = images_for(rn, 2)
    attr = GScoreCAM(rn, default_layer(rn)).attribute(x, target=texts(2, 1)[:, 0], topk=20)
    up = LayerAttribution.interpolate(attr, x.shape[-2:], "bilinear")
    assert up.shape == (2, 1, 64, 64)
    image = (x[0].permute(1, 2, 0) - x.min()) / (x.max() - x.min())
    fig, _ = viz.visualize_image_attr(
        up[0].permute(1, 2, 0).numpy(),
        image.numpy(),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert fig is not None
    matplotlib.pyplot.close(fig)


def test_captum_methods_through_clip_similarity(rn):
    similarity = CLIPSimilarity(rn)
    x = images_for(rn, 2)
    text = texts(2, 1)[:, 0]
    gradcam = LayerGradCam(similarity, default_layer(rn)).attribute(
        x, additional_forward_args=(text,)
    )
    assert gradcam.shape == (2, 1, 2, 2)
    occlusion = Occlusion(similarity).attribute(
        x, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), additional_forward_args=(text,)
    )
    assert occlusion.shape == x.shape
    assert torch.isfinite(occlusion).all()


def test_clip_similarity_as_forward_func_equals_text_target(rn):
    x = images_for(rn, 2)
    text = texts(2, 1)[:, 0]
    via_target = GScoreCAM(rn, default_layer(rn)).attribute(x, target=text, topk=15)
    via_args = GScoreCAM(CLIPSimilarity(rn), default_layer(rn)).attribute(
        x, additional_forward_args=text, topk=15
    )
    torch.testing.assert_close(via_args, via_target, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("form", ["int", "list", "tensor1", "tensorN"])
def test_integer_targets_keep_captum_meaning(rn, form):
    # a classifier over K prompts: forward returns (N, K) logits; target picks the prompt
    prompts = texts(1, 4, seed=3)[0]
    similarity = CLIPSimilarity(rn)

    def logits(images):
        return similarity.embed_images(images) @ prompts.T * similarity.logit_scale

    x = images_for(rn, 2)
    picks = [2, 2] if form in ("int", "tensor1") else [1, 3]
    target = {
        "int": 2,
        "list": [1, 3],
        "tensor1": torch.tensor(2),
        "tensorN": torch.tensor([1, 3]),
    }[form]
    ours = GScoreCAM(logits, default_layer(rn)).attribute(x, target=target, topk=15)
    expected = GScoreCAM(rn, default_layer(rn)).attribute(x, target=prompts[picks], topk=15)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_tuple_target_on_a_3d_output(rn):
    prompts = texts(1, 6, seed=4)[0]
    similarity = CLIPSimilarity(rn)

    def logits(images):
        return (similarity.embed_images(images) @ prompts.T * similarity.logit_scale).reshape(
            -1, 2, 3
        )

    x = images_for(rn, 2)
    ours = ScoreCAM(logits, default_layer(rn)).attribute(x, target=(1, 2))
    expected = ScoreCAM(rn, default_layer(rn)).attribute(x, target=prompts[5])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (None, "a target is needed"),
        ((1, 2), r"target: indexes 2 output dim\(s\)"),
        ([0, 1, 2], "one entry per example"),
        ("a dog", "target: expected None, an int"),
    ],
)
def test_bad_captum_targets(rn, target, match):
    prompts = texts(1, 3)[0]
    similarity = CLIPSimilarity(rn)

    def logits(images):
        return similarity.embed_images(images) @ prompts.T

    with pytest.raises((ValueError, TypeError), match=match):
        GScoreCAM(logits, default_layer(rn)).attribute(images_for(rn, 2), target=target)


def test_show_progress(rn, capsys):
    x = images_for(rn, 1)
    GScoreCAM(rn, default_layer(rn)).attribute(
        x, target=texts(1, 1)[0, 0], topk=20, perturbations_per_eval=8, show_progress=True
    )
    err = capsys.readouterr().err
    assert "gScoreCAM" in err
    assert "3/3" in err


def test_names():
    assert GScoreCAM.get_name() == "gScoreCAM"
    assert ScoreCAM.get_name() == "ScoreCAM"


class Transpose(nn.Module):
    def forward(self, x, attn_mask=None):
        return x.transpose(0, 1)


class Tap(nn.Module):
    def forward(self, x, attn_mask=None):
        return x


def test_sequence_first_tokens_on_a_generic_forward():
    # a tap that sees the last block's tokens as (L, N, D), in a plain callable: the layout, the
    # class token and the pooling are all inferred from the tensors
    model = tiny_vit(seed=5)
    last = default_layer(model)
    tap = Tap()
    model.visual.transformer.resblocks.extend([Transpose(), tap, Transpose()])
    x = images_for(model, 3)
    text = texts(3, 1)[:, 0]
    similarity = CLIPSimilarity(model)
    expected = GScoreCAM(model, last).attribute(x, target=text, topk=9)
    for i in range(3):
        generic = GScoreCAM(lambda images, i=i: similarity(images, text[i]), tap)
        torch.testing.assert_close(
            generic.attribute(x[i : i + 1], topk=9)[0], expected[i], atol=1e-5, rtol=1e-4
        )


def test_patch_pooled_vit_uses_mean_patch_gradient():
    model = tiny_vit(seed=6, pool_type="avg")
    x = images_for(model, 2)
    text = texts(2, 2)
    side = 4

    def patches(tokens):  # drop the class token; a custom transform averages all patch gradients
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    cam = GScoreCAM(model, default_layer(model))
    default = cam.attribute(x, target=text, topk=7)
    custom = cam.attribute(x, target=text, topk=7, reshape_transform=patches)
    torch.testing.assert_close(default, custom)


def test_bad_reshape_transform(rn):
    with pytest.raises(
        ValueError, match=r"reshape_transform: expected it to return a \(1, C, h, w\) tensor"
    ):
        GScoreCAM(rn, default_layer(rn)).attribute(
            images_for(rn, 1), target=texts(1, 1)[0, 0], reshape_transform=lambda t: t.flatten(1)
        )


def test_attribute_to_layer_input(rn):
    # the input of layer4 is the output of layer3: same maps
    x = images_for(rn, 2)
    text = texts(2, 2)
    cam = GScoreCAM(rn, rn.visual.layer4)
    via_input = cam.attribute(x, target=text, topk=30, attribute_to_layer_input=True)
    via_output = GScoreCAM(rn, rn.visual.layer3).attribute(x, target=text, topk=30)
    torch.testing.assert_close(via_input, via_output)
    assert via_input.shape == (2, 2, 4, 4)


def test_output_stays_a_normal_tensor(rn):
    attr = GScoreCAM(rn, default_layer(rn)).attribute(
        images_for(rn, 1), target=texts(1, 1)[0, 0], topk=4
    )
    attr /= attr.max()  # in-place edits work: not an inference tensor
    assert np.isclose(float(attr.max()), 1.0)


@pytest.mark.parametrize(("batch", "prompts"), [(None, 2), (7, 1), (1000, 3)])
def test_occlusions_progress_bar_counts_the_forward_passes_it_makes(
    rn, batch, prompts, capsys, monkeypatch
):
    # Captum's own bar counted pixels: 0/2353, finishing at 4/2353 on a 224 px image
    passes = []
    forward = CLIPSimilarity.forward
    monkeypatch.setattr(
        CLIPSimilarity, "forward", lambda self, *a: passes.append(1) or forward(self, *a)
    )
    capsys.readouterr()
    explain_maps(
        rn, images_for(rn, 2), texts(2, prompts), "occlusion", None, show_progress=True,
        perturbations_per_eval=batch,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "Occlusion" in err
    done, total = re.findall(r"(\d+)/(\d+)", err)[-1]
    assert int(done) == int(total) == len(passes)
    # 225 windows on the 64 px tiny model (9 px, stride 4: 15 x 15), one pass without occlusion
    assert len(passes) == prompts * (1 + -(-225 // (batch or 64)))
