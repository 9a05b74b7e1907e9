"""The evaluation runner behind ``gscorecam evaluate``: explain, score, resume, shard, report.

All prompts of one image are explained in one call (target ``(1, T, D)``), so gScoreCAM's
masked passes serve every prompt. Each finished image is appended as one JSON line to
``out_dir/results.jsonl`` (``results.rank{r}.jsonl`` under torchrun); images found in any of
these files are not computed again, provided the settings match those recorded in
``out_dir/run.json``. Under ``torchrun --nproc_per_node=K`` rank r takes every
K-th remaining image; after a barrier every rank reads all shards back (``out_dir`` must be
shared by the ranks, as on one machine or a shared filesystem), and rank 0 writes
``results.json`` (settings, scores, rows), ``results.md`` and ``results.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from captum_gscorecam.clip import CLIPSimilarity, encode_text
from captum_gscorecam.evaluation.datasets import Example, coco_examples, shapes_examples
from captum_gscorecam.evaluation.metrics import (
    box_accuracy,
    box_iou_curve,
    deletion_auc,
    energy_pointing,
    insertion_auc,
    mask_iou,
    pointing_game,
)
from captum_gscorecam.evaluation.report import markdown, object_buckets, summarize, write_chart
from captum_gscorecam.methods import METHODS, applicable_methods, check_method, explain_maps
from captum_gscorecam.shapes.coco import ANNOTATIONS
from captum_gscorecam.usage import UsageError, load_model, parse_topk
from captum_gscorecam.visualization import upsample

__all__ = [
    "MetricParams",
    "add_evaluate_parser",
    "check_resumable",
    "evaluate",
    "evaluate_command",
    "evaluate_image",
    "faithfulness",
    "init_distributed",
    "run_config",
    "score_map",
]

RUN_FILE = "run.json"
SHAPES_IMAGES = 100


@dataclass(frozen=True)
class MetricParams:
    """Metric settings, stored with the results.

    Attributes:
        tolerance: Pointing game margin in pixels.
        iou_threshold: IoU a predicted box needs for box accuracy.
        iou_thresholds: MaxBoxAccV2's IoU thresholds ``delta``.
        faithfulness_steps: Steps of the deletion and insertion curves; None skips them.
    """

    tolerance: int = 15
    iou_threshold: float = 0.5
    iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    faithfulness_steps: int | None = None


def run_config(
    run: Mapping[str, object], methods: Sequence[str], topk: int | float, params: MetricParams
) -> dict[str, object]:
    """The settings that make results comparable, as plain JSON data; a resumed run must match."""
    config = {"run": dict(run), "methods": list(methods), "topk": topk, "metrics": asdict(params)}
    return json.loads(json.dumps(config))


def evaluate(
    model: nn.Module,
    preprocess: Callable[[Image.Image], Tensor],
    tokenizer: Callable[[Sequence[str]], Tensor],
    examples: Sequence[Example],
    methods: Sequence[str],
    topk: int | float,
    out_dir: str | Path,
    run: Mapping[str, object] | None = None,
    params: MetricParams = MetricParams(),
    show_progress: bool = False,
) -> dict[str, object]:
    """Score every method on every example; resumable, and sharded under torch.distributed.

    Args:
        model: A CLIP model (open_clip's), on the device to run on, in eval mode.
        preprocess: The model's image preprocess (PIL image to ``(3, S, S)``).
        tokenizer: The model's tokenizer.
        examples: The examples, built at the model's input size S.
        methods: Keys of ``METHODS``.
        topk: gScoreCAM's channel count or fraction.
        out_dir: Where results go; results already there for the same settings are reused.
        run: What else identifies the run (model, dataset, ...), stored with the results.
        params: Metric settings.
        show_progress: A progress bar over images (rank 0).

    Returns:
        The content of ``results.json``: ``config``, ``images``, ``examples``, ``summary``
        (method -> metric -> value), ``by_objects`` and ``rows``, without their IoU curves,
        which stay in the JSON lines (on every rank).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods: unknown {unknown}; expected some of {list(METHODS)}")
    out_dir = Path(out_dir)
    config = run_config(run or {}, methods, topk, params)
    check_resumable(out_dir, config)
    rank, world = _rank_and_world()
    groups = _by_image(examples)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = _read_records(out_dir)
    if world > 1:
        dist.barrier()  # every rank has read the records before any rank appends
    if rank == 0:
        (out_dir / RUN_FILE).write_text(json.dumps(config, indent=1))
    shard = out_dir / ("results.jsonl" if world == 1 else f"results.rank{rank}.jsonl")
    todo = [image_id for image_id in groups if image_id not in done][rank::world]
    for image_id in tqdm(todo, desc="images", disable=not show_progress or rank != 0):
        rows = evaluate_image(model, preprocess, tokenizer, groups[image_id], methods, topk, params)
        _append(shard, {"image_id": image_id, "rows": rows})
    if world > 1:
        dist.barrier()  # every shard is complete on disk
    # The shards on disk are the gather: no large all_gather_object, which stalled at ~13 MB.
    records = _read_records(out_dir)
    rows = [row for image_id in groups for row in records[image_id]]
    results = {
        "config": config,
        "images": len(groups),
        "examples": len(examples),
        "summary": summarize(rows, methods, params.iou_thresholds),
        "by_objects": object_buckets(rows, methods, params.iou_thresholds),
        "rows": [{k: v for k, v in row.items() if k != "iou_curve"} for row in rows],
    }
    if rank == 0:
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
        (out_dir / "results.md").write_text(markdown(results))
        write_chart(results["summary"], out_dir / "results.png")
    return results


def evaluate_image(
    model: nn.Module,
    preprocess: Callable[[Image.Image], Tensor],
    tokenizer: Callable[[Sequence[str]], Tensor],
    group: Sequence[Example],
    methods: Sequence[str],
    topk: int | float,
    params: MetricParams,
) -> list[dict[str, object]]:
    """The rows of one image: its T prompts explained together by each method, then scored."""
    device = next(model.parameters()).device
    image = preprocess(Image.fromarray(group[0].load_image()))[None].to(device)
    size = group[0].size
    if tuple(image.shape[-2:]) != (size, size):
        raise ValueError(
            f"examples: built at {size} px, but the preprocess gives {tuple(image.shape[-2:])}; "
            "build them at the model's input size"
        )
    text = encode_text(model, tokenizer, [example.prompt for example in group])[None]
    rows = []
    for method in methods:
        start = time.perf_counter()
        maps = upsample(explain_maps(model, image, text, method, topk), (size, size))[0]
        seconds = time.perf_counter() - start
        for t, example in enumerate(group):
            row = {
                "image_id": example.image_id,
                "prompt": example.prompt,
                "n_objects": example.n_objects,
                "method": method,
                "seconds": seconds,
                **score_map(maps[t], example, params),
            }
            if params.faithfulness_steps is not None:
                row |= faithfulness(model, image[0], text[0, t], maps[t], params.faithfulness_steps)
            rows.append(row)
    return rows


def score_map(saliency: np.ndarray, example: Example, params: MetricParams) -> dict[str, object]:
    """The localization metrics of one ``(S, S)`` map against an example's ground truth."""
    hit, iou = box_accuracy(saliency, example.boxes, params.iou_threshold)
    return {
        "pointing": pointing_game(saliency, example.boxes, params.tolerance),
        "box_hit": bool(hit),
        "box_iou": iou,
        "energy": energy_pointing(saliency, example.boxes),
        "mask_iou": None if example.mask is None else mask_iou(saliency, example.mask),
        "iou_curve": box_iou_curve(saliency, example.boxes).tolist(),
    }


def faithfulness(
    model: nn.Module, image: Tensor, text: Tensor, saliency: np.ndarray, steps: int
) -> dict[str, float]:
    """Deletion and insertion AUC of ``logit_scale * cos(image, text)`` for one map."""
    similarity = CLIPSimilarity(model)

    @torch.no_grad()
    def score(batch: np.ndarray) -> np.ndarray:
        return similarity(torch.from_numpy(batch).to(image.device), text).cpu().numpy()

    pixels = image.cpu().numpy()
    return {
        "deletion": deletion_auc(score, pixels, saliency, steps=steps),
        "insertion": insertion_auc(score, pixels, saliency, steps=steps),
    }


def check_resumable(out_dir: Path, config: Mapping[str, object]) -> None:
    """Raise if ``out_dir`` holds results of a run with other settings."""
    path = Path(out_dir) / RUN_FILE
    if path.is_file() and json.loads(path.read_text()) != config:
        raise ValueError(
            f"out: {out_dir} holds results of a run with other settings (see {path}); "
            "choose another output folder"
        )


def _by_image(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Examples grouped by image, images in order of first appearance."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.image_id, []).append(example)
    return groups


def _read_records(out_dir: Path) -> dict[str, list[dict[str, object]]]:
    """Rows per finished image from every shard; a line cut short by a crash is ignored."""
    records: dict[str, list[dict[str, object]]] = {}
    for path in sorted(out_dir.glob("results*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records.setdefault(record["image_id"], record["rows"])
    return records


def _append(path: Path, record: Mapping[str, object]) -> None:
    """Append one JSON line, after a newline if a crash left the last line unfinished."""
    with path.open("a+b") as file:
        if file.seek(0, os.SEEK_END):
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                file.write(b"\n")
        file.write(json.dumps(record).encode() + b"\n")


def _rank_and_world() -> tuple[int, int]:
    """The rank of this process and the world size; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> str:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo otherwise).

    Returns this rank's device: ``cuda:LOCAL_RANK`` for a CUDA device, else ``device``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gscorecam evaluate`` on the command's subparsers."""
    p = subparsers.add_parser("evaluate", help="compare explainers on a localization benchmark")
    p.add_argument("--dataset", choices=["shapes", "coco"], default="shapes")
    p.add_argument("--root", default=None, help="COCO-format folder (--dataset coco)")
    p.add_argument("--template", default="{}", help='COCO prompt, e.g. "a photo of a {}"')
    p.add_argument("--model", default="shapes-rn", help="shapes-rn, shapes-vit or open_clip name")
    p.add_argument("--pretrained", default=None, help="open_clip tag (openai) or a checkpoint")
    p.add_argument(
        "--methods", type=_methods, default=None, help="comma-separated; default: all that apply"
    )
    p.add_argument("--topk", type=parse_topk, default=0.1, help="count, or fraction of channels")
    p.add_argument(
        "--limit", type=_positive, default=None, help=f"images (shapes: {SHAPES_IMAGES})"
    )
    p.add_argument("--objects", type=_objects, default=(3, 6), help="shapes per scene, e.g. 3-6")
    p.add_argument("--seed", type=int, default=10_000_000, help="first held-out scene seed")
    p.add_argument("--faithfulness", action="store_true", help="add deletion / insertion AUC")
    p.add_argument("--faithfulness-steps", type=_positive, default=20)
    p.add_argument("--tolerance", type=int, default=15, help="pointing game margin (px)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results", help="output folder")
    p.set_defaults(run=evaluate_command)
    return p


def evaluate_command(args: argparse.Namespace) -> None:
    """``gscorecam evaluate``: build the examples, run :func:`evaluate`, print the table."""
    params = MetricParams(
        tolerance=args.tolerance,
        faithfulness_steps=args.faithfulness_steps if args.faithfulness else None,
    )
    try:
        run = _run_description(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    device = init_distributed(args.device)
    try:
        model, preprocess, tokenizer = load_model(args.model, args.pretrained, device)
        methods = args.methods or applicable_methods(model)
        try:
            for method in methods:
                check_method(model, method)
            check_resumable(Path(args.out), run_config(run, methods, args.topk, params))
        except ValueError as error:
            raise UsageError(str(error)) from None
        examples = _examples(args, _input_size(model))
        results = evaluate(
            model,
            preprocess,
            tokenizer,
            examples,
            methods,
            args.topk,
            args.out,
            run=run,
            params=params,
            show_progress=True,
        )
        if _rank_and_world()[0] == 0:
            print(markdown(results))
            print(f"wrote {Path(args.out) / 'results.json'}, results.md, results.png")
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run_description(args: argparse.Namespace) -> dict[str, object]:
    """The dataset and model settings of the command, checked."""
    run: dict[str, object] = {"model": args.model, "pretrained": args.pretrained}
    if args.dataset == "shapes":
        return run | {"dataset": "shapes", "seed": args.seed, "objects": list(args.objects)}
    if args.root is None:
        raise ValueError("root: --dataset coco needs --root DIR")
    if not (Path(args.root) / ANNOTATIONS).is_file():
        raise ValueError(f"root: no {ANNOTATIONS} under {args.root}")
    if "{}" not in args.template:
        raise ValueError(f"template: expected a {{}} for the class name, got {args.template!r}")
    return run | {"dataset": "coco", "root": str(args.root), "template": args.template}


def _examples(args: argparse.Namespace, size: int) -> list[Example]:
    """The command's examples at the model's input size."""
    if args.dataset == "coco":
        return coco_examples(args.root, size, args.template, args.limit)
    seeds = range(args.seed, args.seed + (args.limit or SHAPES_IMAGES))
    return shapes_examples(seeds, args.objects, size)


def _input_size(model: nn.Module) -> int:
    """The side of the model's square input (open_clip towers, or a Hugging Face config)."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        size = model.config.vision_config.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


def _methods(text: str) -> list[str]:
    """``--methods a,b``: known method names, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown or text!r}; expected some of {','.join(METHODS)}"
        )
    return names


def _objects(text: str) -> tuple[int, int]:
    """``--objects 3-6`` or ``--objects 4``: a range of object counts within 1..6."""
    try:
        low, _, high = text.partition("-")
        bounds = int(low), int(high or low)
    except ValueError:
        bounds = (0, 0)
    if not 1 <= bounds[0] <= bounds[1] <= 6:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH within 1-6, got {text!r}")
    return bounds


def _positive(text: str) -> int:
    """A positive integer argument."""
    value = int(text) if text.strip().lstrip("+").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
