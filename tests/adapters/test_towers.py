"""Towers beyond open_clip's ResNet and plain ViT: Hugging Face CLIP / SigLIP, timm towers inside
open_clip (ConvNeXt, ViTs with and without a class token), open_clip ViTs that pool patches.

Every model is built from a tiny config with random weights; nothing is downloaded.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from captum_gscorecam import (
    CLIPSimilarity,
    GScoreCAM,
    HilaCAM,
    ScoreCAM,
    ZeroShotClassifier,
    default_layer,
    encode_text,
    gradcam_layer,
)
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.hila import explicit_attention
from captum_gscorecam.loading import hf_preprocess, load_clip
from captum_gscorecam.methods import applicable_methods, explain_maps
from captum_gscorecam.towers import (
    TokenLayout,
    clip_model,
    image_input,
    image_tower,
    input_size,
    is_clip_model,
    token_blocks,
    token_layout,
    vit_tower,
)
from tests.helpers import texts
from tests.tower_models import (
    MERGES,
    TOWERS,
    VOCAB,
    WIDTH,
    hf_clip,
    hf_siglip,
    images,
    timm_clip,
    timm_convnext,
)

transformers = pytest.importorskip("transformers")

# (prefix tokens, pools the class token) of the token towers
LAYOUTS = {
    "hf_clip": (1, True),
    "hf_siglip": (0, False),
    "timm_vit_siglip": (0, False),
    "timm_vit_token": (1, True),
    "timm_vit_registers_avg": (3, False),
    "open_clip_attn_pool": (1, False),
    "open_clip_avg_pool": (1, False),
}
# what the image embedding of each ViT tower is made from (vit_tower)
POOLINGS = {
    "hf_clip": "class",
    "hf_siglip": "attention",
    "timm_vit_siglip": "attention",
    "timm_vit_token": "class",
    "timm_vit_registers_avg": "mean",
    "open_clip_attn_pool": "attention",
    "open_clip_avg_pool": "mean",
}


@pytest.fixture(scope="module", params=list(TOWERS))
def tower(request):
    build, size, channels, grid, path = TOWERS[request.param]
    return request.param, build(), size, channels, grid, path


def test_default_layer_and_grid(tower):
    name, model, _, _, grid, path = tower
    assert is_clip_model(model)
    assert default_layer(model) is model.get_submodule(path)
    assert default_layer(CLIPSimilarity(model)) is model.get_submodule(path)
    layout = LayerGrid.for_model(model)
    if name in LAYOUTS:
        prefix, pools = LAYOUTS[name]
        assert layout == LayerGrid(
            batch_first=True, prefix_tokens=prefix, grid=grid, pools_class_token=pools
        )
        assert token_blocks(model)[-1] is default_layer(model)
    else:
        assert layout == LayerGrid()
        assert token_blocks(model) is None


def test_declared_pooling_matches_the_gradient(tower):
    # a tower that pools its class token gives the patch tokens of its last block no gradient;
    # every other tower gives its whole grid some
    name, model, size, _, _, _ = tower
    prefix, pools = LAYOUTS.get(name, (0, False))
    store = {}
    handle = default_layer(model).register_forward_hook(lambda _m, _a, out: store.update(out=out))
    try:
        score = CLIPSimilarity(model)(images(2, size), texts(2, 1, width=WIDTH)[:, 0])
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score.sum(), store["out"])
    assert bool((grad[:, prefix:] == 0).all()) == pools


def test_vit_tower_reads_blocks_pooling_and_readout(tower):
    name, model, size, _, _, _ = tower
    if name not in POOLINGS:
        with pytest.raises(ValueError, match="forward_func: M needs a ViT image tower"):
            vit_tower(model, "M")
        return
    read = vit_tower(CLIPSimilarity(model), "M")
    assert read.blocks == tuple(token_blocks(model))
    assert read.pooling == POOLINGS[name]
    assert (read.pool_attention is not None) == (read.pooling == "attention")
    store = {}
    hook = read.blocks[-1].register_forward_hook(lambda _m, _a, out: store.update(out=out))
    try:
        with torch.no_grad():
            embedding = CLIPSimilarity(model).embed_images(images(2, size))
    finally:
        hook.remove()
    out = store["out"][0] if isinstance(store["out"], tuple) else store["out"]
    tokens = out if read.batch_first else out.transpose(0, 1)
    assert tokens.shape[:2] == (2, 16 + LAYOUTS[name][0])
    with torch.no_grad():
        assert read.readout(tokens).shape == embedding.shape


@pytest.mark.slow
def test_shape_nonnegative_and_all_channels_equal_scorecam(tower):
    _, model, size, channels, grid, _ = tower
    x, text = images(2, size, seed=1), texts(2, 2, seed=2, width=WIDTH)
    layer = default_layer(model)
    attr = GScoreCAM(model, layer).attribute(x, target=text, topk=channels)
    assert attr.shape == (2, 2, *grid)
    assert torch.isfinite(attr).all()
    assert (attr >= 0).all()
    assert attr.sum() > 0
    expected = ScoreCAM(model, layer).attribute(x, target=text)
    torch.testing.assert_close(attr, expected, atol=1e-5, rtol=0)
    assert GScoreCAM(model, layer).attribute(x, target=text[:, 0], topk=3).shape == (2, 1, *grid)


def test_model_left_as_found(tower, model_state):
    _, model, size, _, _, _ = tower
    model.train()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 3 != 0)
    before = model_state(model)
    try:
        GScoreCAM(model, default_layer(model)).attribute(
            images(1, size), target=texts(1, 1, width=WIDTH), topk=4
        )
        after = model_state(model)
        assert after == before  # modes, requires_grad, hooks, ...
        assert all(g is None for g in after["grads"])
        assert not default_layer(model)._forward_hooks
    finally:
        model.eval().requires_grad_(True)


def test_gradcam_runs_through_the_grid_tap(tower):
    _, model, size, _, grid, _ = tower
    maps = explain_maps(model, images(2, size, seed=3), texts(2, 2, seed=4), "gradcam", 1)
    assert maps.shape == (2, 2, *grid)
    assert (maps >= 0).all()
    assert maps.sum() > 0  # a class-token-pooled tower runs at the block before the last
    assert all(not m._forward_hooks for m in model.modules())


def test_hf_similarity_equals_the_model_logits(tmp_path):
    # SigLIP adds logit_bias to its logits; CLIPSimilarity leaves the constant out
    tokenizer, prompts = clip_tokenizer(tmp_path), ["a dog", "a cat"]
    for model, padding, bias in ((hf_clip(), True, 0.0), (hf_siglip(), "max_length", None)):
        x = images(3, 32)
        tokens = tokenizer(text=prompts, padding=padding, return_tensors="pt")
        with torch.no_grad():
            logits = model(pixel_values=x, **tokens).logits_per_image
            text = encode_text(model, tokenizer, prompts)
            score = CLIPSimilarity(model)(x, text.expand(3, -1, -1))
        bias = model.logit_bias if bias is None else bias
        torch.testing.assert_close(score + bias, logits, atol=1e-5, rtol=1e-5)


def clip_tokenizer(folder) -> object:
    """A real CLIPTokenizer over a 56-token vocabulary (letters, end-of-word letters, 2 words)."""
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=16)


def test_encode_text_with_an_hf_tokenizer_and_processor(tmp_path):
    model, tokenizer = hf_clip(), clip_tokenizer(tmp_path)
    text = encode_text(model, tokenizer, ["a dog", "a cat sat"])
    assert text.shape == (2, WIDTH)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        tokens = tokenizer(text=["a dog", "a cat sat"], padding=True, return_tensors="pt")
        features = model.get_text_features(**tokens)
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    torch.testing.assert_close(text, F.normalize(features, dim=-1))
    torch.testing.assert_close(encode_text(model, tokenizer, "a dog")[0], text[0])
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(), tokenizer=tokenizer
    )
    torch.testing.assert_close(encode_text(model, processor, ["a dog", "a cat sat"]), text)


def test_encode_text_pads_siglip_prompts_to_the_maximum_length(tmp_path):
    tokenizer, calls = clip_tokenizer(tmp_path), []

    def recording(**kwargs):
        calls.append(kwargs)
        return tokenizer(**kwargs)

    assert encode_text(hf_siglip(), recording, ["a dog"]).shape == (1, WIDTH)
    assert calls[-1]["padding"] == "max_length"
    encode_text(hf_clip(), recording, ["a dog"])
    assert calls[-1]["padding"] is True


def test_encode_text_rejects_a_tokenizer_without_a_mapping():
    with pytest.raises(TypeError, match="tokenizer: a Hugging Face model needs its tokenizer"):
        encode_text(hf_clip(), lambda **_: torch.zeros(1, 4, dtype=torch.long), ["a dog"])


def test_siglip_without_its_pooling_head_is_a_clear_error():
    model = hf_siglip(vision_use_head=False)
    with pytest.raises(ValueError, match="model: its image tower returned no pooled embedding"):
        CLIPSimilarity(model)(images(1, 32), texts(1, 1, width=WIDTH)[:, 0])


def hf_reference_hilacam(model: nn.Module, image: torch.Tensor, text: torch.Tensor, start: int):
    """The relevance rule on the attention tensors Hugging Face's eager attention returns."""
    out = model.vision_model(pixel_values=image[None].requires_grad_(True), output_attentions=True)
    emb = F.normalize(model.visual_projection(out.pooler_output), dim=-1)[0]
    score = model.logit_scale.exp() * (emb @ F.normalize(text, dim=-1))
    used = out.attentions[start % len(out.attentions) :]
    grads = torch.autograd.grad(score, used)
    relevance = torch.eye(used[0].shape[-1])
    for a, g in zip(used, grads, strict=True):
        relevance = relevance + (g[0] * a[0]).clamp(min=0).mean(dim=0) @ relevance
    side = math.isqrt(relevance.shape[0] - 1)
    return relevance[0, 1:].reshape(side, side)


@pytest.mark.parametrize("start", [0, -1])
def test_hilacam_on_hf_clip_follows_the_rule_on_hf_attention(start):
    model = hf_clip(seed=1, attention="eager")
    x = images(2, 32)
    text = texts(2, 2, width=WIDTH)
    maps = HilaCAM(model).attribute(x, target=text, start_layer=start)
    assert maps.shape == (2, 2, 4, 4)
    for i in range(2):
        for j in range(2):
            expected = hf_reference_hilacam(model, x[i], text[i, j], start)
            torch.testing.assert_close(maps[i, j], expected, atol=1e-6, rtol=1e-4)


def test_hf_explicit_attention_equals_the_sdpa_forward():
    model = hf_clip()  # sdpa: Hugging Face never materialises the attention
    x = images(2, 32)
    layers = model.vision_model.encoder.layers
    with torch.no_grad():
        expected = model.vision_model(pixel_values=x).last_hidden_state
        with explicit_attention(layers) as maps:
            got = model.vision_model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert [tuple(a.shape) for a in maps] == [(2, 2, 17, 17)] * len(layers)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 2, 17))
    assert all("forward" not in layer.self_attn.__dict__ for layer in layers)


def test_hilacam_leaves_hf_clip_as_found_when_the_pass_fails():
    model = hf_clip().train()

    def state():
        return [(m.training, "forward" in m.__dict__) for m in model.modules()]

    before = state()
    HilaCAM(model).attribute(images(1, 32), target=texts(1, 1, width=WIDTH)[:, 0])
    assert state() == before

    def fail(*_):
        raise RuntimeError("tower failed")

    handle = model.vision_model.post_layernorm.register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="tower failed"):  # after every block ran patched
            HilaCAM(model).attribute(images(1, 32), target=texts(1, 1, width=WIDTH)[:, 0])
    finally:
        handle.remove()
    assert state() == before


def test_hilacam_applies_to_hf_clip_but_not_to_siglip():
    assert "hilacam" in applicable_methods(hf_clip())
    with pytest.raises(ValueError, match="forward_func: HilaCAM reads the class token"):
        HilaCAM(hf_siglip())


def test_timm_towers_without_a_usable_layer():
    import timm

    channels_last = timm_clip(timm.create_model("test_mambaout"), 64)
    with pytest.raises(ValueError, match=r"model: the timm MambaOut trunk gives NHWC"):
        default_layer(channels_last)
    featureless = timm_clip(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), 64)
    with pytest.raises(ValueError, match="model: no default layer for a timm Sequential trunk"):
        default_layer(featureless)


def test_other_timm_cnns_use_their_last_feature_stage():
    import timm

    model = timm_clip(timm.create_model("test_resnet", num_classes=WIDTH), 64)
    assert default_layer(model) is model.visual.trunk.layer4


def test_hf_model_without_encoder_layers():
    odd = nn.Module()
    odd.vision_model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="model: no default layer for a Linear image tower"):
        default_layer(odd)


def test_a_layer_returning_a_one_tuple_is_its_tensor():
    class Block(nn.Module):  # like Hugging Face encoder layers before transformers 5
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return (self.conv(x),)

    block = Block()
    x = torch.randn(2, 3, 8, 8)
    attr = GScoreCAM(lambda x: block(x)[0].relu().sum(dim=(1, 2, 3)), block).attribute(x, topk=4)
    assert attr.shape == (2, 1, 6, 6)


def test_load_clip_from_a_local_hf_folder(tmp_path):
    tokenizer = clip_tokenizer(tmp_path)
    model = hf_clip()
    image_processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    transformers.CLIPProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    ).save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded, preprocess, loaded_tokenizer = load_clip(f"hf:{tmp_path}")
    assert not loaded.training
    x = preprocess(Image.new("RGB", (40, 48), (200, 30, 90)))
    assert x.shape == (3, 32, 32)
    text = encode_text(loaded, loaded_tokenizer, ["a dog"])
    torch.testing.assert_close(text, encode_text(model, tokenizer, ["a dog"]))
    attr = GScoreCAM(loaded, default_layer(loaded)).attribute(x[None], target=text, topk=8)
    assert attr.shape == (1, 1, 4, 4)


def test_load_clip_hf_errors(tmp_path):
    with pytest.raises(ValueError, match="model: expected hf:<Hugging Face repo id"):
        load_clip("hf:")
    with pytest.raises(ValueError, match="pretrained: not used with hf: models"):
        load_clip("hf:openai/clip-vit-base-patch16", pretrained="openai")
    transformers.ViTConfig(hidden_size=8, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model: .* is a 'vit' model; hf: supports"):
        load_clip(f"hf:{tmp_path}")
    with pytest.raises(ValueError, match="or hf:<Hugging Face repo id or folder>"):
        load_clip("no-such-model")


@pytest.mark.parametrize(
    "processor",
    [
        lambda: transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        lambda: transformers.SiglipImageProcessor(size={"height": 32, "width": 32}),
    ],
    ids=["clip", "siglip"],
)
def test_hf_preprocess_matches_the_image_processor(processor):
    processor = processor()
    pixels = torch.randint(0, 256, (56, 44, 3), generator=torch.Generator().manual_seed(5))
    image = Image.fromarray(pixels.to(torch.uint8).numpy())
    ours = hf_preprocess(processor)(image)
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, 32, 32)
    assert (ours - theirs).abs().mean() < 0.05  # resampling implementations differ slightly
    normalize = hf_preprocess(processor).transforms[-1]
    assert list(normalize.mean) == pytest.approx(list(processor.image_mean))


@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_every_tower_helper_takes_the_wrappers(request, tower):
    """CLIPSimilarity and ZeroShotClassifier answer as the CLIP model they wrap."""
    model = request.getfixturevalue(tower)
    wrappers = [CLIPSimilarity(model), ZeroShotClassifier(model, torch.ones(2, 32))]
    for wrapper in wrappers:
        assert clip_model(wrapper) is model
        assert gradcam_layer(wrapper) is gradcam_layer(model)
        assert default_layer(wrapper) is default_layer(model)
        assert token_blocks(wrapper) is token_blocks(model)
        assert token_layout(wrapper) == token_layout(model)
        assert LayerGrid.for_model(wrapper) == LayerGrid.for_model(model)
        assert image_input(wrapper) == image_input(model)
        assert input_size(wrapper) == input_size(model) == image_input(model).size
        assert image_tower(wrapper) is model.visual
    if tower == "vit":  # the class token is pooled: the block before the last
        assert gradcam_layer(wrappers[1]) is model.visual.transformer.resblocks[-2]
        assert token_layout(wrappers[1]).grid == (4, 4)
    else:
        assert token_layout(wrappers[1]) == TokenLayout()


def test_input_size_names_a_tower_that_takes_any_size():
    model = timm_convnext()
    assert image_input(model).size is None
    with pytest.raises(ValueError, match="model: the image tower of CLIP fixes no input size"):
        input_size(ZeroShotClassifier(model, torch.ones(1, WIDTH)))
