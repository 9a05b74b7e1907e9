"""Shared by the benchmark scripts: print a result table and optionally save it; count a
layer's channels; compare maps."""

from __future__ import annotations

import os

import torch
from torch import nn


def emit(text: str, out: str | None) -> None:
    """Print ``text``; with ``out``, also write it there (creating the folder)."""
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as file:
            file.write(text + "\n")


def layer_channels(model: nn.Module, layer: nn.Module, image: torch.Tensor) -> int:
    """C of ``layer``: its ``(N, C, h, w)`` output's dim 1 or its tokens' width, after one
    forward pass of ``image`` through the image tower."""
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _a, output: outputs.append(output))
    try:
        with torch.no_grad():
            model.encode_image(image)
    finally:
        handle.remove()
    out = outputs[0]
    return out.shape[1] if out.dim() == 4 else out.shape[-1]


def total_variation(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Total variation between maps ``(T, h, w)`` read as distributions, in [0, 1]; an
    all-zero map is 1 away from any other."""
    p = maps.flatten(1)
    q = reference.flatten(1)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-30)
    q = q / q.sum(1, keepdim=True).clamp_min(1e-30)
    distance = 0.5 * (p - q).abs().sum(1)
    return torch.where(maps.flatten(1).sum(1) > 0, distance, 1.0)
