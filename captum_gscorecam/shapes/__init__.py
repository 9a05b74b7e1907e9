"""The shapes world: synthetic scenes with ground truth, and small CLIP models trained on it."""

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
