"""Maps back on the photo: undoing the preprocess's resize and centre crop, overlays, Captum's
(H, W, 1) layout, and Captum's layer methods on ViT towers through the public helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import visualization as viz
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms

from captum_gscorecam import CLIPSimilarity, default_layer, gradcam_layer, grid_tap
from captum_gscorecam.loading import hf_preprocess
from captum_gscorecam.shapes.models import make_preprocess
from captum_gscorecam.towers import token_blocks
from captum_gscorecam.visualization import (
    captum_map,
    map_ranges,
    no_crop,
    overlay,
    photo_figure,
    show_maps,
    to_photo,
)
from tests.helpers import images_for, texts

SIZE = 224


def clip_preprocess(size: int = SIZE) -> transforms.Compose:
    """open_clip's inference preprocess: shortest side to ``size``, centre crop, normalise."""
    return open_clip.image_transform(size, is_train=False)


def blob_photo(width: int, height: int, x0: float, y0: float, sigma: float = 6.0) -> Image.Image:
    """A dark photo with one bright Gaussian blob centred on pixel (x0, y0)."""
    yy, xx = np.mgrid[0:height, 0:width]
    blob = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return Image.fromarray(np.repeat((30 + 220 * blob)[..., None], 3, axis=2).astype(np.uint8))


def layer_map(image: torch.Tensor, grid: int) -> torch.Tensor:
    """A synthetic layer map ``(1, grid, grid)``: the preprocessed image's brightness pooled to
    the grid, as a layer that sees the blob would show it."""
    return F.adaptive_avg_pool2d(image.mean(dim=0, keepdim=True)[None], grid)[0]


def peak(saliency: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.nanargmax(saliency), saliency.shape)
    return int(x), int(y)


@pytest.mark.parametrize(
    ("width", "height", "x0", "y0"),
    [(320, 200, 110, 70), (200, 320, 150, 230), (333, 251, 80, 200)],
)
def test_a_planted_blob_peaks_at_its_place_in_the_photo(width, height, x0, y0):
    photo = blob_photo(width, height, x0, y0)
    preprocess = clip_preprocess()
    image = preprocess(photo)
    grid = 28
    placed = to_photo(layer_map(image, grid), photo.size, preprocess)
    assert placed.shape == (1, height, width)
    assert placed.dtype == np.float32
    cell = SIZE / grid * min(width, height) / SIZE  # one grid cell in photo pixels
    x, y = peak(placed[0])
    assert abs(x - x0) <= cell
    assert abs(y - y0) <= cell


def test_no_crop_keeps_a_blob_the_crop_cuts_away():
    width, height, x0, y0 = 360, 180, 20, 90  # the crop keeps columns 90-269 only
    photo = blob_photo(width, height, x0, y0)
    cropped = to_photo(layer_map(clip_preprocess()(photo), 28), photo.size, clip_preprocess())
    assert np.isnan(cropped[0, :, x0]).all()
    squashed = no_crop(clip_preprocess())
    image = squashed(photo)
    assert image.shape == (3, SIZE, SIZE)
    placed = to_photo(layer_map(image, 28), photo.size, squashed)
    assert not np.isnan(placed).any()
    x, y = peak(placed[0])
    assert abs(x - x0) <= width / 28
    assert abs(y - y0) <= height / 28


def test_nan_exactly_on_the_cropped_border():
    # 300 x 200 -> shortest side 100: 150 x 100, crop starts at column 25 = photo column 50
    preprocess = transforms.Compose([transforms.Resize(100), transforms.CenterCrop(100)])
    placed = to_photo(np.ones((2, 7, 7), np.float32), (300, 200), preprocess)
    columns = np.isnan(placed).all(axis=(0, 1))
    assert columns[:50].all()
    assert columns[250:].all()
    assert not np.isnan(placed[:, :, 50:250]).any()
    tall = to_photo(np.ones((1, 7, 7)), (200, 300), preprocess)
    rows = np.isnan(tall).all(axis=(0, 2))
    assert rows[:50].all()
    assert rows[250:].all()
    assert not np.isnan(tall[:, 50:250]).any()


def test_nan_border_matches_what_the_preprocess_keeps():
    # Push a photo whose pixels hold their own column and row through the real transforms
    # (nearest neighbour, so values are not mixed): exactly those columns and rows keep a value.
    width, height = 257, 131
    preprocess = transforms.Compose(
        [
            transforms.Resize(64, interpolation=transforms.InterpolationMode.NEAREST),
            transforms.CenterCrop(64),
        ]
    )
    yy, xx = np.mgrid[0:height, 0:width]
    kept_cols = np.unique(np.asarray(preprocess(Image.fromarray(xx.astype(np.int32)))))
    kept_rows = np.unique(np.asarray(preprocess(Image.fromarray(yy.astype(np.int32)))))
    placed = to_photo(np.ones((1, 4, 4)), (width, height), preprocess)[0]
    cols = np.flatnonzero(~np.isnan(placed).all(axis=0))
    rows = np.flatnonzero(~np.isnan(placed).all(axis=1))
    assert rows.tolist() == list(range(height))  # the short side is never cropped
    assert set(kept_rows) <= set(rows)
    # nearest neighbour skips columns inside the kept span; the span's ends agree within one
    assert abs(cols.min() - kept_cols.min()) <= 1
    assert abs(cols.max() - kept_cols.max()) <= 1


def test_a_photo_of_the_model_size_is_captum_interpolate():
    maps = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(0))
    for side in (SIZE, 2 * SIZE):
        expected = LayerAttribution.interpolate(maps[None], (side, side), "bilinear")[0]
        placed = to_photo(maps, (side, side), clip_preprocess())
        np.testing.assert_allclose(placed, expected.numpy(), atol=1e-5)


def test_the_shapes_preprocess_squashes_and_to_photo_undoes_it():
    preprocess = make_preprocess(SIZE)
    photo = blob_photo(300, 150, 240, 40)
    placed = to_photo(layer_map(preprocess(photo), 28), photo.size, preprocess)
    assert not np.isnan(placed).any()
    x, y = peak(placed[0])
    assert abs(x - 240) <= 300 / 28
    assert abs(y - 40) <= 150 / 28


def test_hf_style_resize_and_crop_with_v2_transforms():
    preprocess = transforms.v2.Compose(
        [transforms.v2.Resize(32), transforms.v2.CenterCrop((32, 32))]
    )
    placed = to_photo(torch.ones(1, 4, 4), (64, 32), preprocess)
    columns = np.isnan(placed[0]).all(axis=0)
    assert columns[:16].all()
    assert columns[48:].all()
    assert not columns[16:48].any()


def test_a_hugging_face_processor_through_hf_preprocess():
    processor = SimpleNamespace(
        do_resize=True,
        size={"shortest_edge": 32},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 32, "width": 32},
        do_normalize=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    preprocess = hf_preprocess(processor)
    placed = to_photo(torch.ones(1, 4, 4), (32, 64), preprocess)  # a tall photo
    rows = np.isnan(placed[0]).all(axis=1)
    assert rows[:16].all()
    assert rows[48:].all()
    assert not rows[16:48].any()
    assert not np.isnan(to_photo(torch.ones(1, 4, 4), (32, 64), no_crop(preprocess))).any()


def test_open_clip_resize_modes():
    squash = open_clip.image_transform(64, is_train=False, resize_mode="squash")
    assert not np.isnan(to_photo(np.ones((1, 4, 4)), (128, 64), squash)).any()
    longest = open_clip.image_transform(64, is_train=False, resize_mode="longest")
    with pytest.raises(ValueError, match="preprocess: cannot undo its ResizeKeepRatio"):
        to_photo(np.ones((1, 4, 4)), (128, 64), longest)


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(8, 500),
    height=st.integers(8, 500),
    side=st.sampled_from([16, 32, 224]),
    t=st.integers(1, 3),
)
def test_geometry_over_photo_sizes(width, height, side, t):
    maps = np.random.default_rng(width * height).random((t, 7, 7), dtype=np.float32)
    preprocess = clip_preprocess(side)
    placed = to_photo(maps, (width, height), preprocess)
    assert placed.shape == (t, height, width)
    valid = ~np.isnan(placed[0])
    assert (valid == ~np.isnan(placed).any(axis=0)).all()
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    # a rectangle: every pixel between the first and last kept row and column has a value
    assert valid[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert valid.sum() == len(rows) * len(cols)
    # the kept span is the crop's share of the long side, centred
    long, kept = (width, len(cols)) if width >= height else (height, len(rows))
    resized_long = int(side * long / min(width, height))  # torchvision's shortest-side resize
    assert abs(kept - long * side / resized_long) <= 1.5
    # values come from the maps (bilinear: within their range)
    assert maps.min() - 1e-6 <= np.nanmin(placed)
    assert np.nanmax(placed) <= maps.max() + 1e-6
    assert not np.isnan(to_photo(maps, (width, height), no_crop(preprocess))).any()


def test_no_crop_replaces_resize_and_crop_only():
    preprocess = clip_preprocess()
    squashed = no_crop(preprocess)
    kinds = [type(step).__name__ for step in squashed.transforms]
    assert "CenterCrop" not in kinds
    assert squashed.transforms[0].size == (SIZE, SIZE)
    assert squashed.transforms[0].interpolation == preprocess.transforms[0].interpolation
    assert squashed.transforms[1:] == preprocess.transforms[2:]
    assert len(preprocess.transforms) == len(squashed.transforms) + 1  # the original is intact
    photo = blob_photo(90, 60, 10, 10)
    assert squashed(photo).shape == preprocess(photo).shape
    # a square photo preprocesses the same either way
    square = blob_photo(300, 300, 100, 100)
    torch.testing.assert_close(squashed(square), preprocess(square))


def test_unreadable_preprocesses_are_refused():
    with pytest.raises(TypeError, match="preprocess"):
        to_photo(np.ones((1, 7, 7)), (10, 10), lambda image: image)
    with pytest.raises(ValueError, match=r"preprocess.*RandomResizedCrop"):
        to_photo(
            np.ones((1, 7, 7)), (10, 10), transforms.Compose([transforms.RandomResizedCrop(8)])
        )
    with pytest.raises(ValueError, match=r"preprocess.*Pad"):
        no_crop(transforms.Compose([transforms.Pad(2), transforms.CenterCrop(8)]))
    with pytest.raises(ValueError, match=r"preprocess.*no Resize"):
        no_crop(transforms.Compose([transforms.CenterCrop(8)]))


@pytest.mark.parametrize(
    ("maps", "size", "match"),
    [
        (np.ones((1, 1, 7, 7)), (10, 10), "maps"),
        (np.ones((7, 7)), (10, 10), "maps"),
        ([[1.0]], (10, 10), "maps"),
        (np.ones((1, 7, 7)), (10,), "photo_size"),
        (np.ones((1, 7, 7)), (0, 10), "photo_size"),
        (np.ones((1, 7, 7)), (10.0, 10), "photo_size"),
    ],
)
def test_bad_maps_and_sizes_are_refused(maps, size, match):
    with pytest.raises((TypeError, ValueError), match=match):
        to_photo(maps, size, clip_preprocess())


def photo_array(height: int = 40, width: int = 60) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_overlay_blends_and_shows_no_value_apart():
    photo = photo_array()
    saliency = np.tile(np.linspace(0, 5, 60, dtype=np.float32), (40, 1))
    saliency[:, :10] = np.nan
    out = overlay(photo, saliency, alpha=0.5)
    assert out.shape == (40, 60, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0
    assert out.max() <= 1
    # the same photo given as float or PIL gives the same overlay
    np.testing.assert_allclose(overlay(photo / 255.0, saliency), out, atol=1e-6)
    np.testing.assert_allclose(overlay(Image.fromarray(photo), saliency), out, atol=1e-6)
    # alpha 0 is the photo wherever there is a value; the NaN part is not the photo
    plain = overlay(photo, saliency, alpha=0.0)
    np.testing.assert_allclose(plain[:, 10:], photo[:, 10:] / 255.0, atol=1e-6)
    assert np.abs(plain[:, :10] - photo[:, :10] / 255.0).mean() > 0.1
    # hot end is the colormap's top colour blended in
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(out[0, -1], 0.5 * photo[0, -1] / 255 + 0.5 * np.array(jet(1.0)[:3]))
    # no value: the photo dimmed, crossed by light lines, and identical for any saliency value
    changed = saliency.copy()
    changed[:, 10:] *= 3
    np.testing.assert_allclose(overlay(photo, changed)[:, :10], out[:, :10])
    assert (out[:, :10] > 0.8).any()
    assert (out[:, :10] <= photo[:, :10] / 255.0 + 1e-6).mean() > 0.7


def test_overlay_of_a_flat_or_empty_map():
    photo = photo_array()
    flat = overlay(photo, np.ones((40, 60)))
    assert np.isfinite(flat).all()
    empty = overlay(photo, np.full((40, 60), np.nan))
    assert np.isfinite(empty).all()
    assert empty.mean() < (photo / 255.0).mean()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"saliency": np.ones((40, 59))}, ValueError, "saliency"),
        ({"photo": np.ones((40, 60))}, ValueError, "photo"),
        ({"photo": np.full((40, 60, 3), 2.0)}, ValueError, "photo"),
        ({"photo": np.ones((40, 60, 3), dtype=np.int64)}, TypeError, "photo"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"cmap": "no-such-map"}, ValueError, "cmap"),
        ({"saliency": [[1.0]]}, TypeError, "saliency"),
    ],
)
def test_overlay_refuses_bad_input(kwargs, error, match):
    arguments = {"photo": photo_array(), "saliency": np.ones((40, 60)), **kwargs}
    with pytest.raises(error, match=match):
        overlay(**arguments)


def test_captum_map_gives_visualize_image_attr_its_layout():
    attr = torch.rand(1, 1, 30, 20)
    for given_map in (attr[0], attr[0, 0], attr, attr[0].numpy()):
        assert captum_map(given_map).shape == (30, 20, 1)
    np.testing.assert_array_equal(captum_map(attr[0])[..., 0], attr[0, 0].numpy())
    fig, axis = viz.visualize_image_attr(
        captum_map(attr[0]), np.zeros((30, 20, 3)), "blended_heat_map", "positive", use_pyplot=False
    )
    assert axis.images[-1].get_array().shape[:2] == (30, 20)
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="attr"):
        captum_map(torch.rand(2, 30, 20))


@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_layer_gradcam_through_the_public_helpers(tower, request):
    model = request.getfixturevalue(tower)
    x, text = images_for(model, 2), texts(2, 1)[:, 0]
    with grid_tap(model, gradcam_layer(model)) as tap:
        maps = LayerGradCam(CLIPSimilarity(model), tap).attribute(
            x, additional_forward_args=(text,), relu_attributions=True
        )
    assert maps.shape == ((2, 1, 2, 2) if tower == "rn" else (2, 1, 4, 4))
    assert maps.abs().sum() > 0
    assert all(not m._forward_hooks for m in model.modules())


def test_gradcam_layer_is_the_block_before_the_last_on_class_token_vits(rn, vit):
    assert gradcam_layer(rn) is default_layer(rn)
    assert gradcam_layer(vit) is token_blocks(vit)[-2]
    assert gradcam_layer(CLIPSimilarity(vit)) is token_blocks(vit)[-2]
    # at the last block the patch tokens get no gradient: LayerGradCam is zero there
    x, text = images_for(vit, 1), texts(1, 1)[:, 0]
    with grid_tap(vit, default_layer(vit)) as tap:
        last = LayerGradCam(CLIPSimilarity(vit), tap).attribute(x, additional_forward_args=(text,))
    assert last.abs().sum() == 0


# The figures: one overlay style for the demo, explain and the app


def _drawn(ax) -> np.ndarray:
    (image,) = ax.get_images()
    return np.asarray(image.get_array())


def _maps_and_bars(fig) -> tuple[list, list]:
    axes = fig.axes
    return [a for a in axes if a.get_label() != "<colorbar>"], [
        a for a in axes if a.get_label() == "<colorbar>"
    ]


def test_photo_figure_draws_the_overlay_of_each_map_titled_with_its_score():
    photo = blob_photo(90, 60, 30, 20)
    maps = to_photo(torch.rand(2, 7, 7), photo.size, clip_preprocess(32))
    fig = photo_figure(
        photo, maps, ["a dog", "a cat"], [1.234, -0.5], "gScoreCAM", scale="per-prompt"
    )
    panels, bars = _maps_and_bars(fig)
    assert len(panels) == 2
    for ax, bar, saliency in zip(panels, bars, maps, strict=True):
        np.testing.assert_array_equal(_drawn(ax), _uint8(overlay(photo, saliency)))
        assert bar.get_ylim() == pytest.approx((np.nanmin(saliency), np.nanmax(saliency)))
    assert [ax.get_title() for ax in panels] == [
        "gScoreCAM: 'a dog'  (score 1.23)",
        "gScoreCAM: 'a cat'  (score -0.50)",
    ]
    with pytest.raises(ValueError, match=r"prompts: expected one per map \(2\), got 1"):
        photo_figure(photo, maps, ["one prompt"], [1.0, 2.0], "gScoreCAM")
    with pytest.raises(ValueError, match=r"scores: expected one per map \(2\), got 3"):
        photo_figure(photo, maps, ["a", "b"], [1.0, 2.0, 3.0], "gScoreCAM")
    with pytest.raises(ValueError, match="scale: expected one of"):
        photo_figure(photo, maps, ["a", "b"], [1.0, 2.0], "gScoreCAM", scale="per-photo")


def test_the_shared_scale_shows_a_rejected_prompt_cold_and_says_its_values():
    photo = blob_photo(90, 60, 30, 20)
    torch.manual_seed(0)  # unseeded, CI once drew no pixel within 0.02 of jet top (0.10)
    strong = to_photo(torch.rand(1, 7, 7) + 1, photo.size, clip_preprocess(32))[0]
    maps = [strong, strong * 0.01]  # the same shape, a hundredth of the strength
    shared = photo_figure(photo, maps, ["a dog", "a cat"], [1.0, 0.0], "gScoreCAM")
    panels, bars = _maps_and_bars(shared)
    low, high = np.nanmin(maps[1]), np.nanmax(maps[0])
    for ax, saliency in zip(panels, maps, strict=True):
        expected = _uint8(overlay(photo, saliency, vmin=low, vmax=high))
        np.testing.assert_array_equal(_drawn(ax), expected)
    (bar,) = bars  # one colour bar, in the maps' values
    assert bar.get_xlim() == pytest.approx((low, high))
    assert "one scale for every prompt" in bar.get_title()
    jet_top = np.array(matplotlib.colormaps["jet"](1.0)[:3])
    pixels = np.asarray(photo) / 255.0
    colours = [2 * _drawn(ax) / 255 - pixels for ax in panels]  # alpha 0.5: the map's colour
    known = np.isfinite(strong)  # not the crop's hatched border
    hottest = [np.abs(colour[known] - jet_top).sum(-1).min() for colour in colours]
    assert hottest[0] < 0.02 < 0.5 < hottest[1]  # only the strong map reaches the hot end
    own = photo_figure(photo, maps, ["a", "b"], [1.0, 0.0], "m", scale="per-prompt")
    drawn = [_drawn(ax) for ax in _maps_and_bars(own)[0]]
    np.testing.assert_allclose(drawn[0], drawn[1], atol=1)  # on its own range: alike


def test_the_title_block_says_what_made_the_figure_and_warns_in_red():
    photo = blob_photo(90, 60, 30, 20)
    maps = to_photo(torch.rand(1, 7, 7), photo.size, clip_preprocess(32))
    title = " | ".join(["gScoreCAM", "k=26/256", "RN50 (RANDOM WEIGHTS)", "fp32 on cpu"] * 3)
    warning = "warning: RN50 has RANDOM WEIGHTS: its maps and scores mean nothing"
    fig = photo_figure(photo, maps, ["a"], [1.0], "gScoreCAM", title=title, warnings=[warning])
    header = [(text.get_text(), text.get_color()) for text in fig.subfigs[0].texts]
    black = [line for line, colour in header if colour == "black"]
    assert len(black) > 1  # wrapped to the figure's width, between the title's parts
    assert " | ".join(black) == title
    assert [line for line, colour in header if colour == "red"] == [warning]
    assert not _maps_and_bars(photo_figure(photo, maps, ["a"], [1.0], "m"))[0][0].figure.subfigs


def test_map_ranges():
    a = np.array([[0.5, np.nan], [2.0, 1.0]])
    b = np.array([[-1.0, 0.0], [0.25, np.nan]])
    assert map_ranges([a, b]) == [(-1.0, 2.0), (-1.0, 2.0)]
    assert map_ranges([a, b], "per-prompt") == [(0.5, 2.0), (-1.0, 0.25)]
    assert map_ranges([np.full((2, 2), np.nan), a], "per-prompt") == [(0.0, 0.0), (0.5, 2.0)]
    assert map_ranges([np.full((2, 2), np.nan)]) == [(0.0, 0.0)]
    with pytest.raises(ValueError, match="scale"):
        map_ranges([a], "global")


def test_overlay_on_a_given_range():
    photo = photo_array()
    saliency = np.tile(np.linspace(1, 3, 60, dtype=np.float32), (40, 1))
    np.testing.assert_array_equal(
        overlay(photo, saliency, vmin=1, vmax=3), overlay(photo, saliency)
    )
    wide = overlay(photo, saliency, vmin=0, vmax=6)  # the map spans a third: never hot
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(wide[0, -1], 0.5 * photo[0, -1] / 255 + 0.5 * np.array(jet(0.5)[:3]))
    clipped = overlay(photo, saliency, vmin=0, vmax=2)  # above vmax: the hot end
    np.testing.assert_allclose(
        clipped[0, -1], 0.5 * photo[0, -1] / 255 + 0.5 * np.array(jet(1.0)[:3])
    )
    for kwargs, error in (
        ({"vmin": 2, "vmax": 1}, ValueError),
        ({"vmin": np.nan}, ValueError),
        ({"vmax": "1"}, TypeError),
        ({"vmin": True}, TypeError),
    ):
        with pytest.raises(error, match=r"vmin|vmax"):
            overlay(photo, saliency, **kwargs)


def test_show_maps_draws_the_same_overlays_as_photo_figure():
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(2)]
    maps = [[rng.random((16, 16)), np.zeros((16, 16))] for _ in range(2)]
    fig = show_maps(images, maps, ["a dog", "a cat"], ["gScoreCAM", "LayerGradCam"])
    panels, bars = _maps_and_bars(fig)
    axes = np.array(panels).reshape(2, 3)
    for r in range(2):
        np.testing.assert_array_equal(_drawn(axes[r, 0]), images[r])
        for m in range(2):
            np.testing.assert_array_equal(_drawn(axes[r, m + 1]), overlay(images[r], maps[r][m]))
        texts_drawn = [text.get_text() for text in axes[r, 2].texts]
        assert texts_drawn == ["no positive evidence"]  # the zero map says so
        assert not axes[r, 1].texts
    assert [ax.get_title() for ax in axes[0]] == ["image", "gScoreCAM", "LayerGradCam"]
    assert axes[1, 0].get_ylabel() == "a cat"
    (bar,) = bars  # each map on its own range, as the colour bar says
    assert [label.get_text() for label in bar.get_xticklabels()] == [
        "each map's minimum",
        "its maximum",
    ]
    # on one range: the same overlays as photo_figure's shared scale, and the bar in values
    fig = show_maps(images, maps, ["a", "b"], ["m", "n"], vmin=0, vmax=2, colorbar_label="v")
    panels, (bar,) = _maps_and_bars(fig)
    np.testing.assert_array_equal(_drawn(panels[1]), overlay(images[0], maps[0][0], vmin=0, vmax=2))
    assert bar.get_xlim() == (0, 2)
    assert bar.get_title() == "v"


def _uint8(image: np.ndarray) -> np.ndarray:
    """An overlay as photo_figure draws it: uint8 (the figure holds every panel until saved)."""
    return np.rint(image * 255).astype(np.uint8)


@pytest.mark.parametrize("rows", [1, 9])
def test_the_colour_bar_and_its_tick_labels_lie_inside_a_tall_figure(rows):
    """The demo's nine rows once cut the bar's tick labels off at the figure's bottom edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(rows)]
    maps = [[rng.random((16, 16))] * 3 for _ in range(rows)]
    photo = blob_photo(60, 90, 30, 20)  # tall: one row per prompt, stacked
    photo_maps = to_photo(torch.rand(rows, 7, 7), photo.size, clip_preprocess(32))
    for fig in (
        show_maps(images, maps, ["p"] * rows, list("abc"), vmin=0, vmax=1, title="t | u"),
        photo_figure(photo, photo_maps, ["p"] * rows, [0.0] * rows, "m", title="t | u"),
    ):
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        (bar,) = _maps_and_bars(fig)[1]
        labels = [label for label in bar.get_xticklabels() if label.get_text()]
        assert labels
        for label in labels:
            box = label.get_window_extent(renderer)
            assert box.y0 >= 0
            assert 0 <= box.x0 < box.x1 <= fig.bbox.width
