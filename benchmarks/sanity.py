"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018) on the shapes models.

    python benchmarks/sanity.py --scenes 100 --out benchmarks/results/sanity-shapes.md

Quantus's model-parameter randomisation test (``quantus.MPRT``, cascading, top layer first):
the image tower's layers are re-initialised one group at a time, from the top, each step keeping
the earlier ones random, and after each step every map is compared with the trained model's map
by Quantus's default similarity, the Spearman rank correlation of the absolute, max-normalised
maps. A method whose maps stay similar while the weights they explain are destroyed is not
explaining the model.

The model is a ``ZeroShotClassifier`` over each held-out scene's captions (seeds from 10,000,000,
as ``topk.py``), the target one of its objects (``seed mod objects``), one example per scene; the
maps come from the Quantus adapter (``captum_gscorecam.evaluation.quantus.explain_func``).
Only the image tower is randomised: the text embeddings are fixed inputs of the classifier.
Quantus re-initialises every module that has ``reset_parameters``, one module at a time and the
text tower included; here its generator is replaced by one over the image tower's stages
(ResNet: attention pool, layer4..layer1, stem; ViT: ln_post + projection, blocks 4..1, stem with
the class and position embeddings), same cascade and seed. A group is re-initialised with each
module's ``reset_parameters`` (``nn.MultiheadAttention``: ``_reset_parameters``; the default
PyTorch initialisation Quantus uses; BatchNorm's running statistics reset too) and its bare
parameters (class / position embeddings, projections) redrawn from ``N(0, std)`` of the trained
tensor. A map that is zero everywhere has no ranking: its similarity is NaN, left out of the
means and counted in the table. Per-scene results go to ``--work`` (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Iterator, Sequence
from copy import deepcopy
from datetime import date
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import quantus
import torch
from quantus.functions.similarity_func import correlation_spearman
from quantus.helpers.model.pytorch_model import PyTorchModel
from report import emit
from torch import nn

from captum_gscorecam import ZeroShotClassifier, encode_text
from captum_gscorecam.evaluation.quantus import explain_func
from captum_gscorecam.shapes import load_shapes_clip, render_scene

METHODS = {"gscorecam": "gScoreCAM", "scorecam": "ScoreCAM", "gradcam": "LayerGradCam"}
VIT_ONLY = {"hilacam": "HilaCAM"}
FIRST_SEED = 10_000_000
SEED = 42  # Quantus's default randomisation seed


def image_tower_groups(tower: str, depth: int) -> list[tuple[str, list[str]]]:
    """The image tower's layer groups, top first: ``(label, names)`` with names relative to
    the classifier (modules or parameters)."""
    visual = "similarity.model.visual"
    if tower == "rn":
        stages = [(f"layer{i}", [f"{visual}.layer{i}"]) for i in range(4, 0, -1)]
        stem = [f"{visual}.{name}{i}" for i in (1, 2, 3) for name in ("conv", "bn")]
        return [("attnpool", [f"{visual}.attnpool"]), *stages, ("stem", stem)]
    blocks = [
        (f"block {i + 1}", [f"{visual}.transformer.resblocks.{i}"]) for i in reversed(range(depth))
    ]
    stem = [f"{visual}.{name}" for name in ("conv1", "class_embedding", "positional_embedding")]
    head = [f"{visual}.ln_post", f"{visual}.proj"]
    return [("ln_post + proj", head), *blocks, ("stem + embeddings", [*stem, f"{visual}.ln_pre"])]


@torch.no_grad()
def randomise(model: nn.Module, names: Sequence[str]) -> None:
    """Re-initialise the named modules (their own initialisation) and parameters (N(0, std))."""
    for name in names:
        try:
            target: nn.Module | nn.Parameter = model.get_submodule(name)
        except AttributeError:
            target = model.get_parameter(name)
        if isinstance(target, nn.Parameter):
            target.normal_(0.0, float(target.std()))
            continue
        for module in target.modules():
            if isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
            elif callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        for param_name, param in target.named_parameters():
            owner = target.get_submodule(param_name.rpartition(".")[0])
            if not _initialised_by(owner):
                param.normal_(0.0, float(param.std()))


def _initialised_by(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or callable(
        getattr(module, "reset_parameters", None)
    )


def grouped_cascade(groups: list[tuple[str, list[str]]]) -> mock._patch:
    """Quantus's layer generator, over ``groups`` instead of every module."""

    def generator(
        self: PyTorchModel, order: str = "top_down", seed: int = SEED
    ) -> Iterator[tuple[str, nn.Module]]:
        if order != "top_down":
            raise ValueError(f"order: this benchmark cascades top_down, got {order!r}")
        random_model = deepcopy(self.model)
        for label, names in groups:
            torch.manual_seed(seed + 1)
            randomise(random_model, names)
            yield label, random_model

    return mock.patch.multiple(
        PyTorchModel,
        get_random_layer_generator=generator,
        random_layer_generator_length=property(lambda self: len(groups)),
    )


def explain_or_nan(
    model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object
) -> np.ndarray:
    """The adapter's maps, with an all-zero map (e.g. LayerGradCam's ReLU of negative evidence)
    set to NaN: Quantus refuses all-zero maps, and their rank correlation is undefined (the
    table counts them)."""
    maps = explain_func(model, inputs, targets, **kwargs)
    maps[~maps.reshape(len(maps), -1).any(axis=1)] = np.nan
    return maps


def spearman(a: np.ndarray, b: np.ndarray, batched: bool = True, **kwargs: object) -> np.ndarray:
    """Quantus's ``correlation_spearman`` row by row; NaN where a map is NaN (Quantus's batched
    form fails on a batch of one whose correlation is NaN)."""
    rows = zip(np.atleast_2d(a), np.atleast_2d(b), strict=True)
    return np.array(
        [
            correlation_spearman(x, y) if np.isfinite(x).all() and np.isfinite(y).all() else np.nan
            for x, y in rows
        ]
    )


def run_scene(
    model: nn.Module,
    preprocess: object,
    tokenizer: object,
    seed: int,
    objects: tuple[int, int],
    method: str,
    topk: float,
) -> dict[str, float]:
    """MPRT similarities ``{layer: spearman}`` of one method for one scene's example."""
    low, high = objects
    scene = render_scene(seed, low + seed % (high - low + 1), 224)
    clf = ZeroShotClassifier(model, encode_text(model, tokenizer, scene.captions))
    x = preprocess(scene.image)[None].numpy()
    y = np.array([seed % len(scene.captions)])
    metric = quantus.MPRT(
        similarity_func=spearman, layer_order="top_down", seed=SEED, disable_warnings=True
    )
    start = time.perf_counter()
    scores = metric(
        model=clf,
        x_batch=x,
        y_batch=y,
        explain_func=explain_or_nan,
        explain_func_kwargs={"method": method, "topk": topk},
        batch_size=len(x),
    )
    out = {layer: float(values[0]) for layer, values in scores.items()}
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rn,vit", help="shapes towers, comma-separated")
    parser.add_argument("--methods", default=None, help="default: all that apply")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first scene to run (split runs)")
    parser.add_argument("--objects", default="3-6", help="objects per scene, LOW-HIGH")
    parser.add_argument("--topk", type=float, default=0.1, help="gScoreCAM's share of channels")
    parser.add_argument("--work", default="sanity-work", help="per-scene results (resumable)")
    parser.add_argument("--table-only", action="store_true", help="report what --work holds")
    parser.add_argument("--out", default=None, help="the table (.md); the figure goes beside")
    args = parser.parse_args()
    torch.set_num_threads(1)
    low, _, high = args.objects.partition("-")
    objects = (int(low), int(high or low))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seeds = range(FIRST_SEED, FIRST_SEED + args.scenes)
    results = {}
    for tower in args.models.split(","):
        model, preprocess, tokenizer = load_shapes_clip(tower)
        methods = list(METHODS) + (list(VIT_ONLY) if tower == "vit" else [])
        groups = image_tower_groups(
            tower, len(model.visual.transformer.resblocks) if tower == "vit" else 0
        )
        path = work / f"shapes-{tower}.jsonl"
        done = _read(path)
        run = methods if args.methods is None else args.methods.split(",")
        with grouped_cascade(groups):
            for seed in [] if args.table_only else seeds[args.start :]:
                for method in run:
                    if str(seed) in done.get(method, {}):
                        continue
                    record = run_scene(
                        model, preprocess, tokenizer, seed, objects, method, args.topk
                    )
                    with path.open("a") as file:
                        file.write(
                            json.dumps({"seed": seed, "method": method, "scores": record}) + "\n"
                        )
                    print(f"shapes-{tower} {seed} {method}: {record['seconds']:.1f}s", flush=True)
        done = _read(path)  # with the scenes of other processes
        records = {
            method: [done[method][str(seed)] for seed in seeds if str(seed) in done.get(method, {})]
            for method in methods
        }
        results[tower] = (["original", *[label for label, _ in groups]], methods, records)
    table = _table(results, args)
    emit(table, args.out)
    if args.out:
        _figure(results, Path(args.out).with_suffix(".png"))


def _read(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {seed: {layer: similarity}}}`` from the per-scene lines."""
    done: dict[str, dict[str, dict[str, float]]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        scores = (
            {record["method"]: record["scores"]} if "method" in record else record["scores"]
        )  # one method per line, or (first runs) every method of the scene
        for method, layers in scores.items():
            done.setdefault(method, {})[str(record["seed"])] = layers
    return done


def _stats(records: list[dict], layer: str) -> tuple[float, float, int]:
    values = np.array([r[layer] for r in records], dtype=float)
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else math.nan
    sem = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
    return mean, sem, int(values.size - finite.size)


def _table(results: dict, args: argparse.Namespace) -> str:
    names = {**METHODS, **VIT_ONLY}
    rows = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}, "
        f"quantus {quantus.__version__}; held-out scenes (seeds from {FIRST_SEED}, "
        f"{args.objects} objects; n per method below), one example each; gScoreCAM k = "
        f"{args.topk:g} of the channels. Cells: mean Spearman rank correlation (Quantus MPRT: "
        "absolute, max-normalised maps) between the trained model's map and the map after "
        "randomising the image tower from the top down to the named layer (cascading); "
        "1 = unchanged, 0 = unrelated. +- is the standard error over scenes; NaN: maps that "
        "were zero everywhere (no ranking), left out of the mean.",
    ]
    for tower, (layers, methods, records) in results.items():
        rows += [
            "",
            f"shapes-{tower}",
            "",
            "| randomised down to | "
            + " | ".join(f"{names[m]} (n = {len(records[m])})" for m in methods)
            + " |",
            "|---|" + "---:|" * len(methods),
        ]
        for layer in layers:
            cells = []
            for method in methods:
                if not records[method]:
                    cells.append("-")
                    continue
                mean, sem, nan = _stats(records[method], layer)
                cells.append(f"{mean:.3f} +- {sem:.3f}" + (f" ({nan} NaN)" if nan else ""))
            rows.append(f"| {layer} | " + " | ".join(cells) + " |")
        seconds = [
            f"{names[m]} {np.mean([r['seconds'] for r in records[m]]):.1f}"
            for m in methods
            if records[m]
        ]
        rows += ["", "Seconds per scene (all layers, on a shared machine): " + ", ".join(seconds)]
    return "\n".join(rows)


def _figure(results: dict, path: Path) -> None:
    names = {**METHODS, **VIT_ONLY}
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (tower, (layers, methods, records)) in zip(axes[0], results.items(), strict=True):
        x = np.arange(len(layers))
        for method in methods:
            stats = [_stats(records[method], layer) for layer in layers]
            mean = np.array([s[0] for s in stats])
            sem = np.array([s[1] for s in stats])
            ax.plot(x, mean, marker="o", label=f"{names[method]} (n = {len(records[method])})")
            ax.fill_between(x, mean - sem, mean + sem, alpha=0.2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, layers, rotation=35, ha="right")
        ax.set_ylim(-0.5, 1.05)
        ax.set_ylabel("Spearman (trained vs randomised map)")
        ax.set_title(f"shapes-{tower}: cascading randomisation, top first")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
