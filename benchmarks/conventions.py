"""What the reference code's conventions change: LeGrad and Grad-ECLIP variants on shapes-vit.

On held-out shapes scenes (3-6 objects, one prompt per object), each variant's pointing game
(``evaluate``'s: the upsampled map's peak in the prompted object's box or within 15 px of it),
strict pointing (the peak inside the object's mask) and how often its peak is the default's:

- LeGrad over every block (the default here, as the paper aggregates) against the last two
  blocks (``start_layer=-2``, legrad-torch's default ``layer_index=-2``), and against reading
  each block's embedding from its class token instead of the token mean;
- Grad-ECLIP with the model's own heads (the default here) against the authors' code, which
  recomputes the last block with its heads merged into one.

    python benchmarks/conventions.py --scenes 200 --out benchmarks/results/conventions-vit.md
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
from collections.abc import Callable
from datetime import date

import numpy as np
import torch
from PIL import Image
from report import emit
from torch import Tensor, nn

from captum_gscorecam import GradECLIP, LeGrad, encode_text
from captum_gscorecam.evaluation.metrics import pointing_game
from captum_gscorecam.shapes import load_shapes_clip, render_scene
from captum_gscorecam.visualization import upsample

FIRST_SEED = 10_000_000  # gscorecam evaluate's first held-out scene


def class_token_readout(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """A block's tokens to an embedding through the class token (not the token mean)."""
    visual = model.visual
    return lambda tokens: visual.ln_post(tokens[:, 0]) @ visual.proj


def merged_heads(model: nn.Module) -> nn.Module:
    """A copy whose last block's attention runs as one head over the full width, as the
    Grad-ECLIP authors' code recomputes it (the copy's output changes with it)."""
    merged = copy.deepcopy(model)
    merged.visual.transformer.resblocks[-1].attn.num_heads = 1
    return merged


def variants(model: nn.Module) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    legrad = LeGrad(model)
    class_token = LeGrad(model)
    class_token.parts = dataclasses.replace(class_token.parts, readout=class_token_readout(model))
    grad_eclip = GradECLIP(model)
    authors = GradECLIP(merged_heads(model))
    return {
        "LeGrad, every block (default)": lambda x, t: legrad.attribute(x, target=t),
        "LeGrad, last two blocks (legrad-torch's default)": lambda x, t: legrad.attribute(
            x, target=t, start_layer=-2
        ),
        "LeGrad, class token read out": lambda x, t: class_token.attribute(x, target=t),
        "Grad-ECLIP, the model's heads (default)": lambda x, t: grad_eclip.attribute(x, target=t),
        "Grad-ECLIP, heads merged (authors' code)": lambda x, t: authors.attribute(x, target=t),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, preprocess, tokenizer = load_shapes_clip("vit")
    methods = variants(model)
    hits = {name: [] for name in methods}
    points = {name: [] for name in methods}
    agree = {name: [] for name in methods}
    rng = np.random.default_rng(0)
    for i in range(args.scenes):
        scene = render_scene(FIRST_SEED + i, n_objects=int(rng.integers(3, 7)))
        image = preprocess(Image.fromarray(scene.image))[None]
        text = encode_text(model, tokenizer, scene.captions)[None]
        size = scene.image.shape[:2]
        peaks = {}
        for name, explain in methods.items():
            maps = upsample(explain(image, text), size)[0]  # (T, H, W)
            peaks[name] = maps.reshape(len(maps), -1).argmax(axis=1)
            points[name] += [
                pointing_game(m, box) for m, box in zip(maps, scene.boxes, strict=True)
            ]
        for name, peak in peaks.items():
            masks = scene.masks.reshape(len(scene.captions), -1)
            hits[name] += masks[np.arange(len(peak)), peak].tolist()
            default = peaks[next(n for n in methods if n.split(",")[0] == name.split(",")[0])]
            agree[name] += (peak == default).tolist()
    examples = len(hits[next(iter(hits))])
    lines = [
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}: shapes-vit, {args.scenes} held-out scenes (seeds from "
        f"{FIRST_SEED}, 3-6 objects), {examples} prompts",
        "",
        "| variant | pointing game | strict pointing | same peak as the default |",
        "|---|---:|---:|---:|",
    ]
    for name in methods:
        scores = (np.mean(points[name]), np.mean(hits[name]), np.mean(agree[name]))
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in scores) + " |")
    emit("\n".join([*lines, ""]), args.out)


if __name__ == "__main__":
    main()
