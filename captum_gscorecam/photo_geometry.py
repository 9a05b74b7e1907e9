"""Photo geometry: attribution maps over the model input placed back on the photo they
explain, by undoing the preprocess's ``Resize`` and ``CenterCrop`` (NaN where the crop cut).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["PhotoMaps", "as_numpy", "no_crop", "to_photo"]

# Rows of a placed map computed at once: about this many float64 values (8 MB).
_BAND_VALUES = 1 << 20


def as_numpy(value: Tensor | np.ndarray, name: str) -> np.ndarray:
    """``value`` as a float32 numpy array on the CPU; a TypeError naming ``name`` otherwise."""
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


def _check_size(size: object, name: str) -> tuple[int, int]:
    """PIL's ``(width, height)``: two ints >= 1."""
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size
        )
    ):
        raise ValueError(f"{name}: expected PIL's (width, height), two ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _axes(photo_size: tuple[int, int], preprocess: Any) -> tuple[_Axis, _Axis]:
    """The vertical and horizontal axis of a photo ``(width, height)`` through ``preprocess``."""
    width, height = _check_size(photo_size, "photo_size")
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


def _sampling(axis: _Axis, photo_pixels: int, count: int, cells: int) -> tuple[np.ndarray, ...]:
    """Along one axis: the bilinear weights ``(count, cells)`` that sample a map of ``cells``
    over the model input at ``count`` pixel centres evenly spread over the photo's
    ``photo_pixels``, and which of those pixels survive the crop.

    The weights are ``grid_sample``'s (``align_corners=False``, ``padding_mode="border"``): a
    point at model coordinate ``m`` reads the map at ``m * cells / size - 1/2``, clamped to
    ``[0, cells - 1]``, from its two nearest cells.
    """
    photo = (np.arange(count, dtype=np.float64) + 0.5) * (photo_pixels / count)
    model = axis.scale * photo + axis.offset
    inside = (model >= axis.low) & (model < axis.high)
    position = np.clip(model * cells / axis.size - 0.5, 0.0, cells - 1.0)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((count, cells))
    np.add.at(weights, (np.arange(count), low), 1.0 - (position - low))
    np.add.at(weights, (np.arange(count), high), position - low)
    return weights, inside


class PhotoMaps(Sequence[np.ndarray]):
    """Maps of one photo over the model input, placed on the photo one prompt at a time.

    ``maps[t]`` is the float32 ``(height, width)`` map of prompt ``t`` on the photo (NaN where
    the preprocess cropped it away), computed when asked, so only the maps in use are held:
    ``4 * height * width`` bytes each. ``np.asarray(maps)`` places all ``T`` at once (what
    :func:`to_photo` returns). ``maps[t, rows, cols]`` and ``maps[a:b]`` index as an array of
    :attr:`shape` would. :meth:`at_size` samples the same maps on a copy of the photo drawn at
    another size (a large photo shown downscaled).

    Args:

        maps (Tensor or np.ndarray): The maps ``(T, h, w)`` over the preprocessed image, at
                    any resolution (e.g. ``attr[0]`` of ``GScoreCAM``).
        photo_size (tuple[int, int]): PIL's ``(width, height)`` of the photo before
                    ``preprocess``.
        preprocess (Callable): A torchvision ``Compose`` whose ``Resize`` and ``CenterCrop``
                    steps are undone (open_clip's preprocess, ``loading.hf_preprocess``,
                    ``load_clip``'s).
        size (tuple[int, int], optional): PIL's ``(width, height)`` to sample the photo at.
                    Default: None (``photo_size``)
    """

    def __init__(
        self,
        maps: Tensor | np.ndarray,
        photo_size: tuple[int, int],
        preprocess: Callable[..., Any],
        size: tuple[int, int] | None = None,
    ) -> None:
        layer = as_numpy(maps, "maps")
        if layer.ndim != 3 or 0 in layer.shape:
            raise ValueError(
                f"maps: expected the maps of one photo, (T, h, w), got shape {layer.shape} "
                "(for a batch (N, T, h, w) pass attr[n])"
            )
        rows, cols = _axes(photo_size, preprocess)
        self._layer = layer
        self._photo_size = _check_size(photo_size, "photo_size")
        self._preprocess = preprocess
        width, height = self._photo_size if size is None else _check_size(size, "size")
        self._rows = _sampling(rows, self._photo_size[1], height, layer.shape[1])
        self._cols = _sampling(cols, self._photo_size[0], width, layer.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, height, width)``."""
        return (len(self._layer), len(self._rows[0]), len(self._cols[0]))

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self._layer)

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            if not -len(self) <= first < len(self):
                raise IndexError(f"prompt {first} out of range for {len(self)} maps")
            return self._placed(int(first) % len(self))[rest]
        if isinstance(first, slice):
            chosen = range(*first.indices(len(self)))
            if not chosen:
                return np.empty((0, *self.shape[1:]), np.float32)[(slice(None), *rest)]
            return np.stack([self._placed(t)[rest] for t in chosen])
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("PhotoMaps are computed when asked; np.asarray must copy")
        placed = np.empty(self.shape, np.float32)
        for t in range(len(self)):
            self._placed(t, out=placed[t])
        return placed if dtype is None else placed.astype(dtype, copy=False)

    def at_size(self, size: tuple[int, int]) -> PhotoMaps:
        """The same maps sampled at PIL's ``(width, height)`` over the whole photo."""
        return PhotoMaps(self._layer, self._photo_size, self._preprocess, size)

    def _placed(self, t: int, out: np.ndarray | None = None) -> np.ndarray:
        """Map ``t`` on the photo (into ``out``): ``rows @ map @ cols.T`` in float64, in bands
        of rows.
        """
        (rows, rows_inside), (cols, cols_inside) = self._rows, self._cols
        across = self._layer[t].astype(np.float64) @ cols.T  # (h, width)
        placed = np.empty(self.shape[1:], np.float32) if out is None else out
        band = max(1, _BAND_VALUES // max(1, placed.shape[1]))
        for start in range(0, len(placed), band):
            placed[start : start + band] = rows[start : start + band] @ across
        placed[~rows_inside] = np.nan
        placed[:, ~cols_inside] = np.nan
        return placed


def to_photo(
    maps: Tensor | np.ndarray, photo_size: tuple[int, int], preprocess: Callable[..., Any]
) -> np.ndarray:
    r"""Maps of one photo, at any resolution over the model input, placed on the photo itself.

    Each photo pixel takes the bilinear value of the maps at its centre, as
    ``LayerAttribution.interpolate(maps, size, "bilinear")`` would on the model input; pixels
    the centre crop cut away get NaN. :class:`PhotoMaps` gives the same maps one at a time, for
    photos too large to hold ``T`` of them.

    Args:

        maps (Tensor or np.ndarray): The maps ``(T, h, w)`` over the preprocessed image (e.g.
                    ``attr[0]`` of ``GScoreCAM``).
        photo_size (tuple[int, int]): PIL's ``(width, height)`` of the photo before
                    ``preprocess``.
        preprocess (Callable): A torchvision ``Compose`` whose ``Resize`` and ``CenterCrop``
                    steps are undone (open_clip's preprocess, ``loading.hf_preprocess``,
                    ``load_clip``'s).

    Returns:
        *np.ndarray* ``(T, height, width)`` float32.
    """
    return np.asarray(PhotoMaps(maps, photo_size, preprocess))


def no_crop(preprocess: Callable[..., Any]) -> Callable[..., Tensor]:
    r"""``preprocess`` resizing the whole photo to the model's input instead of cropping it.

    A shortest-side ``Resize`` followed by a ``CenterCrop`` to S x S becomes one ``Resize`` to
    S x S (same interpolation): nothing is cut away, and a non-square photo is squashed (its
    aspect ratio changes). A preprocess without a centre crop is returned as a copy.

    Args:

        preprocess (Callable): A torchvision ``Compose``.

    Returns:
        *Callable*: a new ``Compose``.

    Raises:
        ValueError: Its ``CenterCrop`` has no ``Resize`` before it, or a step whose geometry
            cannot be read.
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
