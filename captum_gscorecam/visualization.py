"""Figures: attribution maps on the photo they explain (placed by
:mod:`~captum_gscorecam.photo_geometry`, re-exported here), one overlay style (:func:`overlay`)
for every figure, and the figures of the command line and the app.

This is where tensors leave the device and become numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
from captum.attr import LayerAttribution
from matplotlib.figure import Figure
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torch import Tensor

from captum_gscorecam.photo_geometry import PhotoMaps, as_numpy, no_crop, to_photo

__all__ = [
    "SCALES",
    "PhotoMaps",
    "captum_map",
    "map_ranges",
    "no_crop",
    "overlay",
    "photo_figure",
    "show_maps",
    "to_image",
    "to_photo",
    "upsample",
]

# Cells with no value (cut away by the centre crop) in an overlay: the photo at this brightness,
# crossed by light diagonal lines HATCH_PERIOD pixels apart.
NO_VALUE_DIM = 0.35
NO_VALUE_HATCH = 0.85
HATCH_PERIOD = 10
# The title block of a figure: lines of this font size and height, wrapped at this many
# characters per inch; the colour bar's height.
HEADER_FONT_SIZE = 7
HEADER_LINE_INCHES = 0.16
HEADER_CHARS_PER_INCH = 17
COLORBAR_INCHES = 0.7
# How the maps of one figure are coloured: on one range, or each on its own (map_ranges).
SCALES = ("shared", "per-prompt")


def to_image(
    image: Tensor,
    mean: Sequence[float] = OPENAI_DATASET_MEAN,
    std: Sequence[float] = OPENAI_DATASET_STD,
) -> np.ndarray:
    r"""A normalised image back to displayable values: ``image * std + mean``, clamped.

    Args:

        image (Tensor): A normalised image ``(3, H, W)``.
        mean (sequence of float, optional): The normalisation's per-channel mean.
                    Default: CLIP's (``OPENAI_DATASET_MEAN``)
        std (sequence of float, optional): The normalisation's per-channel standard deviation.
                    Default: CLIP's (``OPENAI_DATASET_STD``)

    Returns:
        *np.ndarray* ``(H, W, 3)`` in [0, 1].
    """
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return (image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy()


def upsample(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    r"""Layer maps upsampled bilinearly, as ``LayerAttribution.interpolate`` does, to numpy.

    Args:

        maps (Tensor): Maps ``(N, T, h, w)``.
        size (tuple[int, int]): ``(H, W)``.

    Returns:
        *np.ndarray* ``(N, T, H, W)`` float32.
    """
    up = LayerAttribution.interpolate(maps.detach().float(), size, "bilinear")
    return up.cpu().numpy()


def show_maps(
    images: Sequence[np.ndarray],
    maps: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    panel_size: float = 2.2,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str = "map value",
    title: str | None = None,
    warnings: Sequence[str] = (),
) -> Figure:
    """One row per (image, prompt): the image, then the :func:`overlay` of each method's map.

    The overlays are those of :func:`photo_figure` and the web app (``jet``, half opacity); a
    map with no positive value is marked "no positive evidence". With ``vmin`` and ``vmax``
    every map is coloured on that range and a colour bar gives its values; without them each
    map spans its own minimum to maximum, as the colour bar says.

    Args:

        images (sequence of np.ndarray): One image ``(H, W, 3)`` in [0, 1] per row.
        maps (sequence of sequence of np.ndarray): Per row, one map ``(H, W)`` per column.
        row_labels (sequence of str): One label per row (the prompt), beside the image.
        col_labels (sequence of str): One title per map column (the method).
        panel_size (float, optional): The side of one panel, in inches.
                    Default: 2.2
        vmin (float, optional): The value at the bottom of the colour scale, for every map.
                    Default: None (each map's minimum)
        vmax (float, optional): The value at the top of the colour scale, for every map.
                    Default: None (each map's maximum)
        colorbar_label (str, optional): What the colour bar's values are, with ``vmin`` and
                    ``vmax``.
                    Default: ``"map value"``
        title (str, optional): What made the figure (``provenance.Provenance.line()``), on top.
                    Default: None
        warnings (sequence of str, optional): Lines in red under the title.
                    Default: ``()``

    Returns:
        *Figure*: the title block, rows x (1 + columns) panels and a colour bar.
    """
    rows, cols = len(images), 1 + len(col_labels)
    width = panel_size * cols
    header = _header(title, warnings, width)
    body = panel_size * rows + COLORBAR_INCHES
    fig = Figure(figsize=(width, body + HEADER_LINE_INCHES * len(header)), layout="constrained")
    panels = _with_header(fig, header, body)
    axes = panels.subplots(rows, cols, squeeze=False)
    for r, (image, row_maps) in enumerate(zip(images, maps, strict=True)):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for m, saliency in enumerate(row_maps, start=1):
            axes[r, m].axis("off")
            axes[r, m].imshow(overlay(image, saliency, vmin=vmin, vmax=vmax))
            if not np.nanmax(saliency) > 0:
                axes[r, m].text(2, 12, "no positive evidence", color="white", fontsize=7)
    for c, label in enumerate(["image", *col_labels]):
        axes[0, c].set_title(label, fontsize=10)
    own = vmin is None and vmax is None
    bar = _bottom_colorbar(
        panels, _mappable((0.0, 1.0) if own else (vmin, vmax)), list(axes[:, 1:].flat), 0.6
    )
    if own:
        bar.set_ticks([0, 1], labels=["each map's minimum", "its maximum"])
    else:
        bar.ax.set_title(colorbar_label, fontsize=8)  # above: never cut
    bar.ax.tick_params(labelsize=7)
    return fig


def photo_figure(
    photo: np.ndarray | Image.Image,
    maps: Sequence[np.ndarray],
    prompts: Sequence[str],
    scores: Sequence[float],
    method: str,
    panel_width: float = 5.0,
    *,
    scale: str = "shared",
    title: str | None = None,
    warnings: Sequence[str] = (),
) -> Figure:
    """One row per prompt: the :func:`overlay` of its map over the whole photo, titled with the
    method, the prompt and its CLIP score (what ``gscorecam explain`` writes per photo), under a
    title block and with a colour bar.

    Args:

        photo (np.ndarray or PIL.Image.Image): The photo, ``(H, W, 3)`` uint8 or float in
                    [0, 1], or a PIL image.
        maps (sequence of np.ndarray): One map ``(H, W)`` per prompt at the photo's size
                    (:class:`PhotoMaps` or :func:`to_photo`; NaN where the crop cut).
        prompts (sequence of str): The text scored, one per map (the prompt in its template).
        scores (sequence of float): ``logit_scale * cos(image, prompt)``, one per prompt.
        method (str): The method's label, e.g. "gScoreCAM".
        panel_width (float, optional): The width of a row, in inches.
                    Default: 5.0
        scale (str, optional): ``"shared"``: the maps coloured on one range (one colour bar),
                    so a prompt the model rejects looks cold; ``"per-prompt"``: each map on its
                    own range (a colour bar each). See :func:`map_ranges`.
                    Default: ``"shared"``
        title (str, optional): What made the figure (``provenance.Provenance.line()``), on top.
                    Default: None
        warnings (sequence of str, optional): Lines in red under the title (random weights, a
                    model that cannot know the photo).
                    Default: ``()``

    Returns:
        *Figure*: the title block, one panel per prompt, stacked, and the colour bar(s).

    Raises:
        ValueError: ``prompts`` or ``scores`` not one per map, a map not at the photo's
            size, or an unknown ``scale``.
    """
    for name, given in (("prompts", prompts), ("scores", scores)):
        if len(given) != len(maps):
            raise ValueError(f"{name}: expected one per map ({len(maps)}), got {len(given)}")
    ranges = map_ranges(maps, scale)
    pixels = _photo_array(photo)
    height, width = pixels.shape[:2]
    header = _header(title, warnings, panel_width)
    # a row: the title, then the photo as wide as the panel leaves it (beside its own colour
    # bar on the per-prompt scale)
    shown = panel_width - (0.2 if scale == "shared" else 0.9)
    body = (shown * height / width + 0.3) * len(prompts) + COLORBAR_INCHES
    fig = Figure(
        figsize=(panel_width, body + HEADER_LINE_INCHES * len(header)), layout="constrained"
    )
    panels = _with_header(fig, header, body)
    axes = panels.subplots(len(prompts), 1, squeeze=False)[:, 0]
    for ax, saliency, prompt, score, (low, high) in zip(
        axes, maps, prompts, scores, ranges, strict=True
    ):
        # as uint8: the figure keeps every panel's image until it is saved
        ax.imshow(np.rint(overlay(pixels, saliency, vmin=low, vmax=high) * 255).astype(np.uint8))
        ax.set_title(f"{method}: {prompt!r}  (score {score:.2f})", fontsize=9)
        ax.axis("off")
        if scale == "per-prompt":
            bar = panels.colorbar(_mappable((low, high)), ax=ax, fraction=0.04, pad=0.02)
            bar.ax.tick_params(labelsize=7)
    if scale == "shared":
        bar = _bottom_colorbar(panels, _mappable(ranges[0]), list(axes), 0.8)
        bar.ax.set_title("map value, one scale for every prompt", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def _header(title: str | None, warnings: Sequence[str], width: float) -> list[tuple[str, str]]:
    """The title block's lines and their colours: the title wrapped to ``width`` inches
    (between its `` | `` parts where it can), then each warning (wrapped) in red.
    """
    import textwrap

    chars = max(20, int(width * HEADER_CHARS_PER_INCH))
    lines: list[str] = []
    for part in title.split(" | ") if title else []:
        if lines and len(lines[-1]) + 3 + len(part) <= chars:
            lines[-1] += " | " + part
        else:
            lines += textwrap.wrap(part, chars)
    coloured = [(line, "black") for line in lines]
    for warning in warnings:
        coloured += [(line, "red") for line in textwrap.wrap(warning, chars)]
    return coloured


def _with_header(fig: Figure, header: Sequence[tuple[str, str]], body: float) -> Any:
    """The part of ``fig`` for the panels, under a title block of ``header``'s lines."""
    if not header:
        return fig
    top, panels = fig.subfigures(2, 1, height_ratios=[HEADER_LINE_INCHES * len(header), body])
    for i, (line, colour) in enumerate(header):
        y = 1 - (i + 0.5) / len(header)
        top.text(0.02, y, line, color=colour, fontsize=HEADER_FONT_SIZE, va="center")
    return panels


def _bottom_colorbar(panels: Any, mappable: Any, axes: list[Any], shrink: float) -> Any:
    """A horizontal colour bar under ``axes``, ``shrink`` of their width, its thickness and
    room in inches: matplotlib's default share of the height (15%) left a tall figure (the
    demo's nine rows) a gap of inches and cut the bar's tick labels off at the bottom edge.
    """
    height = panels.bbox.height / panels.dpi
    return panels.colorbar(
        mappable,
        ax=axes,
        location="bottom",
        shrink=shrink,
        aspect=40,
        fraction=COLORBAR_INCHES / 2 / height,
    )


def _mappable(value_range: tuple[float, float], cmap: str = "jet") -> Any:
    """A colour scale over ``value_range`` for a colour bar (a flat range gets a unit width)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    low, high = value_range
    return ScalarMappable(Normalize(low, high if high > low else low + 1), cmap)


def captum_map(attr: Tensor | np.ndarray) -> np.ndarray:
    r"""One map as the ``(H, W, 1)`` array ``captum.attr.visualization.visualize_image_attr``
    reads (channels last).

    Given ``(1, H, W)`` directly, Captum reads an image one pixel high and H wide with W
    channels, and silently draws a one-pixel strip; this puts the axes where it expects them.

    Args:

        attr (Tensor or np.ndarray): One map ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)``.

    Returns:
        *np.ndarray* ``(H, W, 1)`` float32.

    Raises:
        ValueError: ``attr`` holds more than one map.
    """
    array = as_numpy(attr, "attr")
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            "attr: expected one map (H, W), (1, H, W) or (1, 1, H, W), got shape "
            f"{tuple(np.shape(attr))} (pick one image and one prompt: attr[n, t])"
        )
    return array[..., None]


# Rows of an overlay drawn at once: about this many pixels (about 10 MB of temporaries).
_OVERLAY_BAND_PIXELS = 1 << 16


def overlay(
    photo: np.ndarray | Image.Image,
    saliency: Tensor | np.ndarray,
    alpha: float = 0.5,
    cmap: str = "jet",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    r"""A heat map blended over the photo, like pytorch-grad-cam's ``show_cam_on_image``: the
    one overlay style of every figure of the package.

    The finite values are scaled to [0, 1] from ``vmin`` to ``vmax`` (values outside are
    clipped) and coloured with ``cmap``; each pixel is ``(1 - alpha) * photo + alpha * colour``.
    Give several maps the same ``vmin`` and ``vmax`` (:func:`map_ranges`) to compare them.
    Pixels with no value (NaN: cut away by the centre crop) show the photo dimmed and hatched
    with light diagonal lines, so the border is visibly "no value", not "cold".

    Args:

        photo (np.ndarray or PIL.Image.Image): ``(H, W, 3)`` uint8 or float in [0, 1], or a
                    PIL image.
        saliency (Tensor or np.ndarray): The map ``(H, W)`` at the photo's size
                    (``to_photo(...)[t]``).
        alpha (float, optional): The heat map's opacity, in [0, 1].
                    Default: 0.5
        cmap (str, optional): A matplotlib colormap name.
                    Default: "jet"
        vmin (float, optional): The value at the bottom of the colour scale.
                    Default: None (the map's minimum)
        vmax (float, optional): The value at the top of the colour scale.
                    Default: None (the map's maximum)

    Returns:
        *np.ndarray* ``(H, W, 3)`` float in [0, 1] (``plt.imsave`` / ``imshow`` ready).

    Raises:
        ValueError: A map not at the photo's size, a bad ``alpha`` or ``cmap``, ``vmin`` above
            ``vmax`` or not finite, or a photo that is not ``(H, W, 3)`` in range.
        TypeError: A photo whose values are neither uint8 nor float; ``vmin`` or ``vmax`` not
            a number.
    """
    image = _photo_array(photo)
    heat = as_numpy(saliency, "saliency")
    if heat.shape != image.shape[:2]:
        raise ValueError(
            f"saliency: expected a map (H, W) at the photo's size {image.shape[:2]}, got "
            f"{heat.shape} (place layer maps on the photo with to_photo first)"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except (KeyError, TypeError):
        raise ValueError(f"cmap: expected a matplotlib colormap name, got {cmap!r}") from None
    known = np.isfinite(heat)
    low, high = (heat[known].min(), heat[known].max()) if known.any() else (0.0, 0.0)
    low, high = _checked_range(low if vmin is None else vmin, high if vmax is None else vmax)
    blended = np.empty(image.shape, np.float32)
    band = max(1, _OVERLAY_BAND_PIXELS // max(1, heat.shape[1]))  # rows at once: small memory
    for start in range(0, len(heat), band):
        rows = slice(start, start + band)
        spread = (heat[rows] - low) / (high - low) if high > low else 0.0
        scaled = np.where(known[rows], np.clip(spread, 0, 1), 0)
        colour = (1 - alpha) * image[rows] + alpha * colormap(scaled)[..., :3]
        diagonal = np.arange(start, start + len(scaled))[:, None] + np.arange(heat.shape[1])
        hatch = (diagonal % HATCH_PERIOD) < 2
        no_value = np.where(hatch[..., None], NO_VALUE_HATCH, NO_VALUE_DIM * image[rows])
        blended[rows] = np.where(known[rows][..., None], colour, no_value)
    return blended


def _checked_range(vmin: object, vmax: object) -> tuple[float, float]:
    """``(vmin, vmax)`` as floats: finite, ``vmin <= vmax``."""
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if vmin > vmax:
        raise ValueError(f"vmin: expected vmin <= vmax, got {vmin!r} > {vmax!r}")
    return float(vmin), float(vmax)


def map_ranges(maps: Sequence[np.ndarray], scale: str = "shared") -> list[tuple[float, float]]:
    """The colour range ``(vmin, vmax)`` of each map in a figure.

    Args:

        maps (sequence of np.ndarray): The maps of one photo, one per prompt (NaN: no value).
        scale (str, optional): ``"shared"``: one range, the smallest and largest value of all
                    the maps, so that colours compare across prompts (a prompt the model
                    rejects looks cold); ``"per-prompt"``: each map from its own minimum to its
                    maximum (its shape shows, not its strength).
                    Default: ``"shared"``

    Returns:
        One ``(vmin, vmax)`` per map; ``(0.0, 0.0)`` for a map with no finite value.
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {list(SCALES)}, got {scale!r}")
    own = []
    for saliency in maps:
        values = np.asarray(saliency, dtype=np.float32)
        values = values[np.isfinite(values)]
        own.append((float(values.min()), float(values.max())) if values.size else None)
    known = [r for r in own if r is not None]
    if scale == "shared":
        shared = (min(r[0] for r in known), max(r[1] for r in known)) if known else (0.0, 0.0)
        return [shared] * len(own)
    return [r or (0.0, 0.0) for r in own]


def _photo_array(photo: np.ndarray | Image.Image) -> np.ndarray:
    """A photo as float ``(H, W, 3)`` in [0, 1]."""
    if isinstance(photo, Image.Image):
        photo = np.asarray(photo.convert("RGB"))
    if not isinstance(photo, np.ndarray) or photo.ndim != 3 or photo.shape[2] != 3:
        shape = photo.shape if isinstance(photo, np.ndarray) else type(photo).__name__
        raise ValueError(f"photo: expected an (H, W, 3) array or a PIL image, got {shape}")
    if photo.dtype == np.uint8:
        return photo.astype(np.float32) / 255
    if not np.issubdtype(photo.dtype, np.floating):
        raise TypeError(f"photo: expected uint8 or float values, got {photo.dtype}")
    if not (np.isfinite(photo).all() and photo.min() >= 0 and photo.max() <= 1):
        raise ValueError("photo: float values must lie in [0, 1]")
    return photo.astype(np.float32)
