"""``gscorecam evaluate``: its arguments, checked at parse time, and the command.

Nothing heavy is imported until the command runs, so ``--help`` stays fast. Every argument is
checked before a model loads and before anything is written: a bad value is one line naming
the option, exit 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captum_gscorecam.cli.options import (
    FIRST_HELD_OUT_SEED,
    UsageError,
    add_model_options,
    add_precision_option,
    add_topk_option,
    count_arg,
    folder_arg,
    non_negative_arg,
    output_errors,
    say_provenance,
    template_arg,
    usage_errors,
    wrapped,
)

if TYPE_CHECKING:
    from captum_gscorecam.evaluation.coco import CocoImage
    from captum_gscorecam.evaluation.datasets import Example

__all__ = ["add_parser", "run"]

SHAPES_IMAGES = 100


def add_parser(subcommands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the ``gscorecam`` subcommands.

    Every argument is checked here or before the model loads; nothing is written before.
    """
    p = subcommands.add_parser(
        "evaluate",
        help="compare explainers on a localization benchmark",
        description=wrapped(
            "Compare explainers on a localization benchmark: held-out shapes scenes (offline, "
            "the bundled models know them) or a COCO instances dataset, a prompt per object. "
            "Scores each map by the pointing game, box accuracy and MaxBoxAccV2 (and deletion / "
            "insertion with --faithfulness); writes run.json, results.jsonl (one line per image, "
            "so an interrupted run resumes where it stopped), results.json, results.md and "
            "results.png into --out. Runs sharded under torchrun."
        ),
    )
    p.add_argument(
        "--dataset",
        choices=["shapes", "coco"],
        default="shapes",
        help="held-out shapes scenes (offline), or a COCO instances dataset",
    )
    p.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="COCO folder: annotations/instances.json + images/, or COCO's "
        "annotations/instances_val2017.json + val2017/",
    )
    p.add_argument(
        "--annotations", default=None, metavar="FILE", help="COCO instances JSON (else from --root)"
    )
    p.add_argument(
        "--images", default=None, metavar="DIR", help="COCO image folder (else from --root)"
    )
    p.add_argument(
        "--template", type=template_arg, default="{}", help='COCO prompt, e.g. "a photo of a {}"'
    )
    add_model_options(p)
    p.add_argument(
        "--methods",
        type=_methods,
        default=None,
        metavar="A,B,...",
        help="comma-separated, each once (default: every method that applies to the model)",
    )
    add_topk_option(p)
    p.add_argument(
        "--limit",
        type=count_arg,
        default=None,
        help=f"images (default: all COCO images; {SHAPES_IMAGES} shapes scenes)",
    )
    p.add_argument(
        "--objects",
        type=_objects,
        default="3-6",
        help="shapes per scene: LOW-HIGH, N, or counts A,B,... (consecutive scenes cycle "
        "through the counts; a --limit that is a multiple of their number gives each as many "
        "scenes); a shapes run also reports its scores per exact count",
    )
    p.add_argument(
        "--seed",
        type=non_negative_arg,
        default=FIRST_HELD_OUT_SEED,
        help="first held-out scene seed",
    )
    p.add_argument("--faithfulness", action="store_true", help="add deletion / insertion AUC")
    p.add_argument(
        "--faithfulness-steps", type=count_arg, default=20, help="steps of deletion / insertion"
    )
    p.add_argument(
        "--tolerance", type=non_negative_arg, default=15, help="pointing game margin (px)"
    )
    add_precision_option(p)
    p.add_argument("--out", type=folder_arg, default="results", help="output folder")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> None:
    """``gscorecam evaluate``: check, build the examples, run :func:`evaluate`, print the table.

    Everything that can be refused without a model is checked first, before torch is imported,
    so a refusal is quick.
    """
    from captum_gscorecam.evaluation.store import locked
    from captum_gscorecam.loading import check_model

    with usage_errors():
        check_model(args.model, args.pretrained)
    try:
        setting = _run_description(args)
        coco = _coco_images(args, setting)
        _check_out(args.out, setting, coco)
        if Path(args.out).is_dir() and os.environ.get("RANK", "0") == "0":
            with locked(args.out):  # in use: refused now, not after loading the model
                pass
    except ValueError as error:
        raise UsageError(str(error)) from None
    _evaluate(args, setting, coco)


def _evaluate(
    args: argparse.Namespace, setting: dict[str, object], coco: Sequence[CocoImage] | None
) -> None:
    """The checked command: load the model, build the examples, evaluate, print the table."""
    import torch.distributed as dist

    from captum_gscorecam.evaluation.distributed import init_distributed, rank_and_world
    from captum_gscorecam.evaluation.report import markdown
    from captum_gscorecam.evaluation.runner import default_topk_share, evaluate, run_config
    from captum_gscorecam.evaluation.scoring import MetricParams
    from captum_gscorecam.evaluation.store import check_resumable
    from captum_gscorecam.loading import load_model, resolve_device
    from captum_gscorecam.methods import applicable_methods, check_method
    from captum_gscorecam.precision import precision_name, resolve_precision
    from captum_gscorecam.towers import input_size

    params = MetricParams(
        tolerance=args.tolerance,
        faithfulness_steps=args.faithfulness_steps if args.faithfulness else None,
    )
    with usage_errors():
        device = resolve_device(args.device)
    device = init_distributed(device)
    try:
        with usage_errors():
            model, preprocess, tokenizer = load_model(args.model, args.pretrained, device)
        try:
            methods = args.methods or applicable_methods(model)
            for method in methods:
                check_method(model, method)
            topk = default_topk_share(model) if args.topk is None else args.topk
            precision = precision_name(resolve_precision(args.precision, device, model))
            check_resumable(
                args.out, run_config(setting, methods, topk, params, precision=precision)
            )
            examples = _examples(args, input_size(model)[0], coco)
            made = _provenance(args, model, methods, topk)
            results = evaluate(
                model,
                preprocess,
                tokenizer,
                examples,
                methods,
                topk,
                args.out,
                run=setting,
                params=params,
                show_progress=True,
                precision=args.precision,
                by_count=args.dataset == "shapes",
                provenance=made,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None
        if rank_and_world()[0] == 0:
            print(markdown(results))
            print(f"wrote {Path(args.out) / 'results.json'}, results.md, results.png")
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _provenance(
    args: argparse.Namespace, model: Any, methods: Sequence[str], topk: float | int
) -> dict[str, object]:
    """What makes the maps (``methods.comparison_provenance``), said first on the terminal
    with its warnings on stderr (rank 0), for ``results.json``, ``results.md`` and
    ``results.png``.
    """
    import torch

    from captum_gscorecam.evaluation.distributed import rank_and_world
    from captum_gscorecam.methods import comparison_provenance
    from captum_gscorecam.towers import input_size

    size = input_size(model)[0]
    probe = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    made = comparison_provenance(
        model, probe, methods, name=args.model, pretrained=args.pretrained, topk=topk,
        template=args.template if args.dataset == "coco" else "{}", precision=args.precision,
    )  # fmt: skip
    warnings = made.warnings(shapes_scene=args.dataset == "shapes")
    if rank_and_world()[0] == 0:
        say_provenance(made, "evaluate", warnings)
    return {**made.as_dict(), "line": made.line(), "warnings": warnings}


def _check_out(out: Path, setting: Mapping[str, object], coco: Sequence[CocoImage] | None) -> None:
    """Refuse, before the model loads, outputs that cannot be written or would overwrite the
    COCO annotations or an image (``outputs.check_outputs``).
    """
    from captum_gscorecam.evaluation.store import output_files
    from captum_gscorecam.outputs import check_outputs

    inputs = [] if coco is None else [setting["annotations"], *(image.path for image in coco)]
    with output_errors("--out"):
        check_outputs(output_files(out, int(os.environ.get("WORLD_SIZE", "1"))), inputs)


def _run_description(args: argparse.Namespace) -> dict[str, object]:
    """The dataset and model settings of the command, checked."""
    from captum_gscorecam.evaluation.coco import coco_files
    from captum_gscorecam.loading import describe_weights

    setting: dict[str, object] = {
        "model": args.model,
        "pretrained": args.pretrained,
        "weights": describe_weights(args.model, args.pretrained),
    }
    if args.dataset == "shapes":
        for flag in ("root", "annotations", "images"):
            if getattr(args, flag) is not None:
                raise ValueError(f"{flag}: --{flag} is for --dataset coco")
        counts = list(args.objects)
        # A run of consecutive counts is recorded as its range, as it always was: same scenes.
        if counts == list(range(counts[0], counts[-1] + 1)):
            return setting | {
                "dataset": "shapes",
                "seed": args.seed,
                "objects": [counts[0], counts[-1]],
            }
        return setting | {"dataset": "shapes", "seed": args.seed, "object_counts": counts}
    annotations, images = coco_files(args.root, args.annotations, args.images)
    return setting | {
        "dataset": "coco",
        "annotations": str(annotations),
        "images": str(images),
        "template": args.template,
    }


def _coco_images(args: argparse.Namespace, setting: Mapping[str, object]) -> list[CocoImage] | None:
    """The COCO images, read and checked before any model loads; None for shapes."""
    from captum_gscorecam.evaluation.coco import read_coco

    if setting["dataset"] != "coco":
        return None
    return read_coco(setting["annotations"], setting["images"], args.limit)


def _examples(
    args: argparse.Namespace, size: int, coco: Sequence[CocoImage] | None
) -> list[Example]:
    """The command's examples at the model's input size."""
    from captum_gscorecam.evaluation.datasets import coco_image_examples, shapes_examples

    if coco is not None:
        return coco_image_examples(coco, size, args.template)
    seeds = range(args.seed, args.seed + (args.limit or SHAPES_IMAGES))
    return shapes_examples(seeds, size=size, counts=args.objects)


def _methods(text: str) -> list[str]:
    """``--methods a,b``: known method names, in the order given, each once."""
    from captum_gscorecam.registry import check_methods

    try:
        return check_methods(name.strip() for name in text.split(",") if name.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).partition(": ")[2]) from None


def _objects(text: str) -> tuple[int, ...]:
    """``--objects 3-6``, ``4`` or ``1,2,3,4,6``: the object counts within 1..6, ascending."""
    low, dash, high = text.strip().partition("-")
    if dash:
        digits = low.isdigit() and high.isdigit()
        counts = list(range(int(low), int(high) + 1)) if digits else []
    else:
        parts = [part.strip() for part in low.split(",")]
        digits = all(part.isdigit() for part in parts)
        counts = [int(part) for part in parts] if digits else []
    if not counts or len(set(counts)) != len(counts) or not all(1 <= n <= 6 for n in counts):
        raise argparse.ArgumentTypeError(
            f"expected LOW-HIGH within 1-6, one count, or distinct counts A,B,... within 1-6, "
            f"got {text!r}"
        )
    return tuple(sorted(counts))
