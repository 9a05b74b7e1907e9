"""``gscorecam explain --dataset``: a whole dataset into maps, ``index.jsonl``, ``boxes.json``
and ``failed.jsonl`` (``extraction.extract``); resumable, sharded under torchrun.

The options live in their own group of ``explain``; ``--list``, ``--coco`` and
``--prompt-file``, and running under torchrun, turn the mode on by themselves.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from captum_gscorecam.cli.options import (
    UsageError,
    chosen_model,
    count_arg,
    load_chosen_model,
    non_negative_arg,
    say_provenance,
    usage_errors,
    wrapped,
)

__all__ = ["add_options", "run", "wanted"]

# Options only dataset extraction takes, with the value that means "not given".
ONLY_HERE = {
    "figures": False,
    "dtype": None,
    "boxes": None,
    "box_threshold": None,
    "points": None,
    "workers": None,
    "threads": None,
    "categories": None,
    "coco_images": None,
}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The ``dataset extraction`` option group of ``explain``."""
    group = parser.add_argument_group(
        "dataset extraction",
        wrapped(
            "With --dataset (or --list, --coco, --prompt-file, or under torchrun) explain writes "
            "under --out: maps/<path>.npy (T, H, W) per photo, index.jsonl, boxes.json (COCO "
            "detection results), failed.jsonl and run.json; folders are walked recursively and "
            "outputs keep each photo's relative path. A rerun on the same --out resumes; "
            "`torchrun --nproc-per-node N -m captum_gscorecam explain ...` shares the photos "
            "between N processes."
        ),
    )
    group.add_argument("--dataset", action="store_true", help="dataset extraction (see above)")
    group.add_argument(
        "--list", type=Path, default=None, metavar="FILE", help="photo paths, one a line"
    )
    group.add_argument(
        "--coco",
        type=Path,
        default=None,
        metavar="FILE",
        help="COCO instances JSON: its photos, its category names as prompts (without "
        "--prompt), its image and category ids in boxes.json",
    )
    group.add_argument(
        "--coco-images",
        type=Path,
        default=None,
        metavar="DIR",
        help="the COCO image folder (default: <split>/ or images/ beside annotations/)",
    )
    group.add_argument(
        "--categories",
        choices=["all", "present"],
        default=None,
        help="COCO prompts: every category for every photo, or those annotated on it "
        "(default: all)",
    )
    group.add_argument(
        "--prompt-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="per-photo prompts: CSV rows photo,prompt or JSON lines "
        '{"photo": ..., "prompt": ...}; photo is its relative path (as in index.jsonl)',
    )
    group.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default=None,
        help="of the saved maps (default: float32)",
    )
    group.add_argument(
        "--boxes", type=non_negative_arg, default=None, help="boxes per prompt (default: 5)"
    )
    group.add_argument(
        "--box-threshold",
        type=_unit_arg,
        default=None,
        metavar="T",
        help="boxes around the pixels of the min-max normalised map >= T, a number in [0, 1] "
        "(default: Otsu's threshold, the gScoreCAM paper's protocol)",
    )
    group.add_argument(
        "--points", type=non_negative_arg, default=None, help="points per prompt (default: 1)"
    )
    group.add_argument("--figures", action="store_true", help="also figures/<path>.png")
    group.add_argument(
        "--workers",
        type=non_negative_arg,
        default=None,
        help="processes decoding photos ahead of the model (default: 1)",
    )
    group.add_argument(
        "--threads",
        type=count_arg,
        default=None,
        help="CPU threads per process (default: the cores divided by the processes on this "
        "machine)",
    )


def _unit_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def wanted(args: argparse.Namespace) -> bool:
    """Whether ``explain`` runs as a dataset extraction; refuses its options without it."""
    on = args.dataset or any(
        getattr(args, name) is not None for name in ("list", "coco", "prompt_file")
    )
    on = on or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not on:
        for name, unset in ONLY_HERE.items():
            if getattr(args, name) != unset:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"argument {flag}: only for dataset extraction (--dataset)")
    return on


def run(args: argparse.Namespace) -> None:
    """Check the inputs and prompts, load the model, extract, print where the files went."""
    from captum_gscorecam.evaluation.distributed import init_distributed, rank_and_world
    from captum_gscorecam.loading import check_model, resolve_device

    photos = _photos(args)
    with usage_errors():
        check_model(*chosen_model(args))
        device = resolve_device(args.device)
    device = init_distributed(device)
    try:
        summary = _extract(args, photos, device)
        if rank_and_world()[0] == 0:
            print(
                f"{summary.photos} photo(s): {summary.computed} explained by this process, "
                f"{summary.reused} kept from an earlier run, {summary.failed} failed"
            )
            print(f"wrote {args.out}/index.jsonl, boxes.json, failed.jsonl and maps/")
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _photos(args: argparse.Namespace) -> list[Any]:
    """The photos with their prompts, checked before any model loads."""
    from captum_gscorecam.extraction import (
        coco_photos,
        listed_photos,
        read_prompt_file,
        tree_photos,
        with_prompts,
    )

    out = Path(args.out)
    if out.suffix and not out.is_dir():
        raise UsageError(f"argument --out: dataset extraction writes a folder, not {out}")
    if args.save_maps is not None:
        raise UsageError("argument --save-maps: dataset extraction always writes maps/")
    if args.coco is None and (args.coco_images is not None or args.categories is not None):
        raise UsageError("argument --coco-images/--categories: only with --coco")
    given = [args.prompt is not None, args.prompt_file is not None]
    if sum(given) > 1:
        raise UsageError("argument --prompt-file: give --prompt or --prompt-file, not both")
    if not any(given) and args.coco is None:
        raise UsageError("argument --prompt: required (or --prompt-file, or --coco)")
    with usage_errors():
        if args.coco is not None:
            if args.images or args.list is not None:
                raise ValueError("coco: give the photos by --coco alone")
            from captum_gscorecam.evaluation.coco import coco_files

            annotations, folder = coco_files(None, args.coco, args.coco_images)
            photos = coco_photos(annotations, folder, args.categories or "all")
        else:
            photos = tree_photos(args.images, exclude=out) if args.images else []
            if args.list is not None:
                photos = _joined(photos, listed_photos(args.list))
            if not photos:
                raise ValueError("image: give photos (files, folders, globs) or --list FILE")
        table = None if args.prompt_file is None else read_prompt_file(args.prompt_file)
        return with_prompts(photos, args.prompt, table)


def _joined(first: list[Any], second: list[Any]) -> list[Any]:
    """Photos of two sources, renamed against their shared folder, each file once."""
    from captum_gscorecam.extraction import Photo, photo_names

    paths = list({p.path.resolve(): p.path for p in [*first, *second]}.values())
    return [Photo(n, p) for n, p in zip(photo_names(paths), paths, strict=True)]


def _extract(args: argparse.Namespace, photos: list[Any], device: str) -> Any:
    """Load the model on this process's device and run ``extraction.extract``."""
    import torch

    from captum_gscorecam.evaluation.distributed import rank_and_world
    from captum_gscorecam.extraction import extract, extraction_config
    from captum_gscorecam.loading import find_layer
    from captum_gscorecam.methods import check_method, run_provenance
    from captum_gscorecam.precision import precision_name, resolve_precision
    from captum_gscorecam.towers import input_size
    from captum_gscorecam.visualization import no_crop

    if torch.device(device).type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
    with usage_errors():
        model, preprocess, tokenizer = load_chosen_model(args, device)
    name, pretrained = chosen_model(args)
    try:
        check_method(model, args.method)
    except ValueError as error:
        raise UsageError(f"argument --method: {str(error).partition(': ')[2]}") from None
    with usage_errors():
        layer = None if args.layer is None else find_layer(model, args.layer)
    if args.no_crop:
        preprocess = no_crop(preprocess)
    precision = precision_name(resolve_precision(args.precision, torch.device(device), model))
    height, width = input_size(model)
    provenance = run_provenance(
        model, torch.zeros(1, 3, height, width, device=device), args.method, name=name,
        pretrained=pretrained, topk=args.topk, template=args.template, precision=args.precision,
        layer=layer,
    )  # fmt: skip
    if rank_and_world()[0] == 0:  # what makes the maps, and why they may mean nothing
        say_provenance(provenance, "explain", provenance.warnings(shapes_scene=False))
    config = extraction_config(
        {"model": name, "pretrained": pretrained, "no_crop": args.no_crop},
        args.method,
        args.topk,
        args.template,
        precision,
        dtype=args.dtype or "float32",
        boxes=5 if args.boxes is None else args.boxes,
        points=1 if args.points is None else args.points,
        box_threshold=args.box_threshold,
        layer=provenance.layer,
        perturbations_per_eval=args.perturbations_per_eval,
    )
    with usage_errors():
        return extract(
            model,
            preprocess,
            tokenizer,
            photos,
            args.out,
            config,
            provenance,
            layer=layer,
            perturbations_per_eval=args.perturbations_per_eval,
            figures=args.figures,
            workers=1 if args.workers is None else args.workers,
            show_progress=True,
        )
