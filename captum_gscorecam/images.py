"""Photos from files: image paths from files, folders and globs, and reading them as RGB.

Errors are ``ValueError`` naming ``image`` and the file, so a command can print them as one
line. Only regular files are opened: a FIFO, a socket or a device is refused from its status,
never opened (a FIFO without a writer would block the reader forever). Nothing here needs
torch.
"""

from __future__ import annotations

import glob
import math
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captum_gscorecam.outputs import file_kind

__all__ = [
    "DISPLAY_MAX_PIXELS",
    "PHOTO_SUFFIXES",
    "check_image",
    "display_size",
    "expand_images",
    "for_display",
    "read_image",
]

# What a folder or a glob contributes; a file named on its own is read whatever its suffix.
PHOTO_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi"}
)
_GLOB_CHARACTERS = frozenset("*?[")
# Photos with more pixels are drawn downscaled to this many (figures, the app's overlays), so
# drawing stays within a few hundred MB; maps and scores are computed on the whole photo. A
# 12-megapixel phone photo is drawn as it is.
DISPLAY_MAX_PIXELS = 16_000_000
# Integer modes PIL gives 16-bit grayscale files (PNG, TIFF, PGM).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def expand_images(specs: Sequence[str]) -> list[Path]:
    """Image files from file names, folders (their photos, not recursive) and globs.

    A folder or a glob contributes the files whose suffix is in ``PHOTO_SUFFIXES``, sorted by
    name; a file listed twice is kept once, in its first place. Raises a ValueError naming a
    spec that matches nothing.
    """
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = _photos(path.iterdir())
            if not found:
                raise ValueError(f"image: no photos in folder {spec} (looked for {_suffixes()})")
        elif path.exists():
            raise ValueError(f"image: {spec} is {file_kind(path.stat().st_mode)}, not a photo file")
        elif _GLOB_CHARACTERS & set(spec):
            found = _photos(Path(match) for match in glob.glob(spec, recursive=True))
            if not found:
                raise ValueError(f"image: no photos match {spec!r}")
        else:
            raise ValueError(f"image: no such file or folder: {spec}")
        paths.extend(found)
    seen: set[Path] = set()
    unique = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def _photos(paths: Iterator[Path] | Sequence[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def _suffixes() -> str:
    return " ".join(sorted(PHOTO_SUFFIXES))


def check_image(path: str | Path) -> None:
    """Raise a ValueError unless ``path`` is a regular file holding a whole image of a safe size.

    The image is decoded in full (and dropped), so a file damaged past a valid header is
    refused here, before any model is loaded, not when the photo's turn comes.
    """
    with _opened(path) as image:
        _decode(image, path)


def read_image(path: str | Path) -> Image.Image:
    """The photo in ``path`` as an 8-bit RGB PIL image, turned as its EXIF orientation says.

    16-bit (and 32-bit integer) grayscale is scaled from ``[0, 65535]`` to ``[0, 255]`` (PIL's
    own conversion clips it, so such files would read as white); floating point grayscale from
    ``[0, 1]``. Raises a ValueError naming the file if it is not an image, is damaged, or is
    large enough to be a decompression bomb (over PIL's ``Image.MAX_IMAGE_PIXELS``).
    """
    with _opened(path) as image:
        _decode(image, path)
        image = ImageOps.exif_transpose(image)
        if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
            image = _to_8_bit(image)
        return image.convert("RGB")


def display_size(size: tuple[int, int], max_pixels: int | None = None) -> tuple[int, int]:
    """PIL's ``(width, height)`` to draw a photo of ``size`` at: ``size`` itself up to
    ``max_pixels`` pixels (None: ``DISPLAY_MAX_PIXELS``), else scaled down by one factor (the
    aspect ratio kept to a pixel) to at most ``max_pixels``, each side at least 1.
    """
    limit = DISPLAY_MAX_PIXELS if max_pixels is None else max_pixels
    width, height = size
    if width * height <= limit:
        return width, height
    scale = math.sqrt(limit / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def for_display(
    photo: Image.Image, name: str = "photo", max_pixels: int | None = None
) -> Image.Image:
    """``photo`` to draw: itself, or above ``max_pixels`` (None: ``DISPLAY_MAX_PIXELS``) a copy
    scaled to :func:`display_size` (area-averaged), with a ``UserWarning`` naming it (``name``:
    the file) and both sizes.
    """
    limit = DISPLAY_MAX_PIXELS if max_pixels is None else max_pixels
    size = display_size(photo.size, limit)
    if size == photo.size:
        return photo
    width, height = photo.size
    warnings.warn(
        f"image: {name} is {width} x {height} pixels ({width * height / 1e6:.1f} MP), over the "
        f"{limit / 1e6:g} MP drawn at most; drawn at {size[0]} x {size[1]}",
        UserWarning,
        stacklevel=2,
    )
    return photo.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A grayscale image with more than 8 bits as mode ``L``."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else values.max()
    else:
        top = 65535.0 if values.max(initial=0.0) <= 65535 else values.max()
    scaled = np.clip(values / top, 0.0, 1.0) * 255.0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


@contextmanager
def _opened(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` of a regular file, PIL's failures as one ValueError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb", opener=_regular_file) as file, Image.open(file) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"image: {path} has more pixels than PIL's safety limit "
            f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); a possible decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"image: not an image file: {path}") from None
    except _NotRegularError as error:
        raise ValueError(f"image: {path} is {error}, not a photo file") from None
    except OSError as error:
        raise ValueError(f"image: cannot read {path} ({error})") from None


def _decode(image: Image.Image, path: str | Path) -> None:
    """Decode every pixel (PIL reads the header at open); a damaged file is a ValueError."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # PIL's decoders vary
        raise ValueError(f"image: cannot read {path} ({error})") from None


class _NotRegularError(OSError):
    """The path is a FIFO, socket, device or folder (its kind is the message)."""


def _regular_file(path: str, flags: int) -> int:
    """``open``'s opener: a regular file, else refused from its status without opening it (and
    opened without blocking, should a FIFO replace it in between).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        fd = os.open(path, flags | os.O_NONBLOCK)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    raise _NotRegularError(file_kind(mode))
