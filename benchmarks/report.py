"""Shared by the benchmark scripts: print a result table and optionally save it; count a
layer's channels."""

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
