"""``gscorecam explain``: your photos against prompts, a figure per photo and a score table."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import captum_gscorecam.cli.dataset as dataset
from captum_gscorecam.cli.options import (
    UsageError,
    add_model_options,
    add_precision_option,
    add_topk_option,
    chosen_model,
    figure_arg,
    folder_arg,
    layer_arg,
    load_chosen_model,
    output_errors,
    perturbations_arg,
    prompt_arg,
    say_provenance,
    template_arg,
    usage_errors,
    wrapped,
)
from captum_gscorecam.cli.scores import append_scores, check_score_files, score_table
from captum_gscorecam.registry import SPECS

__all__ = ["add_parser", "run"]

# The files --save-maps writes per photo: the maps, and what made them.
SIDECARS = (".npy", ".json")
# The colour scales of a figure (visualization.SCALES, which imports torch).
SCALES = ("shared", "per-prompt")
# The options that only some methods use, named as the registry names them.
METHOD_OPTIONS = ("topk", "layer", "perturbations_per_eval")


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register ``explain`` on the ``gscorecam`` subcommands."""
    formats = ", ".join(f".{f}" for f in ("png", "jpg", "pdf", "svg"))
    width = max(map(len, SPECS))
    methods = "\n".join(f"  {key:<{width}}  {spec.help}" for key, spec in SPECS.items())
    e = subcommands.add_parser(
        "explain",
        help="explain your photos against prompts",
        description=wrapped(
            "Explain each photo against every prompt. Writes one figure per photo with a row "
            "per prompt (the map over the full photo; the border the model's centre crop cuts "
            "away is dimmed and hatched: it has no value), and a table of CLIP scores "
            "(logit_scale * cos; a row per photo, a column per prompt in its template), printed "
            "and added to scores.csv and scores.md beside the figures (each run appended, with "
            "the settings that made it). Every figure and table says what made it: model, "
            "weights, method, k, layer, template, precision and device. Photos over 16 MP are "
            "drawn downscaled (their maps keep full resolution). Outputs are checked before the "
            "model loads and written whole; one that is a photo is refused."
        ),
        epilog=f"methods:\n{methods}",
    )
    e.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders or globs")
    e.add_argument("--prompt", type=prompt_arg, action="append", help="text; repeat for more")
    e.add_argument(
        "--template", type=template_arg, default="{}", help='wraps each prompt: "a photo of a {}"'
    )
    e.add_argument(
        "--out",
        type=_out_arg,
        metavar="PATH",
        default=Path("explained"),
        help=f"output folder (figures <image stem>.png, scores), or for one photo a figure file "
        f"({formats}, ...; scores beside it)",
    )
    e.add_argument(
        "--save-maps",
        type=folder_arg,
        default=None,
        metavar="DIR",
        help="also write DIR/<image stem>.npy, float32 (prompts, height, width) at the photo's "
        "resolution (NaN where the crop cut), and DIR/prompts.json",
    )
    e.add_argument(
        "--no-crop",
        action="store_true",
        help="resize the whole photo to the model's square input (changes its aspect) instead "
        "of centre-cropping it (the shapes models always do)",
    )
    e.add_argument(
        "--method",
        choices=list(SPECS),
        default="gscorecam",
        metavar="METHOD",
        help="the explainer, one of the methods below",
    )
    add_topk_option(e)
    add_model_options(e, photos=True)
    e.add_argument(
        "--layer",
        type=layer_arg,
        default=None,
        help="dotted module path, e.g. visual.layer3 (default: layer4 of a ResNet, the last "
        "block of a ViT; for gradcam the block before on class-token ViTs)",
    )
    e.add_argument(
        "--perturbations-per-eval",
        type=perturbations_arg,
        default=None,
        metavar="N",
        help="masked images per forward pass (default: the device's: 16 on CPU, 64 on GPU)",
    )
    add_precision_option(e)
    e.add_argument(
        "--scale",
        choices=SCALES,
        default="shared",
        help="the colours of a photo's maps: shared (one scale for all its prompts, so a prompt "
        "the model rejects looks cold) or per-prompt (each map from its own minimum to maximum)",
    )
    dataset.add_options(e)
    e.set_defaults(run=run)


def _out_arg(text: str) -> Path:
    """``--out``: a figure file (for one photo) or an output folder."""
    path = Path(text)
    return folder_arg(text) if path.is_dir() or not path.suffix else figure_arg(text)


def run(args: argparse.Namespace) -> None:
    """Explain each photo against every prompt: a figure per photo (a row per prompt, the map on
    the full photo), a table of CLIP scores, and with ``--save-maps`` the maps as ``.npy``.
    Everything is checked before the model loads.
    """
    from captum_gscorecam.images import check_image, expand_images
    from captum_gscorecam.loading import check_model, find_layer, resolve_device

    if dataset.wanted(args):
        _check_method_options(args)
        return dataset.run(args)
    if not args.images or args.prompt is None:
        raise UsageError(f"argument {'--prompt' if args.images else 'IMAGE'}: required")
    with usage_errors():
        paths = expand_images(args.images)
        for path in paths:
            check_image(path)
    figures = _figure_paths(args.out, paths)
    _check_outputs(args, paths, figures)
    _check_method_options(args)
    texts = [args.template.format(prompt) for prompt in args.prompt]
    with usage_errors():
        check_model(*chosen_model(args))
        device = resolve_device(args.device)
        model, preprocess, tokenizer = load_chosen_model(args, device)
    from captum_gscorecam.methods import check_method  # torch: after the checks above

    try:
        check_method(model, args.method)
    except ValueError as error:
        raise UsageError(f"argument --method: {str(error).partition(': ')[2]}") from None
    with usage_errors():
        layer = None if args.layer is None else find_layer(model, args.layer)
    _explain_photos(args, paths, figures, texts, model, preprocess, tokenizer, layer)


def _figure_paths(out: Path, paths: Sequence[Path]) -> list[Path]:
    """``--out``: a figure file for one photo, else a folder of ``<stem>.png``; stems unique."""
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise UsageError(
                f"argument images: {stems[path.stem]} and {path} share the name {path.stem!r}, "
                "and their figures and maps are named after it; rename one or explain them apart"
            )
        stems[path.stem] = path
    if out.suffix and not out.is_dir():
        if len(paths) > 1:
            raise UsageError(
                f"argument --out: {out} is one figure, for one photo; {len(paths)} photos need "
                "an output folder"
            )
        return [out]
    return [out / f"{path.stem}.png" for path in paths]


def _check_outputs(
    args: argparse.Namespace, paths: Sequence[Path], figures: Sequence[Path]
) -> None:
    """Refuse, before the model loads, outputs that are photos or cannot be written
    (``outputs.check_outputs``), naming the option that sets them.
    """
    from captum_gscorecam.outputs import check_outputs

    folder = figures[0].parent
    chosen = {"--out": [*figures, folder / "scores.md", folder / "scores.csv"]}
    if args.save_maps is not None:
        maps = [args.save_maps / f"{path.stem}{suffix}" for path in paths for suffix in SIDECARS]
        chosen["--save-maps"] = [args.save_maps / "prompts.json", *maps]
    for option, outputs in chosen.items():
        with output_errors(option):
            check_outputs(outputs, paths)
    with usage_errors():
        check_score_files(folder)


def _check_method_options(args: argparse.Namespace) -> None:
    """Refuse options the chosen method would ignore (the registry says which it takes)."""
    for option in METHOD_OPTIONS:
        if getattr(args, option) is not None and not SPECS[args.method].takes(option):
            methods = [key for key, spec in SPECS.items() if spec.takes(option)]
            flag = "--" + option.replace("_", "-")
            raise UsageError(
                f"argument {flag}: --method {args.method} does not use it; it applies to "
                f"{', '.join(methods)}"
            )


def _explain_photos(
    args: argparse.Namespace,
    paths: Sequence[Path],
    figures: Sequence[Path],
    texts: Sequence[str],
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    layer: Any,
) -> None:
    """The work of ``explain`` once everything is checked and the model is loaded: what makes
    the maps said first (and warned about), then each photo, then the scores.
    """
    import warnings
    from datetime import datetime

    from tqdm import tqdm

    from captum_gscorecam.clip import encode_text
    from captum_gscorecam.outputs import make_folder, write_json
    from captum_gscorecam.visualization import no_crop

    run = datetime.now().isoformat(timespec="seconds")
    if args.no_crop:
        preprocess = no_crop(preprocess)
    provenance = _provenance(args, paths[0], model, preprocess, layer)
    meaningless = provenance.warnings(shapes_scene=False)
    say_provenance(provenance, "explain", [*meaningless, *_slow(args, model)])
    text = encode_text(model, tokenizer, texts)[None]
    if args.save_maps is not None:
        write_json(args.save_maps / "prompts.json", args.prompt)
    folder = make_folder(figures[0].parent)
    rows, start = [], time.perf_counter()
    with (
        warnings.catch_warnings(),
        tqdm(paths, desc="images", unit="image") as bar,  # closed (a newline) before an error
    ):
        warnings.filterwarnings("ignore", SLOW_WARNING)  # said once above
        for path, figure in zip(bar, figures, strict=True):
            began = time.perf_counter()
            scores = _explain_photo(args, path, figure, text, texts, model, preprocess, layer,
                                    provenance)  # fmt: skip
            rows.append((str(path), scores, time.perf_counter() - began))
    elapsed = time.perf_counter() - start
    written = append_scores(folder, run, rows, args.prompt, texts, provenance, meaningless)
    print("CLIP scores (logit_scale * cos):")
    print(score_table(rows, texts))
    print(f"{len(paths)} image(s) x {len(texts)} prompt(s) in {elapsed:.1f} s")
    named = figures[0] if len(figures) == 1 else f"{len(figures)} figures in {folder}"
    print(f"wrote {named}, {written[0]}, {written[1]} (this run's rows added)")
    if args.save_maps is not None:
        print(
            f"wrote {len(paths)} map(s) (T, H, W), each with its <image>.json (prompts, texts, "
            f"scores, settings, warnings), and prompts.json to {args.save_maps}"
        )


def _provenance(
    args: argparse.Namespace, first: Path, model: Any, preprocess: Any, layer: Any
) -> Any:
    """What makes this run's maps, as resolved (k read from the layer on the first photo)."""
    from captum_gscorecam.images import read_image
    from captum_gscorecam.methods import run_provenance

    name, pretrained = chosen_model(args)
    try:
        image = preprocess(read_image(first))[None].to(next(model.parameters()).device)
    except ValueError as error:  # damaged past its header, which was checked up front
        raise UsageError(str(error)) from None
    return run_provenance(
        model, image, args.method, name=name, pretrained=pretrained, topk=args.topk,
        template=args.template, precision=args.precision, layer=layer,
    )  # fmt: skip


# What precision.warn_if_slow says (a bf16 / fp16 the CPU emulates), said once before the work.
SLOW_WARNING = r"precision=.* runs the masked passes slower than 'fp32'"


def _slow(args: argparse.Namespace, model: Any) -> list[str]:
    """The warning that the masked passes' precision runs slower than fp32 here, if it does."""
    import warnings

    from captum_gscorecam.precision import resolve_precision, warn_if_slow

    if not SPECS[args.method].takes("precision"):
        return []
    device = next(model.parameters()).device
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        warn_if_slow(resolve_precision(args.precision, device, model), device, model, 1)
    return [f"warning: {warning.message}" for warning in said]


def _explain_photo(
    args: argparse.Namespace,
    path: Path,
    figure: Path,
    text: Any,
    texts: Sequence[str],
    model: Any,
    preprocess: Any,
    layer: Any,
    provenance: Any,
) -> list[float]:
    """One photo: its maps placed on it, its figure (drawn downscaled above the display limit,
    with a warning), its ``.npy`` (one map in memory at a time) and ``.json``; returns its CLIP
    scores.
    """
    import warnings

    import numpy as np
    from tqdm import tqdm

    from captum_gscorecam.images import for_display, read_image
    from captum_gscorecam.outputs import write_figure, write_json, write_npy_slices
    from captum_gscorecam.photos import explain_photo
    from captum_gscorecam.visualization import photo_figure

    try:
        photo = read_image(path)
    except ValueError as error:  # damaged past its header, which was checked up front
        raise UsageError(str(error)) from None
    photo_maps, photo_scores = explain_photo(  # the function the web app calls
        model,
        preprocess,
        photo,
        text[0],
        args.method,
        args.topk,
        show_progress=True,
        layer=layer,
        perturbations_per_eval=args.perturbations_per_eval,
        precision=args.precision,
    )
    scores = photo_scores.tolist()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        drawn = for_display(photo, str(path))
    for warning in said:
        tqdm.write(f"gscorecam explain: warning: {warning.message}", file=sys.stderr)
    drawn_maps = photo_maps.at_size(drawn.size)
    fig = photo_figure(
        drawn, drawn_maps, texts, scores, provenance.method, scale=args.scale,
        title=provenance.line(), warnings=provenance.warnings(shapes_scene=False),
    )  # fmt: skip
    write_figure(figure, fig, dpi=100)
    if args.save_maps is not None:
        path_npy = args.save_maps / f"{path.stem}.npy"
        write_npy_slices(path_npy, photo_maps, photo_maps.shape, np.float32)
        record = {
            "image": str(path),
            "prompts": list(args.prompt),
            "texts": list(texts),
            "scores": scores,
            "scale": args.scale,
            "provenance": provenance.as_dict(),
            "warnings": provenance.warnings(shapes_scene=False),
        }
        write_json(args.save_maps / f"{path.stem}.json", record)
    return scores
