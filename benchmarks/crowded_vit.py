"""Where gScoreCAM's ViT maps go wrong in crowded scenes: its channel ranking against the
masked scores, and where a missed peak lands.

    python benchmarks/crowded_vit.py --model shapes-vit --scenes 10 --out crowded-vit.md

For each scene (the held-out seeds of ``gscorecam evaluate --objects 1,2,3,4,6``), one
gScoreCAM pass with every channel kept records the class-token gradient ranking ``alpha_c`` and
the masked score ``s_c`` of every channel; ScoreCAM's map is ``relu(sum_c softmax(s)_c A_c)`` over
all channels (gScoreCAM at k = 100% is ScoreCAM) and gScoreCAM's at k = ``--topk`` the same
softmax over the channels of largest ``alpha`` only. Per object count it reports:

- how well the ranking predicts the masked scores (Spearman correlation of ``alpha`` and ``s``);
- the share of ScoreCAM's channel weight that falls on the channels gScoreCAM drops;
- the target share of the kept channels: the share of their positive activation inside the
  prompted object's box, weighted as each map weights them;
- the pointing game of both maps, and for gScoreCAM's misses where the peak lands: on another
  object of the prompted colour, of the prompted shape, another object, or the background.

It also draws a few 6-object scenes where gScoreCAM misses and ScoreCAM hits.
"""

from __future__ import annotations

import argparse
import platform
from collections import defaultdict
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from report import emit
from scipy.stats import spearmanr
from torch import Tensor, nn

import captum_gscorecam.engine as engine
from captum_gscorecam.cli.options import FIRST_HELD_OUT_SEED
from captum_gscorecam.clip import encode_text
from captum_gscorecam.evaluation.metrics import pointing_game
from captum_gscorecam.loading import load_model
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.shapes import render_scene
from captum_gscorecam.shapes.scenes import Scene
from captum_gscorecam.visualization import upsample

COUNTS = (1, 2, 3, 4, 6)
TOLERANCE = 15


def record(model: nn.Module, image: Tensor, text: Tensor) -> tuple[Tensor, ...]:
    """alpha ``(T, C)``, masked scores ``(T, C)``, activations ``(C, h, w)`` of one image."""
    seen = {}

    def capture(*args: object, **kwargs: object) -> object:
        seen["capture"] = out = engine_capture(*args, **kwargs)
        return out

    def masked(*args: object, **kwargs: object) -> object:
        seen["scores"] = out = engine_masked(*args, **kwargs)
        return out

    engine_capture, engine_masked = engine.capture, engine.masked_scores
    with (
        mock.patch.object(engine, "capture", capture),
        mock.patch.object(engine, "masked_scores", masked),
    ):
        full = explain_maps(model, image, text, "gscorecam", 1.0, precision="fp32")
    activations, importance = seen["capture"][:2]
    return importance[0], seen["scores"][0].T, activations[0].float(), full[0]


def weighted_map(scores: Tensor, activations: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``relu(sum_{c in keep} softmax(s)_c A_c)`` and the weights ``(C,)``."""
    logits = torch.where(keep, scores, torch.tensor(float("-inf")))
    weights = logits.softmax(0)
    return torch.relu(torch.einsum("c,chw->hw", weights, activations)), weights


def where(point: tuple[int, int], scene: Scene, index: int) -> str:
    """Where a missed peak lies: an object of the prompted colour or shape, another, or none."""
    x, y = point
    colour, shape = scene.objects[index]
    for i, (c, s) in enumerate(scene.objects):
        if i != index and pointing_game(_peak_map(x, y), scene.boxes[i][None], TOLERANCE):
            return "same colour" if c == colour else "same shape" if s == shape else "other object"
    return "background"


def _peak_map(x: int, y: int, size: int = 224) -> np.ndarray:
    peak = np.zeros((size, size))
    peak[y, x] = 1.0
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes-vit")
    parser.add_argument("--scenes", type=int, default=10, help="scenes per object count")
    parser.add_argument("--topk", type=float, default=0.5, help="gScoreCAM's k as a fraction")
    parser.add_argument("--figure", default=None, help="PNG of a few crowded misses")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, preprocess, tokenizer = load_model(args.model, None, "cpu")
    stats = defaultdict(lambda: defaultdict(list))
    shown = []
    seeds = range(FIRST_HELD_OUT_SEED, FIRST_HELD_OUT_SEED + len(COUNTS) * args.scenes)
    for seed in seeds:
        n = COUNTS[seed % len(COUNTS)]
        scene = render_scene(seed, n, 224)
        image = preprocess(Image.fromarray(scene.image))[None]
        text = encode_text(model, tokenizer, scene.captions)[None]
        alpha, scores, activations, full = record(model, image, text)
        k = int(np.ceil(args.topk * alpha.shape[1]))
        for t in range(len(scene.captions)):
            top = torch.zeros_like(alpha[t], dtype=torch.bool)
            top[alpha[t].topk(k).indices] = True
            score_map, score_w = weighted_map(scores[t], activations, torch.ones_like(top))
            assert torch.allclose(score_map, full[t], atol=1e-5)  # the reconstruction is exact
            g_map, g_w = weighted_map(scores[t], activations, top)
            box = scene.boxes[t]
            up = upsample(torch.stack([g_map, score_map])[None], (224, 224))[0]
            hits = [pointing_game(m, box[None], TOLERANCE) for m in up]
            # share of each channel's positive activation inside the prompted box (7 x 7 grid)
            grid = torch.nn.functional.interpolate(activations[None].relu(), (224, 224))[0]
            inside = grid[:, box[1] : box[3], box[0] : box[2]].sum((1, 2))
            share = inside / grid.sum((1, 2)).clamp_min(1e-12)
            s = stats[n]
            s["spearman"].append(spearmanr(alpha[t].numpy(), scores[t].numpy())[0])
            s["dropped weight"].append(float(score_w[~top].sum()))
            s["target share, gScoreCAM"].append(float((g_w * share).sum()))
            s["target share, ScoreCAM"].append(float((score_w * share).sum()))
            s["pointing, gScoreCAM"].append(hits[0])
            s["pointing, ScoreCAM"].append(hits[1])
            if not hits[0]:
                y, x = np.unravel_index(int(np.argmax(up[0])), up[0].shape)
                s["miss: " + where((x, y), scene, t)].append(1)
                if n == 6 and hits[1] and len(shown) < 3:
                    shown.append((scene, t, up[0], up[1], (x, y)))
    lines = [
        f"# Where gScoreCAM's ViT maps go wrong: {args.model}, {args.scenes} scenes per count",
        "",
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}.",
        "",
        f"gScoreCAM keeps the {args.topk:.0%} of channels with the largest class-token "
        "gradient; ScoreCAM (gScoreCAM at k = 100%) weights all channels by the softmax of "
        "their masked scores. Same seeds as `gscorecam evaluate --objects 1,2,3,4,6`.",
        "",
        "| objects | examples | Spearman(alpha, s) | ScoreCAM weight on dropped channels | "
        "target share gScoreCAM | target share ScoreCAM | pointing gScoreCAM | "
        "pointing ScoreCAM | misses: same colour / same shape / other / background |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in COUNTS:
        s = stats[n]
        misses = " / ".join(
            str(len(s[f"miss: {w}"]))
            for w in ("same colour", "same shape", "other object", "background")
        )
        lines.append(
            f"| {n} | {len(s['spearman'])} | {np.nanmean(s['spearman']):.2f} | "
            f"{np.mean(s['dropped weight']):.2f} | {np.mean(s['target share, gScoreCAM']):.2f} | "
            f"{np.mean(s['target share, ScoreCAM']):.2f} | "
            f"{np.mean(s['pointing, gScoreCAM']):.2f} | {np.mean(s['pointing, ScoreCAM']):.2f} | "
            f"{misses} |"
        )
    emit("\n".join(lines), args.out)
    if args.figure and shown:
        fig = Figure(figsize=(7.5, 2.6 * len(shown)))
        axes = fig.subplots(len(shown), 3, squeeze=False)
        for row, (scene, t, g, s, peak) in zip(axes, shown, strict=True):
            x0, y0, x1, y1 = scene.boxes[t]
            panels = (("scene", None), (f"gScoreCAM {args.topk:.0%}", g), ("ScoreCAM", s))
            for ax, (title, m) in zip(row, panels, strict=True):
                ax.imshow(scene.image)
                if m is not None:
                    ax.imshow(m, cmap="jet", alpha=0.5)
                ax.add_patch(_rect(x0, y0, x1, y1))
                if m is g:
                    ax.plot(*peak, "w+", markersize=12, mew=2)
                ax.set_title(f"{title}: '{scene.captions[t]}'" if m is None else title, fontsize=8)
                ax.axis("off")
        fig.suptitle(f"{args.model}: 6-object scenes gScoreCAM misses (+ its peak)", fontsize=9)
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=80)


def _rect(x0: int, y0: int, x1: int, y1: int) -> Rectangle:
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5)


if __name__ == "__main__":
    main()
