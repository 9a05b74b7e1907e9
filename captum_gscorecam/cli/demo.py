"""``gscorecam demo``: the registry's demo methods on held-out scenes of a bundled shapes model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from captum_gscorecam.cli.options import (
    FIRST_HELD_OUT_SEED,
    add_device_option,
    add_precision_option,
    add_topk_option,
    count_arg,
    figure_arg,
    non_negative_arg,
    output_errors,
    usage_errors,
    wrapped,
)
from captum_gscorecam.registry import SPECS

__all__ = ["add_parser", "run"]


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the ``gscorecam`` subcommands."""
    labels = [spec.label for spec in SPECS.values() if spec.demo]
    d = subcommands.add_parser(
        "demo",
        help="offline demo on held-out shapes scenes",
        description=wrapped(
            f"Explain held-out scenes of a bundled shapes model with {', '.join(labels)} (those "
            "that apply to the tower: HilaCAM on the ViT); writes one figure and prints each "
            "method's pointing game (how often its peak falls inside the prompted object's box, "
            "as gscorecam evaluate scores it)."
        ),
    )
    d.add_argument("--out", type=figure_arg, default=Path("demo.png"), help="figure file")
    d.add_argument("--tower", choices=["rn", "vit"], default="rn", help="bundled model")
    d.add_argument("--scenes", type=count_arg, default=3, help="held-out scenes")
    d.add_argument(
        "--objects", type=int, default=3, choices=range(1, 7), metavar="1..6", help="per scene"
    )
    d.add_argument(
        "--seed",
        type=non_negative_arg,
        default=FIRST_HELD_OUT_SEED,
        help="first held-out scene seed",
    )
    add_topk_option(d)
    add_device_option(d)
    add_precision_option(d)
    d.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Explain every object of a few held-out shapes scenes with the registry's demo methods
    that apply to the tower; one figure and each method's pointing game.
    """
    import numpy as np
    import torch

    from captum_gscorecam.clip import encode_text
    from captum_gscorecam.evaluation.metrics import pointing_game
    from captum_gscorecam.evaluation.scoring import MetricParams
    from captum_gscorecam.loading import load_model, resolve_device
    from captum_gscorecam.methods import applicable_methods, comparison_provenance, explain_maps
    from captum_gscorecam.outputs import check_outputs, write_figure
    from captum_gscorecam.shapes import render_scene
    from captum_gscorecam.towers import input_size
    from captum_gscorecam.visualization import show_maps, to_image, upsample

    with output_errors("--out"):
        check_outputs([args.out])
    with usage_errors():
        device = resolve_device(args.device)
        model, preprocess, tokenizer = load_model(f"shapes-{args.tower}", None, device)
    methods = [method for method in applicable_methods(model) if SPECS[method].demo]
    size = input_size(model)[0]
    scenes = [render_scene(args.seed + i, args.objects, size) for i in range(args.scenes)]
    images = torch.stack([preprocess(scene.image) for scene in scenes]).to(device)
    text = torch.stack([encode_text(model, tokenizer, scene.captions) for scene in scenes])
    tolerance = MetricParams().tolerance  # gscorecam evaluate's pointing game
    columns, hits, seconds = [], {}, {}
    for method in methods:
        start = time.perf_counter()
        maps = explain_maps(model, images, text, method, args.topk, precision=args.precision)
        maps = upsample(maps, (size, size))
        seconds[method] = time.perf_counter() - start
        hits[method] = np.mean(
            [
                pointing_game(maps[i, t], scene.boxes[t], tolerance)
                for i, scene in enumerate(scenes)
                for t in range(len(scene.captions))
            ]
        )
        columns.append(_relative(maps))
    provenance = comparison_provenance(
        model, images, methods, name=f"shapes-{args.tower}", topk=args.topk,
        precision=args.precision,
    )  # fmt: skip
    print(provenance.line())
    rows = [(i, t) for i, scene in enumerate(scenes) for t in range(len(scene.captions))]
    fig = show_maps(
        [to_image(images[i].cpu()) for i, _ in rows],
        [[maps[i, t] for maps in columns] for i, t in rows],
        [scenes[i].captions[t] for i, t in rows],
        [SPECS[method].label for method in methods],
        vmin=0.0,
        vmax=1.0,
        colorbar_label="fraction of the method's largest value on the scene (one scale for "
        "the scene's prompts)",
        title=provenance.line(),
        warnings=provenance.warnings(shapes_scene=True),
    )
    write_figure(args.out, fig, dpi=100)
    print(f"shapes-{args.tower}: {args.scenes} held-out scenes x {args.objects} objects")
    print(
        f"pointing game: the share of maps with their peak inside the object's box or within "
        f"{tolerance} px of it (as gscorecam evaluate scores it)"
    )
    print(f"{'method':<14}{'pointing game':>15}{'time (s)':>10}")
    for method in methods:
        print(f"{SPECS[method].label:<14}{hits[method]:>15.2f}{seconds[method]:>10.1f}")
    print(f"wrote {args.out}")


def _relative(maps: Any) -> Any:
    """Maps ``(N, T, H, W)`` over each scene's largest value, so that a scene's prompts share one
    colour scale and the figure's colour bar (0 to 1) holds for every method.
    """
    import numpy as np

    peaks = maps.reshape(len(maps), -1).max(axis=1)[:, None, None, None]
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
