"""Dataset extraction: maps, boxes and points of many photos in standard files, resumable and
sharded under torchrun (``gscorecam explain --dataset``).
"""

from captum_gscorecam.extraction.inputs import (
    Photo,
    coco_photos,
    listed_photos,
    photo_names,
    read_prompt_file,
    tree_photos,
    with_prompts,
)
from captum_gscorecam.extraction.runner import ExtractionSummary, extract, extraction_config

__all__ = [
    "ExtractionSummary",
    "Photo",
    "coco_photos",
    "extract",
    "extraction_config",
    "listed_photos",
    "photo_names",
    "read_prompt_file",
    "tree_photos",
    "with_prompts",
]
