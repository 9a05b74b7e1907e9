"""What the subcommands share: the usage error, the parser, argument types and option groups.

Nothing here imports torch, so ``--help`` answers at once. A subcommand is added with
``subparsers.add_parser(...)`` on the root :class:`Parser` (every subparser then prints an
argparse error as one line, exit 2, and shows each option's default). Its options use the
``*_arg`` functions as ``type=``, which refuse a bad value as it is parsed, before any model
loads, with the library's own check where there is one (``checks``); the option groups
(:func:`add_model_options`, :func:`add_topk_option`, :func:`add_precision_option`) give every
subcommand the same option with the same help. After parsing, a subcommand calls the library
inside :func:`usage_errors`, which turns its ValueErrors into one-line usage errors.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captum_gscorecam.checks import (
    PRECISIONS,
    check_device_name,
    check_perturbations_per_eval,
    check_template,
    topk_from_text,
)
from captum_gscorecam.registry import SPECS

if TYPE_CHECKING:
    from captum_gscorecam.provenance import Provenance

__all__ = [
    "DEFAULT_MODEL",
    "FIRST_HELD_OUT_SEED",
    "HelpFormatter",
    "Parser",
    "UsageError",
    "add_model_options",
    "add_precision_option",
    "add_topk_option",
    "chosen_model",
    "count_arg",
    "device_arg",
    "figure_arg",
    "figure_formats",
    "folder_arg",
    "layer_arg",
    "load_chosen_model",
    "non_negative_arg",
    "output_errors",
    "perturbations_arg",
    "port_arg",
    "prompt_arg",
    "say_provenance",
    "template_arg",
    "topk_arg",
    "usage_errors",
    "wrapped",
]

# The bundled shapes models were trained on scene seeds below this one (shapes.train's
# HELD_OUT_SEED, which imports torch).
FIRST_HELD_OUT_SEED = 10_000_000
# The model of ``explain`` and ``app`` when --model is not given: (name, pretrained tag).
DEFAULT_MODEL = ("RN50", "openai")
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps"
TOPK_DEFAULT_HELP = (
    "per tower: 10%% of the channels of a convolutional layer, 50%% of a ViT layer's"
)


class UsageError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default at the end of its help (unless the help says it in words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default:" in action.help:
            return action.help
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (``prog: error: ...``), exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``prog: error: message`` (no usage block) and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def say_provenance(provenance: Provenance, command: str, warnings: Sequence[str]) -> None:
    """What makes the maps (``provenance.line()``) on stdout, then each warning on stderr as
    ``gscorecam COMMAND: WARNING``: said once, before the work starts.
    """
    print(provenance.line())
    for warning in warnings:
        print(f"gscorecam {command}: {warning}", file=sys.stderr)


def wrapped(text: str) -> str:
    """A description as lines of the help's width (the formatter keeps line breaks)."""
    import textwrap

    return textwrap.fill(text, 80)


# ---------------------------------------------------------------- argument types (parse time)


def _checked(check: Callable[[Any], Any], value: object) -> Any:
    """``check(value)``, its ValueError / TypeError as argparse's error without the name."""
    try:
        return check(value)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error).partition(": ")[2] or str(error)) from None


def _number(text: str) -> int | float | str:
    """``"300"`` -> 300, ``"0.1"`` -> 0.1, ``"nan"`` -> nan; anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def topk_arg(text: str) -> int | float:
    """``--topk``: ``300`` is a channel count, ``0.1`` a fraction of the channels in (0, 1]."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a channel count (300) or a fraction (0.1)")
    return _checked(topk_from_text, text)


def perturbations_arg(text: str) -> int:
    """``--perturbations-per-eval``: masked images per forward pass, an int >= 1."""
    return _checked(check_perturbations_per_eval, _number(text))


def count_arg(text: str) -> int:
    """A count that must be at least 1 (``--scenes``, ``--limit``)."""
    value = _number(text)
    if not isinstance(value, int) or value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_arg(text: str) -> int:
    """An integer >= 0 (``--seed``, ``--tolerance``)."""
    value = _number(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def port_arg(text: str) -> int:
    """``--port``: a TCP port, 1 to 65535."""
    value = _number(text)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def device_arg(text: str) -> str:
    """``--device``: ``auto``, ``cpu`` (``cpu:0``), ``cuda``, ``cuda:N``, ``mps`` or ``xpu[:N]``
    (``checks.check_device_name``, which the API uses too).
    """
    return _checked(check_device_name, text)


def template_arg(text: str) -> str:
    """A prompt template with exactly one ``{}`` for the name, e.g. ``"a photo of a {}"``."""
    return _checked(check_template, text)


def prompt_arg(text: str) -> str:
    """A prompt: non-empty text (surrounding spaces removed)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected some text, got {text!r}")
    return text.strip()


_LAYER = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


def layer_arg(text: str) -> str:
    """``--layer``: a dotted module path such as ``visual.layer3`` (checked on the model later)."""
    if not _LAYER.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a dotted module path such as visual.layer3 or "
            f"visual.transformer.resblocks.10, got {text!r}"
        )
    return text


def figure_formats() -> list[str]:
    """The file extensions matplotlib can save a figure as (pgf needs LaTeX: left out)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


# Extensions matplotlib's own backends always write; only others are looked up in matplotlib,
# whose import would make up most of the time of refusing a later argument.
BUILTIN_FIGURE_FORMATS = frozenset({"eps", "pdf", "png", "ps", "svg", "svgz"})


def figure_arg(text: str) -> Path:
    """A figure file to write: a supported extension, in an existing folder, not a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file such as demo.png")
    extension = path.suffix.lower().lstrip(".")
    if extension not in BUILTIN_FIGURE_FORMATS and extension not in (formats := figure_formats()):
        raise argparse.ArgumentTypeError(
            f"cannot save a figure as {path.suffix or 'a file without extension'} ({text}); "
            f"expected one of .{', .'.join(formats)}"
        )
    _check_parent(path, text)
    return path


def folder_arg(text: str) -> Path:
    """An output folder: an existing one, or a new one in an existing folder."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder")
    _check_parent(path, text)
    return path


def _check_parent(path: Path, text: str) -> None:
    parent = path.absolute().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the folder {parent} does not exist")


# ---------------------------------------------------------------- option groups


def add_model_options(parser: argparse.ArgumentParser, photos: bool = False) -> None:
    """``--model``, ``--pretrained`` and ``--device``: the model a command loads, and where.

    With ``photos`` (``explain``, ``app``) the default model is ``DEFAULT_MODEL``, a real
    CLIP (read it with :func:`chosen_model`); else the bundled ``shapes-rn``.
    """
    name, tag = DEFAULT_MODEL
    default = (
        f"default: {name} with --pretrained {tag}: OpenAI's CLIP ResNet-50, of the CNN towers "
        "gScoreCAM's paper explains (its default k is meant for them) and the cheapest of "
        "them; its weights download once (about 100 MB); offline, --model shapes-rn is the "
        "bundled model, which knows only coloured shapes"
    )
    parser.add_argument(
        "--model",
        default=None if photos else "shapes-rn",
        help="shapes-rn, shapes-vit, an open_clip name, hf:REPO" + (f" ({default})" * photos),
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip tag (openai) or checkpoint file (default: "
        + (f"{tag} for the default model, else " * photos)
        + "none: an open_clip name given alone has random weights; not for shapes-* and hf:)",
    )
    add_device_option(parser)


def chosen_model(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(model, pretrained)`` as :func:`add_model_options` parsed them, defaults filled in."""
    if args.model is None:
        return DEFAULT_MODEL[0], args.pretrained or DEFAULT_MODEL[1]
    return args.model, args.pretrained


def load_chosen_model(args: argparse.Namespace, device: str) -> tuple[Any, Any, Any]:
    """``loading.load_model`` of :func:`chosen_model` (call it inside :func:`usage_errors`).

    The default model that cannot load (offline, its weights not cached) is a usage error that
    says it is the default and how to try the bundled model instead.
    """
    from captum_gscorecam.loading import load_model

    name, pretrained = chosen_model(args)
    try:
        return load_model(name, pretrained, device)
    except ValueError as error:
        if args.model is not None:
            raise
        reason = str(error).partition(": ")[2] or str(error)
        raise UsageError(
            f"argument --model: the default model, {name} with --pretrained {pretrained}, did "
            f"not load: {reason}; to try the bundled model instead: --model shapes-rn"
        ) from None


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs."""
    parser.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)


def add_topk_option(parser: argparse.ArgumentParser) -> None:
    """``--topk``: the channels of the methods that keep the top k (gScoreCAM)."""
    parser.add_argument(
        "--topk",
        type=topk_arg,
        default=None,
        help=f"{_labels('topk')}'s channels: a count (300) or a fraction (0.1) "
        f"(default: {TOPK_DEFAULT_HELP})",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision``: of the masked passes of the methods that have them."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=f"the masked passes of {_labels('precision')}: auto (the fastest measured on this "
        "kind of device for this kind of tower), fp32 (exact), or on a copy of the image tower: "
        "fp32-fast (exact up to rounding), fp32-compiled, bf16, fp16, int8",
    )


def _labels(option: str) -> str:
    """The labels of the methods that take ``option``: "gScoreCAM and ScoreCAM"."""
    labels = [spec.label for spec in SPECS.values() if spec.takes(option)]
    return " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)


# ---------------------------------------------------------------- library errors as usage errors

# The library's argument names (``device: ...``) and the options that set them.
_OPTIONS = {
    "model": "--model",
    "pretrained": "--pretrained",
    "device": "--device",
    "layer": "--layer",
    "out": "--out",
}


@contextmanager
def usage_errors() -> Iterator[None]:
    """A ValueError raised in the block becomes a :class:`UsageError` (one line, exit 2).

    A message about an argument the command line sets by an option (``device: ...``) names the
    option instead (``argument --device: ...``).
    """
    try:
        yield
    except ValueError as error:
        name, colon, rest = str(error).partition(": ")
        if colon and name in _OPTIONS:
            raise UsageError(f"argument {_OPTIONS[name]}: {rest}") from None
        raise UsageError(str(error)) from None


@contextmanager
def output_errors(option: str) -> Iterator[None]:
    """An :class:`~captum_gscorecam.outputs.OutputError` raised in the block (outputs checked
    before any work) becomes a :class:`UsageError` naming ``option`` (one line, exit 2).
    """
    from captum_gscorecam.outputs import OutputError

    try:
        yield
    except OutputError as error:
        raise UsageError(f"argument {option}: {error}") from None
