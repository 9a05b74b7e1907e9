"""Evaluation examples, one per (image, class present), with ground truth in the model's frame.

Every example's image is square, ``size x size`` pixels, the model's input size, and its boxes
and mask are in that pixel frame. A square image passes the usual CLIP preprocess (resize the
short side, center crop) unchanged, so nothing is cropped away: shapes scenes are rendered at
``size``, and COCO images are resized to ``size x size`` (aspect ratio not kept) with their
boxes and masks scaled by the same factors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon

from captum_gscorecam.checks import check_template
from captum_gscorecam.evaluation.coco import CocoImage, coco_files, read_coco, rle_decode
from captum_gscorecam.shapes import DEFAULT_SIZE, render_scene

__all__ = [
    "Example",
    "coco_examples",
    "coco_image_examples",
    "shapes_examples",
]


@dataclass(frozen=True, eq=False)
class Example:
    """One class present in one image.

    Attributes:
        image_id: Identifies the image; examples of one image share it.
        prompt: The text explained, naming the class.
        boxes: int64 ``(n, 4)`` boxes of every instance of the class, ``x0, y0, x1, y1``
            (exclusive ends), in the ``size x size`` frame.
        mask: bool ``(size, size)`` union of the instances' masks, or None when unknown.
        n_objects: Annotated objects in the image, of any class.
        source: The image, an ``(size, size, 3)`` uint8 array or a file to resize.
        size: Side of the square frame in pixels.
    """

    image_id: str
    prompt: str
    boxes: np.ndarray
    mask: np.ndarray | None
    n_objects: int
    source: np.ndarray | Path
    size: int

    def load_image(self) -> np.ndarray:
        """The image as ``(size, size, 3)`` uint8; files are resized bicubically, uncropped."""
        if isinstance(self.source, np.ndarray):
            return self.source
        with Image.open(self.source) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
            return np.asarray(rgb)


def shapes_examples(
    seeds: Iterable[int],
    objects: tuple[int, int] = (3, 6),
    size: int = DEFAULT_SIZE,
    counts: Sequence[int] | None = None,
) -> list[Example]:
    """One example per object of each seed's shapes scene, prompted with its caption.

    The scene of seed ``s`` holds ``counts[s mod len(counts)]`` objects, where ``counts`` is
    ``lo, lo + 1, ..., hi`` for ``objects = (lo, hi)`` unless given, so consecutive seeds cycle
    through the counts and ``len(counts)`` consecutive seeds hold each count once. Objects of a
    scene are distinct (colour, shape) pairs, so each example has one box and the object's
    exact mask.
    """
    if counts is None:
        counts = range(objects[0], objects[1] + 1)
    counts = list(counts)
    if not counts:
        raise ValueError("counts: expected at least one object count")
    examples = []
    for seed in seeds:
        scene = render_scene(seed, counts[seed % len(counts)], size)
        for caption, box, mask in zip(scene.captions, scene.boxes, scene.masks, strict=True):
            examples.append(
                Example(str(seed), caption, box[None], mask, len(scene.objects), scene.image, size)
            )
    return examples


def coco_examples(
    root: str | Path | None,
    size: int,
    template: str = "{}",
    limit: int | None = None,
    annotations: str | Path | None = None,
    images: str | Path | None = None,
) -> list[Example]:
    """One example per category present in each image of a COCO instances dataset.

    The prompt is ``template.format(category name)`` (the paper uses the bare name; CLIP's
    ``"a photo of a {}"`` is the other common choice). Crowd annotations are skipped. Boxes
    ``[x, y, w, h]`` become ``floor(x s), floor(y s'), ceil((x + w) s), ceil((y + h) s')`` with
    ``s = size / width``, ``s' = size / height`` (at least one pixel wide and high); masks come
    from polygons (filled in the scaled frame) or RLE, plain or compressed (decoded at the
    image's size, then resized, nearest). The file is checked as :func:`read_coco` describes.

    Args:
        root: The dataset folder, as ``export_coco`` writes it or as COCO ships val2017
            (see :func:`coco_files`); None if both ``annotations`` and ``images`` are given.
        size: The model's square input size.
        template: Prompt template with one ``{}`` for the category name.
        limit: The first ``limit`` readable images only (file order); None for all.
        annotations: The instances JSON; default from ``root``.
        images: The image folder; default from ``root`` or ``annotations``.

    Raises:
        ValueError: A malformed file or template (named), or no image with an annotation.
    """
    check_template(template)
    annotations, images = coco_files(root, annotations, images)
    return coco_image_examples(read_coco(annotations, images, limit), size, template)


def coco_image_examples(
    images: Sequence[CocoImage], size: int, template: str = "{}"
) -> list[Example]:
    """The examples of images :func:`read_coco` has read; see :func:`coco_examples`."""
    examples = []
    for image in images:
        by_category: dict[str, list[Mapping[str, object]]] = {}
        for annotation in image.annotations:
            by_category.setdefault(annotation["category"], []).append(annotation)
        scale = (size / image.width, size / image.height)
        for name, instances in by_category.items():
            examples.append(
                Example(
                    image_id=image.image_id,
                    prompt=template.format(name),
                    boxes=np.stack([_scaled_box(a["bbox"], scale, size) for a in instances]),
                    mask=_class_mask(instances, image, size),
                    n_objects=len(image.annotations),
                    source=image.path,
                    size=size,
                )
            )
    if not examples:
        raise ValueError(
            f"annotations: none of the {len(images)} image(s) has a non-crowd annotation"
        )
    return examples


def _scaled_box(bbox: Sequence[float], scale: tuple[float, float], size: int) -> np.ndarray:
    """COCO ``[x, y, w, h]`` to ``x0, y0, x1, y1`` (exclusive) covering it in the scaled frame."""
    x, y, w, h = bbox
    sx, sy = scale
    x0, y0 = min(math.floor(x * sx), size - 1), min(math.floor(y * sy), size - 1)
    x1, y1 = math.ceil((x + w) * sx), math.ceil((y + h) * sy)
    box = [max(x0, 0), max(y0, 0), max(x1, x0 + 1), max(y1, y0 + 1)]
    return np.clip(np.array(box, dtype=np.int64), 0, size)


def _class_mask(
    instances: Sequence[Mapping[str, object]], image: CocoImage, size: int
) -> np.ndarray | None:
    """Union of the instances' masks at ``size x size``; None if one cannot be decoded."""
    union = np.zeros((size, size), dtype=bool)
    for annotation in instances:
        mask = _instance_mask(annotation.get("segmentation"), image, size)
        if mask is None:
            return None
        union |= mask
    return union


def _instance_mask(segmentation: object, image: CocoImage, size: int) -> np.ndarray | None:
    """One instance's mask at ``size x size`` from polygons or RLE."""
    if isinstance(segmentation, list) and segmentation:
        mask = np.zeros((size, size), dtype=bool)
        sx, sy = size / image.width, size / image.height
        for points in segmentation:
            xy = np.asarray(points, dtype=float).reshape(-1, 2)
            mask[polygon(xy[:, 1] * sy, xy[:, 0] * sx, (size, size))] = True
        return mask
    if not isinstance(segmentation, dict):
        return None
    resized = Image.fromarray(rle_decode(segmentation)).resize(
        (size, size), Image.Resampling.NEAREST
    )
    return np.asarray(resized)
