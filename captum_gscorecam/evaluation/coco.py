"""Reading a COCO instances file, checked: every fault is named by its file and field.

A malformed file (not JSON, not an object, a missing list, a field of the wrong kind or out of
range, an annotation of an unknown image or category, an RLE of another size than its image,
a polygon with an odd number of coordinates) raises a ValueError naming ``annotations``, the
file and the field, e.g. ``annotations[12].bbox``. Images whose file is missing or not an
image are skipped with one warning counting them; an image id listed twice counts once.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from captum_gscorecam.shapes.coco import ANNOTATIONS, IMAGES

__all__ = ["CocoImage", "coco_files", "read_coco", "rle_decode"]

# COCO's own layout: annotations/instances_val2017.json beside the image folder val2017/.
VAL2017 = Path("annotations") / "instances_val2017.json"


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

    Raises:
        ValueError: The file or one of its fields is malformed (named), or no image is left.
    """
    path, folder = Path(annotations), Path(images)
    data = _load(path)
    fault = _Fault(path)
    names = _categories(data["categories"], fault)
    listed = _images(data["images"], fault)
    per_image: dict[str, list[Mapping[str, object]]] = {image_id: [] for image_id in listed}
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
        if annotation.get("iscrowd", 0):
            continue
        _check_bbox(annotation.get("bbox"), f"{field}.bbox", fault)
        shape = listed[image_id][2], listed[image_id][1]
        _check_segmentation(annotation.get("segmentation"), f"{field}.segmentation", shape, fault)
        per_image[image_id].append(annotation | {"category": names[category]})
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
    except (TypeError, ValueError):
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
    """Category id (as text) -> name."""
    names = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict):
            fault(f"categories[{i}]", "expected an object", category)
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            fault(f"categories[{i}].name", "expected a name", name)
        names[_id(category.get("id"), f"categories[{i}].id", fault)] = name
    return names


def _images(images: Sequence[object], fault: _Fault) -> dict[str, tuple[str, int, int]]:
    """Image id (as text) -> (file name, width, height); the first listing of an id counts."""
    listed: dict[str, tuple[str, int, int]] = {}
    twice = 0
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            fault(f"images[{i}]", "expected an object", image)
        image_id = _id(image.get("id"), f"images[{i}].id", fault)
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            fault(f"images[{i}].file_name", "expected a file name", file_name)
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
    if segmentation.get("size") != list(shape):
        fault(
            f"{field}.size",
            f"expected the image's [height, width] = {list(shape)}",
            segmentation.get("size"),
        )
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        runs = all(isinstance(c, Integral) and not isinstance(c, bool) and c >= 0 for c in counts)
        if not runs or sum(counts) != shape[0] * shape[1]:
            fault(
                f"{field}.counts",
                f"expected runs adding up to {shape[0] * shape[1]} pixels",
                counts,
            )
    elif not isinstance(counts, str):
        fault(f"{field}.counts", "expected a list of runs or a compressed RLE string", counts)


def _finite(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def rle_decode(rle: Mapping[str, Sequence[int]]) -> np.ndarray:
    """The ``(H, W)`` bool mask of an uncompressed COCO RLE.

    ``counts`` alternate runs of false and true pixels, starting with false, in column-major
    order; ``size`` is ``[H, W]``.
    """
    height, width = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((height, width), order="F")


def _file_problem(
    path: Path, size: tuple[int, int], annotations: Path, image_id: str
) -> str | None:
    """Why an image is skipped ("missing", "unreadable"), or None; raise if its size is wrong."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            actual = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
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
