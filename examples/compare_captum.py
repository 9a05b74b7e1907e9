"""gScoreCAM beside Captum's LayerGradCam and Occlusion: same model, image, prompt and score.

Captum's methods run through ``CLIPSimilarity``, so all three explain the same number:
``logit_scale * cos(image embedding, text embedding)``.

    python examples/compare_captum.py --out compare.png
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")

import open_clip
import torch
from captum.attr import LayerGradCam, Occlusion
from PIL import Image
from quickstart import synthetic_photo

from captum_gscorecam import (
    CLIPSimilarity,
    GScoreCAM,
    default_layer,
    encode_text,
    gradcam_layer,
    grid_tap,
)
from captum_gscorecam.visualization import show_maps, to_image, upsample


def gradcam(
    model: torch.nn.Module, similarity: CLIPSimilarity, images: torch.Tensor, text: torch.Tensor
) -> torch.Tensor:
    """Captum's LayerGradCam at ``gradcam_layer(model)``, as a grid on ViT towers too."""
    with grid_tap(model, gradcam_layer(model)) as layer:
        return LayerGradCam(similarity, layer).attribute(
            images, additional_forward_args=(text,), relu_attributions=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50")
    parser.add_argument("--pretrained", default=None, help="e.g. openai (needs the weights)")
    parser.add_argument("--image", default=None, help="an image file (default: a synthetic one)")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--out", default="compare.png")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=args.pretrained
    )
    model.eval()
    photo = Image.open(args.image).convert("RGB") if args.image else synthetic_photo()
    images = preprocess(photo).unsqueeze(0)
    text = encode_text(model, open_clip.get_tokenizer(args.model), [args.prompt])
    layer = default_layer(model)
    similarity = CLIPSimilarity(model)
    size = images.shape[-2:]
    window = size[0] // 7

    methods = {
        "gScoreCAM": lambda: GScoreCAM(model, layer).attribute(images, target=text),
        "LayerGradCam": lambda: gradcam(model, similarity, images, text),
        "Occlusion": lambda: (
            Occlusion(similarity)
            .attribute(
                images,
                sliding_window_shapes=(3, window, window),
                strides=(3, window // 2, window // 2),
                additional_forward_args=(text,),
                perturbations_per_eval=16,
            )
            .sum(dim=1, keepdim=True)
        ),
    }
    maps = []
    for name, run in methods.items():
        start = time.perf_counter()
        attr = run()
        print(f"{name:>12}: {time.perf_counter() - start:6.2f} s, map {tuple(attr.shape)}")
        maps.append(upsample(attr, size)[0, 0])
    fig = show_maps([to_image(images[0])], [maps], [args.prompt], list(methods))
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
