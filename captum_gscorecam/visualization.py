"""Figures: attribution maps over their images, drawn with ``captum.attr.visualization``.

This is where tensors leave the device and become numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import LayerAttribution
from captum.attr import visualization as viz
from matplotlib.figure import Figure
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import Tensor

__all__ = ["show_maps", "to_image", "upsample"]


def to_image(
    image: Tensor,
    mean: Sequence[float] = OPENAI_DATASET_MEAN,
    std: Sequence[float] = OPENAI_DATASET_STD,
) -> np.ndarray:
    """A normalised image ``(3, H, W)`` back to displayable ``(H, W, 3)`` values in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return (image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).detach().cpu().numpy()


def upsample(maps: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Layer maps ``(N, T, h, w)`` to ``(N, T, H, W)`` numpy arrays (bilinear, Captum's way)."""
    up = LayerAttribution.interpolate(maps.detach().float(), size, "bilinear")
    return up.cpu().numpy()


def show_maps(
    images: Sequence[np.ndarray],
    maps: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    panel_size: float = 2.2,
) -> Figure:
    """One row per (image, prompt): the image, then one blended heat map per method.

    ``images[r]`` is ``(H, W, 3)`` in [0, 1]; ``maps[r][m]`` is ``(H, W)``.
    """
    rows, cols = len(images), 1 + len(col_labels)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel_size * cols, panel_size * rows), squeeze=False
    )
    for r, (image, row_maps) in enumerate(zip(images, maps, strict=True)):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for m, saliency in enumerate(row_maps, start=1):
            axes[r, m].axis("off")
            if not saliency.max() > 0:  # captum cannot scale a map with no positive part
                axes[r, m].imshow(image)
                axes[r, m].text(2, 12, "no positive evidence", color="white", fontsize=7)
                continue
            viz.visualize_image_attr(
                saliency[..., None],
                image,
                method="blended_heat_map",
                sign="positive",
                plt_fig_axis=(fig, axes[r, m]),
                use_pyplot=False,
                cmap="jet",
                alpha_overlay=0.5,
            )
    for c, label in enumerate(["image", *col_labels]):
        axes[0, c].set_title(label, fontsize=10)
    fig.tight_layout()
    return fig
