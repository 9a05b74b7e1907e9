"""Export shapes-world scenes as a COCO instances dataset.

``evaluation.coco.read_coco`` reads it back (checked), as it reads any COCO instances file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image

# The layout constants below are read by evaluation.coco, which must not pay for torch: the
# scenes (torch) are imported inside the functions that draw them.
ANNOTATIONS = Path("annotations") / "instances.json"
IMAGES = Path("images")


def category_names() -> list[str]:
    """COCO category names, "red circle" etc.; category id i + 1 is name i."""
    from captum_gscorecam.shapes.scenes import COLORS, SHAPES

    return [f"{color} {shape}" for color, shape in product(COLORS, SHAPES)]


def rle_encode(mask: np.ndarray) -> dict[str, list[int]]:
    """COCO's uncompressed RLE of an (H, W) bool mask.

    Counts alternate runs of false and true pixels, starting with false, in column-major order.
    """
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def export_coco(
    root: str | Path,
    seeds: Iterable[int],
    n_objects: int | None = None,
    size: int | None = None,
) -> Path:
    """Write one PNG per seed under ``root/images`` and their instances to
    ``root/annotations/instances.json``.

    Boxes are COCO [x, y, w, h] floats of the tight mask boxes; segmentations are uncompressed
    RLE. Returns the annotation file's path.
    """
    from captum_gscorecam.shapes.scenes import render_scene

    root = Path(root)
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    (root / ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    category_ids = {name: i + 1 for i, name in enumerate(category_names())}
    images, annotations = [], []
    for image_id, seed in enumerate(seeds, start=1):
        scene = render_scene(seed, n_objects, size)
        file_name = f"{seed:08d}.png"
        Image.fromarray(scene.image).save(root / IMAGES / file_name)
        height, width = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for (color, shape), box, mask in zip(scene.objects, scene.boxes, scene.masks, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[f"{color} {shape}"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": rle_encode(mask),
                }
            )
    categories = [
        {"id": i, "name": name, "supercategory": name.split()[1]}
        for name, i in category_ids.items()
    ]
    path = root / ANNOTATIONS
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path
