"""``gscorecam explain``'s score files, ``scores.csv`` and ``scores.md`` beside the figures.

A run adds its rows to what earlier runs wrote there, never replacing them, and every row says
what made it: ``scores.csv`` has a row per (image, prompt) with the text that was scored (the
prompt in its template) and the run's settings as columns (``provenance.Provenance``);
``scores.md`` gets a table per run (a row per image, a column per scored text) over the
run's provenance line and its warnings (``Provenance.warnings``), in bold. Nothing here
imports torch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

from captum_gscorecam.outputs import write_text
from captum_gscorecam.provenance import Provenance
from captum_gscorecam.tables import markdown_table

__all__ = ["CSV_HEADER", "append_scores", "check_score_files", "score_table"]

CSV_HEADER = [
    "run",
    "image",
    "prompt",
    "text",
    "score",
    "seconds",
    *(field.name for field in dataclasses.fields(Provenance)),
]
"""The columns of ``scores.csv``: the run's start time, the image, the prompt, the text scored
(the prompt in its template), the CLIP score, the image's seconds, then the run's settings."""

# One explained image: its path, its CLIP score per prompt, the seconds it took.
Row = tuple[str, Sequence[float], float]


def check_score_files(folder: Path) -> None:
    """Refuse a ``scores.csv`` in ``folder`` that rows of this version cannot be added to.

    Raises:
        ValueError: Naming ``out`` and the file, whose first line is not ``CSV_HEADER``.
    """
    path = folder / "scores.csv"
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        header = next(csv.reader(file), [])
    if header != CSV_HEADER:
        raise ValueError(
            f"out: {path} has other columns than this version writes ({', '.join(header[:4])}"
            f"{', ...' if len(header) > 4 else ''}); move it away or choose another --out, so "
            "that it is not replaced"
        )


def score_table(rows: Sequence[Row], texts: Sequence[str]) -> str:
    """The run's scores as a Markdown table: a row per image, a column per scored text, and
    the seconds the image took.
    """
    cells = [
        [image, *(f"{score:.2f}" for score in scores), f"{seconds:.1f}"]
        for image, scores, seconds in rows
    ]
    return markdown_table(["image", *texts, "seconds"], cells)


def append_scores(
    folder: Path,
    run: str,
    rows: Sequence[Row],
    prompts: Sequence[str],
    texts: Sequence[str],
    provenance: Provenance,
    warnings: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Add a run's scores to ``folder/scores.csv`` and ``folder/scores.md`` (made if missing).

    Args:

        folder (Path): The folder of the figures.
        run (str): When the run started (ISO 8601), which tells runs of the same settings apart.
        rows (sequence of tuple): Per image: its path, its scores (one per prompt), its seconds.
        prompts (sequence of str): The prompts as given.
        texts (sequence of str): The texts scored: the prompts in their template.
        provenance (Provenance): What made the scores.
        warnings (sequence of str, optional): Why the scores cannot mean anything (random
                    weights, a shapes model on a photo), each a line of ``scores.md`` under the
                    provenance line (``scores.csv`` says the weights in its ``weights`` column).
                    Default: ``()``

    Returns:
        The paths of ``scores.csv`` and ``scores.md``.
    """
    settings = list(provenance.columns().values())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    csv_path, md_path = folder / "scores.csv", folder / "scores.md"
    if not csv_path.is_file():
        writer.writerow(CSV_HEADER)
    for image, scores, seconds in rows:
        for prompt, text, score in zip(prompts, texts, scores, strict=True):
            writer.writerow([run, image, prompt, text, f"{score:.4f}", f"{seconds:.2f}", *settings])
    write_text(csv_path, _existing(csv_path) + buffer.getvalue())
    earlier = _existing(md_path)
    said = "".join(f"\n**{warning}**\n" for warning in warnings)
    table = f"{score_table(rows, texts)}\n\n*{provenance.line()} | run {run}*\n{said}"
    write_text(md_path, f"{earlier}\n{table}" if earlier else table)
    return csv_path, md_path


def _existing(path: Path) -> str:
    """The text already in ``path``; empty if there is none."""
    return path.read_text(encoding="utf-8") if path.is_file() else ""
