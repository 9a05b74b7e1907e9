"""The ``gscorecam`` command: ``demo`` (offline, the shapes world), ``explain`` (your photos),
``app`` (the same in a web page) and ``evaluate`` (localization benchmarks).

One module per subcommand, each with ``add_parser`` (its options, checked as they are parsed)
and ``run`` (its work); torch, open_clip, Captum, matplotlib and gradio are imported inside
``run``, so ``--help`` answers at once. The library raises ValueError for anything the user
can fix; a subcommand turns it into a :class:`~captum_gscorecam.cli.options.UsageError`, which
:func:`main` prints as one line (exit 2). Outputs are checked before the model loads (an output
that is an input, a read-only or full folder, a folder where a file goes: exit 2); a write that
fails during the work (a disk that fills up) is one line naming the file, exit 1, and leaves no
partial file (:mod:`~captum_gscorecam.outputs`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from captum_gscorecam import __version__
from captum_gscorecam.cli import app, demo, evaluate, explain
from captum_gscorecam.cli.options import Parser, UsageError
from captum_gscorecam.outputs import OutputError

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The ``gscorecam`` argument parser."""
    root = Parser(prog="gscorecam", description="What is CLIP looking at?")
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (demo, explain, app, evaluate):
        command.add_parser(subcommands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a usage error prints one line and returns 2, an output that fails
    during the work one line and 1.
    """
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as error:
        print(f"gscorecam {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OutputError as error:
        print(f"gscorecam {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0
