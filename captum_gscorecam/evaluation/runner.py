"""The evaluation runner behind ``gscorecam evaluate``: explain, score, resume, shard, report.

All prompts of one image are explained in one call (target ``(1, T, D)``), so gScoreCAM's
masked passes serve every prompt. Each finished image is appended as one JSON line to
``out_dir/results.jsonl`` (``results.rank{r}.jsonl`` under torchrun); images found in any of
these files are not computed again (:mod:`~captum_gscorecam.evaluation.store` checks every
line against the run's settings and examples, and holds the folder's lock). Under
``torchrun --nproc_per_node=K`` rank r takes every K-th remaining image; after a barrier
every rank reads all shards back (``out_dir`` must be shared by the ranks, as on one machine
or a shared filesystem), and rank 0 writes ``results.json`` (settings, scores, rows),
``results.md`` and ``results.png``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from captum_gscorecam.checks import CONV_TOPK_SHARE, TOKEN_TOPK_SHARE, check_topk
from captum_gscorecam.evaluation.datasets import Example
from captum_gscorecam.evaluation.distributed import rank_and_world, run_lock
from captum_gscorecam.evaluation.metrics import pointing_chance
from captum_gscorecam.evaluation.report import (
    object_buckets,
    object_counts,
    summarize,
    write_report,
)
from captum_gscorecam.evaluation.scoring import MetricParams, evaluate_image, row_keys
from captum_gscorecam.evaluation.store import (
    RESULTS_FILE,
    RUN_FILE,
    append_record,
    drop_damaged,
    output_files,
    read_records,
    refuse_other_settings,
)
from captum_gscorecam.outputs import check_outputs, make_folder, write_text
from captum_gscorecam.precision import precision_name, resolve_precision
from captum_gscorecam.registry import check_methods
from captum_gscorecam.towers import default_layer, token_blocks

__all__ = ["check_methods", "default_topk_share", "evaluate", "output_files", "run_config"]


def run_config(
    run: Mapping[str, object],
    methods: Sequence[str],
    topk: int | float,
    params: MetricParams,
    **settings: object,
) -> dict[str, object]:
    """The settings that make results comparable, as plain JSON data; a resumed run must match.

    ``settings`` are further explainer settings (keyword -> JSON value), each a top-level key
    of ``run.json``, named in ``results.md`` and part of the digest on every result line.
    """
    config = {"run": dict(run), "methods": list(methods), "topk": topk, **settings}
    config["metrics"] = asdict(params)
    return json.loads(json.dumps(config))


def evaluate(
    model: nn.Module,
    preprocess: Callable[[Image.Image], Tensor],
    tokenizer: Callable[[Sequence[str]], Tensor],
    examples: Sequence[Example],
    methods: Sequence[str],
    topk: int | float | None,
    out_dir: str | Path,
    run: Mapping[str, object] | None = None,
    params: MetricParams = MetricParams(),
    show_progress: bool = False,
    precision: str | torch.dtype | None = None,
    by_count: bool = False,
    provenance: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Score every method on every example; resumable, and sharded under torch.distributed.

    Everything is checked before anything is written; ``run.json`` binds the folder only
    once a result line is there (see :mod:`~captum_gscorecam.evaluation.store` for resume).

    Args:
        model: A CLIP model (open_clip's), on the device to run on, in eval mode.
        preprocess: The model's image preprocess (PIL image to ``(3, S, S)``).
        tokenizer: The model's tokenizer.
        examples: The examples, built at the model's input size S.
        methods: Keys of the registry (``registry.SPECS``), each once.
        topk: gScoreCAM's channel count or fraction; None for the tower's default
            (:func:`default_topk_share`), recorded resolved in ``run.json``.
        out_dir: Where results go; results already there for the same settings are reused.
        run: What else identifies the run (model, dataset, ...), stored with the results.
        params: Metric settings.
        show_progress: A progress bar over images (rank 0).
        precision: The precision of gScoreCAM's and ScoreCAM's masked passes (their
            ``attribute``'s ``precision``), resolved on the model's device and recorded in
            ``run.json`` as ``fp32``, ``bf16`` or ``fp16``; a resumed run must match.
        by_count: Also break the scores down by the exact number of objects per image
            (``by_count``), for datasets with a few counts, such as shapes scenes.
        provenance: What made the maps this time (``provenance.Provenance.as_dict`` with its
            ``line`` and ``warnings``), stored as ``results.json``'s ``provenance`` and said in
            ``results.md`` and ``results.png``; not a setting (a resume may run on another
            device).

    Returns:
        The content of ``results.json``: ``config``, ``images``, ``examples``, ``summary``
        (method -> metric -> value), ``by_objects``, ``pointing_chance`` (the pointing game's
        chance level, :func:`~captum_gscorecam.evaluation.metrics.pointing_chance`, over all
        examples as ``"all"`` and, with ``by_count``, per count), ``by_count`` (count ->
        method -> metric -> value, with ``by_count`` only), ``rows``, without their IoU
        curves, which stay in the JSON lines (on every rank), and ``provenance`` if given.

    Raises:
        ValueError: Bad methods or topk, no examples, or an ``out_dir`` holding results of
            other settings or in use by another run.
        OutputError: Before any work, an output in ``out_dir`` (``output_files``) that cannot
            be written (read-only, full, a folder where a file goes, one of the images); while
            writing, a disk that fills up (``outputs.OutputError``, an ``OSError``; what was
            written stays valid for a resume).
    """
    check_methods(methods)
    topk = default_topk_share(model) if topk is None else check_topk(topk)
    dtype = resolve_precision(precision, next(model.parameters()).device, model)
    if not examples:
        raise ValueError("examples: expected at least one example")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: expected a folder, got the file {out_dir}")
    rank, world = rank_and_world()
    sources = [e.source for e in examples if isinstance(e.source, Path)]
    check_outputs(output_files(out_dir, world), sources)
    config = run_config(run or {}, methods, topk, params, precision=precision_name(dtype))
    groups = _by_image(examples)
    expected = {
        image_id: [(method, e.prompt) for method in methods for e in group]
        for image_id, group in groups.items()
    }
    keys = row_keys(params)
    make_folder(out_dir)
    with run_lock(out_dir, rank, world):
        records = read_records(out_dir, config, expected, keys)
        refuse_other_settings(out_dir, records)
        if rank == 0:
            drop_damaged(records)
            write_text(out_dir / RUN_FILE, json.dumps(config, indent=1))
        if world > 1:
            dist.barrier()  # every rank has read the records before any rank appends
        shard = out_dir / ("results.jsonl" if world == 1 else f"results.rank{rank}.jsonl")
        todo = [image_id for image_id in groups if image_id not in records.rows][rank::world]
        for image_id in tqdm(todo, desc="images", disable=not show_progress or rank != 0):
            group = groups[image_id]
            rows = evaluate_image(
                model, preprocess, tokenizer, group, methods, topk, params, precision=dtype
            )
            append_record(shard, config, image_id, rows)
        if world > 1:
            dist.barrier()  # every shard is complete on disk
        # The shards on disk are the gather: no large all_gather_object, which stalled at ~13 MB.
        done = read_records(out_dir, config, expected, keys).rows
        rows = [row for image_id in groups for row in done[image_id]]
        results = {
            "config": config,
            "images": len(groups),
            "examples": len(examples),
            "summary": summarize(rows, methods, params.iou_thresholds),
            "by_objects": object_buckets(rows, methods, params.iou_thresholds),
            "pointing_chance": _chance(examples, params.tolerance, by_count),
            **(
                {"by_count": object_counts(rows, methods, params.iou_thresholds)}
                if by_count
                else {}
            ),
            "rows": [{k: v for k, v in row.items() if k != "iou_curve"} for row in rows],
            **({"provenance": dict(provenance)} if provenance else {}),
        }
        if rank == 0:
            write_text(out_dir / RESULTS_FILE, json.dumps(results, indent=1))
            write_report(results, out_dir)
    return results


def default_topk_share(model: nn.Module) -> float:
    """The share of channels gScoreCAM keeps on ``model`` when ``topk`` is None.

    ``checks.default_topk``'s rule at the default layer (10% of a convolutional layer's
    channels, 50% of a ViT token layer's), as the fraction that gives the same k (fractions
    round up, as the rule does), so ``run.json`` records one tower-independent number.
    """
    blocks = token_blocks(model)
    tokens = blocks is not None and default_layer(model) is blocks[-1]
    return TOKEN_TOPK_SHARE if tokens else CONV_TOPK_SHARE


def _chance(examples: Sequence[Example], tolerance: int, by_count: bool) -> dict[str, float]:
    """The mean pointing chance of the examples (``"all"``) and, if ``by_count``, per count."""
    chance = [
        (e.n_objects, pointing_chance(e.boxes, (e.size, e.size), tolerance)) for e in examples
    ]
    groups = {"all": [c for _, c in chance]}
    if by_count:
        for n in sorted({n for n, _ in chance}):
            groups[str(n)] = [c for m, c in chance if m == n]
    return {name: float(sum(values) / len(values)) for name, values in groups.items()}


def _by_image(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Examples grouped by image, images in order of first appearance."""
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.image_id, []).append(example)
    return groups
