"""Shared by the benchmark scripts: print a result table and optionally save it."""

from __future__ import annotations

import os


def emit(text: str, out: str | None) -> None:
    """Print ``text``; with ``out``, also write it there (creating the folder)."""
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as file:
            file.write(text + "\n")
