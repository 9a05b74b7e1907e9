"""LeGrad, Grad-ECLIP and attention rollout as explainers: every target form, every tower,
the model left as found, no_grad / inference_mode callers, threads, errors; the explicit
attention of timm's modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from captum_gscorecam import CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.attention import recorded_attention
from captum_gscorecam.cli import main
from captum_gscorecam.evaluation.quantus import explain_func
from captum_gscorecam.grad_eclip import GradECLIP
from captum_gscorecam.legrad import LeGrad
from captum_gscorecam.methods import applicable_methods, check_method, explain_maps
from captum_gscorecam.rollout import AttentionRollout
from captum_gscorecam.shapes import render_scene
from captum_gscorecam.visualization import upsample
from tests.helpers import images_for, on_threads, texts, tiny_rn, tiny_vit
from tests.tower_models import TOWERS, WIDTH, hf_clip, timm_vit

METHODS = {"legrad": LeGrad, "grad_eclip": GradECLIP, "rollout": AttentionRollout}
# towers a method refuses, and the message that says why
REFUSED = {
    ("legrad", "timm_convnext"): "needs a ViT image tower",
    ("grad_eclip", "timm_convnext"): "needs a ViT image tower",
    ("rollout", "timm_convnext"): "needs a ViT image tower",
    ("grad_eclip", "timm_vit_registers_avg"): "averages its patch tokens",
    ("grad_eclip", "open_clip_avg_pool"): "averages its patch tokens",
}


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return tiny_vit(seed=2, layers=3)


@pytest.mark.parametrize("method", list(METHODS))
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 3),
    form=st.sampled_from(["d", "nd", "ntd"]),
    t=st.integers(1, 3),
)
@settings(max_examples=6, deadline=None)
def test_every_text_form_gives_maps_on_the_grid_prompt_by_prompt(vit, method, seed, n, form, t):
    images = images_for(vit, n, seed=seed)
    text = texts(n, t, seed=seed + 1)
    target = {"d": text[0, 0], "nd": text[:, 0], "ntd": text}[form]
    cam = METHODS[method](vit)
    maps = cam.attribute(images, target=target)
    prompts = t if form == "ntd" else 1
    assert maps.shape == (n, prompts, 4, 4)
    assert maps.dtype == torch.float32
    assert not maps.requires_grad
    assert (maps >= 0).all()
    assert maps.isfinite().all()
    if method == "legrad":
        assert torch.allclose(maps.amax(dim=(2, 3)), torch.ones(n, prompts))
    for j in range(prompts):  # T prompts in one pass equal one prompt at a time
        alone = text[:, j] if form == "ntd" else target
        torch.testing.assert_close(maps[:, j : j + 1], cam.attribute(images, target=alone))


@pytest.mark.parametrize("method", list(METHODS))
def test_captum_targets_equal_text_targets(vit, method):
    images = images_for(vit, 2, seed=3)
    prompts = texts(1, 3, seed=4)[0]
    expected = METHODS[method](vit).attribute(images, target=prompts[[2, 0]][:, None])
    classifier = ZeroShotClassifier(vit, prompts)
    got = METHODS[method](classifier).attribute(images, target=[2, 0])
    torch.testing.assert_close(got, expected)
    similarity = CLIPSimilarity(vit)
    per_image = prompts.expand(2, 3, -1)
    got = METHODS[method](similarity).attribute(
        images, target=[2, 0], additional_forward_args=per_image
    )
    torch.testing.assert_close(got, expected)
    got = METHODS[method](similarity).attribute(images, additional_forward_args=(prompts[[2, 0]],))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("tower", list(TOWERS))
def test_every_tower_gives_maps_or_a_named_refusal(method, tower, model_state):
    build, size, _, grid, _ = TOWERS[tower]
    model = build()
    if (method, tower) in REFUSED:
        with pytest.raises(ValueError, match=f"forward_func: .*{REFUSED[method, tower]}"):
            METHODS[method](model)
        return
    before = model_state(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    maps = METHODS[method](model).attribute(x, target=texts(2, 2, width=WIDTH))
    assert maps.shape == (2, 2, *grid)
    assert (maps >= 0).all()
    assert maps.isfinite().all()
    assert maps.sum() > 0
    assert model_state(model) == before


@pytest.mark.parametrize("method", list(METHODS))
def test_a_resnet_tower_and_a_plain_callable_are_named_errors(method):
    with pytest.raises(ValueError, match=r"forward_func: \w+ needs a ViT image tower"):
        METHODS[method](tiny_rn())
    with pytest.raises(TypeError, match=r"forward_func: \w+ expected a CLIP model"):
        METHODS[method](lambda x: x)


@pytest.mark.parametrize("method", list(METHODS))
def test_model_left_as_found_after_success_and_error(method, model_state):
    model = tiny_vit(seed=5, layers=2).train()
    model.visual.transformer.resblocks[0].requires_grad_(False)
    classifier = ZeroShotClassifier(model, texts(1, 2, seed=6)[0])
    before = model_state(classifier)
    cam = METHODS[method](classifier)
    cam.attribute(images_for(model, 2), target=1)
    assert model_state(classifier) == before
    with pytest.raises(ValueError, match="target"):
        cam.attribute(images_for(model, 2), target=5)  # no such prompt
    assert model_state(classifier) == before
    with pytest.raises(ValueError, match="inputs"):
        cam.attribute(images_for(model, 2)[0], target=1)
    assert model_state(classifier) == before


@pytest.mark.parametrize("method", list(METHODS))
def test_hf_attention_implementation_and_forwards_restored_after_a_failed_pass(method, model_state):
    model = hf_clip(seed=3).train()  # sdpa attention
    before = model_state(model)

    def fail(*_):
        raise RuntimeError("tower failed")

    handle = model.vision_model.post_layernorm.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="tower failed"):  # after every block ran patched
            METHODS[method](model).attribute(images_for(tiny_vit(), 1), target=texts(1, 1)[:, 0])
    finally:
        handle.remove()
    assert model_state(model) == before


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", list(METHODS))
def test_same_maps_under_no_grad_and_inference_mode(vit, method, context):
    cam = METHODS[method](vit)
    x, text = images_for(vit, 2, seed=7), texts(2, 2, seed=8)
    outside = cam.attribute(x, target=text)
    with context():
        inside = cam.attribute(x.clone(), target=text.clone())
    torch.testing.assert_close(inside, outside, atol=0, rtol=0)
    assert not inside.is_inference()


@pytest.mark.parametrize("method", list(METHODS))
def test_threads_sharing_a_model_get_sequential_maps(method, model_state):
    model = tiny_vit(seed=6, layers=2).train()
    before = model_state(model)
    jobs = [(images_for(model, 1, seed=s), texts(1, 2, seed=s + 50)) for s in range(8)]
    cam = METHODS[method](model)
    sequential = [cam.attribute(x, target=text) for x, text in jobs]
    results, errors = on_threads(  # a second explainer of the same model on each thread
        lambda i: METHODS[method](model).attribute(jobs[i][0], target=jobs[i][1]), len(jobs)
    )
    assert errors == []
    for i, expected in enumerate(sequential):
        torch.testing.assert_close(results[i], expected, atol=0, rtol=0)
    assert model_state(model) == before


@pytest.mark.parametrize("method", ["legrad", "rollout"])
def test_start_layer_errors_name_it(vit, method):
    cam, images, text = METHODS[method](vit), images_for(vit, 1), texts(1, 1)[0, 0]
    for bad in (3, -4):
        with pytest.raises(ValueError, match="start_layer: expected a block index in"):
            cam.attribute(images, target=text, start_layer=bad)
    for bad in (0.5, True, "1"):
        with pytest.raises(TypeError, match="start_layer: expected an int"):
            cam.attribute(images, target=text, start_layer=bad)


@pytest.mark.parametrize("method", list(METHODS))
def test_maps_follow_the_model_dtype(method):
    model = tiny_vit(seed=10)
    x, text = images_for(model, 2, seed=10), texts(2, 1, seed=11)
    full = METHODS[method](model).attribute(x, target=text)
    double = METHODS[method](model).attribute(x.double(), target=text)
    torch.testing.assert_close(double, full, atol=0, rtol=0)
    low = METHODS[method](model.to(torch.bfloat16)).attribute(x, target=text)
    assert low.dtype == torch.float32
    assert ((low - full).abs().max() / full.abs().max()) < 0.1


@pytest.mark.parametrize("pool", ["token", "map"])
def test_timm_explicit_attention_equals_the_fused_forward(pool):
    model = timm_vit(seed=1, global_pool=pool, class_token=pool == "token")
    trunk = model.visual.trunk
    modules = [block.attn for block in trunk.blocks]
    if pool == "map":
        modules.append(trunk.attn_pool)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(x)
        with recorded_attention(modules) as records:
            got = model.encode_image(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(records) == len(modules)
    for record in records:  # the heads' output is the attention applied to the values
        heads = (record.attention @ record.value).transpose(1, 2).flatten(2)
        torch.testing.assert_close(record.heads, heads)
        torch.testing.assert_close(
            record.attention.sum(-1), torch.ones(record.attention.shape[:-1])
        )
    assert all("forward" not in m.__dict__ for m in modules)


# --- Everywhere the other methods are: the registry, explain_maps, Quantus, the command line --

KEYS = METHODS  # the registry's keys


@pytest.mark.parametrize("key", list(KEYS))
def test_the_registry_entry_gives_the_class_maps(vit, key):
    images, text = images_for(vit, 2, seed=12), texts(2, 3, seed=13)
    expected = KEYS[key](vit).attribute(images, target=text)
    torch.testing.assert_close(explain_maps(vit, images, text, key, topk=None), expected)
    assert key in applicable_methods(vit)
    assert key not in applicable_methods(tiny_rn())
    with pytest.raises(ValueError, match=f"method: {key} cannot explain this model"):
        check_method(tiny_rn(), key)


@pytest.mark.parametrize("key", list(KEYS))
def test_the_quantus_adapter_explains_with_it(vit, key):
    x = images_for(vit, 2, seed=14)
    prompts = texts(1, 3, seed=15)[0]
    got = explain_func(ZeroShotClassifier(vit, prompts), x.numpy(), np.array([2, 0]), key)
    expected = upsample(KEYS[key](vit).attribute(x, target=prompts[[2, 0]][:, None]), (32, 32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", list(KEYS))
def test_gscorecam_explain_runs_it_on_the_shapes_vit(tmp_path, capsys, key):
    scene = render_scene(10_000_321, n_objects=2)
    photo = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(photo)
    out = tmp_path / "out.png"
    argv = ["explain", str(photo), "--model", "shapes-vit", "--method", key, "--out", str(out)]
    assert main([*argv, "--prompt", scene.captions[0], "--save-maps", str(tmp_path / "maps")]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    saved = np.load(tmp_path / "maps" / "scene.npy")
    assert saved.shape == (1, *scene.image.shape[:2])
    assert np.nanmax(saved) > 0
    assert f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert key in capsys.readouterr().out


def test_the_apps_method_menu_offers_them_on_a_vit_only():
    gr = pytest.importorskip("gradio")
    from captum_gscorecam.app import build_app

    def menu(model: str) -> list[str]:
        page = build_app(model)
        (dropdown,) = (
            b for b in page.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Method"
        )
        return [key for _, key in dropdown.choices]

    assert set(KEYS) <= set(menu("shapes-vit"))
    assert not set(KEYS) & set(menu("shapes-rn"))
