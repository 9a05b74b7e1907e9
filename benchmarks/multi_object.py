"""The multi-object benchmark: evaluate runs of one model merged into one table per model, and
the pointing game against the exact number of objects per scene for every model in one figure.

The runs are ``gscorecam evaluate --objects 1,2,3,4,6`` folders (one per group of methods or
setting), each resumable and digest-checked on its own. This script only reads their
``results.json``: runs of one model must share the dataset, seeds, object counts and metric
settings; a method that takes ``topk`` is named with its k (``gscorecam@0.5``), so gScoreCAM
run at two k is two methods; only the scenes every run of a model finished are kept (``--scenes``
keeps the first N of them), so every row of a table is scored on the same examples. A method
one model's runs have but another's lack, which the registry allows on some towers only, is
listed in that model's table as not run. The pointing chance (a peak on a uniformly random
pixel) is computed from the kept scenes.

    python benchmarks/multi_object.py RUN_FOLDER... --out FOLDER [--scenes N] [--label KEY=TEXT]

writes ``FOLDER/<model>/results.json.gz`` and ``results.md`` per model and
``FOLDER/pointing-by-objects.png``.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from captum_gscorecam.evaluation.datasets import shapes_examples
from captum_gscorecam.evaluation.metrics import pointing_chance
from captum_gscorecam.evaluation.report import (
    markdown,
    object_buckets,
    object_counts,
    summarize,
    write_count_chart,
)
from captum_gscorecam.evaluation.store import settings_digest
from captum_gscorecam.registry import SPECS, TOWERS

FIGURE = "pointing-by-objects.png"


def read_results(folder: Path) -> dict[str, object]:
    """A finished run's ``results.json``, its rows with their IoU curves read back from the run's
    JSON lines (``results.json`` leaves them out), only from lines of the run's settings.
    """
    if not (folder / "results.json").is_file():
        raise ValueError(f"folders: no results.json in {folder}")
    results = json.loads((folder / "results.json").read_text())
    digest = settings_digest(results["config"])
    lines: dict[str, list[dict[str, object]]] = {}
    for shard in sorted(folder.glob("results*.jsonl")):
        for line in shard.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("settings") == digest:
                lines.setdefault(record["image_id"], record["rows"])
    images = dict.fromkeys(str(r["image_id"]) for r in results["rows"])
    results["rows"] = [row for image_id in images for row in lines[image_id]]
    return results


def method_key(method: str, topk: float | int) -> tuple[str, str]:
    """The merged key and label of a method: with its k when it takes ``topk``."""
    spec = SPECS[method]
    if not spec.takes("topk"):
        return method, spec.label
    share = f"{topk:.0%} of channels" if isinstance(topk, float) else f"{topk} channels"
    return f"{method}@{topk}", f"{spec.label} (k = {share})"


def merge(runs: Sequence[Mapping[str, object]], scenes: int | None = None) -> dict[str, object]:
    """One model's runs as one results dict (see the module docstring), without the chance.

    Raises:
        ValueError: Runs of other models, datasets, seeds, counts or metric settings, a method
            (with its k) in two runs, or no scene that every run finished.
    """
    first = runs[0]["config"]
    for run in runs[1:]:
        config = run["config"]
        for part in ("run", "metrics", "precision"):
            if config.get(part) != first.get(part):
                raise ValueError(
                    f"folders: runs differ in {part}: {config.get(part)} != {first.get(part)}"
                )
    done = [[str(r["image_id"]) for r in run["rows"]] for run in runs]
    common = set(done[0]).intersection(*done[1:])
    images = list(dict.fromkeys(i for i in done[0] if i in common))[:scenes]
    if not images:
        raise ValueError("folders: no scene that every run finished")
    kept = set(images)
    labels: dict[str, str] = {}
    rows = []
    for run in runs:
        for method in run["config"]["methods"]:
            key, label = method_key(method, run["config"]["topk"])
            if key in labels:
                raise ValueError(f"folders: {key} is in two runs")
            labels[key] = label
            rows += [
                {**r, "method": key}
                for r in run["rows"]
                if r["method"] == method and r["image_id"] in kept
            ]
    methods = list(labels)
    thresholds = first["metrics"]["iou_thresholds"]
    config = {
        "run": first["run"],
        "methods": methods,
        "precision": first.get("precision"),
        "metrics": first["metrics"],
    }
    return {
        "config": config,
        "labels": labels,
        "images": len(images),
        "examples": len(rows) // len(methods),
        "summary": summarize(rows, methods, thresholds),
        "by_objects": object_buckets(rows, methods, thresholds),
        "by_count": object_counts(rows, methods, thresholds),
        "rows": rows,
    }


def chance(results: Mapping[str, object], size: int) -> dict[str, float]:
    """The pointing chance of the merged scenes (rendered again from their seeds): over all
    examples (``"all"``) and per count, as the runner records it.
    """
    run = dict(results["config"]["run"])
    if run.get("dataset") != "shapes":
        raise ValueError("folders: the pointing chance needs shapes scenes")
    counts = run.get("object_counts") or range(run["objects"][0], run["objects"][1] + 1)
    seeds = sorted({int(r["image_id"]) for r in results["rows"]})
    tolerance = results["config"]["metrics"]["tolerance"]
    examples = shapes_examples(seeds, size=size, counts=list(counts))
    per = [(e.n_objects, pointing_chance(e.boxes, (size, size), tolerance)) for e in examples]
    groups = {"all": [c for _, c in per]}
    for n in sorted({n for n, _ in per}):
        groups[str(n)] = [c for m, c in per if m == n]
    return {name: sum(values) / len(values) for name, values in groups.items()}


def not_applicable(merged: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, str]]:
    """Per model, the methods other models ran that the registry limits to some towers."""

    def methods(results: Mapping[str, object]) -> set[str]:
        return {key.partition("@")[0] for key in results["labels"]}

    ran = set().union(*(methods(results) for results in merged.values()))
    absent = {}
    for model, results in merged.items():
        missing = {}
        for key in sorted(ran - methods(results), key=list(SPECS).index):
            towers = SPECS[key].towers
            if towers != TOWERS:
                missing[key] = f"{', '.join(sorted(towers)).replace('vit', 'ViT')} towers only"
        absent[model] = missing
    return absent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate output folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--scenes", type=int, default=None, help="keep the first N scenes")
    parser.add_argument("--size", type=int, default=224, help="the models' input size (px)")
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=TEXT", help="rename a method"
    )
    args = parser.parse_args(argv)
    renamed = dict(label.split("=", 1) for label in args.label)
    by_model: dict[str, list[dict[str, object]]] = {}
    for folder in args.folders:
        results = read_results(folder)
        by_model.setdefault(str(results["config"]["run"]["model"]), []).append(results)
    merged = {model: merge(runs, args.scenes) for model, runs in by_model.items()}
    for model, absent in not_applicable(merged).items():
        merged[model]["not_applicable"] = absent
        merged[model]["labels"] |= {key: SPECS[key].label for key in absent}
        merged[model]["labels"] |= {
            k: v for k, v in renamed.items() if k in merged[model]["labels"]
        }
    for model, results in merged.items():
        results["pointing_chance"] = chance(results, args.size)
        folder = args.out / model
        folder.mkdir(parents=True, exist_ok=True)
        stored = {k: v for k, v in results.items() if k != "rows"}
        stored["rows"] = [{k: v for k, v in r.items() if k != "iou_curve"} for r in results["rows"]]
        (folder / "results.json.gz").write_bytes(
            gzip.compress(json.dumps(stored, indent=1).encode(), mtime=0)
        )
        (folder / "results.md").write_text(markdown(stored))
        print(f"wrote {folder / 'results.md'}: {results['images']} scenes")
    write_count_chart(list(merged.values()), args.out / FIGURE)
    print(f"wrote {args.out / FIGURE}")


if __name__ == "__main__":
    main()
