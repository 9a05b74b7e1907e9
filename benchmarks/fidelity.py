"""How much a reduced-precision copy of the image tower changes gScoreCAM's and ScoreCAM's maps.

    python benchmarks/fidelity.py --model shapes-rn --out benchmarks/results/fidelity-rn.md

On the trained shapes models and the held-out scenes of benchmarks/topk.py (seeds from
10,000,000, ``--objects`` objects, every object's caption a prompt, all prompts of an image in
one call), each method runs once with float32 masked passes and once per ``--precisions``
(``precision=`` of ``attribute``). Per method and precision: the pointing game and MaxBoxAccV2
(the evaluation's metrics on the maps upsampled to the image) and their change from float32;
between each map and its float32 map, read as distributions over the layer's cells, the mean
and largest total variation (0 same, 1 disjoint) and the share of maps whose peak cell moved.
The verdict column: both metrics within ``--tolerance`` of float32.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import numpy as np
import torch
from PIL import Image
from report import emit, total_variation

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer, encode_text
from captum_gscorecam.evaluation import summarize
from captum_gscorecam.evaluation.datasets import shapes_examples
from captum_gscorecam.evaluation.scoring import MetricParams, score_map
from captum_gscorecam.loading import load_clip
from captum_gscorecam.precision import resolve_precision
from captum_gscorecam.towers import input_size
from captum_gscorecam.visualization import upsample

METHODS = {"gscorecam": GScoreCAM, "scorecam": ScoreCAM}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-rn", help="shapes-rn or shapes-vit")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--objects", default="3-6", help="objects per scene, LOW-HIGH")
    parser.add_argument("--topk", type=float, default=0.1, help="gScoreCAM's k, a fraction")
    parser.add_argument("--precisions", default="bf16", help="compared with fp32: bf16,fp16")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--every", type=int, default=50, help="write the table every N scenes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, preprocess, tokenizer = load_clip(args.model)
    layer = default_layer(model)
    size, _ = input_size(model)  # the shapes scenes are square
    low, _, high = args.objects.partition("-")
    seeds = range(10_000_000, 10_000_000 + args.scenes)
    examples = shapes_examples(seeds, (int(low), int(high or low)), size)
    precisions = ["fp32", *args.precisions.split(",")]
    for precision in precisions:
        resolve_precision(precision, "cpu")  # a bad name fails before the long run
    # one object per method and precision: each keeps its own copy of the tower (one object
    # would remake, and recompile, its copy at every change of precision)
    cams = {
        (method, precision): build(model, layer)
        for method, build in METHODS.items()
        for precision in precisions
    }
    params = MetricParams()
    rows: list[dict[str, object]] = []
    change: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    groups: dict[str, list] = {}
    for example in examples:
        groups.setdefault(example.image_id, []).append(example)
    for done, group in enumerate(groups.values(), start=1):
        image = preprocess(Image.fromarray(group[0].load_image()))[None]
        text = encode_text(model, tokenizer, [example.prompt for example in group])[None]
        for method in METHODS:
            topk = {"topk": args.topk} if method == "gscorecam" else {}
            reference = None
            for precision in precisions:
                start = time.process_time()
                cam = cams[method, precision]
                maps = cam.attribute(image, target=text, precision=precision, **topk)[0]
                seconds = time.process_time() - start
                if reference is None:
                    reference = maps
                else:
                    live = reference.flatten(1).sum(1) > 0  # maps the ReLU zeroed are left out
                    tv = total_variation(maps, reference)[live]
                    moved = maps.flatten(1).argmax(1) != reference.flatten(1).argmax(1)
                    change.setdefault((method, precision), []).extend(
                        zip(tv.tolist(), moved[live].tolist(), strict=True)
                    )
                pixels = upsample(maps[None], (size, size))[0]
                for saliency, example in zip(pixels, group, strict=True):
                    row = score_map(saliency, example, params)
                    rows.append(
                        row | {"method": f"{method} {precision}", "image_id": example.image_id}
                        | {"seconds": seconds}
                    )  # fmt: skip
        if done % args.every == 0 or done == len(groups):  # a long run reports as it goes
            keys = [f"{method} {precision}" for method in METHODS for precision in precisions]
            summary = summarize(rows, keys, params.iou_thresholds)
            examples_done = sum(len(g) for g in list(groups.values())[:done])
            emit(table(args, summary, change, precisions, done, examples_done), args.out)


def table(
    args: argparse.Namespace,
    summary: dict[str, dict[str, float | int | None]],
    change: dict[tuple[str, str], list[tuple[float, bool]]],
    precisions: list[str],
    scenes: int,
    n_examples: int,
) -> str:
    """The result as Markdown: one row per method and precision."""
    lines = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"{args.model}, {scenes} held-out scenes with {args.objects} objects "
        f"({n_examples} examples), gScoreCAM k = {args.topk:g} of the channels",
        "",
        "| method | masked passes | pointing game | change | MaxBoxAccV2 | change | "
        f"within {args.tolerance:g} | mean TV | max TV | peak moved | CPU s / image |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        base = summary[f"{method} fp32"]
        for precision in precisions:
            scores = summary[f"{method} {precision}"]
            cells = [method, precision, f"{scores['pointing']:.3f}", "-"]
            cells += [f"{scores['max_box_acc_v2']:.3f}", "-", "-", "-", "-", "-"]
            if precision != "fp32":
                pointing = scores["pointing"] - base["pointing"]
                box = scores["max_box_acc_v2"] - base["max_box_acc_v2"]
                tv, moved = np.asarray(change[method, precision], dtype=float).T
                within = max(abs(pointing), abs(box)) <= args.tolerance
                cells[3], cells[5] = f"{pointing:+.3f}", f"{box:+.3f}"
                cells[6:] = ["yes" if within else "**no**", f"{tv.mean():.4f}", f"{tv.max():.4f}"]
                cells.append(f"{moved.mean():.3f}")
            cells.append(f"{scores['seconds_per_image']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
