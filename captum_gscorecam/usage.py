"""What the command line's subcommands share: usage errors, argument parsing, model loading."""

from __future__ import annotations

import argparse

from captum_gscorecam.clip import load_clip

__all__ = ["UsageError", "load_model", "parse_topk"]


class UsageError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def load_model(name: str, pretrained: str | None, device: str) -> tuple:
    """``load_clip`` with loading failures turned into one-line usage errors."""
    try:
        return load_clip(name, pretrained, device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    except (RuntimeError, OSError) as error:
        raise UsageError(
            f"pretrained: could not load {name!r} with pretrained={pretrained!r}: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None


def parse_topk(text: str) -> int | float:
    """``--topk``: "300" is a channel count, "0.1" a fraction of the channels."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return int(value) if value >= 1 and value.is_integer() else value
