"""Boxes and points from a saliency map: what a detector or a SAM prompt takes from it.

One definition serves the box metrics of :mod:`~captum_gscorecam.evaluation.metrics` and
anyone exporting boxes or point prompts. The map is an ``(H, W)`` array; NaN marks pixels
without a value (outside the centre crop of a photo, as ``explain`` writes its maps) and
takes part in nothing. Every result depends on the map only through its min-max normalised
values ``(s - min s) / (max s - min s)`` over the finite pixels, so it is unchanged when the
map is scaled by a positive factor or shifted. A constant map (or one with no finite pixel)
carries no information: no foreground, no box, no point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["boxes_by_threshold", "boxes_from_map", "foreground", "points_from_map"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def foreground(saliency: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The pixels a map marks: ``minmax(map) > otsu`` by default, else ``minmax(map) >= threshold``.

    Otsu's threshold (256 bins, over the finite pixels) is the gScoreCAM paper's box protocol
    (Chen et al., ACCV 2022); a given threshold is MaxBoxAccV2's (Choe et al., CVPR 2020).

    Args:

        saliency (np.ndarray): The map ``(H, W)``; NaN pixels are never foreground.
        threshold (float, optional): A threshold in [0, 1] on the min-max normalised map;
                    None for Otsu's.
                    Default: None

    Returns:
        *np.ndarray*: bool ``(H, W)``; all False for a constant map.
    """
    return _foreground(_normalised(saliency), threshold, np.shape(saliency))


def boxes_from_map(
    saliency: np.ndarray,
    threshold: float | None = None,
    rank: Literal["mass", "area"] = "mass",
) -> np.ndarray:
    """One box per 8-connected component of the map's :func:`foreground`, best first.

    The paper's protocol: min-max normalise, threshold (Otsu's, or ``threshold``), label the
    8-connected components, take each component's tight box. Boxes are ranked by their score,
    highest first (ties: the component whose first pixel comes first in row-major order):

    - ``"mass"``: the share of the normalised map's mass inside the component,
      ``sum_{p in C} m(p) / sum_p m(p)`` with ``m = minmax(map)``;
    - ``"area"``: the share of the map's (finite) pixels in the component, which makes the
      first box the largest region's, as the paper's box accuracy takes it.

    Args:

        saliency (np.ndarray): The map ``(H, W)``; NaN pixels belong to no component.
        threshold (float, optional): A threshold in [0, 1] on the min-max normalised map
                    (pixels ``>=`` it); None for Otsu's (pixels above it).
                    Default: None
        rank (str, optional): ``"mass"`` or ``"area"``, the score boxes are ranked by.
                    Default: "mass"

    Returns:
        *np.ndarray*: float64 ``(n, 5)``: ``x, y, w, h, score`` per box, COCO's box layout
        (``x`` the first column, ``y`` the first row, whole pixels, the box covering columns
        ``x .. x + w - 1``); ``(0, 5)`` for a constant map.
    """
    _check_rank(rank)
    return _boxes(_normalised(saliency), threshold, rank, np.shape(saliency))


def boxes_by_threshold(
    saliency: np.ndarray,
    thresholds: Sequence[float],
    rank: Literal["mass", "area"] = "mass",
) -> list[np.ndarray]:
    """:func:`boxes_from_map` at each of several thresholds, the map normalised once.

    Args:

        saliency (np.ndarray): The map ``(H, W)``; NaN pixels belong to no component.
        thresholds (Sequence[float]): Thresholds in [0, 1] on the min-max normalised map.
        rank (str, optional): ``"mass"`` or ``"area"``, the score boxes are ranked by.
                    Default: "mass"

    Returns:
        *list[np.ndarray]*: one ``(n_i, 5)`` array of ``x, y, w, h, score`` per threshold.
    """
    _check_rank(rank)
    normalised = _normalised(saliency)
    return [_boxes(normalised, float(t), rank, np.shape(saliency)) for t in thresholds]


def points_from_map(saliency: np.ndarray, n: int = 1, min_distance: float = 1.0) -> np.ndarray:
    """The map's peak and its next highest local maxima, at most ``n``: point prompts.

    A local maximum is a finite pixel not below any of its 8 neighbours and above the map's
    minimum. They are taken highest first (ties: row-major order), each only when it lies at
    least ``min_distance`` pixels (Euclidean) from every point taken before, so the first
    point is always the peak ``argmax(map)`` (the pointing game's point), and a plateau gives
    points ``min_distance`` apart.

    Args:

        saliency (np.ndarray): The map ``(H, W)``; NaN pixels are never points.
        n (int, optional): The most points returned.
                    Default: 1
        min_distance (float, optional): The least distance between two points, in pixels;
                    raise it to spread the points over the image.
                    Default: 1.0

    Returns:
        *np.ndarray*: float64 ``(m, 3)`` with ``m <= n``: ``x, y, value`` per point (``x`` the
        column, ``y`` the row, ``value`` the min-max normalised map there, 1 at the peak);
        ``(0, 3)`` for a constant map.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    if not (isinstance(min_distance, (int, float, np.number)) and min_distance >= 0):
        raise ValueError(f"min_distance: expected a number >= 0, got {min_distance!r}")
    normalised = _normalised(saliency)
    if normalised is None:
        return np.zeros((0, 3))
    # Ranked on the map itself, not its normalised copy, whose rounding could merge values.
    filled = np.where(np.isnan(normalised), -np.inf, saliency)
    if n == 1:
        candidates = np.array([np.argmax(filled)])
    else:
        top = ndimage.maximum_filter(filled, footprint=_EIGHT_CONNECTED, mode="nearest")
        peaks = np.flatnonzero((filled == top) & (filled > np.nanmin(saliency)))
        candidates = peaks[np.argsort(-filled.ravel()[peaks], kind="stable")]
    rows, cols = np.unravel_index(candidates, filled.shape)
    taken: list[int] = []
    for i in range(candidates.size):
        if not (np.hypot(rows[taken] - rows[i], cols[taken] - cols[i]) < min_distance).any():
            taken.append(i)
            if len(taken) == n:
                break
    values = normalised.ravel()[candidates[taken]]
    return np.column_stack([cols[taken], rows[taken], values]).astype(float)


def _boxes(
    normalised: np.ndarray | None, threshold: float | None, rank: str, shape: tuple[int, ...]
) -> np.ndarray:
    """:func:`boxes_from_map` of a map already normalised (None: constant)."""
    mask = _foreground(normalised, threshold, shape)
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return np.zeros((0, 5))
    # NaN pixels are background (label 0), whose bin is dropped.
    if rank == "mass":
        weights = normalised.astype(np.float64).ravel()  # bincount is slow on other dtypes
        sums = np.bincount(labels.ravel(), weights=weights, minlength=count + 1)
        scores = sums[1:] / np.nansum(normalised)
    else:
        finite = normalised.size - np.count_nonzero(np.isnan(normalised))
        scores = np.bincount(labels.ravel(), minlength=count + 1)[1:] / finite
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [[x.start, y.start, x.stop - x.start, y.stop - y.start] for y, x in slices], dtype=float
    )
    order = np.argsort(-scores, kind="stable")
    return np.column_stack([boxes, scores])[order]


def _check_rank(rank: object) -> None:
    if rank not in ("mass", "area"):
        raise ValueError(f"rank: expected 'mass' or 'area', got {rank!r}")


def _foreground(
    normalised: np.ndarray | None, threshold: float | None, shape: tuple[int, ...]
) -> np.ndarray:
    """:func:`foreground` of a map already normalised (None: constant)."""
    if threshold is not None:
        threshold = _check_threshold(threshold)
    if normalised is None:
        return np.zeros(shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares False: outside the crop stays out
        if threshold is None:
            return normalised > threshold_otsu(normalised[~np.isnan(normalised)])
        return normalised >= threshold


def _normalised(saliency: np.ndarray) -> np.ndarray | None:
    """``(s - min s) / (max s - min s)`` over the finite pixels (NaN stays NaN); None when
    the map is constant or has no finite pixel.
    """
    saliency = np.asarray(saliency)
    if saliency.ndim != 2:
        raise ValueError(f"saliency: expected an (H, W) map, got shape {saliency.shape}")
    if saliency.dtype.kind not in "iuf":
        raise TypeError(f"saliency: expected a real-valued map, got dtype {saliency.dtype}")
    if np.isinf(saliency).any():
        raise ValueError("saliency: expected finite values, or NaN outside the image; got inf")
    if np.isnan(saliency).all():
        return None
    low, high = np.nanmin(saliency), np.nanmax(saliency)
    if low == high:
        return None
    return (saliency - low) / (high - low)


def _check_threshold(threshold: object) -> float:
    """A threshold in [0, 1]."""
    ok = isinstance(threshold, (int, float, np.number)) and not isinstance(threshold, bool)
    if not ok or not 0 <= threshold <= 1:
        raise ValueError(f"threshold: expected a number in [0, 1] or None, got {threshold!r}")
    return threshold
