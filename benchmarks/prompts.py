"""T prompts on one image with the bundled (trained) models: masked passes and time vs T calls.

    python benchmarks/prompts.py --model shapes-rn --out benchmarks/results/prompts-rn.md

gScoreCAM scores the union of the prompts' top-k channel sets once per image and reads every
prompt's score off the same pass, so T prompts cost |union| masked passes instead of T k. How
large the union is depends on how much the prompts' gradient rankings agree, which random text
directions on random weights understate; here the prompts are the shapes vocabulary on a
trained model. Per held-out scene (``--objects`` objects): T = 1 (one object), 4 (the
objects) and 16 (the objects and 12 absent colour-shape pairs). Reported per T: masked passes
and wall time of one call vs T separate calls, relative to one prompt; and, as the way to fit
T prompts into twice one prompt's passes, the error of keeping ``ceil(2 k / T)`` channels per
prompt instead of k: total variation between the maps read as distributions (0 same, 1
disjoint) and the share of peaks moved, over the maps that the ReLU leaves non-zero.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import time
from datetime import date

import torch
from report import emit, total_variation

from captum_gscorecam import GScoreCAM, default_layer, encode_text
from captum_gscorecam.loading import load_clip
from captum_gscorecam.shapes import all_prompts, render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-rn")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--topk", type=float, default=0.1)
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, preprocess, tokenizer = load_clip(args.model)
    cam = GScoreCAM(model, default_layer(model))
    passes: list[int] = []
    handle = model.visual.register_forward_hook(lambda _m, a, _o: passes.append(len(a[0])))
    vocabulary = all_prompts()
    counts = sorted(args.prompts)
    totals = {
        t: dict.fromkeys(("one", "apart", "one_s", "apart_s", "error", "moved", "maps"), 0.0)
        for t in counts
    }

    def run(image: torch.Tensor, text: torch.Tensor, topk: float) -> tuple[torch.Tensor, int]:
        """Maps (T, h, w) and the masked passes they took."""
        passes.clear()
        maps = cam.attribute(image, target=text, topk=topk)[0]
        return maps, sum(passes) - 1  # minus the capture pass

    warm = render_scene(0, args.objects)
    run(preprocess(warm.image)[None], encode_text(model, tokenizer, warm.captions)[None], 0.1)
    for seed in range(10_000_000, 10_000_000 + args.scenes):
        scene = render_scene(seed, args.objects)
        image = preprocess(scene.image)[None]
        absent = [p for p in vocabulary if p not in scene.captions]
        ordered = scene.captions + random.Random(seed).sample(absent, len(absent))
        k = None
        for t in counts:
            total = totals[t]
            text = encode_text(model, tokenizer, ordered[:t])[None]
            start = time.perf_counter()
            exact, used = run(image, text, args.topk)
            total["one_s"] += time.perf_counter() - start
            total["one"] += used
            k = k or used  # one prompt's passes: k
            start = time.perf_counter()
            for i in range(t):
                total["apart"] += run(image, text[:, i : i + 1], args.topk)[1]
            total["apart_s"] += time.perf_counter() - start
            if t <= 2:  # twice one prompt's passes hold T <= 2 prompts uncut
                continue
            small, _ = run(image, text, math.ceil(2 * k / t))
            live = exact.flatten(1).sum(1) > 0  # maps the ReLU zeroed are left out
            total["error"] += float(total_variation(small, exact)[live].sum())
            moved = small.flatten(1).argmax(1) != exact.flatten(1).argmax(1)
            total["moved"] += int(moved[live].sum())
            total["maps"] += int(live.sum())
    handle.remove()

    one = totals[counts[0]]
    rows = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"{args.model}, {args.scenes} held-out scenes with {args.objects} objects, "
        f"topk = {args.topk} (k = {k} channels), default perturbations_per_eval",
        "",
        "| T prompts | passes: one call / 1 prompt | T calls / 1 prompt | time: one call / "
        "1 prompt | T calls / 1 prompt | ceil(2k/T) per prompt: map change (TV) | peak moved |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, total in totals.items():
        cut = (
            f"{total['error'] / total['maps']:.3f} | {total['moved'] / total['maps']:.3f}"
            if t > 2
            else "- | -"
        )
        rows.append(
            f"| {t} | {total['one'] / one['one']:.2f} | {total['apart'] / one['one']:.2f} "
            f"| {total['one_s'] / one['one_s']:.2f} | {total['apart_s'] / one['one_s']:.2f} "
            f"| {cut} |"
        )
    emit("\n".join(rows), args.out)


if __name__ == "__main__":
    main()
