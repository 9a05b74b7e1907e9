"""gScoreCAM's opt-in early stop: masked passes saved and map error against exact gScoreCAM.

    python benchmarks/early_stop.py --model shapes-rn --out benchmarks/results/early-stop-rn.md

On held-out shapes scenes with the bundled (trained) models, every object's prompt is explained
by exact gScoreCAM (k = 10% of channels) and with ``early_stop`` at a few tolerances. Reported
per tolerance: masked passes relative to exact, the relative L1 error of the map, the share of
maps whose peak cell moves, and wall time.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch
from report import emit

from captum_gscorecam import GScoreCAM, default_layer, encode_text
from captum_gscorecam.loading import load_clip
from captum_gscorecam.shapes import render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-rn")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--topk", type=float, default=0.1)
    parser.add_argument("--ppe", type=int, default=8, help="perturbations_per_eval (chunk)")
    parser.add_argument("--tolerances", default="0.001,0.01,0.05")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, preprocess, tokenizer = load_clip(args.model)
    cam = GScoreCAM(model, default_layer(model))
    passes = []
    handle = model.visual.register_forward_hook(lambda _m, a, _o: passes.append(len(a[0])))
    tolerances = [None] + [float(t) for t in args.tolerances.split(",")]
    totals = {t: {"passes": 0, "seconds": 0.0, "error": 0.0, "moved": 0} for t in tolerances}
    maps_count = 0
    for seed in range(10_000_000, 10_000_000 + args.scenes):
        scene = render_scene(seed, args.objects)
        image = preprocess(scene.image)[None]
        text = encode_text(model, tokenizer, scene.captions)[None]
        results = {}
        for tolerance in tolerances:
            passes.clear()
            start = time.perf_counter()
            results[tolerance] = cam.attribute(
                image,
                target=text,
                topk=args.topk,
                perturbations_per_eval=args.ppe,
                early_stop=tolerance,
            )[0]
            totals[tolerance]["seconds"] += time.perf_counter() - start
            totals[tolerance]["passes"] += sum(passes) - 1  # minus the capture pass
        exact = results[None]
        for tolerance, maps in results.items():
            diff = (maps - exact).abs().sum(dim=(1, 2)) / exact.abs().sum(dim=(1, 2)).clamp_min(
                1e-12
            )
            totals[tolerance]["error"] += float(diff.sum())
            moved = maps.flatten(1).argmax(1) != exact.flatten(1).argmax(1)
            totals[tolerance]["moved"] += int(moved.sum())
        maps_count += exact.shape[0]
    handle.remove()

    exact = totals[None]
    rows = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"{args.model}, {args.scenes} held-out scenes x {args.objects} prompts "
        f"({maps_count} maps), topk = {args.topk}, perturbations_per_eval = {args.ppe}",
        "",
        "| early_stop | masked passes vs exact | wall time vs exact | mean relative L1 error "
        "| peak cell moved |",
        "|---|---:|---:|---:|---:|",
    ]
    for tolerance, total in totals.items():
        name = "None (exact)" if tolerance is None else f"{tolerance:g}"
        rows.append(
            f"| {name} | {total['passes'] / exact['passes']:.2f} "
            f"| {total['seconds'] / exact['seconds']:.2f} | {total['error'] / maps_count:.4f} "
            f"| {total['moved'] / maps_count:.3f} |"
        )
    text_out = "\n".join(rows)
    emit(text_out, args.out)


if __name__ == "__main__":
    main()
