"""Reading a COCO instances file, checked: every fault is named by its file and field.

A malformed file raises a ValueError naming ``annotations``, the file and the field, e.g.
``annotations[12].bbox``: not JSON (or nested deeper than Python's recursion limit), not an
object, a missing list, a field of the wrong kind or out of range, a category id listed twice,
an annotation of an unknown image or category, ``iscrowd`` other than 0 or 1, a ``file_name``
outside the image folder (absolute elsewhere, or climbing out with ``..``), an RLE of another
size than its image or whose runs do not add up to its pixels (a compressed RLE string is
decoded here, strictly, so garbage never becomes a wrong mask), a polygon with an odd number of
coordinates.

Annotations whose box has zero width or height, or reaches more than ``BOX_TOLERANCE`` pixels
beyond its image, are skipped (not scored as misses) with one warning counting them; so are
images whose file is missing or not an image. An image id listed twice counts once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from captum_gscorecam.shapes.coco import ANNOTATIONS, IMAGES

__all__ = ["CocoImage", "coco_categories", "coco_files", "read_coco", "rle_decode"]

# COCO's own layout: annotations/instances_val2017.json beside the image folder val2017/.
VAL2017 = Path("annotations") / "instances_val2017.json"
# How far (pixels) a box may reach beyond its image: COCO's float boxes overshoot by rounding.
BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class CocoImage:
    """One listed image, found on disk, with its non-crowd annotations.

    Attributes:
        image_id: The image's id, as text.
        path: The image file.
        width: Its width in pixels.
        height: Its height in pixels.
        annotations: Its non-crowd annotations (checked), in file order.
    """

    image_id: str
    path: Path
    width: int
    height: int
    annotations: tuple[Mapping[str, object], ...]


def coco_files(
    root: str | Path | None, annotations: str | Path | None = None, images: str | Path | None = None
) -> tuple[Path, Path]:
    """The instances file and the image folder of a COCO dataset.

    Defaults under ``root``: ``annotations/instances.json`` and ``images/`` (as ``export_coco``
    writes them), else COCO's ``annotations/instances_val2017.json`` and ``val2017/``. A given
    ``annotations`` file ``instances_<split>.json`` without ``images`` looks for ``<split>/``
    (then ``images/``) two folders up, as COCO lays them out.
    """
    if annotations is None:
        if root is None:
            raise ValueError("root: give --root DIR or --annotations FILE")
        candidates = [Path(root) / ANNOTATIONS, Path(root) / VAL2017]
        annotations = next((p for p in candidates if p.is_file()), None)
        if annotations is None:
            raise ValueError(
                f"root: no {ANNOTATIONS} or {VAL2017} under {root}; give --annotations FILE"
            )
    annotations = Path(annotations)
    if not annotations.is_file():
        raise ValueError(f"annotations: no such file: {annotations}")
    if images is None:
        base = Path(root) if root is not None else annotations.parent.parent
        split = annotations.stem.removeprefix("instances_")
        candidates = [base / split] if annotations.stem != split else []
        candidates.append(base / IMAGES)
        images = next((p for p in candidates if p.is_dir()), None)
        if images is None:
            tried = " or ".join(str(p) for p in candidates)
            raise ValueError(f"images: no image folder {tried}; give --images DIR")
    images = Path(images)
    if not images.is_dir():
        raise ValueError(f"images: no such folder: {images}")
    return annotations, images


def read_coco(
    annotations: str | Path, images: str | Path, limit: int | None = None
) -> list[CocoImage]:
    """The images of a COCO instances file, checked, in file order (the first ``limit`` found).

    Args:
        annotations: The instances JSON.
        images: The image folder; every ``file_name`` must lie inside it.
        limit: The first ``limit`` images found on disk; None for all.
            Default: None

    Returns:
        The images found, each with its non-crowd annotations whose boxes lie on the image.

    Raises:
        ValueError: The file or one of its fields is malformed (named), or no image is left.
    """
    path, folder = Path(annotations), Path(images)
    data = _load(path)
    fault = _Fault(path)
    names = _categories(data["categories"], fault)
    listed = _images(data["images"], folder, fault)
    per_image: dict[str, list[Mapping[str, object]]] = {image_id: [] for image_id in listed}
    dropped: dict[str, list[str]] = {"outside": [], "empty": []}
    for i, annotation in enumerate(data["annotations"]):
        field = f"annotations[{i}]"
        if not isinstance(annotation, dict):
            fault(field, "expected an object", annotation)
        image_id = _id(annotation.get("image_id"), f"{field}.image_id", fault)
        if image_id not in listed:
            fault(f"{field}.image_id", "expected the id of a listed image", image_id)
        category = _id(annotation.get("category_id"), f"{field}.category_id", fault)
        if category not in names:
            fault(f"{field}.category_id", "expected a listed category", category)
        crowd = annotation.get("iscrowd", 0)
        if isinstance(crowd, bool) or crowd not in (0, 1):
            fault(f"{field}.iscrowd", "expected 0 or 1", crowd)
        if crowd:
            continue
        _check_bbox(annotation.get("bbox"), f"{field}.bbox", fault)
        _, width, height = listed[image_id]
        problem = _box_problem(annotation["bbox"], width, height)
        if problem:
            dropped[problem].append(field)
            continue
        shape = height, width
        _check_segmentation(annotation.get("segmentation"), f"{field}.segmentation", shape, fault)
        per_image[image_id].append(annotation | {"category": names[category]})
    _warn_dropped(dropped, path)
    found, skipped = [], {"missing": [], "unreadable": []}
    for image_id, (file_name, width, height) in listed.items():
        if limit is not None and len(found) == limit:
            break
        reason = _file_problem(folder / file_name, (width, height), path, image_id)
        if reason:
            skipped[reason].append(file_name)
            continue
        found.append(
            CocoImage(image_id, folder / file_name, width, height, tuple(per_image[image_id]))
        )
    _warn_skipped(skipped, folder)
    if not found:
        raise ValueError(
            f"annotations: {path}: no images to evaluate ({len(listed)} listed, "
            f"{sum(map(len, skipped.values()))} skipped)"
        )
    return found


def coco_categories(annotations: str | Path) -> dict[str, str]:
    """Category id (as text) -> name of a COCO instances file, in file order, checked as
    :func:`read_coco` checks them.
    """
    path = Path(annotations)
    return _categories(_load(path)["categories"], _Fault(path))


class _Fault:
    """Raises the ValueError of one field of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, field: str, expected: str, got: object) -> None:
        shown = json.dumps(got) if _plain(got) else type(got).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise ValueError(f"annotations: {self.path}: {field}: {expected}, got {shown}")


def _plain(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _load(path: Path) -> dict[str, list[object]]:
    """The file's top-level object, with its three lists."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"annotations: cannot read {path} ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"annotations: {path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(
            f"annotations: {path}: not a COCO file (JSON nested deeper than Python's recursion "
            f"limit, {sys.getrecursionlimit()})"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"annotations: {path}: expected a JSON object with 'images', 'annotations' and "
            f"'categories', got a {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"annotations: {path}: missing {key!r}")
        if not isinstance(data[key], list):
            _Fault(path)(key, "expected a list", data[key])
    return data


def _categories(categories: Sequence[object], fault: _Fault) -> dict[str, str]:
    """Category id (as text) -> name; an id listed twice is refused."""
    names: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict):
            fault(f"categories[{i}]", "expected an object", category)
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            fault(f"categories[{i}].name", "expected a name", name)
        category_id = _id(category.get("id"), f"categories[{i}].id", fault)
        if category_id in names:
            fault(
                f"categories[{i}].id",
                f"expected a new id (categories[{first[category_id]}] has it)",
                category.get("id"),
            )
        names[category_id], first[category_id] = name, i
    return names


def _images(
    images: Sequence[object], folder: Path, fault: _Fault
) -> dict[str, tuple[str, int, int]]:
    """Image id (as text) -> (file name, width, height); the first listing of an id counts."""
    listed: dict[str, tuple[str, int, int]] = {}
    twice = 0
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            fault(f"images[{i}]", "expected an object", image)
        image_id = _id(image.get("id"), f"images[{i}].id", fault)
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
            fault(f"images[{i}].file_name", "expected a file name", file_name)
        if not _inside(folder, file_name):
            fault(
                f"images[{i}].file_name",
                f"expected a file inside the image folder {folder}",
                file_name,
            )
        sides = [image.get(side) for side in ("width", "height")]
        for side, value in zip(("width", "height"), sides, strict=True):
            if not (isinstance(value, Integral) and not isinstance(value, bool) and value > 0):
                fault(f"images[{i}].{side}", "expected a positive integer", value)
        if image_id in listed:
            twice += 1
            continue
        listed[image_id] = (file_name, int(sides[0]), int(sides[1]))
    if twice:
        warnings.warn(
            f"annotations: {fault.path}: {twice} image id(s) listed more than once, counted once",
            stacklevel=3,
        )
    return listed


def _inside(folder: Path, file_name: str) -> bool:
    """Whether ``folder / file_name`` names a file below ``folder``, read as written (``..``
    resolved in the text, symbolic links not followed).
    """
    root = os.path.abspath(folder)
    path = os.path.normpath(os.path.join(root, file_name))  # an absolute file_name replaces root
    return path != root and os.path.commonpath([root, path]) == root


def _id(value: object, field: str, fault: _Fault) -> str:
    """An id (an integer, or a string) as text."""
    if isinstance(value, bool) or not isinstance(value, (Integral, str)):
        fault(field, "expected an integer id", value)
    return str(value)


def _check_bbox(bbox: object, field: str, fault: _Fault) -> None:
    """``[x, y, width, height]``, finite, with width and height >= 0."""
    numbers = isinstance(bbox, list) and len(bbox) == 4 and all(map(_finite, bbox))
    if not numbers or bbox[2] < 0 or bbox[3] < 0:
        fault(field, "expected [x, y, width, height], finite, width and height >= 0", bbox)


def _box_problem(bbox: Sequence[float], width: int, height: int) -> str | None:
    """Why a well-formed box is skipped ("empty", "outside"), or None."""
    x, y, w, h = bbox
    if w == 0 or h == 0:
        return "empty"
    low, high = -BOX_TOLERANCE, BOX_TOLERANCE
    if x < low or y < low or x + w > width + high or y + h > height + high:
        return "outside"
    return None


def _warn_dropped(dropped: Mapping[str, list[str]], path: Path) -> None:
    """One warning counting the annotations skipped for their boxes, with a few fields."""
    parts = []
    labels = (
        ("outside", f"reaching more than {BOX_TOLERANCE:g} px beyond their image"),
        ("empty", "of zero width or height"),
    )
    for reason, label in labels:
        if dropped[reason]:
            fields = dropped[reason]
            names = ", ".join(fields[:3]) + (", ..." if len(fields) > 3 else "")
            parts.append(f"{len(fields)} {label} ({names})")
    if parts:
        warnings.warn(
            f"annotations: {path}: skipped the boxes {'; '.join(parts)}; those objects are "
            "not scored",
            stacklevel=3,
        )


def _check_segmentation(
    segmentation: object, field: str, shape: tuple[int, int], fault: _Fault
) -> None:
    """Polygons (lists of x, y pairs), or RLE of the image's ``[height, width]``."""
    if segmentation is None:
        return
    if isinstance(segmentation, list):
        for j, points in enumerate(segmentation):
            good = isinstance(points, list) and all(map(_finite, points))
            if not good or len(points) % 2 or not points:
                fault(f"{field}[{j}]", "expected a polygon of x, y pairs", points)
        return
    if not isinstance(segmentation, dict):
        fault(field, "expected polygons or RLE", segmentation)
    size = segmentation.get("size")
    if not (isinstance(size, list) and all(map(_count, size)) and size == list(shape)):
        fault(f"{field}.size", f"expected the image's [height, width] = {list(shape)}", size)
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        runs = _compressed_runs(counts)
        if runs is None:
            fault(
                f"{field}.counts",
                "expected a compressed RLE (characters 0 to o, the last run complete)",
                counts,
            )
    elif isinstance(counts, list):
        runs = counts if all(map(_count, counts)) else [-1]
    else:
        fault(f"{field}.counts", "expected a list of runs or a compressed RLE string", counts)
    if min(runs, default=0) < 0 or sum(runs) != shape[0] * shape[1]:
        fault(f"{field}.counts", f"expected runs adding up to {shape[0] * shape[1]} pixels", counts)


def _count(value: object) -> bool:
    """An integer >= 0 (not a bool)."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 0


def _compressed_runs(counts: str) -> list[int] | None:
    """The runs of COCO's compressed RLE string, or None if the text is not one.

    Each run is a little-endian sequence of 5-bit groups, one character each (``chr(48 + c)``):
    bit 0x20 of ``c`` says another group follows, and bit 0x10 of the last group is the sign.
    From the fourth run on, the text holds the difference to the run two places before.
    Runs may come out negative here; the caller checks them.
    """
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if shift else runs


def _finite(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def rle_decode(rle: Mapping[str, object]) -> np.ndarray:
    """The ``(H, W)`` bool mask of a COCO RLE, uncompressed or compressed.

    ``counts`` alternate runs of false and true pixels, starting with false, in column-major
    order: a list of integers, or COCO's compressed string of them; ``size`` is ``[H, W]``.

    Raises:
        ValueError: ``counts`` is not an RLE, or its runs do not add up to ``H x W`` pixels.
    """
    height, width = rle["size"]
    counts = rle["counts"]
    runs = _compressed_runs(counts) if isinstance(counts, str) else list(counts)
    if runs is None or not all(map(_count, runs)) or sum(runs) != height * width:
        raise ValueError(f"rle: expected runs adding up to {height} x {width} pixels")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape((height, width), order="F")


def _file_problem(
    path: Path, size: tuple[int, int], annotations: Path, image_id: str
) -> str | None:
    """Why an image is skipped ("missing", "unreadable"), or None; raise if its size is wrong.

    The image is decoded in full, so one damaged past its header is skipped here, before the
    model loads, not met in the middle of a run.
    """
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            image.load()
            actual = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, Image.DecompressionBombError):
        return "unreadable"
    if actual != size:
        raise ValueError(
            f"annotations: {annotations}: image {image_id} ({path.name}) is "
            f"{actual[0]} x {actual[1]} on disk, the annotation says {size[0]} x {size[1]}"
        )
    return None


def _warn_skipped(skipped: Mapping[str, list[str]], folder: Path) -> None:
    """One warning counting the images skipped, with a few names."""
    parts = []
    for reason, label in (("missing", "missing"), ("unreadable", "not image files")):
        if skipped[reason]:
            names = ", ".join(skipped[reason][:3]) + (", ..." if len(skipped[reason]) > 3 else "")
            parts.append(f"{len(skipped[reason])} {label} ({names})")
    if parts:
        warnings.warn(f"images: skipped {'; '.join(parts)} in {folder}", stacklevel=3)
