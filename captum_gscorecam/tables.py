"""Tables as text: one header and rows of cells, written as Markdown or as CSV.

``gscorecam explain``'s score table and the evaluation report's tables are written here. The
module imports nothing heavy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

__all__ = ["csv_table", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) table, without a final newline.

    Args:

        header (sequence of str): The column titles.
        rows (sequence of sequence of str): The cells, one sequence per row, as many as titles.

    Returns:
        *str*: ``| a | b |``, ``| --- | --- |``, then a line per row; a cell's pipes are
        escaped and its line breaks become spaces.

    Raises:
        ValueError: A row with a different number of cells than the header.
    """
    _check_widths(header, rows)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(map(_markdown_cell, line)) + " |" for line in lines)


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as CSV, with the ``csv`` module's quoting and line ends.

    Args:

        header (sequence of str): The column titles.
        rows (sequence of sequence of str): The cells, one sequence per row, as many as titles.

    Returns:
        *str*: the header line, then a line per row.

    Raises:
        ValueError: A row with a different number of cells than the header.
    """
    _check_widths(header, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown_cell(text: str) -> str:
    """A cell's text on one line, its pipes escaped so they do not split the cell."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _check_widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"rows: row {i} has {len(row)} cells, the header {len(header)} titles")
