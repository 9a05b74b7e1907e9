"""What the command line's subcommands share: errors and argument types.

Nothing here imports torch at module level, so ``--help`` stays fast. For a subcommand
(``demo``, ``explain``, ``evaluate``):

- build it with ``subparsers.add_parser(...)``: the root parser is a :class:`Parser`, so every
  subparser prints an argparse error as one line (exit 2) and shows each option's default;
- use the ``*_arg`` functions as ``type=``: they refuse a bad value at parse time, before any
  model loads, with a message that fits the value (``topk_arg``, ``perturbations_arg``,
  ``device_arg``, ``count_arg``, ``seed_arg``, ``template_arg``, ``prompt_arg``, ``layer_arg``,
  ``figure_arg``, ``folder_arg``);
- after parsing, call ``captum_gscorecam.loading`` (``resolve_device``, ``check_model``,
  ``load_model``, ``find_layer``) inside :func:`usage_errors`, which turns its ValueErrors into
  one-line usage errors; raise :class:`UsageError` for anything else the user can fix.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from captum_gscorecam.checks import check_perturbations_per_eval, check_topk

__all__ = [
    "HelpFormatter",
    "Parser",
    "UsageError",
    "count_arg",
    "device_arg",
    "figure_arg",
    "figure_formats",
    "folder_arg",
    "layer_arg",
    "perturbations_arg",
    "prompt_arg",
    "seed_arg",
    "template_arg",
    "topk_arg",
    "usage_errors",
]

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
    return _checked(check_topk, _number(text))


def perturbations_arg(text: str) -> int:
    """``--perturbations-per-eval``: masked images per forward pass, an int >= 1."""
    return _checked(check_perturbations_per_eval, _number(text))


def count_arg(text: str) -> int:
    """A count that must be at least 1 (``--scenes``, ``--limit``)."""
    value = _number(text)
    if not isinstance(value, int) or value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def seed_arg(text: str) -> int:
    """A random seed: an integer >= 0."""
    value = _number(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def device_arg(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu[:N]``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def template_arg(text: str) -> str:
    """A prompt template with exactly one ``{}`` for the name, e.g. ``"a photo of a {}"``."""
    try:
        filled = text.format("\0")
    except (IndexError, KeyError, ValueError):
        filled = ""
    if filled.count("\0") != 1:
        raise argparse.ArgumentTypeError(
            f'expected text with exactly one {{}} for the name, e.g. "a photo of a {{}}", '
            f"got {text!r}"
        )
    return text


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


def figure_arg(text: str) -> Path:
    """A figure file to write: a supported extension, in an existing folder, not a folder."""
    path = Path(text)
    formats = figure_formats()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file such as demo.png")
    if path.suffix.lower().lstrip(".") not in formats:
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


# ---------------------------------------------------------------- library errors as usage errors

# The library's argument names (``device: ...``) and the options that set them.
_OPTIONS = {
    "model": "--model",
    "pretrained": "--pretrained",
    "device": "--device",
    "layer": "--layer",
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
