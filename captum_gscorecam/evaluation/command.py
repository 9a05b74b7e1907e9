"""``gscorecam evaluate``: its arguments, checked at parse time, and the command.

Nothing heavy is imported here until an argument needs it or the command runs, so the
``gscorecam`` parser (and ``--help``) stays fast. Every argument is checked before a model
loads and before anything is written: a bad value is one line naming the option, exit 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captum_gscorecam.evaluation.coco import CocoImage
    from captum_gscorecam.evaluation.datasets import Example

__all__ = ["add_evaluate_parser", "evaluate_command"]

SHAPES_IMAGES = 100


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gscorecam evaluate`` on the command's subparsers.

    Every argument is checked here or before the model loads; nothing is written before.
    """
    p = subparsers.add_parser(
        "evaluate",
        help="compare explainers on a localization benchmark",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=["shapes", "coco"], default="shapes")
    p.add_argument(
        "--root",
        default=None,
        help="COCO folder: annotations/instances.json + images/, or COCO's "
        "annotations/instances_val2017.json + val2017/",
    )
    p.add_argument("--annotations", default=None, help="COCO instances JSON (default: from --root)")
    p.add_argument("--images", default=None, help="COCO image folder (default: from --root)")
    p.add_argument(
        "--template", type=_template, default="{}", help='COCO prompt, e.g. "a photo of a {}"'
    )
    p.add_argument("--model", default="shapes-rn", help="shapes-rn, shapes-vit or open_clip name")
    p.add_argument(
        "--pretrained",
        default=None,
        help="open_clip tag (openai) or a checkpoint; not for shapes-*",
    )
    p.add_argument(
        "--methods", type=_methods, default=None, help="comma-separated; default: all that apply"
    )
    p.add_argument(
        "--topk",
        type=_topk,
        default=None,
        help="gScoreCAM's channel count (>= 1) or fraction (0, 1]; default: 10%% of the "
        "channels on conv towers, 50%% on ViT token layers",
    )
    p.add_argument(
        "--limit", type=_positive, default=None, help=f"images (shapes: {SHAPES_IMAGES})"
    )
    p.add_argument("--objects", type=_objects, default=(3, 6), help="shapes per scene, e.g. 3-6")
    p.add_argument(
        "--seed", type=_non_negative, default=10_000_000, help="first held-out scene seed"
    )
    p.add_argument("--faithfulness", action="store_true", help="add deletion / insertion AUC")
    p.add_argument("--faithfulness-steps", type=_positive, default=20)
    p.add_argument("--tolerance", type=_non_negative, default=15, help="pointing game margin (px)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--out", type=_out_dir, default="results", help="output folder")
    p.set_defaults(run=evaluate_command)
    return p


def evaluate_command(args: argparse.Namespace) -> None:
    """``gscorecam evaluate``: check, build the examples, run :func:`evaluate`, print the table."""
    import torch.distributed as dist

    from captum_gscorecam.evaluation.report import markdown
    from captum_gscorecam.evaluation.runner import (
        MetricParams,
        check_methods,
        default_topk,
        evaluate,
        init_distributed,
        rank_and_world,
        run_config,
    )
    from captum_gscorecam.evaluation.store import check_resumable
    from captum_gscorecam.methods import applicable_methods, check_method
    from captum_gscorecam.usage import UsageError, load_model

    params = MetricParams(
        tolerance=args.tolerance,
        faithfulness_steps=args.faithfulness_steps if args.faithfulness else None,
    )
    try:
        run = _run_description(args)
        coco = _coco_images(args, run)
    except ValueError as error:
        raise UsageError(str(error)) from None
    device = init_distributed(args.device)
    try:
        model, preprocess, tokenizer = load_model(args.model, args.pretrained, device)
        try:
            methods = check_methods(args.methods or applicable_methods(model))
            for method in methods:
                check_method(model, method)
            topk = default_topk(model) if args.topk is None else args.topk
            check_resumable(args.out, run_config(run, methods, topk, params))
            examples = _examples(args, _input_size(model), coco)
            results = evaluate(
                model,
                preprocess,
                tokenizer,
                examples,
                methods,
                topk,
                args.out,
                run=run,
                params=params,
                show_progress=True,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        if rank_and_world()[0] == 0:
            print(markdown(results))
            print(f"wrote {Path(args.out) / 'results.json'}, results.md, results.png")
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run_description(args: argparse.Namespace) -> dict[str, object]:
    """The dataset and model settings of the command, checked."""
    from captum_gscorecam.evaluation.coco import coco_files

    if args.pretrained is not None and args.model.startswith("shapes-"):
        raise ValueError(
            f"pretrained: {args.model} is a bundled model with its own weights; "
            "drop --pretrained, or name an open_clip model"
        )
    run: dict[str, object] = {"model": args.model, "pretrained": args.pretrained}
    if args.dataset == "shapes":
        for flag in ("root", "annotations", "images"):
            if getattr(args, flag) is not None:
                raise ValueError(f"{flag}: --{flag} is for --dataset coco")
        return run | {"dataset": "shapes", "seed": args.seed, "objects": list(args.objects)}
    annotations, images = coco_files(args.root, args.annotations, args.images)
    return run | {
        "dataset": "coco",
        "annotations": str(annotations),
        "images": str(images),
        "template": args.template,
    }


def _coco_images(args: argparse.Namespace, run: Mapping[str, object]) -> list[CocoImage] | None:
    """The COCO images, read and checked before any model loads; None for shapes."""
    from captum_gscorecam.evaluation.coco import read_coco

    if run["dataset"] != "coco":
        return None
    return read_coco(run["annotations"], run["images"], args.limit)


def _examples(
    args: argparse.Namespace, size: int, coco: Sequence[CocoImage] | None
) -> list[Example]:
    """The command's examples at the model's input size."""
    from captum_gscorecam.evaluation.datasets import coco_image_examples, shapes_examples

    if coco is not None:
        return coco_image_examples(coco, size, args.template)
    seeds = range(args.seed, args.seed + (args.limit or SHAPES_IMAGES))
    return shapes_examples(seeds, args.objects, size)


def _input_size(model: object) -> int:
    """The side of the model's square input (open_clip towers, or a Hugging Face config)."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        size = model.config.vision_config.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


def _methods(text: str) -> list[str]:
    """``--methods a,b``: known method names, in the order given, each once."""
    from captum_gscorecam.evaluation.runner import check_methods
    from captum_gscorecam.methods import METHODS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown or text!r}; expected some of {','.join(METHODS)}"
        )
    try:
        return check_methods(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).partition(": ")[2]) from None


def _objects(text: str) -> tuple[int, int]:
    """``--objects 3-6`` or ``--objects 4``: a range of object counts within 1..6."""
    low, dash, high = text.strip().partition("-")
    digits = low.isdigit() and (high.isdigit() if dash else True)
    bounds = (int(low), int(high or low)) if digits else (0, 0)
    if not 1 <= bounds[0] <= bounds[1] <= 6:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH within 1-6 or one count, got {text!r}")
    return bounds


def _positive(text: str) -> int:
    """A positive integer argument."""
    value = int(text) if text.strip().lstrip("+").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    """An integer argument >= 0."""
    if not text.strip().lstrip("+").isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _topk(text: str) -> int | float:
    """``--topk``: "300" (an integer) is a channel count, "0.1" a fraction of the channels."""
    from captum_gscorecam.checks import check_topk

    try:
        value: float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    try:
        return check_topk(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a channel count (an integer >= 1) or a fraction of the channels in "
            f"(0, 1], got {text!r}"
        ) from None


def _template(text: str) -> str:
    """``--template``: text with one ``{}`` for the class name."""
    from captum_gscorecam.evaluation.datasets import check_template

    try:
        return check_template(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).partition(": ")[2]) from None


def _device(text: str) -> str:
    """``--device``: a torch device this machine has."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _out_dir(text: str) -> str:
    """``--out``: a folder (made if missing), not a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got the file {text!r}")
    return text
