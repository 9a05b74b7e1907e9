"""Explain a whole dataset into standard files: resumable, and sharded under torchrun.

:func:`extract` writes, under ``out_dir``:

- ``maps/<name>.npy``: float16 or float32 ``(T, H, W)`` per photo at its resolution (NaN where
  the preprocess cropped it away), ``<name>`` the photo's relative path (``a/img.jpg``);
- ``index.jsonl``: a line per photo, in input order: ``photo``, ``prompts`` (and ``texts``, as
  scored, with the template), CLIP ``scores`` (``logit_scale * cos``), per prompt its
  ``boxes`` (``x, y, w, h, mass``, ``localize.boxes_from_map``) and ``points`` (``x, y,
  value``, ``localize.points_from_map``), ``seconds``, the ``map`` file and its ``sha256``,
  the ``settings`` digest and the ``provenance``;
- ``boxes.json``: COCO detection results (``image_id``, ``category_id``, ``bbox``, ``score``),
  which ``pycocotools``' ``COCO.loadRes`` and ``COCOeval`` take as they are; a box's score is
  its share of the map's mass times the prompt's probability among the photo's prompts
  (softmax of the CLIP scores), so boxes of prompts CLIP finds unlikely rank low;
- ``failed.jsonl``: ``photo`` and ``reason`` of each photo that could not be read;
- ``run.json``: the settings in full; ``figures/<name>.png`` when asked.

Each photo's map is written whole (``outputs.write_npy_slices``) before its line is appended
to ``parts/index.rank<r>.jsonl``; a rerun keeps the photos whose line carries this run's
settings digest and whose map still has the recorded SHA-256, and computes the others (a map
damaged or truncated, a line cut by a kill). Lines of other settings refuse the folder;
``explain.lock`` refuses a second run (``evaluation.store``). Under torchrun the photos left
to do are dealt by rank (``left[rank::world]``), ``out_dir`` shared by the ranks, and rank 0
merges the shards at the end, so the final files do not depend on the number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captum_gscorecam.checks import check_template, check_topk
from captum_gscorecam.evaluation.distributed import rank_and_world, run_lock
from captum_gscorecam.evaluation.store import (
    RUN_FILE,
    Records,
    append_line,
    drop_damaged,
    refuse_other_settings,
    settings_digest,
)
from captum_gscorecam.extraction.inputs import Photo
from captum_gscorecam.images import read_image
from captum_gscorecam.localize import boxes_from_map, points_from_map
from captum_gscorecam.outputs import (
    check_outputs,
    make_folder,
    write_figure,
    write_json,
    write_npy_slices,
    write_text,
)
from captum_gscorecam.provenance import Provenance

__all__ = ["FINAL_FILES", "ExtractionSummary", "extract", "extraction_config"]

INDEX_FILE, BOXES_FILE, FAILED_FILE = "index.jsonl", "boxes.json", "failed.jsonl"
FINAL_FILES = (INDEX_FILE, BOXES_FILE, FAILED_FILE, RUN_FILE)
LOCK = "explain"
DTYPES = ("float16", "float32")
_TEXT_CACHE = 4096  # prompt embeddings kept; datasets with per-photo prompts may have millions


@dataclass(frozen=True)
class ExtractionSummary:
    """What :func:`extract` did.

    Attributes:
        photos: Photos in the inputs.
        computed: Photos this rank explained in this run.
        reused: Photos whose files from an earlier run were valid (all ranks).
        failed: Photos that could not be read (all ranks), in ``failed.jsonl``.
    """

    photos: int
    computed: int
    reused: int
    failed: int


def extraction_config(
    run: Mapping[str, object],
    method: str,
    topk: int | float | None,
    template: str,
    precision: str,
    dtype: str = "float32",
    boxes: int = 5,
    points: int = 1,
    box_threshold: float | None = None,
    **settings: object,
) -> dict[str, object]:
    """The settings that make two extractions' files the same, as plain JSON data; a rerun on
    the same folder must match them. ``box_threshold`` (None: Otsu's) is a key only when
    given, so the folders of runs made before it existed keep their digest. ``settings`` are
    further ones (layer, no_crop...).
    """
    config = {
        "run": dict(run),
        "method": method,
        "topk": topk,
        "template": template,
        "precision": precision,
        "dtype": dtype,
        "boxes": boxes,
        "points": points,
        **({} if box_threshold is None else {"box_threshold": box_threshold}),
        **settings,
    }
    return json.loads(json.dumps(config))


def extract(
    model: nn.Module,
    preprocess: Any,
    tokenizer: Any,
    photos: Sequence[Photo],
    out_dir: str | Path,
    config: Mapping[str, object],
    provenance: Provenance,
    layer: nn.Module | None = None,
    perturbations_per_eval: int | None = None,
    figures: bool = False,
    workers: int = 0,
    show_progress: bool = False,
) -> ExtractionSummary:
    """Explain every photo against its prompts into ``out_dir``; resumable and sharded.

    Args:
        model: A CLIP model on the device to run on, in eval mode.
        preprocess: Its image preprocess (PIL image to ``(3, S, S)``).
        tokenizer: Its tokenizer.
        photos: The photos with their prompts (``extraction.inputs``), names unique.
        out_dir: The output folder; an earlier run's files there of the same ``config`` are
            reused.
        config: :func:`extraction_config`: ``method``, ``topk``, ``template``, ``precision``,
            ``dtype``, ``boxes`` (per prompt, best first), ``box_threshold`` (absent: Otsu's)
            and ``points`` (per prompt) are read from it; its digest is on every line.
        provenance: What made the maps, on every line of ``index.jsonl``.
        layer: The explained layer of a method that takes one (None: its default).
        perturbations_per_eval: Masked images per forward pass (None: the method's default).
        figures: Also write ``figures/<name>.png`` (photos computed in this run).
            Default: False
        workers: DataLoader worker processes decoding photos ahead of the model (0: decoded
            in this process).
            Default: 0
        show_progress: A progress bar per rank (photos/s, ETA).
            Default: False

    Returns:
        An :class:`ExtractionSummary`.

    Raises:
        ValueError: no photos, names not unique, a photo without prompts, a bad setting, or
            an ``out_dir`` holding files of other settings or in use by another run.
        OutputError: an output that cannot be written, before any work or while writing.
    """
    _check(photos, config, workers)
    out_dir = Path(out_dir)
    rank, world = rank_and_world()
    check_outputs([out_dir / name for name in FINAL_FILES], [p.path for p in photos])
    digest = settings_digest(config)
    make_folder(out_dir / "parts")
    with run_lock(out_dir, rank, world, LOCK):
        done, damaged, other = _validated(out_dir, digest, photos, rank, world)
        refuse_other_settings(out_dir, Records(other_settings=other))
        if rank == 0:
            drop_damaged(Records(damaged=damaged))
            made = {"provenance": provenance.as_dict(), "warnings": provenance.warnings(False)}
            write_json(out_dir / RUN_FILE, {"config": config, **made})
        if world > 1:
            dist.barrier()  # the shards are clean before any rank appends
        left = [p for p in photos if p.name not in done][rank::world]
        work = _Work(model, preprocess, tokenizer, config, provenance, digest, out_dir)
        work.layer, work.perturbations_per_eval, work.figures = (
            layer,
            perturbations_per_eval,
            figures,
        )
        loader = DataLoader(_Decoded(left), batch_size=None, num_workers=workers, collate_fn=_as_is)
        shard = "" if world == 1 else f" {rank}/{world}"
        with tqdm(
            total=len(left), desc=f"rank{shard}", unit="photo", position=rank,
            disable=not show_progress, dynamic_ncols=True,
        ) as bar:  # fmt: skip
            for index, pixels, error in loader:
                work.photo(left[index], pixels, error, rank)
                bar.update()
        if world > 1:
            dist.barrier()  # every shard is complete on disk
        failed = _merge(out_dir, digest, photos) if rank == 0 else 0
    return ExtractionSummary(len(photos), len(left), len(done), failed)


def _check(photos: Sequence[Photo], config: Mapping[str, object], workers: int) -> None:
    if not photos:
        raise ValueError("photos: expected at least one photo")
    names: dict[str, Path] = {}
    for photo in photos:
        if photo.name in names:
            raise ValueError(
                f"photos: {names[photo.name]} and {photo.path} have the same name {photo.name!r}"
            )
        names[photo.name] = photo.path
        if not photo.prompts:
            raise ValueError(f"photos: {photo.name} has no prompts")
    check_template(config["template"])
    if config["topk"] is not None:
        check_topk(config["topk"])
    if config["dtype"] not in DTYPES:
        raise ValueError(f"dtype: expected float16 or float32, got {config['dtype']!r}")
    threshold = config.get("box_threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 <= threshold <= 1
    ):
        raise ValueError(f"box_threshold: expected a number in [0, 1] or None, got {threshold!r}")
    for key in ("boxes", "points"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 0:
            raise ValueError(f"{key}: expected an integer >= 0, got {config[key]!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an integer >= 0, got {workers!r}")


# ---------------------------------------------------------------- decoding


class _Decoded(Dataset):
    """Photos decoded (in a worker when there are some): ``(index, pixels, error)``."""

    def __init__(self, photos: Sequence[Photo]) -> None:
        self.paths = [photo.path for photo in photos]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str | None]:
        try:
            photo = read_image(self.paths[index])
        except ValueError as error:
            return index, None, str(error)
        return index, torch.from_numpy(np.asarray(photo).copy()), None


def _as_is(item: Any) -> Any:
    return item


# ---------------------------------------------------------------- one photo


class _Work:
    """Explains one photo and writes its files; holds the prompt embeddings met so far."""

    layer: nn.Module | None = None
    perturbations_per_eval: int | None = None
    figures: bool = False

    def __init__(
        self,
        model: nn.Module,
        preprocess: Any,
        tokenizer: Any,
        config: Mapping[str, object],
        provenance: Provenance,
        digest: str,
        out_dir: Path,
    ) -> None:
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.config, self.provenance, self.digest, self.out_dir = (
            config,
            provenance,
            digest,
            out_dir,
        )
        self.texts: OrderedDict[str, Tensor] = OrderedDict()

    def photo(self, photo: Photo, pixels: Tensor | None, error: str | None, rank: int) -> None:
        from PIL import Image

        if pixels is None:
            self._failed(photo, str(error), rank)
            return
        began = time.perf_counter()
        image = Image.fromarray(pixels.numpy())
        texts = [str(self.config["template"]).format(prompt) for prompt in photo.prompts]
        try:
            record = self._explain(photo, image, texts)
        except ValueError as refused:  # e.g. a photo the preprocess cannot take
            self._failed(photo, str(refused), rank)
            return
        record["seconds"] = round(time.perf_counter() - began, 3)
        append_line(self.out_dir / "parts" / f"index.rank{rank}.jsonl", record)

    def _failed(self, photo: Photo, reason: str, rank: int) -> None:
        line = {"settings": self.digest, "photo": photo.name, "reason": reason}
        append_line(self.out_dir / "parts" / f"failed.rank{rank}.jsonl", line)

    def _explain(self, photo: Photo, image: Any, texts: Sequence[str]) -> dict[str, object]:
        from captum_gscorecam.photos import explain_photo

        method, config = str(self.config["method"]), self.config
        maps, scores = explain_photo(
            self.model,
            self.preprocess,
            image,
            self._embedded(texts),
            method,
            config["topk"],  # type: ignore[arg-type]
            layer=self.layer,
            perturbations_per_eval=self.perturbations_per_eval,
            precision=str(config["precision"]),
        )
        boxes: list[list[list[float]]] = []
        points: list[list[list[float]]] = []
        spacing = max(1.0, min(image.size) / 10)

        def localized() -> Iterator[np.ndarray]:
            for saliency in maps:
                found = boxes_from_map(saliency, config.get("box_threshold"))  # type: ignore[arg-type]
                boxes.append(_rounded(found[: int(config["boxes"])]))
                found = points_from_map(saliency, max(1, int(config["points"])), spacing)
                points.append(_rounded(found[: int(config["points"])]))
                yield saliency

        path = self.out_dir / "maps" / f"{photo.name}.npy"
        write_npy_slices(path, localized(), maps.shape, config["dtype"])
        if self.figures:
            figure = self.out_dir / "figures" / f"{photo.name}.png"
            _write_figure(figure, image, maps, photo, texts, scores, self.provenance)
        return {
            "settings": self.digest,
            "photo": photo.name,
            "file": str(photo.path),
            "image_id": photo.image_id,
            "category_ids": None if photo.category_ids is None else list(photo.category_ids),
            "prompts": list(photo.prompts),
            "texts": list(texts),
            "scores": [round(float(s), 5) for s in scores],
            "boxes": boxes,
            "points": points,
            "map": f"maps/{photo.name}.npy",
            "shape": list(maps.shape),
            "sha256": _sha256(path),
            "provenance": self.provenance.as_dict(),
        }

    def _embedded(self, texts: Sequence[str]) -> Tensor:
        """``(T, D)`` embeddings, the ones not met before encoded in one call."""
        from captum_gscorecam.clip import encode_text

        new = [text for text in dict.fromkeys(texts) if text not in self.texts]
        if new:
            for text, row in zip(new, encode_text(self.model, self.tokenizer, new), strict=True):
                self.texts[text] = row
        for text in texts:
            self.texts.move_to_end(text)
        while len(self.texts) > max(_TEXT_CACHE, len(texts)):
            self.texts.popitem(last=False)
        return torch.stack([self.texts[text] for text in texts])


def _rounded(rows: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 5) for v in row] for row in rows]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_figure(
    path: Path,
    image: Any,
    maps: Any,
    photo: Photo,
    texts: Sequence[str],
    scores: Any,
    provenance: Provenance,
) -> None:
    """``explain``'s figure of the photo (``visualization.photo_figure``: what made it and its
    warnings on top, a row per prompt with its score, one colour scale and its bar), with each
    map's boxes (best in white) on it.
    """
    from matplotlib.patches import Rectangle

    from captum_gscorecam.images import for_display
    from captum_gscorecam.visualization import photo_figure

    shown = for_display(image, photo.name)
    placed = maps.at_size(shown.size)
    fig = photo_figure(
        shown, placed, texts, [float(s) for s in scores], provenance.method,
        title=provenance.line(), warnings=provenance.warnings(shapes_scene=False),
    )  # fmt: skip
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for t, ax in enumerate(panels):
        for rank, (x, y, w, h, _) in enumerate(boxes_from_map(placed[t])[:3]):
            colour = "white" if rank == 0 else "0.6"
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=colour, lw=1.5))
    write_figure(path, fig, dpi=100)


# ---------------------------------------------------------------- resume and merge


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(index, object or None)`` of each non-blank line of a shard."""
    for index, line in enumerate(path.read_bytes().splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            yield index, None
            continue
        yield index, record if isinstance(record, dict) else None


_KEYS = {"photo": str, "prompts": list, "scores": list, "boxes": list, "map": str, "sha256": str}


def _records(
    out_dir: Path, digest: str
) -> tuple[dict[str, tuple[Path, int, dict[str, Any]]], dict[Path, list[int]], int]:
    """The index shards: the first well-formed line of this run's settings per photo (with its
    shard and line), the damaged lines per shard, and the count of lines of other settings.
    """
    found: dict[str, tuple[Path, int, dict[str, Any]]] = {}
    damaged: dict[Path, list[int]] = {}
    other = 0
    for shard in sorted((out_dir / "parts").glob("index.rank*.jsonl")):
        for index, record in _lines(shard):
            if record is not None and record.get("settings") not in (None, digest):
                other += 1
            elif record is None or not all(isinstance(record.get(k), t) for k, t in _KEYS.items()):
                damaged.setdefault(shard, []).append(index)
            else:
                found.setdefault(record["photo"], (shard, index, record))
    return found, damaged, other


def _validated(
    out_dir: Path, digest: str, photos: Sequence[Photo], rank: int, world: int
) -> tuple[set[str], dict[Path, list[int]], int]:
    """The photos already done (their line valid, their map unchanged), every line to drop
    (damaged, or of a photo whose map changed or whose prompts differ) and the count of lines
    of other settings. Each rank checks the maps of ``photos[rank::world]``; all agree.
    """
    found, damaged, other = _records(out_dir, digest)
    done, stale = [], []
    for photo in photos[rank::world]:
        if photo.name not in found:
            continue
        shard, index, record = found[photo.name]
        if record["prompts"] == list(photo.prompts) and _map_intact(out_dir, record):
            done.append(photo.name)
        else:
            stale.append((str(shard), index))
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (done, stale))
        done = [name for part, _ in gathered for name in part]
        stale = [line for _, part in gathered for line in part]
    for shard, index in stale:
        damaged.setdefault(Path(shard), []).append(index)
    return set(done), damaged, other


def _map_intact(out_dir: Path, record: Mapping[str, Any]) -> bool:
    path = out_dir / record["map"]
    return path.is_file() and _sha256(path) == record["sha256"]


def _merge(out_dir: Path, digest: str, photos: Sequence[Photo]) -> int:
    """Write ``index.jsonl``, ``boxes.json`` and ``failed.jsonl`` from the shards, in input
    order; returns the count of failed photos.
    """
    found, _, _ = _records(out_dir, digest)
    reasons: dict[str, str] = {}
    for shard in sorted((out_dir / "parts").glob("failed.rank*.jsonl")):
        for _, line in _lines(shard):
            if line is not None and line.get("settings") == digest:
                reasons[str(line.get("photo"))] = str(line.get("reason"))
    index, detections, failed = [], [], []
    for photo in photos:
        if photo.name in found:
            record = found[photo.name][2]
            index.append(json.dumps(record, allow_nan=False) + "\n")
            detections.extend(_detections(photo, record))
        elif photo.name in reasons:
            failed.append(json.dumps({"photo": photo.name, "reason": reasons[photo.name]}) + "\n")
    write_text(out_dir / INDEX_FILE, "".join(index))
    write_json(out_dir / BOXES_FILE, detections, indent=None)
    write_text(out_dir / FAILED_FILE, "".join(failed))
    return len(failed)


def _detections(photo: Photo, record: Mapping[str, Any]) -> list[dict[str, object]]:
    """The photo's boxes as COCO detection results, scored by mass times the prompt's
    probability among the photo's prompts.
    """
    scores = np.asarray(record["scores"], dtype=np.float64)
    probability = np.exp(scores - scores.max())
    probability /= probability.sum()
    image_id = photo.image_id if photo.image_id is not None else photo.name
    categories = photo.category_ids or photo.prompts
    results = []
    for t, boxes in enumerate(record["boxes"]):
        for x, y, w, h, mass in boxes:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": categories[t],
                    "bbox": [x, y, w, h],
                    "score": round(float(mass * probability[t]), 6),
                }
            )
    return results
