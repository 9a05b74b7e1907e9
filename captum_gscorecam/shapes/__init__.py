"""The shapes world: synthetic scenes with ground truth, and small CLIP models trained on it.

The public names are imported on first use (PEP 562), so reading a COCO folder's layout
(``shapes.coco``) does not pay for torch and open_clip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captum_gscorecam._lazy_names import lazy_names

if TYPE_CHECKING:
    from captum_gscorecam.shapes.coco import export_coco
    from captum_gscorecam.shapes.models import load_shapes_clip, zero_shot_recall
    from captum_gscorecam.shapes.scenes import (
        COLORS,
        DEFAULT_SIZE,
        PROMPT_TEMPLATE,
        SHAPES,
        Scene,
        ShapesDataset,
        all_prompts,
        render_scene,
    )

# Public name -> the module that defines it.
_EXPORTS = {
    "COLORS": "captum_gscorecam.shapes.scenes",
    "DEFAULT_SIZE": "captum_gscorecam.shapes.scenes",
    "PROMPT_TEMPLATE": "captum_gscorecam.shapes.scenes",
    "SHAPES": "captum_gscorecam.shapes.scenes",
    "Scene": "captum_gscorecam.shapes.scenes",
    "ShapesDataset": "captum_gscorecam.shapes.scenes",
    "all_prompts": "captum_gscorecam.shapes.scenes",
    "export_coco": "captum_gscorecam.shapes.coco",
    "load_shapes_clip": "captum_gscorecam.shapes.models",
    "render_scene": "captum_gscorecam.shapes.scenes",
    "zero_shot_recall": "captum_gscorecam.shapes.models",
}

__all__ = [
    "COLORS",
    "DEFAULT_SIZE",
    "PROMPT_TEMPLATE",
    "SHAPES",
    "Scene",
    "ShapesDataset",
    "all_prompts",
    "export_coco",
    "load_shapes_clip",
    "render_scene",
    "zero_shot_recall",
]

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
