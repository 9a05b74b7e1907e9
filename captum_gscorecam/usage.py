"""What the command line's subcommands share: errors, argument types, devices, model loading.

Nothing here imports torch at module level, so ``--help`` stays fast. For a subcommand
(``demo``, ``explain``, ``evaluate``):

- build it with ``subparsers.add_parser(...)``: the root parser is a :class:`Parser`, so every
  subparser prints an argparse error as one line (exit 2) and shows each option's default;
- use the ``*_arg`` functions as ``type=``: they refuse a bad value at parse time, before any
  model loads, with a message that fits the value (``topk_arg``, ``perturbations_arg``,
  ``device_arg``, ``count_arg``, ``seed_arg``, ``template_arg``, ``prompt_arg``, ``layer_arg``,
  ``figure_arg``, ``folder_arg``);
- after parsing, ``resolve_device`` (``auto`` -> cuda when available; a missing GPU is a usage
  error), ``check_model`` and ``load_model`` (offline: fails at once), then
  ``find_layer`` for ``--layer``; raise :class:`UsageError` for anything else the user can fix.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from captum_gscorecam.checks import check_perturbations_per_eval, check_topk

__all__ = [
    "HelpFormatter",
    "Parser",
    "UsageError",
    "check_model",
    "count_arg",
    "device_arg",
    "figure_arg",
    "figure_formats",
    "find_layer",
    "folder_arg",
    "hub_reachable",
    "layer_arg",
    "load_model",
    "perturbations_arg",
    "prompt_arg",
    "resolve_device",
    "seed_arg",
    "template_arg",
    "topk_arg",
]

TOPK_DEFAULT_HELP = (
    "per tower: 10%% of the channels of a convolutional layer, 50%% of a ViT layer's"
)


CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"})


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


# ---------------------------------------------------------------- after parsing, before loading


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a missing device -> UsageError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    backend = getattr(torch, kind, None) if kind in ("cuda", "xpu") else None
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        count = backend.device_count() if hasattr(backend, "device_count") else 1
        if not index or int(index) < count:
            return device
        raise UsageError(
            f"argument --device: {device} does not exist; this machine has {count} "
            f"({kind}:0 to {kind}:{count - 1})"
        )
    if kind == "cpu":
        return device
    raise UsageError(
        f"argument --device: {kind} is not available (torch {torch.__version__} sees no such "
        "device on this machine); use --device cpu or auto"
    )


def check_model(name: str, pretrained: str | None) -> None:
    """Refuse a model name or a ``--pretrained`` that cannot work, before anything is built."""
    if pretrained is not None and name.startswith(("shapes-", "hf:")):
        what = (
            f"{name} brings its own weights"
            if name.startswith("shapes-")
            else "the hf: repo id or folder names the weights"
        )
        raise UsageError(
            f"argument --pretrained: {what}; --pretrained is for open_clip models (a tag such "
            "as openai, or a checkpoint file)"
        )
    if name in ("shapes-rn", "shapes-vit") or (name.startswith("hf:") and len(name) > 3):
        return
    import open_clip

    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise UsageError(
            f"argument --model: unknown model {name!r}; expected shapes-rn, shapes-vit, an "
            f"open_clip name ({', '.join(close) or 'see open_clip.list_models()'}) or hf:REPO"
        )
    if pretrained is None or Path(pretrained).is_file():
        return
    path = Path(pretrained)
    if path.suffix in CHECKPOINT_SUFFIXES or len(path.parts) > 1:
        raise UsageError(f"argument --pretrained: no such checkpoint file: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained.lower() not in [tag.lower() for tag in tags]:
        raise UsageError(
            f"argument --pretrained: {name} has no pretrained tag {pretrained!r} and no such "
            f"file exists; its tags: {', '.join(tags) or 'none'}"
        )


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``, or the HTTPS proxy) answers a TCP connect."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_offline_requested() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def _needs_hub(name: str, pretrained: str | None) -> bool:
    """Whether loading may download: an hf: repo id, or an open_clip pretrained tag."""
    if name.startswith("hf:"):
        return not Path(name.removeprefix("hf:")).is_dir()
    return pretrained is not None and not Path(pretrained).is_file()


def load_model(name: str, pretrained: str | None, device: str) -> tuple:
    """``load_clip`` with loading failures as one-line usage errors.

    Weights that would come from the Hugging Face Hub load from the local cache alone when
    ``HF_HUB_OFFLINE`` is set or the Hub does not answer within 2 s, so an offline machine
    fails at once instead of retrying for a minute. A checkpoint file that does not fit the
    architecture is refused with the keys and shapes that differ.
    """
    from captum_gscorecam.clip import load_clip

    check_model(name, pretrained)
    checkpoint = pretrained is not None and Path(pretrained).is_file()
    offline = _needs_hub(name, pretrained) and (_hub_offline_requested() or not hub_reachable())
    option = "--model" if name.startswith("hf:") else "--pretrained"
    try:
        with _quiet_logging(), _hub_offline(offline):
            loaded = load_clip(name, None if checkpoint else pretrained, device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    except Exception as error:  # loaders raise many kinds; each becomes one line
        if offline:
            raise UsageError(
                f"argument {option}: the weights of {name}"
                f"{'' if pretrained is None else f' ({pretrained})'} are not in the local cache "
                "and the Hugging Face Hub cannot be reached (offline); fetch them once online, "
                f"or give a {'local folder' if option == '--model' else 'checkpoint file'}"
            ) from None
        raise UsageError(
            f"argument {option}: could not load {name!r} with pretrained={pretrained!r}: "
            f"{_first_line(error)}"
        ) from None
    if checkpoint:
        _load_checkpoint(loaded[0], name, pretrained)
    return loaded


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def _load_checkpoint(model: Any, name: str, path: str) -> None:
    """open_clip's ``load_checkpoint``; a misfit is one line naming the keys and shapes."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, path)
    except Exception as error:  # a misfit shows as RuntimeError, AssertionError, KeyError...
        raise UsageError(
            f"argument --pretrained: {path} does not fit {name}: "
            f"{_state_dict_mismatch(model, path) or _first_line(error)}"
        ) from None


def _state_dict_mismatch(model: Any, path: str, shown: int = 2) -> str:
    """The keys and shapes in which a checkpoint and a model differ, counted, first few named."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(path)
    except Exception:  # not a state dict at all: the caller reports the loader's error
        return ""
    ours = model.state_dict()
    shapes = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in ours.items()
        if key in state and getattr(state[key], "shape", value.shape) != value.shape
    ]
    kinds = {
        "shape(s) differ (checkpoint vs model)": shapes,
        "key(s) missing from the checkpoint": [key for key in ours if key not in state],
        "unexpected key(s)": [key for key in state if key not in ours],
    }
    return "; ".join(
        f"{len(items)} {kind}: {', '.join(items[:shown])}{', ...' if len(items) > shown else ''}"
        for kind, items in kinds.items()
        if items
    )


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """Loaders log download failures as errors; the command prints its own one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for the block, also where huggingface_hub is already imported."""
    if not offline:
        yield
        return
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


def find_layer(model: Any, path: str) -> Any:
    """The module at a dotted path of ``model``; a UsageError listing close names if none."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, [name for name in modules if name], n=4, cutoff=0.6)
    if not close:  # the children of the longest prefix that exists
        prefix = path
        while prefix and prefix not in modules:
            prefix = prefix.rpartition(".")[0]
        close = [f"{prefix}.{n}" if prefix else n for n, _ in modules[prefix].named_children()]
    raise UsageError(
        f"argument --layer: the model has no module {path!r}; close names: "
        f"{', '.join(close[:8])}{', ...' if len(close) > 8 else ''}"
    )
