"""The photos of a dataset extraction and the prompts each is explained against.

Photos come from files, folder trees (walked recursively) and globs, from a list file of paths,
or from a COCO instances file. Each photo has a ``name``: its path relative to the folder its
inputs share (a COCO file's ``file_name``), with ``/`` separators, so two ``img.jpg`` in
different folders keep different names, and its outputs (``maps/<name>.npy``) never collide.
Prompts are the same for every photo, per photo from a CSV or JSON-lines file
(``photo,prompt`` rows; ``photo`` is the name or the path), or a COCO file's category names.
Every fault is a ValueError naming the argument, the file and the line. Nothing here imports
torch.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from captum_gscorecam.images import PHOTO_SUFFIXES, expand_images

__all__ = [
    "Photo",
    "coco_photos",
    "listed_photos",
    "photo_names",
    "read_prompt_file",
    "tree_photos",
    "with_prompts",
]

CocoId = int | str


@dataclass(frozen=True)
class Photo:
    """One photo to explain, and what it is explained against.

    Attributes:
        name: Its path relative to the inputs' shared folder, ``/``-separated; outputs are
            named after it.
        path: The file.
        prompts: The prompts (before the template), each once, in order.
        image_id: Its COCO image id, or None outside a COCO dataset.
        category_ids: The COCO category id of each prompt, or None outside a COCO dataset.
    """

    name: str
    path: Path
    prompts: tuple[str, ...] = ()
    image_id: CocoId | None = None
    category_ids: tuple[CocoId, ...] | None = None


def photo_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the deepest folder holding them all, ``/``-separated.

    Two different files never get the same name (their absolute paths differ below that folder).
    """
    absolute = [os.path.abspath(path) for path in paths]
    if not absolute:
        return []
    root = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return [Path(os.path.relpath(path, root)).as_posix() for path in absolute]


def tree_photos(specs: Sequence[str | Path], exclude: str | Path | None = None) -> list[Photo]:
    """The photos of files, folders (recursive: every photo below them) and globs.

    A folder contributes the files below it whose suffix is in ``images.PHOTO_SUFFIXES``
    (hidden files and folders left out), sorted by path; a file listed twice is kept once.
    Files below ``exclude`` (the output folder, whose figures are photos too) are left out.

    Raises:
        ValueError: naming ``image`` and a spec that matches nothing.
    """
    expanded: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(
                p
                for p in path.glob("**/*")
                if p.suffix.lower() in PHOTO_SUFFIXES and _shown(p, path)
            )
            if exclude is not None:
                found = [p for p in found if not _below(p, Path(exclude))]
            if not found:
                raise ValueError(f"image: no photos below folder {spec}")
            expanded.extend(str(p) for p in found)
        else:
            expanded.append(str(spec))
    paths = expand_images(expanded)
    return [Photo(name, path) for name, path in zip(photo_names(paths), paths, strict=True)]


def _shown(path: Path, folder: Path) -> bool:
    """Whether a found path is a file and no part of it below ``folder`` is hidden."""
    parts = path.relative_to(folder).parts
    return path.is_file() and not any(part.startswith(".") for part in parts)


def _below(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def listed_photos(list_file: str | Path) -> list[Photo]:
    """The photos named in a list file: one path per line, relative to the list's folder.

    Blank lines and lines starting with ``#`` are skipped; a path listed twice is kept once.

    Raises:
        ValueError: naming ``list``, the file and the line of a path that is not a file.
    """
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"list: cannot read {list_file} ({error})") from None
    paths: list[Path] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = list_file.parent / text
        if not path.is_file():
            raise ValueError(f"list: {list_file}:{number}: no such photo file: {path}")
        paths.append(path)
    if not paths:
        raise ValueError(f"list: {list_file} names no photos")
    paths = expand_images([str(path) for path in paths])
    return [Photo(name, path) for name, path in zip(photo_names(paths), paths, strict=True)]


def coco_photos(
    annotations: str | Path,
    images: str | Path,
    categories: Literal["all", "present"] = "all",
    limit: int | None = None,
) -> list[Photo]:
    """The photos of a COCO instances file, each with the dataset's category names as prompts.

    Read by ``evaluation.coco.read_coco`` (checked; images missing on disk skipped with a
    warning).

    Args:
        annotations: The instances JSON.
        images: The image folder.
        categories: ``"all"``: every category for every photo (what COCO's detection protocol
            scores); ``"present"``: the categories annotated on the photo.
            Default: "all"
        limit: The first ``limit`` images; None for all.
            Default: None

    Returns:
        The photos in file order, named by their ``file_name``, with their image id and the
        category id of each prompt.
    """
    from captum_gscorecam.evaluation.coco import coco_categories, read_coco

    if categories not in ("all", "present"):
        raise ValueError(f"categories: expected 'all' or 'present', got {categories!r}")
    names = coco_categories(annotations)
    photos = []
    for image in read_coco(annotations, images, limit):
        ids = list(names)
        if categories == "present":
            present = {str(a["category_id"]) for a in image.annotations}
            ids = [i for i in ids if i in present]
        name = Path(os.path.relpath(image.path, images)).as_posix()
        photos.append(
            Photo(
                name,
                image.path,
                tuple(names[i] for i in ids),
                _coco_id(image.image_id),
                tuple(_coco_id(i) for i in ids),
            )
        )
    return photos


def _coco_id(text: str) -> CocoId:
    """An id as the COCO file most likely wrote it (``read_coco`` gives ids as text)."""
    return int(text) if text.lstrip("-").isdigit() else text


def read_prompt_file(path: str | Path) -> dict[str, list[str]]:
    """Per-photo prompts from a CSV (``photo,prompt`` rows, an optional header row) or a
    JSON-lines file (``{"photo": ..., "prompt": "..." or [...]}`` per line, ``.jsonl``).

    A photo's rows add up, in order; a prompt given twice for a photo counts once.

    Raises:
        ValueError: naming ``prompts``, the file and the line that is malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"prompts: cannot read {path} ({error})") from None
    rows = _jsonl_rows(path, text) if path.suffix.lower() in (".jsonl", ".ndjson") else None
    if rows is None:
        rows = _csv_rows(path, text)
    table: dict[str, list[str]] = {}
    for number, photo, prompt in rows:
        if not photo.strip() or not prompt.strip():
            raise ValueError(f"prompts: {path}:{number}: expected a photo and a prompt")
        prompts = table.setdefault(photo.strip(), [])
        if prompt.strip() not in prompts:
            prompts.append(prompt.strip())
    if not table:
        raise ValueError(f"prompts: {path} holds no photo,prompt rows")
    return table


def _csv_rows(path: Path, text: str) -> Iterable[tuple[int, str, str]]:
    rows = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(
                f"prompts: {path}:{number}: expected 2 columns (photo,prompt), got {len(row)}"
            )
        if number == 1 and [c.strip().lower() for c in row] == ["photo", "prompt"]:
            continue
        rows.append((number, row[0], row[1]))
    return rows


def _jsonl_rows(path: Path, text: str) -> Iterable[tuple[int, str, str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"prompts: {path}:{number}: not JSON ({error.msg})") from None
        prompts = record.get("prompt") if isinstance(record, dict) else None
        if isinstance(prompts, str):
            prompts = [prompts]
        ok = isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)
        if not ok or not isinstance(record.get("photo"), str):
            raise ValueError(
                f'prompts: {path}:{number}: expected {{"photo": "...", "prompt": "..." or '
                f'["...", ...]}}, got {line.strip()[:60]}'
            )
        rows.extend((number, record["photo"], prompt) for prompt in prompts)
    return rows


def with_prompts(
    photos: Sequence[Photo],
    prompts: Sequence[str] | None = None,
    table: Mapping[str, Sequence[str]] | None = None,
) -> list[Photo]:
    """``photos`` with their prompts: ``prompts`` for every photo, else each photo's from
    ``table`` (keyed by its name or its path as given), else the ones it has (COCO's).

    Raises:
        ValueError: naming ``prompts``: a photo without prompts, or a row of ``table`` that
        names no photo (a typo would otherwise drop its photo's prompts silently).
    """
    if prompts is not None:
        return [Photo(p.name, p.path, tuple(dict.fromkeys(prompts)), p.image_id) for p in photos]
    if table is None:
        missing = [p.name for p in photos if not p.prompts]
        if missing:
            raise ValueError(f"prompts: no prompts for {missing[0]} (and {len(missing) - 1} more)")
        return list(photos)
    used: set[str] = set()
    found = []
    for photo in photos:
        key = next((k for k in (photo.name, str(photo.path)) if k in table), None)
        if key is None:
            raise ValueError(f"prompts: the prompt file has no row for photo {photo.name}")
        used.add(key)
        found.append(Photo(photo.name, photo.path, tuple(table[key]), photo.image_id))
    unused = [key for key in table if key not in used]
    if unused:
        raise ValueError(
            f"prompts: the prompt file names {len(unused)} photo(s) not among the inputs, "
            f"e.g. {unused[0]!r} (photos are named by their path relative to their shared "
            f"folder, e.g. {photos[0].name!r})"
        )
    return found
