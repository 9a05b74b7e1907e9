"""gScoreCAM for CLIP as a Captum layer attribution.

The public names are imported on first use (PEP 562), so ``import captum_gscorecam`` and the
``gscorecam`` command's ``--help`` do not pay for torch, open_clip and Captum up front.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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


def __getattr__(name: str) -> object:
    """Import a public name from its module the first time it is asked for."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
