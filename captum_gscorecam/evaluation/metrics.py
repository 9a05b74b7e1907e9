"""Localization and faithfulness metrics for saliency maps, in numpy.

Conventions: a saliency map is an ``(H, W)`` float array at image resolution; boxes are int
arrays ``(n, 4)`` as ``x0, y0, x1, y1`` with ``x1, y1`` exclusive (x is the column, y the row),
all of the prompted class; images are ``(C, H, W)`` float arrays, as the model takes them.
A constant map carries no information: every localization metric scores it as a miss (0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from captum_gscorecam.localize import (
    boxes_by_threshold,
    boxes_from_map,
    foreground,
    points_from_map,
)

__all__ = [
    "box_accuracy",
    "box_iou",
    "box_iou_curve",
    "deletion_auc",
    "energy_pointing",
    "insertion_auc",
    "mask_iou",
    "max_box_acc_v2",
    "pointing_chance",
    "pointing_game",
]

ScoreFn = Callable[[np.ndarray], np.ndarray]

# MaxBoxAccV2's map thresholds 0.00, 0.01, ..., 0.99 (Choe et al.).
_CAM_THRESHOLDS: np.ndarray = np.arange(0.0, 1.0, 0.01)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes ``x0, y0, x1, y1`` (exclusive ends): ``|a & b| / |a | b|``; 0 if empty."""
    return float(_pairwise_iou(np.asarray(a)[None], np.asarray(b)[None])[0, 0])


def pointing_game(saliency: np.ndarray, boxes: np.ndarray, tolerance: int = 15) -> bool:
    """Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016).

    Hit when the map's maximum ``p = argmax(saliency)`` (its first point,
    :func:`~captum_gscorecam.localize.points_from_map`) lies in a box, or ``d(p, box) <
    tolerance``, the Euclidean distance from ``p`` to the box's nearest pixel (strict, as in
    TorchRay's benchmark). Ties take the first maximum in row-major order (``np.argmax``); a
    constant map points nowhere and is a miss.

    Args:

        saliency (np.ndarray): The map ``(H, W)``.
        boxes (np.ndarray): Ground-truth boxes ``(n, 4)``.
        tolerance (int, optional): Margin around the boxes, in pixels.
                    Default: 15

    Returns:
        *bool*: whether the maximum hits a box.
    """
    peak = points_from_map(saliency, 1)
    if not len(peak):
        return False
    x, y = peak[0, :2].astype(np.int64)
    return bool(_hits(np.array([x]), np.array([y]), boxes, tolerance)[0])


def pointing_chance(boxes: np.ndarray, shape: tuple[int, int], tolerance: int = 15) -> float:
    """The pointing game's chance level: the share of the ``(H, W)`` pixels that hit.

    A map whose peak falls on a uniformly random pixel scores this on average, the baseline a
    method's pointing accuracy should be read against (it falls as objects get smaller).

    Args:

        boxes (np.ndarray): Ground-truth boxes ``(n, 4)``.
        shape (tuple of int): The map's ``(H, W)``.
        tolerance (int, optional): Margin around the boxes, in pixels, as in
                    :func:`pointing_game`.
                    Default: 15

    Returns:
        *float*: the share of pixels within ``tolerance`` of a box (or inside one).
    """
    y, x = np.indices(shape).reshape(2, -1)
    return float(_hits(x, y, boxes, tolerance).mean())


def _hits(x: np.ndarray, y: np.ndarray, boxes: np.ndarray, tolerance: int) -> np.ndarray:
    """Whether each point ``(x[i], y[i])`` lies in a box or within ``tolerance`` of one."""
    x0, y0, x1, y1 = (v[:, None] for v in np.asarray(boxes).reshape(-1, 4).T)
    dx = np.maximum(0, np.maximum(x0 - x, x - (x1 - 1)))
    dy = np.maximum(0, np.maximum(y0 - y, y - (y1 - 1)))
    d2 = dx**2 + dy**2
    return np.any((d2 == 0) | (d2 < tolerance**2), axis=0)


def box_accuracy(
    saliency: np.ndarray, boxes: np.ndarray, iou_threshold: float = 0.5
) -> tuple[bool, float]:
    """Box accuracy as in the gScoreCAM paper (Chen et al., ACCV 2022).

    The map is min-max normalised and cut at its Otsu threshold (``map > t``; the paper's
    [0, 255] scale gives the same partition); the predicted box is the tight box of the largest
    8-connected region (ties: the first region in row-major order), the first box of
    :func:`~captum_gscorecam.localize.boxes_from_map` with ``rank="area"``. Hit when
    ``max_g IoU(box, g) >= iou_threshold``. A constant map gives ``(False, 0.0)``.

    Args:

        saliency (np.ndarray): The map ``(H, W)``.
        boxes (np.ndarray): Ground-truth boxes ``(n, 4)``.
        iou_threshold (float, optional): IoU needed for a hit.
                    Default: 0.5

    Returns:
        *tuple[bool, float]*: the hit, and the IoU of the predicted box with its best-matching
        ground-truth box.
    """
    predicted = boxes_from_map(saliency, rank="area")
    if not len(predicted):
        return False, 0.0
    iou = float(_best_iou(_corners(predicted[:1]), np.asarray(boxes).reshape(-1, 4))[0])
    return iou >= iou_threshold, iou


def max_box_acc_v2(
    saliencies: Sequence[np.ndarray] | np.ndarray,
    boxes_per_image: Sequence[np.ndarray],
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> float:
    """MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization Methods
    Right", CVPR 2020).

    Each map is min-max normalised to [0, 1]. For each threshold ``tau`` in 0.00, ..., 0.99 the
    mask ``map >= tau`` gives one box per 8-connected component
    (:func:`~captum_gscorecam.localize.boxes_by_threshold`), and an image's IoU at ``tau``
    is the best IoU of any of these boxes with any ground-truth box.
    ``BoxAcc(tau, delta)`` = fraction of images with IoU >= delta;
    ``MaxBoxAccV2 = mean_delta max_tau BoxAcc(tau, delta)``. ``tau`` is shared by all images.
    A constant map has no box at any ``tau`` (IoU 0). Components stand in for the reference
    code's OpenCV contours: holes do not add boxes.

    Args:

        saliencies (Sequence[np.ndarray] or np.ndarray): N maps, each ``(H, W)``.
        boxes_per_image (Sequence[np.ndarray]): N arrays of ground-truth boxes ``(n_i, 4)``.
        iou_thresholds (Sequence[float], optional): The IoU thresholds ``delta``.
                    Default: (0.3, 0.5, 0.7)

    Returns:
        *float* in [0, 1].
    """
    if len(saliencies) != len(boxes_per_image):
        raise ValueError(
            f"boxes_per_image: expected {len(saliencies)} entries, got {len(boxes_per_image)}"
        )
    ious = np.stack(
        [
            box_iou_curve(saliency, np.asarray(boxes).reshape(-1, 4))
            for saliency, boxes in zip(saliencies, boxes_per_image, strict=True)
        ]
    )  # (N, T)
    deltas = np.asarray(iou_thresholds, dtype=float)[:, None, None]
    box_acc = (ious[None] >= deltas).mean(axis=1)  # (D, T)
    return float(box_acc.max(axis=1).mean())


def energy_pointing(saliency: np.ndarray, boxes: np.ndarray) -> float:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPRW 2020).

    ``sum_{p in boxes} s+(p) / sum_p s+(p)`` with ``s+ = max(s, 0)`` and the boxes' union;
    0.0 for a map with no positive mass.

    Args:

        saliency (np.ndarray): The map ``(H, W)``.
        boxes (np.ndarray): Ground-truth boxes ``(n, 4)``.

    Returns:
        *float* in [0, 1].
    """
    positive = np.maximum(saliency, 0)
    total = positive.sum()
    if not total > 0:
        return 0.0
    return float(positive[_box_union(boxes, saliency.shape)].sum() / total)


def mask_iou(saliency: np.ndarray, mask: np.ndarray, threshold: float | None = None) -> float:
    """IoU of the binarised map with a ground-truth mask: ``|B & M| / |B | M|``.

    ``B = map > otsu(map)`` by default, else ``B = minmax(map) >= threshold``. A constant map,
    or two empty sets, give 0.0.

    Args:

        saliency (np.ndarray): The map ``(H, W)``.
        mask (np.ndarray): Ground-truth boolean mask ``(H, W)``.
        threshold (float, optional): Threshold on the min-max normalised map; None for Otsu.
                    Default: None

    Returns:
        *float* in [0, 1].
    """
    binary = foreground(saliency, threshold)
    mask = np.asarray(mask, dtype=bool)
    union = np.count_nonzero(binary | mask)
    return float(np.count_nonzero(binary & mask) / union) if union else 0.0


def deletion_auc(
    score_fn: ScoreFn,
    image: np.ndarray,
    saliency: np.ndarray,
    steps: int = 100,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 32,
) -> float:
    """Deletion metric (Petsiuk et al., RISE, BMVC 2018); lower is better.

    Pixels are ranked by saliency (descending, ties in row-major order). At step ``k`` of
    ``steps`` the top ``n_k = round(k HW / steps)`` pixels (all channels) are replaced by the
    baseline; ``AUC = integral of score over x = n_k / HW in [0, 1]`` (trapezoid), on raw
    scores (not normalised).

    Args:

        score_fn (Callable): Maps a batch ``(B, C, H, W)`` to scores ``(B,)``.
        image (np.ndarray): The image ``(C, H, W)``.
        saliency (np.ndarray): The map ``(H, W)``.
        steps (int, optional): Number of increments; the curve has ``steps + 1`` points.
                    Default: 100
        baseline (float or np.ndarray, optional): What deleted pixels become: a constant or
                    an array broadcastable to ``(C, H, W)``.
                    Default: 0.0
        batch_size (int, optional): Most images per ``score_fn`` call.
                    Default: 32

    Returns:
        *float*: the area under the deletion curve.
    """
    image = np.asarray(image)
    return _auc(score_fn, image, _filled(baseline, image), saliency, steps, batch_size)


def insertion_auc(
    score_fn: ScoreFn,
    image: np.ndarray,
    saliency: np.ndarray,
    steps: int = 100,
    baseline: float | np.ndarray | None = None,
    sigma: float = 5.0,
    batch_size: int = 32,
) -> float:
    """Insertion metric (Petsiuk et al., RISE, BMVC 2018); higher is better.

    Starts from the baseline and inserts the image's pixels in saliency order (descending,
    ties in row-major order), ``n_k = round(k HW / steps)`` at step ``k``;
    ``AUC = integral of score over x = n_k / HW in [0, 1]`` (trapezoid), on raw scores.

    Args:

        score_fn (Callable): Maps a batch ``(B, C, H, W)`` to scores ``(B,)``.
        image (np.ndarray): The image ``(C, H, W)``.
        saliency (np.ndarray): The map ``(H, W)``.
        steps (int, optional): Number of increments; the curve has ``steps + 1`` points.
                    Default: 100
        baseline (float, np.ndarray or None, optional): The starting image: a constant, an
                    array broadcastable to ``(C, H, W)``, or None for the image blurred per
                    channel with a Gaussian of standard deviation ``sigma`` (as RISE does).
                    Default: None
        sigma (float, optional): The blur's standard deviation in pixels (baseline None).
                    Default: 5.0
        batch_size (int, optional): Most images per ``score_fn`` call.
                    Default: 32

    Returns:
        *float*: the area under the insertion curve.
    """
    image = np.asarray(image)
    start = (
        ndimage.gaussian_filter(image, sigma=(0, sigma, sigma))
        if baseline is None
        else _filled(baseline, image)
    )
    return _auc(score_fn, start, image, saliency, steps, batch_size)


def _auc(
    score_fn: ScoreFn,
    start: np.ndarray,
    end: np.ndarray,
    saliency: np.ndarray,
    steps: int,
    batch_size: int,
) -> float:
    """Trapezoidal area under ``score_fn`` as pixels move from ``start`` to ``end``."""
    if saliency.shape != end.shape[1:]:
        raise ValueError(f"saliency: expected shape {end.shape[1:]}, got {saliency.shape}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    rank = np.empty(saliency.size, dtype=np.int64)
    rank[np.argsort(-saliency.ravel(), kind="stable")] = np.arange(saliency.size)
    rank = rank.reshape(saliency.shape)
    counts = np.rint(np.linspace(0, saliency.size, steps + 1)).astype(np.int64)
    scores = []
    for first in range(0, counts.size, batch_size):
        moved = rank < counts[first : first + batch_size, None, None, None]  # (B, 1, H, W)
        batch = np.where(moved, end, start)
        scores.append(np.asarray(score_fn(batch), dtype=np.float64).reshape(len(batch)))
    return float(np.trapezoid(np.concatenate(scores), counts / saliency.size))


def box_iou_curve(saliency: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Best IoU of any component box of ``minmax(map) >= tau`` with any box, per ``tau``."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    per_threshold = boxes_by_threshold(saliency, _CAM_THRESHOLDS, "area")  # every box counts
    return np.array([_best_iou(_corners(p), boxes).max(initial=0.0) for p in per_threshold])


def _corners(boxes: np.ndarray) -> np.ndarray:
    """``x0, y0, x1, y1`` (exclusive ends) of :func:`boxes_from_map`'s ``x, y, w, h, score``."""
    return np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]])


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(m, n)`` of boxes ``(m, 4)`` and ``(n, 4)``; 0 where the union is empty."""
    a, b = a[:, None, :], b[None, :, :]
    overlap = np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])
    inter = np.prod(np.clip(overlap, 0, None), axis=-1)
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def _best_iou(predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each predicted box's best IoU with any of ``boxes`` (0 if there are none)."""
    return _pairwise_iou(predicted.reshape(-1, 4), boxes).max(axis=1, initial=0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    """``(x1 - x0) (y1 - y0)``; an inverted box has area 0."""
    return np.prod(np.clip(boxes[..., 2:] - boxes[..., :2], 0, None), axis=-1)


def _box_union(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ``shape`` mask of the pixels inside any of the boxes."""
    inside = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return inside


def _filled(baseline: float | np.ndarray, image: np.ndarray) -> np.ndarray:
    """The baseline as an array of the image's shape and dtype."""
    return np.broadcast_to(np.asarray(baseline, dtype=image.dtype), image.shape)
