"""Explain a photo against prompts with gScoreCAM and save the maps over the whole photo.

Offline by default: an open_clip RN50 with random weights (the architecture is real, the maps
are not meaningful). With network access use real weights: ``--pretrained openai``. The maps
are placed on the original photo (``visualization.to_photo``); the border the model's centre
crop cuts away has no value and shows dimmed and hatched (``--no-crop`` resizes the whole photo
to the model's square input instead, changing its aspect ratio).

    python examples/quickstart.py --image photo.jpg --prompt "a cat" --out quickstart.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import open_clip
import torch
from PIL import Image

from captum_gscorecam import GScoreCAM, default_layer, encode_text
from captum_gscorecam.visualization import no_crop, overlay, to_photo


def synthetic_photo(width: int = 320, height: int = 224) -> Image.Image:
    """A red disc and a blue square on a grey gradient, so the example needs no download."""
    yy, xx = np.mgrid[0:height, 0:width] / height
    image = np.stack([0.5 + 0.2 * xx, 0.5 + 0.2 * yy, 0.55 * np.ones_like(xx)], axis=-1)
    image[(xx - 0.55) ** 2 + (yy - 0.35) ** 2 < 0.15**2] = (0.85, 0.1, 0.1)
    image[(abs(xx - 0.97) < 0.13) & (abs(yy - 0.68) < 0.13)] = (0.1, 0.2, 0.85)
    return Image.fromarray((255 * image).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50")
    parser.add_argument("--pretrained", default=None, help="e.g. openai (needs the weights)")
    parser.add_argument("--image", default=None, help="an image file (default: a synthetic one)")
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument(
        "--topk", type=float, default=None, help="count, or fraction if < 1 (default: per tower)"
    )
    parser.add_argument("--no-crop", action="store_true", help="squash instead of centre crop")
    parser.add_argument("--out", default="quickstart.png")
    args = parser.parse_args()
    prompts = args.prompt or ["a red circle", "a blue square"]

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=args.pretrained
    )
    model.eval()
    if args.no_crop:
        preprocess = no_crop(preprocess)
    tokenizer = open_clip.get_tokenizer(args.model)
    photo = Image.open(args.image).convert("RGB") if args.image else synthetic_photo()
    images = preprocess(photo).unsqueeze(0)
    text = encode_text(model, tokenizer, prompts)

    topk = None if args.topk is None else int(args.topk) if args.topk >= 1 else args.topk
    cam = GScoreCAM(model, default_layer(model))
    attr = cam.attribute(images, target=text[None], topk=topk, show_progress=True)  # (1, T, h, w)
    maps = to_photo(attr[0], photo.size, preprocess)  # (T, height, width), NaN: cropped away
    print(f"maps {tuple(attr.shape)} at layer resolution, {maps.shape} on the photo; peaks:")
    size = (4 * len(prompts), 4 * photo.height / photo.width + 0.4)
    fig, axes = plt.subplots(1, len(prompts), figsize=size, squeeze=False)
    for axis, prompt, saliency in zip(axes[0], prompts, maps, strict=True):
        y, x = np.unravel_index(np.nanargmax(saliency), saliency.shape)
        print(f"  {prompt!r}: (x={x}, y={y})")
        axis.imshow(overlay(photo, saliency))
        axis.set_title(prompt)
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
