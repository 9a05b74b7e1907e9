"""Boxes and points from maps: planted blobs and peaks, NaN outside the crop, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from captum_gscorecam.evaluation import box_accuracy, pointing_game
from captum_gscorecam.localize import (
    boxes_by_threshold,
    boxes_from_map,
    foreground,
    points_from_map,
)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def gaussian(shape, row, col, sigma, height=1.0):
    rows, cols = np.indices(shape)
    return height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))


def test_a_blob_gives_its_box():
    saliency = np.zeros((40, 50))
    saliency[10:18, 20:35] = 1.0  # rows 10-17, columns 20-34
    (box,) = boxes_from_map(saliency)
    np.testing.assert_array_equal(box, [20, 10, 15, 8, 1.0])  # x, y, w, h, all the mass


def test_two_blobs_give_two_boxes_in_mass_order():
    saliency = np.zeros((40, 40))
    saliency[2:8, 2:8] = 1.0  # 36 pixels, mass 36
    saliency[20:28, 25:33] = 0.5  # 64 pixels, mass 32
    by_mass = boxes_from_map(saliency)
    np.testing.assert_array_equal(by_mass[:, :4], [[2, 2, 6, 6], [25, 20, 8, 8]])
    np.testing.assert_allclose(by_mass[:, 4], [36 / 68, 32 / 68])
    by_area = boxes_from_map(saliency, rank="area")
    np.testing.assert_array_equal(by_area[:, :4], [[25, 20, 8, 8], [2, 2, 6, 6]])
    np.testing.assert_allclose(by_area[:, 4], [64 / 1600, 36 / 1600])


def test_a_threshold_keeps_pixels_at_or_above_it():
    saliency = np.zeros((10, 10))
    saliency[1, 1], saliency[5, 5], saliency[8, 8] = 1.0, 0.5, 0.49
    assert len(boxes_from_map(saliency, threshold=0.5)) == 2
    assert len(boxes_from_map(saliency, threshold=0.51)) == 1
    assert foreground(saliency, 0.0).all()
    per = boxes_by_threshold(saliency, [0.5, 0.51])
    assert [len(b) for b in per] == [2, 1]
    np.testing.assert_array_equal(per[1], boxes_from_map(saliency, threshold=0.51))


def test_diagonal_pixels_are_one_component():
    saliency = np.eye(6)
    np.testing.assert_array_equal(boxes_from_map(saliency)[:, :4], [[0, 0, 6, 6]])


def test_nan_outside_the_crop_takes_part_in_nothing():
    inside = gaussian((30, 30), 12, 18, 3) + gaussian((30, 30), 25, 5, 2, 0.7)
    photo = np.full((50, 30), np.nan)
    photo[10:40] = inside  # a crop of rows 10-39
    np.testing.assert_array_equal(
        boxes_from_map(photo), boxes_from_map(inside) + np.array([0, 10, 0, 0, 0])
    )
    np.testing.assert_array_equal(foreground(photo)[10:40], foreground(inside))
    assert not foreground(photo)[:10].any()
    np.testing.assert_array_equal(
        points_from_map(photo, 2, 5), points_from_map(inside, 2, 5) + np.array([0, 10, 0])
    )
    assert pointing_game(photo, np.array([[17, 21, 20, 24]]), tolerance=0)


@pytest.mark.parametrize(
    "saliency", [np.zeros((5, 5)), np.full((5, 5), 3.0), np.full((4, 4), np.nan)]
)
def test_a_map_without_information_gives_no_box_and_no_point(saliency):
    assert boxes_from_map(saliency).shape == (0, 5)
    assert boxes_by_threshold(saliency, [0.0, 0.5])[0].shape == (0, 5)
    assert points_from_map(saliency, 3).shape == (0, 3)
    assert not foreground(saliency).any()


def test_peaks_are_found_highest_first():
    saliency = (
        gaussian((60, 60), 10, 40, 4, 0.6)
        + gaussian((60, 60), 45, 12, 4, 1.0)
        + gaussian((60, 60), 30, 30, 4, 0.8)
    )
    points = points_from_map(saliency, 3)
    np.testing.assert_array_equal(points[:, :2], [[12, 45], [30, 30], [40, 10]])  # x, y
    assert points[0, 2] == 1.0
    assert points[0, 2] > points[1, 2] > points[2, 2] > 0
    np.testing.assert_array_equal(points_from_map(saliency, 1), points[:1])
    assert len(points_from_map(saliency, 10)) == 3  # only three local maxima


def test_min_distance_spreads_points_over_a_plateau():
    saliency = np.zeros((20, 20))
    saliency[5, 2:12] = 1.0  # a ridge ten pixels long
    assert len(points_from_map(saliency, 20)) == 10
    spread = points_from_map(saliency, 20, min_distance=4)
    np.testing.assert_array_equal(spread[:, 0], [2, 6, 10])  # x, first in row-major order
    np.testing.assert_array_equal(spread[:, 1], [5, 5, 5])


def test_the_box_metrics_use_the_boxes():
    saliency = np.zeros((40, 40))
    saliency[2:8, 2:8] = 1.0
    saliency[20:28, 25:33] = 0.5
    largest = boxes_from_map(saliency, rank="area")[0, :4]
    x, y, w, h = largest.astype(int)
    assert box_accuracy(saliency, np.array([[x, y, x + w, y + h]])) == (True, 1.0)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: boxes_from_map(np.zeros((2, 3, 4))),
            ValueError,
            r"saliency: expected an \(H, W\)",
        ),
        (
            lambda: boxes_from_map(np.array([[0.0, np.inf]])),
            ValueError,
            "saliency: expected finite",
        ),
        (lambda: foreground(np.eye(3, dtype=bool)), TypeError, "saliency: expected a real-valued"),
        (
            lambda: boxes_from_map(np.eye(3), threshold=1.5),
            ValueError,
            r"threshold: expected .*\[0, 1\]",
        ),
        (lambda: boxes_from_map(np.eye(3), threshold=True), ValueError, "threshold: expected"),
        (lambda: boxes_from_map(np.eye(3), rank="size"), ValueError, "rank: expected 'mass' or"),
        (lambda: points_from_map(np.eye(3), 0), ValueError, "n: expected an integer >= 1"),
        (lambda: points_from_map(np.eye(3), 2.0), ValueError, "n: expected an integer >= 1"),
        (lambda: points_from_map(np.eye(3), 2, -1), ValueError, "min_distance: expected"),
    ],
)
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


maps = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.one_of(
        st.floats(-4, 4, allow_nan=False), st.sampled_from([0.0, 1.0]), st.just(np.nan)
    ),
)


@SETTINGS
@given(maps, st.one_of(st.none(), st.floats(0, 1)), st.sampled_from(["mass", "area"]))
def test_boxes_lie_inside_the_image_tight_and_sorted(saliency, threshold, rank):
    boxes = boxes_from_map(saliency, threshold, rank)
    height, width = saliency.shape
    x, y, w, h, score = boxes.T
    assert np.all((x >= 0) & (y >= 0) & (w >= 1) & (h >= 1))
    assert np.all((x + w <= width) & (y + h <= height))
    assert (np.diff(score) <= 0).all()
    assert (score > 0).all() or rank == "mass"  # a component of zeros has no mass
    assert score.sum() <= 1 + 1e-9
    mask = foreground(saliency, threshold)
    assert mask.sum() == 0 or len(boxes) >= 1
    for bx, by, bw, bh in boxes[:, :4].astype(int):
        inside = mask[by : by + bh, bx : bx + bw]
        edges = (inside[0], inside[-1], inside[:, 0], inside[:, -1])
        assert all(edge.any() for edge in edges)  # the box is tight
    covered = np.zeros_like(mask)
    for bx, by, bw, bh in boxes[:, :4].astype(int):
        covered[by : by + bh, bx : bx + bw] = True
    assert not (mask & ~covered).any()  # every marked pixel is in some box


@SETTINGS
@given(maps, st.integers(-20, 20), st.one_of(st.none(), st.floats(0, 1)))
def test_boxes_and_points_are_invariant_to_positive_scaling(saliency, power, threshold):
    scaled = saliency * 2.0**power  # exact in floating point, so results must be equal
    np.testing.assert_array_equal(
        boxes_from_map(scaled, threshold), boxes_from_map(saliency, threshold)
    )
    np.testing.assert_array_equal(points_from_map(scaled, 4), points_from_map(saliency, 4))


@SETTINGS
@given(maps, st.integers(1, 6), st.floats(0, 5))
def test_points_are_peaks_spaced_and_sorted(saliency, n, min_distance):
    points = points_from_map(saliency, n, min_distance)
    assert len(points) <= n
    if not len(points):
        finite = saliency[~np.isnan(saliency)]
        assert finite.size == 0 or finite.min() == finite.max()
        return
    filled = np.where(np.isnan(saliency), -np.inf, saliency)
    assert tuple(points[0, 1::-1].astype(int)) == np.unravel_index(np.argmax(filled), filled.shape)
    assert points[0, 2] == 1.0
    assert (np.diff(points[:, 2]) <= 0).all()
    for i in range(len(points)):
        for j in range(i):
            assert np.hypot(*(points[i, :2] - points[j, :2])) >= min_distance
        x, y = points[i, :2].astype(int)
        window = filled[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        assert filled[y, x] == window.max()  # a local maximum
