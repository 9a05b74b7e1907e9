"""Bounded memory for large photos: maps placed one prompt at a time (PhotoMaps), overlays drawn
in bands of rows, and a pixel limit for drawing (images.display_size / for_display)."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms

from captum_gscorecam.images import DISPLAY_MAX_PIXELS, display_size, for_display
from captum_gscorecam.photo_geometry import _axes
from captum_gscorecam.visualization import PhotoMaps, overlay, to_photo


def grid_sample_reference(maps: np.ndarray, photo_size: tuple[int, int], preprocess) -> np.ndarray:
    """Each photo pixel centre mapped onto the model input and read with ``F.grid_sample``."""
    rows, cols = _axes(photo_size, preprocess)
    width, height = photo_size

    def points(axis, pixels):
        model = axis.scale * (torch.arange(pixels, dtype=torch.float64) + 0.5) + axis.offset
        inside = (model >= axis.low) & (model < axis.high)
        return (2 * model / axis.size - 1).float(), inside

    (y, y_in), (x, x_in) = points(rows, height), points(cols, width)
    grid = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)[None]
    placed = F.grid_sample(
        torch.from_numpy(maps)[None], grid, "bilinear", "border", align_corners=False
    )[0]
    return placed.masked_fill(~(y_in[:, None] & x_in[None, :]), float("nan")).numpy()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    cells=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    resize=st.integers(4, 64),
    crop=st.one_of(st.none(), st.tuples(st.integers(2, 64), st.integers(2, 64))),
    seed=st.integers(0, 2**16),
)
def test_photo_maps_equal_grid_sample(width, height, cells, resize, crop, seed):
    steps = [transforms.Resize(resize)] + ([transforms.CenterCrop(crop)] if crop else [])
    preprocess = transforms.Compose(steps)
    maps = np.random.default_rng(seed).random((2, *cells)).astype(np.float32)
    expected = grid_sample_reference(maps, (width, height), preprocess)
    placed = PhotoMaps(maps, (width, height), preprocess)
    assert placed.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(np.asarray(placed)), np.isnan(expected))
    np.testing.assert_allclose(np.asarray(placed), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_photo(maps, (width, height), preprocess), np.asarray(placed))


@settings(max_examples=40, deadline=None)
@given(
    small=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    factor=st.sampled_from([1, 3, 5]),
    seed=st.integers(0, 2**16),
)
def test_at_size_samples_the_same_maps_on_a_smaller_drawing(small, factor, seed):
    """Drawn at 1/k of the photo (k odd), pixel j's centre is photo pixel j*k + k//2's."""
    photo_size = (small[0] * factor, small[1] * factor)
    preprocess = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    maps = np.random.default_rng(seed).random((3, 7, 7)).astype(np.float32)
    full = PhotoMaps(maps, photo_size, preprocess)
    drawn = full.at_size(small)
    assert drawn.shape == (3, small[1], small[0])
    centre = factor // 2
    np.testing.assert_allclose(
        np.asarray(drawn),
        np.asarray(full)[:, centre::factor, centre::factor],
        rtol=1e-6,
        atol=1e-7,
    )


def test_photo_maps_index_like_an_array():
    preprocess = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])
    maps = np.random.default_rng(0).random((4, 5, 5)).astype(np.float32)
    lazy = PhotoMaps(torch.from_numpy(maps), (40, 24), preprocess)
    whole = to_photo(maps, (40, 24), preprocess)
    assert len(lazy) == 4
    assert lazy.shape == whole.shape == (4, 24, 40)
    assert lazy.dtype == np.float32
    for key in [0, -1, np.int64(2), slice(1, 3), slice(3, 1), (slice(None), 3, slice(0, 9))]:
        np.testing.assert_array_equal(lazy[key], whole[key])
    np.testing.assert_array_equal(lazy[[0, 2]], whole[[0, 2]])
    np.testing.assert_array_equal(np.stack(list(lazy)), whole)
    with pytest.raises(IndexError, match="prompt 4 out of range"):
        lazy[4]
    with pytest.raises(ValueError, match=r"maps: expected the maps of one photo"):
        PhotoMaps(maps[0], (40, 24), preprocess)
    with pytest.raises(ValueError, match=r"size: expected PIL's \(width, height\)"):
        lazy.at_size((0, 5))


def _peak_bytes(call) -> int:
    """Peak bytes numpy and Python allocate during ``call`` (tracemalloc sees numpy's arrays)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_placing_maps_one_at_a_time_holds_one_map():
    side, prompts = 1500, 16
    preprocess = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])
    maps = PhotoMaps(np.random.default_rng(0).random((prompts, 7, 7)), (side, side), preprocess)
    one_map = side * side * 4

    def each() -> None:
        for saliency in maps:
            assert saliency.shape == (side, side)

    assert _peak_bytes(each) < 3 * one_map  # the map in use and the next, not 16 of them
    assert _peak_bytes(lambda: np.asarray(maps)) < (prompts + 1.5) * one_map


def test_overlay_of_a_large_photo_stays_near_its_output():
    height, width = 1200, 1600
    photo = np.zeros((height, width, 3), np.uint8)
    saliency = np.random.default_rng(0).random((height, width)).astype(np.float32)
    saliency[:, :100] = np.nan
    out_bytes = height * width * 3 * 4
    # the output and the photo as floats, plus bands of rows (was ~10x: float64 colours...)
    assert _peak_bytes(lambda: overlay(photo, saliency)) < 3 * out_bytes


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 30_000),
    height=st.integers(1, 30_000),
    max_pixels=st.integers(1, 40_000_000),
)
def test_display_size_fits_the_limit_and_keeps_the_aspect(width, height, max_pixels):
    drawn_w, drawn_h = display_size((width, height), max_pixels)
    if width * height <= max_pixels:
        assert (drawn_w, drawn_h) == (width, height)
        return
    assert drawn_w * drawn_h <= max_pixels or min(drawn_w, drawn_h) == 1
    assert 1 <= drawn_w <= width
    assert 1 <= drawn_h <= height
    if min(drawn_w, drawn_h) > 1:  # the aspect ratio, to a pixel
        assert abs(drawn_w - drawn_h * width / height) <= 1 + width / height
        assert (drawn_w + 1) * (drawn_h + 1) > max_pixels  # not needlessly small


def test_for_display_warns_once_naming_the_file_and_sizes():
    small = Image.new("RGB", (40, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert for_display(small, "small.png", max_pixels=1200) is small
    with pytest.warns(UserWarning, match="big.png is 40 x 30 pixels .* drawn at 23 x 17") as caught:
        drawn = for_display(small, "big.png", max_pixels=400)
    assert len(caught) == 1
    assert drawn.size == (23, 17)
    assert display_size((9000, 9000)) == (4000, 4000)
    assert DISPLAY_MAX_PIXELS == 16_000_000
