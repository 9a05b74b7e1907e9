"""gScoreCAM for CLIP as a Captum layer attribution.

The public names are imported on first use (PEP 562), so ``import captum_gscorecam`` and the
``gscorecam`` command's ``--help`` do not pay for torch, open_clip and Captum up front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captum_gscorecam._lazy_names import lazy_names

if TYPE_CHECKING:
    from captum_gscorecam.attribution import GScoreCAM, ScoreCAM
    from captum_gscorecam.clip import CLIPSimilarity, ZeroShotClassifier, encode_text
    from captum_gscorecam.grad_eclip import GradECLIP
    from captum_gscorecam.grids import grid_tap
    from captum_gscorecam.hila import HilaCAM
    from captum_gscorecam.legrad import LeGrad
    from captum_gscorecam.rollout import AttentionRollout
    from captum_gscorecam.towers import default_layer, gradcam_layer

# Public name -> the module that defines it; a new name goes here, in __all__ and above.
_EXPORTS = {
    "AttentionRollout": "captum_gscorecam.rollout",
    "CLIPSimilarity": "captum_gscorecam.clip",
    "GScoreCAM": "captum_gscorecam.attribution",
    "GradECLIP": "captum_gscorecam.grad_eclip",
    "HilaCAM": "captum_gscorecam.hila",
    "LeGrad": "captum_gscorecam.legrad",
    "ScoreCAM": "captum_gscorecam.attribution",
    "ZeroShotClassifier": "captum_gscorecam.clip",
    "default_layer": "captum_gscorecam.towers",
    "encode_text": "captum_gscorecam.clip",
    "gradcam_layer": "captum_gscorecam.towers",
    "grid_tap": "captum_gscorecam.grids",
}

__all__ = [
    "AttentionRollout",
    "CLIPSimilarity",
    "GScoreCAM",
    "GradECLIP",
    "HilaCAM",
    "LeGrad",
    "ScoreCAM",
    "ZeroShotClassifier",
    "default_layer",
    "encode_text",
    "gradcam_layer",
    "grid_tap",
]
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
