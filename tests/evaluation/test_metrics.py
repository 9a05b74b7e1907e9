"""Localization and faithfulness metrics on small hand-computed cases, plus invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from captum_gscorecam.evaluation import (
    box_accuracy,
    box_iou,
    deletion_auc,
    energy_pointing,
    insertion_auc,
    mask_iou,
    max_box_acc_v2,
    pointing_game,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def peak(shape, row, col):
    saliency = np.zeros(shape)
    saliency[row, col] = 1.0
    return saliency


def blob(shape, *boxes, value=1.0):
    """A map that is ``value`` inside each box ``x0, y0, x1, y1`` and 0 elsewhere."""
    saliency = np.zeros(shape)
    for x0, y0, x1, y1 in boxes:
        saliency[y0:y1, x0:x1] = value
    return saliency


# box_iou


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),
        ([0, 0, 2, 2], [5, 5, 7, 7], 0.0),
        ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),  # sharing an edge: exclusive ends do not overlap
        ([0, 0, 2, 2], [1, 0, 3, 2], 1 / 3),
        ([0, 0, 4, 4], [1, 1, 3, 3], 0.25),
        ([0, 0, 3, 1], [0, 0, 1, 3], 1 / 5),
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),  # empty boxes
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(np.array(a), np.array(b)) == pytest.approx(expected)
    assert box_iou(np.array(b), np.array(a)) == pytest.approx(expected)


# pointing_game


def test_pointing_inside_box():
    assert pointing_game(peak((10, 10), 5, 5), np.array([[4, 4, 7, 7]]), tolerance=0)


def test_pointing_x_is_column():
    saliency = peak((6, 10), 1, 8)  # row 1, column 8
    assert pointing_game(saliency, np.array([[7, 0, 10, 3]]), tolerance=0)
    assert not pointing_game(saliency, np.array([[0, 7, 3, 10]]), tolerance=0)


def test_pointing_exclusive_end():
    box = np.array([[0, 0, 5, 5]])
    assert pointing_game(peak((10, 10), 4, 4), box, tolerance=0)
    assert not pointing_game(peak((10, 10), 5, 5), box, tolerance=0)


def test_pointing_tolerance_is_euclidean_and_strict():
    box = np.array([[0, 0, 2, 2]])  # nearest pixel to (5, 5) is (1, 1): distance sqrt(32) = 5.66
    assert not pointing_game(peak((10, 10), 5, 5), box, tolerance=5)
    assert pointing_game(peak((10, 10), 5, 5), box, tolerance=6)
    saliency = peak((10, 10), 1, 4)  # 3 pixels right of column 1
    assert not pointing_game(saliency, box, tolerance=3)
    assert pointing_game(saliency, box, tolerance=4)


def test_pointing_any_box():
    boxes = np.array([[0, 0, 2, 2], [8, 8, 10, 10]])
    assert pointing_game(peak((10, 10), 9, 9), boxes, tolerance=0)


def test_pointing_tie_takes_first_in_row_major_order():
    saliency = peak((10, 10), 0, 9) + peak((10, 10), 9, 0)
    assert pointing_game(saliency, np.array([[9, 0, 10, 1]]), tolerance=0)
    assert not pointing_game(saliency, np.array([[0, 9, 1, 10]]), tolerance=0)


def test_pointing_constant_map_is_a_miss():
    assert not pointing_game(np.full((10, 10), 3.0), np.array([[0, 0, 10, 10]]))


# box_accuracy


def test_box_accuracy_finds_the_rectangle():
    saliency = blob((10, 12), (3, 2, 9, 5))
    assert box_accuracy(saliency, np.array([[3, 2, 9, 5]])) == (True, 1.0)


def test_box_accuracy_threshold_is_inclusive():
    saliency = blob((10, 12), (3, 2, 9, 5))  # 18 pixels; ground truth is its left half
    hit, iou = box_accuracy(saliency, np.array([[3, 2, 6, 5]]))
    assert (hit, iou) == (True, 0.5)
    assert box_accuracy(saliency, np.array([[3, 2, 6, 5]]), iou_threshold=0.51) == (False, 0.5)


def test_box_accuracy_largest_region_wins():
    saliency = blob((10, 10), (0, 0, 2, 2), (5, 5, 8, 8))  # 4 and 9 pixels
    assert box_accuracy(saliency, np.array([[0, 0, 2, 2]])) == (False, 0.0)
    assert box_accuracy(saliency, np.array([[0, 0, 2, 2], [5, 5, 8, 8]])) == (True, 1.0)


def test_box_accuracy_regions_are_eight_connected():
    saliency = np.zeros((10, 10))
    saliency[[0, 1, 2, 3], [0, 1, 2, 3]] = 1.0  # a diagonal: one region of 4 pixels
    saliency[8, 5:8] = 1.0  # a line of 3 pixels
    assert box_accuracy(saliency, np.array([[0, 0, 4, 4]])) == (True, 1.0)


def test_box_accuracy_otsu_separates_the_modes():
    saliency = blob((10, 10), (2, 2, 6, 6)) + 0.05 * peak((10, 10), 9, 9)
    assert box_accuracy(saliency, np.array([[2, 2, 6, 6]])) == (True, 1.0)


def test_box_accuracy_returns_best_match():
    saliency = blob((10, 10), (0, 0, 4, 4))
    hit, iou = box_accuracy(saliency, np.array([[6, 6, 9, 9], [1, 1, 3, 3], [0, 0, 4, 2]]))
    assert (hit, iou) == (True, 0.5)


def test_box_accuracy_constant_map():
    assert box_accuracy(np.ones((8, 8)), np.array([[0, 0, 8, 8]])) == (False, 0.0)


# max_box_acc_v2


def test_max_box_acc_perfect_map():
    saliency = blob((10, 10), (2, 3, 6, 8))
    assert max_box_acc_v2([saliency], [np.array([[2, 3, 6, 8]])]) == 1.0


def test_max_box_acc_wrong_place():
    # tau = 0 keeps the whole image, IoU 9 / 100 < 0.3; every other tau keeps the blob.
    saliency = blob((10, 10), (0, 0, 3, 3))
    assert max_box_acc_v2([saliency], [np.array([[7, 7, 10, 10]])]) == 0.0


def test_max_box_acc_mixed_ious():
    # Image 1: IoU 1 for tau > 0 (0.09 at tau = 0). Image 2: IoU 16 / 32 = 0.5 for tau > 0
    # (32 / 100 at tau = 0). Deltas 0.3, 0.5: both hit; 0.7: only image 1. Mean (1 + 1 + 0.5) / 3.
    maps = [blob((10, 10), (0, 0, 3, 3)), blob((10, 10), (0, 0, 4, 4))]
    boxes = [np.array([[0, 0, 3, 3]]), np.array([[0, 0, 8, 4]])]
    assert max_box_acc_v2(maps, boxes) == pytest.approx(2.5 / 3)


def test_max_box_acc_threshold_is_shared_across_images():
    # A 4 x 4 plateau at 0.6 around a 2 x 2 core at 1: tau <= 0.6 gives the plateau's box,
    # tau > 0.6 the core's; their IoU is 0.25. Each image wants a different tau, so at any
    # single tau only one of the two is right.
    saliency = blob((10, 10), (2, 2, 6, 6), value=0.6)
    saliency[3:5, 3:5] = 1.0
    boxes = [np.array([[2, 2, 6, 6]]), np.array([[3, 3, 5, 5]])]
    assert max_box_acc_v2([saliency, saliency], boxes) == 0.5


def test_max_box_acc_uses_every_component():
    saliency = blob((10, 10), (0, 0, 2, 2), (5, 5, 8, 8))
    boxes = np.array([[0, 0, 2, 2]])  # the smaller blob
    assert max_box_acc_v2([saliency], [boxes]) == 1.0
    assert not box_accuracy(saliency, boxes)[0]


def test_max_box_acc_constant_map_scores_zero():
    maps = [np.zeros((10, 10)), blob((10, 10), (0, 0, 3, 3))]
    boxes = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 3, 3]])]
    assert max_box_acc_v2(maps, boxes) == 0.5


def test_max_box_acc_length_mismatch():
    with pytest.raises(ValueError, match="boxes_per_image"):
        max_box_acc_v2([np.eye(4)], [])


# energy_pointing


def test_energy_counts_the_union_once():
    boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 3]])  # 4 + 4 - 1 = 7 pixels
    assert energy_pointing(np.ones((4, 4)), boxes) == pytest.approx(7 / 16)


def test_energy_ignores_negative_values():
    saliency = np.ones((4, 4))
    saliency[0, 0] = -5.0
    saliency[3, 3] = 3.0
    assert energy_pointing(saliency, np.array([[0, 0, 2, 2]])) == pytest.approx(3 / 17)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_energy_without_mass(value):
    assert energy_pointing(np.full((4, 4), value), np.array([[0, 0, 2, 2]])) == 0.0


# mask_iou


def test_mask_iou_otsu():
    saliency = blob((6, 6), (0, 0, 4, 2))  # 8 pixels
    assert mask_iou(saliency, saliency > 0) == 1.0
    assert mask_iou(saliency, blob((6, 6), (0, 0, 2, 2)) > 0) == 0.5


def test_mask_iou_given_threshold_is_inclusive():
    saliency = np.array([[2.0, 3.0], [4.0, 6.0]])  # normalised: 0, 0.25, 0.5, 1
    mask = np.array([[False, False], [True, False]])
    assert mask_iou(saliency, mask, threshold=0.5) == 0.5
    assert mask_iou(saliency, mask, threshold=0.2) == pytest.approx(1 / 3)


def test_mask_iou_constant_map():
    assert mask_iou(np.ones((4, 4)), np.ones((4, 4), dtype=bool)) == 0.0


# deletion_auc and insertion_auc


def pixel_score(row, col):
    return lambda batch: batch[:, 0, row, col]


def total_score(batch):
    return batch.sum(axis=(1, 2, 3))


def test_deletion_single_pixel_score():
    image = np.ones((1, 2, 2))
    first = peak((2, 2), 0, 0)  # the scored pixel goes first: scores 1, 0, 0, 0, 0
    assert deletion_auc(pixel_score(0, 0), image, first, steps=4) == pytest.approx(0.125)
    last = 1 - first  # the scored pixel goes last: scores 1, 1, 1, 1, 0
    assert deletion_auc(pixel_score(0, 0), image, last, steps=4) == pytest.approx(0.875)


def test_deletion_and_insertion_of_a_sum():
    image = np.array([[[4.0, 3.0], [2.0, 1.0]]])
    saliency = image[0]
    # deletion: 10, 6, 3, 1, 0 -> 0.25 * (10 / 2 + 6 + 3 + 1 + 0 / 2)
    assert deletion_auc(total_score, image, saliency, steps=4) == pytest.approx(3.75)
    # insertion from 0: 0, 4, 7, 9, 10 -> 0.25 * (0 / 2 + 4 + 7 + 9 + 10 / 2)
    assert insertion_auc(total_score, image, saliency, steps=4, baseline=0.0) == pytest.approx(6.25)


def test_deletion_baseline_and_uneven_steps():
    image = np.array([[[4.0, 3.0], [2.0, 1.0]]])
    # steps 3 over 4 pixels: 0, 1, 3, 4 pixels moved (x = 0, 1/4, 3/4, 1); baseline 1:
    # sums 10, 7, 4, 4 -> 1/4 * 17/2 + 1/2 * 11/2 + 1/4 * 8/2 = 5.875
    auc = deletion_auc(total_score, image, image[0], steps=3, baseline=1.0)
    assert auc == pytest.approx(5.875)


def test_ties_follow_row_major_order():
    image, flat = np.ones((1, 2, 2)), np.zeros((2, 2))
    assert deletion_auc(pixel_score(0, 0), image, flat, steps=4) == pytest.approx(0.125)
    assert deletion_auc(pixel_score(1, 1), image, flat, steps=4) == pytest.approx(0.875)


def test_insertion_default_baseline_is_the_blurred_image():
    rng = np.random.default_rng(0)
    image, saliency = rng.random((3, 8, 8)), rng.random((8, 8))
    seen = []

    def score_fn(batch):
        seen.append(batch.copy())
        return batch.mean(axis=(1, 2, 3))

    auc = insertion_auc(score_fn, image, saliency, steps=4, sigma=2.0)
    blurred = np.stack([ndimage.gaussian_filter(channel, 2.0) for channel in image])
    np.testing.assert_allclose(seen[0][0], blurred)
    np.testing.assert_allclose(seen[-1][-1], image)
    assert auc == pytest.approx(insertion_auc(score_fn, image, saliency, 4, baseline=blurred))


def test_insertion_of_a_constant_image_is_constant():
    image = np.full((3, 6, 6), 0.7)
    saliency = np.random.default_rng(1).random((6, 6))
    assert insertion_auc(total_score, image, saliency, steps=9) == pytest.approx(0.7 * 108)


def test_batch_size_bounds_calls_and_keeps_results():
    rng = np.random.default_rng(2)
    image, saliency = rng.random((2, 5, 5)), rng.random((5, 5))
    sizes = []

    def score_fn(batch):
        sizes.append(len(batch))
        return total_score(batch)

    results = [deletion_auc(score_fn, image, saliency, steps=10, batch_size=b) for b in (1, 4, 32)]
    assert results == pytest.approx([results[0]] * 3)
    assert sizes[:11] == [1] * 11
    assert sizes[11:14] == [4, 4, 3]
    assert sizes[14:] == [11]


def test_deletion_rejects_mismatched_saliency():
    with pytest.raises(ValueError, match="saliency"):
        deletion_auc(total_score, np.ones((3, 4, 4)), np.ones((4, 5)))


# invariants

small_maps = hnp.arrays(np.float64, (6, 7), elements=st.integers(0, 9).map(float))
boxes_strategy = st.tuples(
    st.integers(0, 6), st.integers(0, 5), st.integers(1, 7), st.integers(1, 6)
).map(lambda b: np.array([[min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]]))
# Powers of two and integer shifts keep the arithmetic exact, so min-max normalisation gives
# bit-identical maps and any difference would be the metric's own.
scales = st.integers(-3, 3).map(lambda k: 2.0**k)
shifts = st.integers(-10, 10).map(float)


@SETTINGS
@given(saliency=small_maps, boxes=boxes_strategy, scale=scales, shift=shifts)
def test_localization_metrics_ignore_positive_affine_maps(saliency, boxes, scale, shift):
    rescaled = scale * saliency + shift
    assert pointing_game(rescaled, boxes, 2) == pointing_game(saliency, boxes, 2)
    assert box_accuracy(rescaled, boxes) == box_accuracy(saliency, boxes)
    assert max_box_acc_v2([rescaled], [boxes]) == max_box_acc_v2([saliency], [boxes])


@SETTINGS
@given(
    saliency=hnp.arrays(np.float64, (5, 5), elements=st.floats(-10, 10)),
    boxes=boxes_strategy,
)
def test_energy_in_unit_interval(saliency, boxes):
    assert 0.0 <= energy_pointing(saliency, boxes) <= 1.0


@SETTINGS
@given(a=boxes_strategy, b=boxes_strategy)
def test_box_iou_symmetric_in_unit_interval(a, b):
    assert 0.0 <= box_iou(a[0], b[0]) == box_iou(b[0], a[0]) <= 1.0


@SETTINGS
@given(
    image=hnp.arrays(np.float64, (2, 3, 3), elements=st.floats(0, 1)),
    weights=hnp.arrays(np.float64, (2, 3, 3), elements=st.floats(0, 1)),
    other=hnp.arrays(np.float64, (3, 3), elements=st.floats(-1, 1)),
)
def test_true_contributions_give_the_best_curves(image, weights, other):
    # score = <w, x> >= 0 per pixel: deleting (inserting) the largest contributions first gives
    # the lowest (highest) curve of all orderings, pointwise.
    def score_fn(batch):
        return (batch * weights).sum(axis=(1, 2, 3))

    perfect = (image * weights).sum(axis=0)
    for ordering in (other, -perfect):
        deleted = deletion_auc(score_fn, image, ordering, steps=9)
        inserted = insertion_auc(score_fn, image, ordering, steps=9, baseline=0.0)
        assert deletion_auc(score_fn, image, perfect, steps=9) <= deleted + 1e-9
        assert insertion_auc(score_fn, image, perfect, steps=9, baseline=0.0) >= inserted - 1e-9
