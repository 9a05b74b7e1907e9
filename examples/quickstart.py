"""Explain a CLIP image-text match with gScoreCAM and save the maps as a figure.

Offline by default: an open_clip RN50 with random weights (the architecture is real, the maps
are not meaningful). With network access use real weights: ``--pretrained openai``.

    python examples/quickstart.py --out quickstart.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import numpy as np
import open_clip
import torch
from PIL import Image

from captum_gscorecam import GScoreCAM, default_layer, encode_text
from captum_gscorecam.visualization import show_maps, to_image, upsample


def synthetic_photo(size: int = 224) -> Image.Image:
    """A red disc and a blue square on a grey gradient, so the example needs no download."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.2 * xx, 0.5 + 0.2 * yy, 0.55 * np.ones_like(xx)], axis=-1)
    image[(xx - 0.3) ** 2 + (yy - 0.35) ** 2 < 0.15**2] = (0.85, 0.1, 0.1)
    image[(abs(xx - 0.72) < 0.13) & (abs(yy - 0.68) < 0.13)] = (0.1, 0.2, 0.85)
    return Image.fromarray((255 * image).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50")
    parser.add_argument("--pretrained", default=None, help="e.g. openai (needs the weights)")
    parser.add_argument("--image", default=None, help="an image file (default: a synthetic one)")
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--topk", type=float, default=0.1, help="count, or fraction if < 1")
    parser.add_argument("--out", default="quickstart.png")
    args = parser.parse_args()
    prompts = args.prompt or ["a red circle", "a blue square"]

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=args.pretrained
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    photo = Image.open(args.image).convert("RGB") if args.image else synthetic_photo()
    images = preprocess(photo).unsqueeze(0)
    text = encode_text(model, tokenizer, prompts)

    topk = int(args.topk) if args.topk >= 1 else args.topk
    cam = GScoreCAM(model, default_layer(model))
    maps = cam.attribute(images, target=text[None], topk=topk, show_progress=True)  # (1, T, h, w)
    print(f"maps {tuple(maps.shape)} at layer resolution; peak per prompt:")
    up = upsample(maps, images.shape[-2:])[0]
    for prompt, saliency in zip(prompts, up, strict=True):
        y, x = np.unravel_index(saliency.argmax(), saliency.shape)
        print(f"  {prompt!r}: (x={x}, y={y})")
    image = to_image(images[0])
    fig = show_maps([image] * len(prompts), [[m] for m in up], prompts, ["gScoreCAM"])
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
