"""The ``gscorecam`` command: ``demo`` (offline, shapes world) and ``explain`` (any image)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from captum_gscorecam.clip import encode_text
from captum_gscorecam.evaluation.runner import add_evaluate_parser
from captum_gscorecam.methods import METHODS, check_method, explain_maps
from captum_gscorecam.usage import UsageError, load_model, parse_topk
from captum_gscorecam.visualization import show_maps, to_image, upsample

DEMO_METHODS = {name: METHODS[name] for name in ("gscorecam", "scorecam", "gradcam")}


def demo(args: argparse.Namespace) -> None:
    """Explain every object of a few held-out shapes scenes with three methods; one figure."""
    from captum_gscorecam.shapes import render_scene

    model, preprocess, tokenizer = load_model(f"shapes-{args.tower}", None, args.device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    scenes = [render_scene(args.seed + i, args.objects, size) for i in range(args.scenes)]
    images = torch.stack([preprocess(scene.image) for scene in scenes]).to(args.device)
    text = torch.stack([encode_text(model, tokenizer, scene.captions) for scene in scenes])
    columns, hits, seconds = [], {}, {}
    for method, label in DEMO_METHODS.items():
        start = time.perf_counter()
        maps = upsample(explain_maps(model, images, text, method, args.topk), (size, size))
        seconds[label] = time.perf_counter() - start
        peaks = maps.reshape(*maps.shape[:2], -1).argmax(-1)
        masks = np.stack([scene.masks.reshape(len(scene.captions), -1) for scene in scenes])
        hits[label] = np.take_along_axis(masks, peaks[..., None], axis=-1).mean()
        columns.append(maps)
    rows = [(i, t) for i, scene in enumerate(scenes) for t in range(len(scene.captions))]
    fig = show_maps(
        [to_image(images[i].cpu()) for i, _ in rows],
        [[maps[i, t] for maps in columns] for i, t in rows],
        [scenes[i].captions[t] for i, t in rows],
        list(DEMO_METHODS.values()),
    )
    fig.savefig(args.out, dpi=100)
    print(f"shapes-{args.tower}: {args.scenes} held-out scenes x {args.objects} objects")
    print(f"{'method':<14}{'peak inside the object':>24}{'time (s)':>10}")
    for label in DEMO_METHODS.values():
        print(f"{label:<14}{hits[label]:>24.2f}{seconds[label]:>10.1f}")
    print(f"wrote {args.out}")


def explain(args: argparse.Namespace) -> None:
    """Explain one image file against each prompt; one overlay per prompt."""
    if not args.prompt:
        raise UsageError("prompt: give at least one --prompt TEXT")
    path = Path(args.image)
    if not path.is_file():
        raise UsageError(f"image: no such file: {path}")
    try:
        photo = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise UsageError(f"image: not an image file: {path}") from None
    model, preprocess, tokenizer = load_model(args.model, args.pretrained, args.device)
    try:
        check_method(model, args.method)
    except ValueError as error:
        raise UsageError(str(error)) from None
    images = preprocess(photo).unsqueeze(0).to(args.device)
    text = encode_text(model, tokenizer, args.prompt)[None]
    maps = explain_maps(model, images, text, args.method, args.topk, show_progress=True)
    up = upsample(maps, tuple(images.shape[-2:]))[0]
    fig = show_maps(
        [to_image(images[0].cpu(), **_normalisation(preprocess))] * len(args.prompt),
        [[m] for m in up],
        args.prompt,
        [METHODS[args.method]],
    )
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


def _normalisation(preprocess: object) -> dict[str, Sequence[float]]:
    """The mean and std of a torchvision preprocess; none (CLIP's) for other callables."""
    for step in getattr(preprocess, "transforms", []):
        if hasattr(step, "mean") and hasattr(step, "std"):
            return {"mean": step.mean, "std": step.std}
    return {}


def parser() -> argparse.ArgumentParser:
    """The ``gscorecam`` argument parser."""
    root = argparse.ArgumentParser(prog="gscorecam", description="What is CLIP looking at?")
    sub = root.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="offline demo on held-out shapes scenes")
    d.add_argument("--out", default="demo.png")
    d.add_argument("--tower", choices=["rn", "vit"], default="rn")
    d.add_argument("--scenes", type=int, default=3)
    d.add_argument("--objects", type=int, default=3, choices=range(1, 7), metavar="1..6")
    d.add_argument("--seed", type=int, default=10_000_000, help="first held-out scene seed")
    d.add_argument("--topk", type=parse_topk, default=0.1, help="count, or fraction of channels")
    d.add_argument("--device", default="cpu")
    d.set_defaults(run=demo)
    e = sub.add_parser("explain", help="explain an image file against prompts")
    e.add_argument("image")
    e.add_argument("--prompt", action="append", default=[])
    e.add_argument("--model", default="shapes-rn", help="shapes-rn, shapes-vit or open_clip name")
    e.add_argument("--pretrained", default=None, help="open_clip tag (openai) or a checkpoint")
    e.add_argument("--method", choices=list(METHODS), default="gscorecam")
    e.add_argument("--topk", type=parse_topk, default=300, help="count, or fraction of channels")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", default="out.png")
    e.set_defaults(run=explain)
    add_evaluate_parser(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a usage error prints one line and returns 2."""
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as error:
        print(f"gscorecam {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
