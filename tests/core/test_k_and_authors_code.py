"""One default k (per tower), and the switch that reproduces the authors' released code."""

from __future__ import annotations

import math
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer, encode_text, gradcam_layer
from captum_gscorecam.checks import CONV_TOPK_SHARE, TOKEN_TOPK_SHARE, default_topk, resolve_topk
from captum_gscorecam.methods import explained_layer, layer_path, resolved_topk
from captum_gscorecam.shapes import load_shapes_clip, render_scene
from tests.helpers import ROOT, images_for, reference_gscorecam, texts


def test_default_topk_rule():
    assert (CONV_TOPK_SHARE, TOKEN_TOPK_SHARE) == (0.1, 0.5)
    assert default_topk(3072, tokens=False) == 308  # the paper's 300 of RN50x16, rounded up
    assert default_topk(256, tokens=False) == 26
    assert default_topk(128, tokens=True) == 64
    assert default_topk(5, tokens=False) == 1
    assert default_topk(1, tokens=True) == 1
    for c in range(2, 200):
        assert 1 <= default_topk(c, tokens=False) < c or c <= 10
        assert default_topk(c, tokens=True) == math.ceil(c / 2) < c
    with pytest.raises(ValueError, match="n_channels"):
        default_topk(0, tokens=False)


@pytest.mark.slow
@pytest.mark.parametrize(("tower", "channels", "tokens"), [("rn", 256, False), ("vit", 128, True)])
def test_the_default_is_not_scorecam_on_the_bundled_models(tower, channels, tokens):
    model, preprocess, tokenizer = load_shapes_clip(tower)
    scene = render_scene(5, n_objects=3)
    image = preprocess(Image.fromarray(scene.image))[None]
    text = encode_text(model, tokenizer, [scene.captions[0]])[0]
    layer = default_layer(model)
    default = GScoreCAM(model, layer).attribute(image, target=text)
    k = default_topk(channels, tokens)
    assert k < channels
    torch.testing.assert_close(
        default, GScoreCAM(model, layer).attribute(image, target=text, topk=k)
    )
    everything = ScoreCAM(model, layer).attribute(image, target=text)
    assert (default - everything).abs().max() > 1e-3 * everything.abs().max()


def test_the_default_follows_the_layer_kind(rn, vit):
    for model, tokens in ((rn, False), (vit, True)):
        x, text = images_for(model, 1), texts(1, 1)[:, 0]
        layer = default_layer(model)
        c = 256 if model is rn else 32
        default = GScoreCAM(model, layer).attribute(x, target=text)
        explicit = GScoreCAM(model, layer).attribute(x, target=text, topk=default_topk(c, tokens))
        torch.testing.assert_close(default, explicit)


@pytest.mark.parametrize("topk", [None, 0.3, 1.0, 5, 10_000])
def test_resolved_topk_is_the_k_gscorecam_uses(rn, vit, topk):
    for model, channels, tokens in ((rn, 256, False), (vit, 32, True)):
        x, text = images_for(model, 2), texts(2, 1)[:, 0]
        model.train()
        k, c = resolved_topk(model, x, "gscorecam", topk)
        assert model.training  # left as found
        model.eval()
        assert c == channels
        assert k == resolve_topk(topk, channels, tokens)
        assert 1 <= k <= channels
        layer = default_layer(model)
        assert not layer._forward_hooks
        torch.testing.assert_close(
            GScoreCAM(model, layer).attribute(x, target=text, topk=topk),
            GScoreCAM(model, layer).attribute(x, target=text, topk=k),
        )
    for method in ("scorecam", "gradcam", "occlusion"):
        assert resolved_topk(rn, images_for(rn, 1), method, None) is None


def test_resolve_topk_rule():
    assert resolve_topk(None, 2048, tokens=False) == default_topk(2048, tokens=False) == 205
    assert resolve_topk(300, 2048, tokens=False) == 300
    assert resolve_topk(300, 256, tokens=True) == 256  # a count is clipped to C
    assert resolve_topk(0.25, 10, tokens=False) == 3  # a fraction rounds up
    assert resolve_topk(1.0, 768, tokens=True) == 768


def test_explained_layer_and_its_path(rn, vit):
    assert explained_layer(rn, "gscorecam") is default_layer(rn)
    assert explained_layer(vit, "gradcam") is gradcam_layer(vit)
    assert explained_layer(rn, "occlusion") is None
    assert explained_layer(rn, "gscorecam", rn.visual.layer3) is rn.visual.layer3
    assert layer_path(rn, default_layer(rn)) == "visual.layer4"
    assert layer_path(vit, gradcam_layer(vit)) == "visual.transformer.resblocks.0"


def authors_gscorecam(
    model: torch.nn.Module, image: torch.Tensor, text: torch.Tensor, topk: int | None
) -> torch.Tensor:
    """The authors' code's two rules, transcribed one channel at a time: masks upsampled with
    ``align_corners=True``; ``w = softmax`` over all C channels, 0 for channels not scored;
    ``map = relu(sum over all C of w_c A_c)``. ResNet towers (``(N, C, h, w)`` layers) only.
    """
    layer = default_layer(model)

    def score(x: torch.Tensor) -> float:
        embedding = model.encode_image(x)[0]
        return float(model.logit_scale.exp() * F.cosine_similarity(embedding, text, dim=0))

    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.update(out=out))
    try:
        x = image[None].clone().requires_grad_(True)
        s = model.logit_scale.exp() * F.cosine_similarity(model.encode_image(x)[0], text, dim=0)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(s, store["out"])
    acts = store["out"][0].detach()
    n_channels = acts.shape[0]
    importance = [float(grad[0, c].mean()) for c in range(n_channels)]
    ranked = sorted(range(n_channels), key=lambda c: -importance[c])
    chosen = ranked if topk is None else ranked[:topk]
    scores = [0.0] * n_channels
    with torch.no_grad():
        for c in chosen:
            up = F.interpolate(
                acts[c][None, None], size=image.shape[1:], mode="bilinear", align_corners=True
            )
            mask = (up - up.min()) / (up.max() - up.min() + 1e-6)
            scores[c] = score(image[None] * mask)
    top = max(scores)
    exps = [math.exp(v - top) for v in scores]
    weights = [e / sum(exps) for e in exps]
    cam = sum(weights[c] * acts[c] for c in range(n_channels))
    return F.relu(cam)


@pytest.mark.slow
def test_authors_code_matches_a_transcription_of_its_rules(rn):
    x, text = images_for(rn, 2, seed=3), texts(2, 1, seed=4)[:, 0]
    layer = default_layer(rn)
    ours = GScoreCAM(rn, layer).attribute(x, target=text, topk=12, authors_code=True)
    everything = ScoreCAM(rn, layer).attribute(x, target=text, authors_code=True)
    for n in range(2):
        expected = authors_gscorecam(rn, x[n], text[n], 12)
        torch.testing.assert_close(ours[n, 0], expected, atol=1e-5, rtol=1e-4)
        expected_all = authors_gscorecam(rn, x[n], text[n], None)
        torch.testing.assert_close(everything[n, 0], expected_all, atol=1e-5, rtol=1e-4)


def test_the_default_is_still_the_papers_formula(rn):
    x, text = images_for(rn, 1, seed=5), texts(1, 1, seed=6)[:, 0]
    cam = GScoreCAM(rn, default_layer(rn))
    ours = cam.attribute(x, target=text, topk=12)
    torch.testing.assert_close(ours[0, 0], reference_gscorecam(rn, x[0], text[0], 12))
    authors = cam.attribute(x, target=text, topk=12, authors_code=True)
    assert (ours - authors).abs().max() > 1e-3 * ours.abs().max()


def test_authors_code_must_be_a_flag(rn):
    x, text = images_for(rn, 1), texts(1, 1)[:, 0]
    with pytest.raises(TypeError, match="authors_code"):
        GScoreCAM(rn, default_layer(rn)).attribute(x, target=text, topk=2, authors_code="yes")


def test_the_authors_code_benchmark_runs(tmp_path, monkeypatch):
    benchmarks = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    out = tmp_path / "authors.md"
    argv = ["authors_code.py", "--scenes", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(benchmarks / "authors_code.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [row[1].strip() for row in rows[1:]] == ["trained", "random"]
    for row in rows[1:]:
        assert -1 <= float(row[3]) <= 1  # a correlation
        assert 0 <= float(row[5]) <= 1  # a share of maps
