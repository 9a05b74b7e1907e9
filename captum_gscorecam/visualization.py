"""Figures and photo geometry: attribution maps placed on the photo they explain, overlays,
and grids drawn with ``captum.attr.visualization``.

This is where tensors leave the device and become numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution
from captum.attr import visualization as viz
from matplotlib.figure import Figure
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torch import Tensor

__all__ = ["captum_map", "no_crop", "overlay", "show_maps", "to_image", "to_photo", "upsample"]

# Cells with no value (cut away by the centre crop) in an overlay: the photo at this brightness,
# crossed by light diagonal lines HATCH_PERIOD pixels apart.
NO_VALUE_DIM = 0.35
NO_VALUE_HATCH = 0.85
HATCH_PERIOD = 10


def to_image(
    image: Tensor,
    mean: Sequence[float] = OPENAI_DATASET_MEAN,
    std: Sequence[float] = OPENAI_DATASET_STD,
) -> np.ndarray:
    """A normalised image ``(3, H, W)`` back to displayable ``(H, W, 3)`` values in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return (image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy()


def upsample(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Layer maps ``(N, T, h, w)`` to ``(N, T, H, W)`` numpy arrays (bilinear, Captum's way)."""
    up = LayerAttribution.interpolate(maps.detach().float(), size, "bilinear")
    return up.cpu().numpy()


def show_maps(
    images: Sequence[np.ndarray],
    maps: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    panel_size: float = 2.2,
) -> Figure:
    """One row per (image, prompt): the image, then one blended heat map per method.

    ``images[r]`` is ``(H, W, 3)`` in [0, 1]; ``maps[r][m]`` is ``(H, W)``.
    """
    rows, cols = len(images), 1 + len(col_labels)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_size * cols, panel_size * rows), squeeze=False
    )
    for r, (image, row_maps) in enumerate(zip(images, maps, strict=True)):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for m, saliency in enumerate(row_maps, start=1):
            axes[r, m].axis("off")
            if not saliency.max() > 0:  # captum cannot scale a map with no positive part
                axes[r, m].imshow(image)
                axes[r, m].text(2, 12, "no positive evidence", color="white", fontsize=7)
                continue
            viz.visualize_image_attr(
                saliency[..., None],
                image,
                method="blended_heat_map",
                sign="positive",
                plt_fig_axis=(fig, axes[r, m]),
                use_pyplot=False,
                cmap="jet",
                alpha_overlay=0.5,
            )
    for c, label in enumerate(["image", *col_labels]):
        axes[0, c].set_title(label, fontsize=10)
    fig.tight_layout()
    return fig


def captum_map(attr: Tensor | np.ndarray) -> np.ndarray:
    """One map ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` as the ``(H, W, 1)`` numpy array
    ``captum.attr.visualization.visualize_image_attr`` reads (channels last).

    Given ``(1, H, W)`` directly, Captum reads an image one pixel high and H wide with W
    channels, and silently draws a one-pixel strip; this puts the axes where it expects them.
    """
    array = _numpy(attr, "attr")
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            "attr: expected one map (H, W), (1, H, W) or (1, 1, H, W), got shape "
            f"{tuple(np.shape(attr))} (pick one image and one prompt: attr[n, t])"
        )
    return array[..., None]


def _numpy(value: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().float().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(value).__name__}")


@dataclass(frozen=True)
class _Axis:
    """One image axis through the preprocess: ``model_coord = scale * photo_coord + offset``
    (pixel edges at integers), and the photo's part that survives, ``[low, high)`` in model
    coordinates; ``size`` is the current length in pixels.
    """

    size: int
    scale: float = 1.0
    offset: float = 0.0
    low: float = -math.inf
    high: float = math.inf

    def resized(self, new: int) -> _Axis:
        f = new / self.size
        return _Axis(new, self.scale * f, self.offset * f, self.low * f, self.high * f)

    def cropped(self, new: int) -> _Axis:
        # torchvision's centre crop: start round((n - c) / 2), or zero padding on both sides
        start = round((self.size - new) / 2) if new <= self.size else -((new - self.size) // 2)
        low, high = max(self.low - start, 0), min(self.high - start, new)
        return _Axis(new, self.scale, self.offset - start, low, high)


def _geometry(preprocess: Any) -> list[Any]:
    """The transforms of a torchvision ``Compose`` (v1 or v2), checked to be readable."""
    steps = getattr(preprocess, "transforms", None)
    if not isinstance(steps, (list, tuple)):
        raise TypeError(
            "preprocess: expected a torchvision Compose (open_clip's preprocess, "
            "captum_gscorecam.loading.hf_preprocess or load_clip's), got "
            f"{type(preprocess).__name__}"
        )
    return list(steps)


def _kind(step: Any) -> str:
    """``resize``, ``crop``, ``pixels`` (no geometry), or a ValueError for other geometry."""
    from torchvision import transforms
    from torchvision.transforms import v2

    if isinstance(step, (transforms.Resize, v2.Resize)):
        return "resize"
    if isinstance(step, (transforms.CenterCrop, v2.CenterCrop)):
        return "crop"
    if any(hasattr(step, name) for name in ("size", "padding", "degrees")):
        raise ValueError(
            f"preprocess: cannot undo its {type(step).__name__} step; to_photo reads "
            "torchvision Resize and CenterCrop steps (open_clip's default 'shortest' resize "
            "mode, Hugging Face processors)"
        )
    return "pixels"


def _resize_shape(step: Any, height: int, width: int) -> tuple[int, int]:
    """The output of a torchvision ``Resize``, ``(height, width)`` for an image of that size."""
    size, max_size = step.size, step.max_size
    if isinstance(size, int):
        size = [size]
    if size is not None and len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = sorted((height, width))
    if size is None:
        new_short, new_long = int(max_size * short / long), max_size
    else:
        new_short, new_long = int(size[0]), int(size[0] * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if height > width else (new_short, new_long)


def _axes(photo_size: tuple[int, int], preprocess: Any) -> tuple[_Axis, _Axis]:
    """The vertical and horizontal axis of a photo ``(width, height)`` through ``preprocess``."""
    if (
        not isinstance(photo_size, (tuple, list))
        or len(photo_size) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
            for v in photo_size
        )
    ):
        raise ValueError(
            f"photo_size: expected PIL's (width, height), two ints >= 1, got {photo_size!r}"
        )
    width, height = int(photo_size[0]), int(photo_size[1])
    rows, cols = _Axis(height), _Axis(width)
    for step in _geometry(preprocess):
        kind = _kind(step)
        if kind == "resize":
            new_h, new_w = _resize_shape(step, rows.size, cols.size)
            rows, cols = rows.resized(new_h), cols.resized(new_w)
        elif kind == "crop":
            crop_h, crop_w = step.size
            rows, cols = rows.cropped(int(crop_h)), cols.cropped(int(crop_w))
    return rows, cols


def _sample_points(axis: _Axis, photo_pixels: int) -> tuple[Tensor, Tensor]:
    """For each photo pixel's centre: its position on the model input in grid_sample's [-1, 1]
    (``align_corners=False``: -1 and 1 are the input's outer edges) and whether it survives.
    """
    model_coord = axis.scale * (torch.arange(photo_pixels, dtype=torch.float64) + 0.5) + axis.offset
    inside = (model_coord >= axis.low) & (model_coord < axis.high)
    return (2 * model_coord / axis.size - 1).float(), inside


def to_photo(
    maps: Tensor | np.ndarray, photo_size: tuple[int, int], preprocess: Callable[..., Any]
) -> np.ndarray:
    """Maps of one photo, at any resolution over the model input, placed on the photo itself.

    ``maps`` ``(T, h, w)`` cover the preprocessed image (e.g. ``attr[0]`` of ``GScoreCAM``);
    ``photo_size`` is PIL's ``(width, height)`` of the photo before ``preprocess``, a torchvision
    ``Compose`` whose ``Resize`` and ``CenterCrop`` steps are undone (open_clip's preprocess,
    ``loading.hf_preprocess``, ``load_clip``'s). Each photo pixel takes the bilinear value of the
    maps at its centre, as ``LayerAttribution.interpolate(maps, size, "bilinear")`` would on the
    model input; pixels the centre crop cut away get NaN.

    Returns:
        float32 array ``(T, height, width)``.
    """
    array = _numpy(maps, "maps")
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"maps: expected the maps of one photo, (T, h, w), got shape {array.shape} "
            "(for a batch (N, T, h, w) pass attr[n])"
        )
    rows, cols = _axes(photo_size, preprocess)
    width, height = int(photo_size[0]), int(photo_size[1])
    y, y_inside = _sample_points(rows, height)
    x, x_inside = _sample_points(cols, width)
    grid = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)[None]
    placed = F.grid_sample(
        torch.from_numpy(array)[None], grid, mode="bilinear", padding_mode="border",
        align_corners=False,
    )[0]  # fmt: skip
    inside = y_inside[:, None] & x_inside[None, :]
    return placed.masked_fill(~inside, float("nan")).numpy().astype(np.float32)


def no_crop(preprocess: Callable[..., Any]) -> Callable[..., Tensor]:
    """``preprocess`` resizing the whole photo to the model's input instead of cropping it.

    A shortest-side ``Resize`` followed by a ``CenterCrop`` to S x S becomes one ``Resize`` to
    S x S (same interpolation): nothing is cut away, and a non-square photo is squashed (its
    aspect ratio changes). A preprocess without a centre crop is returned as a copy.
    """
    from torchvision import transforms

    steps = _geometry(preprocess)
    kinds = [_kind(step) for step in steps]
    if "crop" not in kinds:
        return type(preprocess)(list(steps))
    crop = kinds.index("crop")
    resizes = [i for i, kind in enumerate(kinds[:crop]) if kind == "resize"]
    if not resizes:
        raise ValueError("preprocess: its CenterCrop has no Resize before it to replace")
    resize = steps[resizes[-1]]
    square = transforms.Resize(
        tuple(int(v) for v in steps[crop].size),
        interpolation=resize.interpolation,
        antialias=resize.antialias,
    )
    kept = [s for i, s in enumerate(steps) if i not in (resizes[-1], crop)]
    return type(preprocess)([*kept[: resizes[-1]], square, *kept[resizes[-1] :]])


def overlay(
    photo: np.ndarray | Image.Image,
    saliency: Tensor | np.ndarray,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> np.ndarray:
    """A heat map blended over the photo, like pytorch-grad-cam's ``show_cam_on_image``.

    ``photo`` is ``(H, W, 3)`` uint8 or float in [0, 1], or a PIL image; ``saliency`` ``(H, W)``
    at the photo's size (``to_photo(...)[t]``). The finite values are scaled to [0, 1] (min to
    max) and coloured with ``cmap``; each pixel is ``(1 - alpha) * photo + alpha * colour``.
    Pixels with no value (NaN: cut away by the centre crop) show the photo dimmed and hatched
    with light diagonal lines, so the border is visibly "no value", not "cold".

    Returns:
        float array ``(H, W, 3)`` in [0, 1] (``plt.imsave`` / ``imshow`` ready).
    """
    image = _photo_array(photo)
    heat = _numpy(saliency, "saliency")
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
    scaled = np.where(known, (heat - low) / (high - low) if high > low else 0.0, 0.0)
    blended = (1 - alpha) * image + alpha * colormap(scaled)[..., :3]
    rows, cols = np.indices(heat.shape)
    hatch = ((rows + cols) % HATCH_PERIOD) < 2
    no_value = np.where(hatch[..., None], NO_VALUE_HATCH, NO_VALUE_DIM * image)
    return np.where(known[..., None], blended, no_value).astype(np.float32)


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
