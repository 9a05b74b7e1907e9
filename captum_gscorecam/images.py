"""Photos from files: image paths from files, folders and globs, and reading them as RGB.

Errors are ``ValueError`` naming ``image`` and the file, so a command can print them as one
line. Nothing here needs torch.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["PHOTO_SUFFIXES", "check_image", "expand_images", "read_image"]

# What a folder or a glob contributes; a file named on its own is read whatever its suffix.
PHOTO_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi"}
)
_GLOB_CHARACTERS = frozenset("*?[")
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
    """Raise a ValueError unless ``path`` opens as an image of a safe size (reads the header)."""
    with _opened(path):
        pass


def read_image(path: str | Path) -> Image.Image:
    """The photo in ``path`` as an 8-bit RGB PIL image, turned as its EXIF orientation says.

    16-bit (and 32-bit integer) grayscale is scaled from ``[0, 65535]`` to ``[0, 255]`` (PIL's
    own conversion clips it, so such files would read as white); floating point grayscale from
    ``[0, 1]``. Raises a ValueError naming the file if it is not an image, is damaged, or is
    large enough to be a decompression bomb (over PIL's ``Image.MAX_IMAGE_PIXELS``).
    """
    with _opened(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
            image = _to_8_bit(image)
        return image.convert("RGB")


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
    """``Image.open`` with PIL's failures as one ValueError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(
            f"image: {path} has more pixels than PIL's safety limit "
            f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); a possible decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"image: not an image file: {path}") from None
    except OSError as error:
        raise ValueError(f"image: cannot read {path} ({error})") from None
