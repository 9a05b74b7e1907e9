"""The explainers by name, with a line on each: data only, so ``--help`` needs no torch."""

from __future__ import annotations

__all__ = ["METHODS", "METHOD_HELP", "PIXEL_METHODS"]

# Key (as the command line spells it) -> label (as figures and tables show it).
METHODS = {
    "gscorecam": "gScoreCAM",
    "scorecam": "ScoreCAM",
    "gradcam": "LayerGradCam",
    "hilacam": "HilaCAM",
    "occlusion": "Occlusion",
    "integrated_gradients": "IntegratedGradients",
    "saliency": "Saliency",
    "uniform": "Uniform",
}

METHOD_HELP = {
    "gscorecam": "ScoreCAM on the top-k channels of the gradient ranking (this package)",
    "scorecam": "every channel as a mask, weighted by the softmax of the masked scores",
    "gradcam": "Captum's LayerGradCam (mean gradient per channel)",
    "hilacam": "Chefer et al.'s attention relevance; ViT towers that pool a class token",
    "occlusion": "Captum's Occlusion: the score drop when a window takes the mean colour",
    "integrated_gradients": "Captum's IntegratedGradients from the mean-colour image (32 steps)",
    "saliency": "Captum's Saliency, |d score / d pixel|",
    "uniform": "a constant map: the baseline that knows nothing",
}

# Methods whose maps are at pixel resolution, with no layer to choose.
PIXEL_METHODS = ("occlusion", "integrated_gradients", "saliency")
