"""gScoreCAM's localization as a function of k, the number of channels kept.

    python benchmarks/topk.py --model shapes-vit --scenes 500 --random --out topk-vit.md

Runs the localization benchmark (``captum_gscorecam.evaluation.evaluate``, gScoreCAM only) on the
same held-out shapes scenes once per k; k = all channels is ScoreCAM. Per k: the pointing game,
box accuracy, MaxBoxAccV2, energy-based pointing, mask IoU and wall time per image. Each k's
per-example results go to ``--work/k<k>`` (``random-k<k>`` for the control); an interrupted
sweep resumes.

``--random`` adds the control: the same k channels drawn at random (seeded) in place of the k of
largest mean gradient, everything else unchanged, which shows what the gradient ranking is
worth. A resumed random run draws afresh for the images it has left.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import date
from pathlib import Path
from unittest import mock

import torch
from report import emit, layer_channels

from captum_gscorecam import default_layer
from captum_gscorecam.evaluation import evaluate
from captum_gscorecam.evaluation.datasets import shapes_examples
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.loading import load_clip
from captum_gscorecam.towers import input_size

METRICS = {
    "pointing": "pointing game",
    "box_accuracy": "box accuracy",
    "max_box_acc_v2": "MaxBoxAccV2",
    "energy": "energy",
    "mask_iou": "mask IoU",
    "seconds_per_image": "s / image",
}


@contextmanager
def random_ranking(seed: int = 0) -> Iterator[None]:
    """gScoreCAM ranks channels by seeded random numbers in place of their mean gradient."""
    generator = torch.Generator().manual_seed(seed)

    def importance(self: LayerGrid, grad: torch.Tensor, n: int) -> torch.Tensor:
        channels = self.activations(grad, n).shape[1]
        return torch.rand(n, channels, generator=generator).to(grad.device)

    with mock.patch.object(LayerGrid, "importance", importance):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-rn", help="shapes-rn or shapes-vit")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--objects", default="3-6", help="objects per scene, LOW-HIGH")
    parser.add_argument("--topk", default="0.02,0.05,0.1,0.25,0.5,1.0", help="fractions of C")
    parser.add_argument("--random", action="store_true", help="add random channel choice")
    parser.add_argument("--work", default=None, help="per-k results (default: a temp folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, preprocess, tokenizer = load_clip(args.model)
    size, _ = input_size(model)  # the shapes scenes are square
    channels = layer_channels(model, default_layer(model), torch.zeros(1, 3, size, size))
    low, _, high = args.objects.partition("-")
    objects = (int(low), int(high or low))
    seeds = range(10_000_000, 10_000_000 + args.scenes)
    examples = shapes_examples(seeds, objects, size)
    fractions = [float(f) for f in args.topk.split(",")]
    run = {"model": args.model, "dataset": "shapes", "seed": seeds[0], "objects": list(objects)}

    rankings = ["gradient", "random"] if args.random else ["gradient"]
    summaries = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        for ranking in rankings:
            for fraction in fractions:
                if ranking == "random" and fraction == 1:
                    continue  # every channel: the ranking does not matter
                name = f"k{fraction:g}" if ranking == "gradient" else f"random-k{fraction:g}"
                with random_ranking() if ranking == "random" else nullcontext():
                    results = evaluate(
                        model, preprocess, tokenizer, examples, ["gscorecam"], fraction,
                        work / name, run=run | {"ranking": ranking}, show_progress=True,
                    )  # fmt: skip
                summaries[ranking, fraction] = results["summary"]["gscorecam"]

    rows = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"{args.model} ({channels} channels), {args.scenes} held-out scenes with {args.objects} "
        f"objects ({len(examples)} examples); k = all channels is ScoreCAM",
        "",
        "| channels ranked by | k | channels | " + " | ".join(METRICS.values()) + " |",
        "|---|---:|---:|" + "---:|" * len(METRICS),
    ]
    for (ranking, fraction), summary in summaries.items():
        cells = [f"{summary[key]:.3f}" for key in METRICS]
        k = math.ceil(fraction * channels)
        rows.append(f"| {ranking} | {fraction:g} | {k} | " + " | ".join(cells) + " |")
    emit("\n".join(rows), args.out)


if __name__ == "__main__":
    main()
