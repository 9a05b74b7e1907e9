"""gScoreCAM for CLIP as a Captum layer attribution."""

from captum_gscorecam.attribution import GScoreCAM, ScoreCAM
from captum_gscorecam.clip import (
    CLIPSimilarity,
    default_layer,
    encode_text,
    gradcam_layer,
    grid_tap,
)
from captum_gscorecam.hila import HilaCAM

__all__ = [
    "CLIPSimilarity",
    "GScoreCAM",
    "HilaCAM",
    "ScoreCAM",
    "default_layer",
    "encode_text",
    "gradcam_layer",
    "grid_tap",
]
__version__ = "0.1.0"
