"""Aggregate per-example rows into per-method scores; write them as Markdown and a bar chart.

A row is one (image, prompt, method): ``pointing`` and ``box_hit`` (bool), ``box_iou``,
``energy``, ``mask_iou`` (None without a mask), ``deletion`` / ``insertion`` (only with
faithfulness), ``seconds`` (the method's wall time on the whole image), ``cpu_seconds``
(its CPU time there; absent in results of older runs), ``n_objects`` and ``iou_curve``, the
best box IoU at each MaxBoxAccV2 map threshold 0.00, ..., 0.99.

Results may name their methods (``labels``: key -> label, for keys outside the registry such as
one method at two settings) and list methods that cannot run on the model
(``not_applicable``: key -> reason); both show in the tables.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from captum_gscorecam.evaluation.store import REPORT_FILES
from captum_gscorecam.loading import describe_weights
from captum_gscorecam.outputs import write_figure, write_text
from captum_gscorecam.registry import SPECS
from captum_gscorecam.tables import markdown_table

__all__ = [
    "bucket_label",
    "markdown",
    "object_buckets",
    "object_counts",
    "summarize",
    "write_chart",
    "write_count_chart",
    "write_report",
]

Row = Mapping[str, object]

# (title, key, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pointing game", "pointing", ".3f"),
    ("box accuracy", "box_accuracy", ".3f"),
    ("mean IoU", "mean_iou", ".3f"),
    ("MaxBoxAccV2", "max_box_acc_v2", ".3f"),
    ("energy", "energy", ".3f"),
    ("mask IoU", "mask_iou", ".3f"),
    ("deletion (lower)", "deletion", ".3f"),
    ("insertion (higher)", "insertion", ".3f"),
    ("s / image", "seconds_per_image", ".3f"),
    ("CPU s / map", "cpu_seconds_per_map", ".3f"),
)
# What each column measures and which way is better; {names} are the run's metric settings.
MEANINGS = {
    "pointing": "share of examples whose map peak lies in a box of the prompted class (or "
    "within {tolerance} px of one); higher is better.",
    "box_accuracy": "share of examples whose box (Otsu threshold, largest region) overlaps a "
    "box of the class with IoU >= {iou_threshold}; higher is better.",
    "mean_iou": "mean IoU of that box with the best-matching box of the class; higher is better.",
    "max_box_acc_v2": "box accuracy at the best map threshold (shared by all examples), "
    "averaged over IoU {iou_thresholds} (Choe et al. 2020); higher is better.",
    "energy": "share of the map's positive mass inside the class's boxes; higher is better.",
    "mask_iou": "IoU of the map above its Otsu threshold with the class's mask; higher is better.",
    "deletion": "area under the score (logit_scale * cos) as the map's top pixels are "
    "removed, in {steps} steps; lower is better (the score falls fast).",
    "insertion": "area under the score as the map's top pixels are put back into a blurred "
    "image, in {steps} steps; higher is better.",
    "seconds_per_image": "the method's wall time per image, all its prompts together; lower "
    "is faster.",
    "cpu_seconds_per_map": "the method's CPU time per image divided by the image's prompts: "
    "the cost of one map (image-prompt), steadier than wall time on a shared machine; lower "
    "is cheaper.",
}
# Line colours of write_count_chart: matplotlib's ten, then four darker ones (black is chance).
PALETTE = (
    *(f"C{i}" for i in range(10)),
    "#8b0000",
    "#006400",
    "#00008b",
    "#b8860b",
)
# The metrics of the tables per exact object count.
COUNT_METRICS = (
    ("pointing game", "pointing"),
    ("MaxBoxAccV2", "max_box_acc_v2"),
    ("energy", "energy"),
    ("deletion (lower)", "deletion"),
    ("insertion (higher)", "insertion"),
)
CHART_METRICS = ("pointing", "box_accuracy", "mean_iou", "max_box_acc_v2", "energy", "mask_iou")
# The paper's breakdown by objects per image, with a bucket for crowded (COCO) images.
BUCKETS: tuple[tuple[str, int, int | None], ...] = (("1-3", 1, 3), ("4-6", 4, 6), ("7+", 7, None))


def summarize(
    rows: Sequence[Row], methods: Sequence[str], iou_thresholds: Sequence[float]
) -> dict[str, dict[str, float | int | None]]:
    """Per method: the mean of each metric over its rows, and MaxBoxAccV2 over all of them.

    ``max_box_acc_v2 = mean_delta max_tau mean_i [iou_curve_i(tau) >= delta]``;
    ``seconds_per_image`` averages over images, not prompts; ``cpu_seconds_per_map`` averages
    each image's ``cpu_seconds`` over its prompts, then over images (None without CPU times);
    ``mask_iou`` over the rows that have a mask (None if none do), and likewise ``deletion`` /
    ``insertion``.
    """
    return {
        method: _scores([r for r in rows if r["method"] == method], iou_thresholds)
        for method in methods
    }


def object_buckets(
    rows: Sequence[Row], methods: Sequence[str], iou_thresholds: Sequence[float]
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """:func:`summarize` of the rows of images with 1-3, 4-6 and 7+ objects (non-empty ones)."""
    buckets = {}
    for name, low, high in BUCKETS:
        chosen = [
            r for r in rows if low <= r["n_objects"] and (high is None or r["n_objects"] <= high)
        ]
        if chosen:
            buckets[name] = summarize(chosen, methods, iou_thresholds)
    return buckets


def object_counts(
    rows: Sequence[Row], methods: Sequence[str], iou_thresholds: Sequence[float]
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """:func:`summarize` of the rows of images with exactly n objects, for each n present,
    ascending, keyed ``str(n)``.
    """
    counts = sorted({int(r["n_objects"]) for r in rows})
    return {
        str(n): summarize([r for r in rows if r["n_objects"] == n], methods, iou_thresholds)
        for n in counts
    }


def _scores(rows: Sequence[Row], iou_thresholds: Sequence[float]) -> dict[str, float | int | None]:
    """The metrics of one method's rows."""
    seconds = {r["image_id"]: r["seconds"] for r in rows}
    prompts: dict[str, int] = {}
    for r in rows:
        prompts[r["image_id"]] = prompts.get(r["image_id"], 0) + 1
    cpu = {r["image_id"]: r["cpu_seconds"] for r in rows if r.get("cpu_seconds") is not None}
    scores: dict[str, float | int | None] = {
        "examples": len(rows),
        "pointing": _mean(r["pointing"] for r in rows),
        "box_accuracy": _mean(r["box_hit"] for r in rows),
        "mean_iou": _mean(r["box_iou"] for r in rows),
        "max_box_acc_v2": _max_box_acc_v2([r["iou_curve"] for r in rows], iou_thresholds),
        "energy": _mean(r["energy"] for r in rows),
        "seconds_per_image": _mean(seconds.values()),
        "cpu_seconds_per_map": _mean(cpu[i] / prompts[i] for i in cpu),
    }
    for key in ("mask_iou", "deletion", "insertion"):
        scores[key] = _mean(r[key] for r in rows if r.get(key) is not None)
    return scores


def _max_box_acc_v2(
    curves: Sequence[Sequence[float]], iou_thresholds: Sequence[float]
) -> float | None:
    """``mean_delta max_tau BoxAcc(tau, delta)`` from per-example IoU curves ``(N, thresholds)``."""
    if not curves:
        return None
    hits = np.asarray(curves)[None] >= np.asarray(iou_thresholds, dtype=float)[:, None, None]
    return float(hits.mean(axis=1).max(axis=1).mean())


def _mean(values: object) -> float | None:
    """The mean of some numbers (booleans count as 0/1); None for none."""
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def markdown(results: Mapping[str, object]) -> str:
    """What each metric measures, the summary table (methods x metrics), and the breakdown by
    objects per image, one table per bucket.
    """
    summary: Mapping[str, Mapping[str, object]] = results["summary"]
    columns = [c for c in COLUMNS if any(s.get(c[1]) is not None for s in summary.values())]
    config = results["config"]
    absent = dict(results.get("not_applicable", {}))
    lines = [
        f"# Localization benchmark: {_title(results)}",
        "",
        *(
            f"- **{title.split(' (')[0]}**: {MEANINGS[key].format(**_settings(config))}"
            for title, key, _ in columns
        ),
        "",
        f"Run: {_describe(config)}.",
        "",
        *_made_by(results),
        markdown_table(
            ["method", *(title for title, _, _ in columns)],
            [
                [_label(results, m), *(_cell(scores.get(key), fmt) for _, key, fmt in columns)]
                for m, scores in summary.items()
            ]
            + [
                [f"{_label(results, m)}: {why}", *("n/a" for _ in columns)]
                for m, why in absent.items()
            ],
        ),
    ]
    chance = results.get("pointing_chance", {}).get("all")
    if chance is not None:
        lines += [
            "",
            f"Pointing chance (a peak on a uniformly random pixel): {chance:.3f}.",
        ]
    buckets: Mapping[str, Mapping[str, Mapping[str, object]]] = results["by_objects"]
    if buckets:
        lines += ["", "## By number of objects per image"]
    keys = (
        ("pointing game", "pointing"),
        ("box accuracy", "box_accuracy"),
        ("MaxBoxAccV2", "max_box_acc_v2"),
    )
    for name, per in buckets.items():
        examples = next(iter(per.values()))["examples"]
        lines += [
            "",
            f"### {bucket_label(name)} ({examples} examples)",
            "",
            markdown_table(
                ["method", *(title for title, _ in keys)],
                [
                    [_label(results, m), *(_cell(per[m][key], ".3f") for _, key in keys)]
                    for m in summary
                ],
            ),
        ]
    lines += _count_tables(results)
    return "\n".join(lines) + "\n"


def _count_tables(results: Mapping[str, object]) -> list[str]:
    """The tables per exact object count (methods x counts), one per metric present."""
    counts: Mapping[str, Mapping[str, Mapping[str, object]]] = results.get("by_count") or {}
    if not counts:
        return []
    methods = list(results["summary"])
    examples = [next(iter(per.values()))["examples"] for per in counts.values()]
    chance = results.get("pointing_chance", {})
    lines = [
        "",
        "## By exact number of objects per image",
        "",
        "Examples per count: "
        + ", ".join(f"{n} object(s): {e:,}" for n, e in zip(counts, examples, strict=True))
        + ".",
    ]
    header = ["method", *(f"{n} object{'s' if n != '1' else ''}" for n in counts)]
    for title, key in COUNT_METRICS:
        if not any(per[m].get(key) is not None for per in counts.values() for m in methods):
            continue
        body = [
            [_label(results, m), *(_cell(counts[n][m].get(key), ".3f") for n in counts)]
            for m in methods
        ]
        if key == "pointing" and all(n in chance for n in counts):
            body.append(["chance (random pixel)", *(format(chance[n], ".3f") for n in counts)])
        lines += ["", f"### {title}", "", markdown_table(header, body)]
    return lines


def _label(results: Mapping[str, object], key: str) -> str:
    """A method's name in tables and figures: the results' own label, else the registry's."""
    labels = dict(results.get("labels", {}))
    return str(labels[key]) if key in labels else SPECS[key].label


def bucket_label(name: str) -> str:
    """What a bucket of ``by_objects`` holds: "1-3" -> "Images with 1-3 objects"."""
    return f"Images with {name} objects"


def _title(results: Mapping[str, object]) -> str:
    """Model, dataset and size of a run, e.g. "shapes-rn on shapes, 500 images, 2,250 examples"."""
    run = dict(results["config"]["run"])
    dataset = run.get("dataset", "?")
    if dataset == "coco" and run.get("annotations"):
        dataset = f"COCO {Path(str(run['annotations'])).stem.removeprefix('instances_')}"
    return (
        f"{run.get('model', '?')} on {dataset}, {results['images']:,} images, "
        f"{results['examples']:,} examples"
    )


def _settings(config: Mapping[str, object]) -> dict[str, object]:
    """The metric settings the meanings quote."""
    metrics = dict(config["metrics"])
    return {
        "tolerance": metrics.get("tolerance", 15),
        "iou_threshold": metrics.get("iou_threshold", 0.5),
        "iou_thresholds": ", ".join(str(t) for t in metrics.get("iou_thresholds", ())),
        "steps": metrics.get("faithfulness_steps"),
    }


def _describe(config: Mapping[str, object]) -> str:
    """One line naming the run's settings."""
    parts = [f"{k}={v}" for k, v in dict(config["run"]).items()]
    parts += [f"{k}={v}" for k, v in config.items() if k not in ("run", "methods", "metrics")]
    parts += [f"{k}={v}" for k, v in dict(config["metrics"]).items()]
    return ", ".join(parts)


def _made_by(results: Mapping[str, object]) -> list[str]:
    """The line of what made the maps (``provenance.Provenance.line``) and its warnings in
    bold, each a paragraph; none for results that do not record them.
    """
    made = results.get("provenance")
    if not made:
        return []
    lines = [f"Made by: {made['line']}.", ""]
    for warning in made["warnings"]:
        lines += [f"**{warning}**", ""]
    return lines


def _cell(value: object, fmt: str) -> str:
    """A formatted number, or a dash when it does not apply."""
    return "-" if value is None else format(value, fmt)


def write_report(results: Mapping[str, object], out_dir: str | Path) -> None:
    """``results.md`` and ``results.png`` of a run's results (the content of results.json)."""
    out_dir = Path(out_dir)
    table, chart = REPORT_FILES
    write_text(out_dir / table, markdown(results))
    write_chart(results, out_dir / chart)


def write_chart(results: Mapping[str, object], path: str | Path) -> None:
    """Bars of the localization metrics per method, and of deletion / insertion when run.

    Titled with the model, the dataset and the number of examples; under the bars, what made
    the maps and its warnings (``results["provenance"]``) where the results record them.
    """
    summary: Mapping[str, Mapping[str, object]] = results["summary"]
    metrics = [k for k in CHART_METRICS if any(s[k] is not None for s in summary.values())]
    faithful = [
        k for k in ("deletion", "insertion") if any(s.get(k) is not None for s in summary.values())
    ]
    widths = [len(metrics)] + ([len(faithful) + 0.5] if faithful else [])
    fig = Figure(figsize=(2.2 + 1.3 * sum(widths), 4.0))
    axes = fig.subplots(1, len(widths), width_ratios=widths, squeeze=False)[0]
    titles = {key: title for title, key, _ in COLUMNS}
    _bars(axes[0], summary, metrics, titles, lambda m: _label(results, m))
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("score (higher is better)")
    axes[0].set_title("localization", fontsize=9)
    axes[0].legend(fontsize=7, ncols=2)
    if faithful:
        _bars(axes[1], summary, faithful, titles, lambda m: _label(results, m))
        axes[1].axhline(0, color="black", linewidth=0.6)
        axes[1].set_ylabel("AUC of logit_scale * cos")
        axes[1].set_title("faithfulness", fontsize=9)
    fig.suptitle(_title(results), fontsize=10)
    made = results.get("provenance")
    # what made the maps, and in red why they cannot mean anything, a line each at the bottom
    footer = [(made["line"], "black"), *((w, "red") for w in made["warnings"])] if made else []
    for i, (line, colour) in enumerate(reversed(footer)):
        fig.text(0.01, 0.01 + 0.045 * i, line, fontsize=7, color=colour)
    fig.tight_layout(rect=(0, 0.045 * len(footer), 1, 1))
    write_figure(path, fig, dpi=100)


def write_count_chart(
    runs: Sequence[Mapping[str, object]], path: str | Path, metric: str = "pointing"
) -> None:
    """A metric against the exact number of objects per image: one panel per run (results
    with ``by_count``), one line per method (one colour per method across panels, one legend),
    and for the pointing game its chance level (dotted).

    Each panel is titled with its model, where its weights come from, the precision of the
    masked passes and its scenes per count; the methods a run lists in
    ``not_applicable`` are named under its panel.

    Raises:
        ValueError: A run without ``by_count``, or an unknown ``metric``.
    """
    titles = {key: title for title, key in COUNT_METRICS}
    if metric not in titles:
        raise ValueError(f"metric: expected one of {list(titles)}, got {metric!r}")
    if not runs or any(not run.get("by_count") for run in runs):
        raise ValueError("runs: expected results with by_count (evaluate with by_count=True)")
    methods = list(dict.fromkeys(m for run in runs for m in run["summary"]))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    styles = {m: "-" if i < 10 else "--" for i, m in enumerate(methods)}
    fig = Figure(figsize=(1.0 + 4.8 * len(runs), 5.6))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    handles = {}
    for ax, run in zip(axes, runs, strict=True):
        counts: Mapping[str, Mapping[str, Mapping[str, object]]] = run["by_count"]
        x = [int(n) for n in counts]
        for method in run["summary"]:
            values = [counts[n][method].get(metric) for n in counts]
            (handles[_label(run, method)],) = ax.plot(
                x,
                [np.nan if v is None else v for v in values],
                styles[method],
                color=colours[method],
                marker="o",
                markersize=3,
            )
        chance = run.get("pointing_chance", {})
        if metric == "pointing" and all(n in chance for n in counts):
            (chance_line,) = ax.plot(
                x, [chance[n] for n in counts], ":", color="black", linewidth=1.5
            )
        scenes = {round(next(iter(per.values()))["examples"] / int(n)) for n, per in counts.items()}
        per_count = f"{scenes.pop()} scenes per count" if len(scenes) == 1 else "scenes vary"
        ax.set_title(f"{_made(run['config'])}, {per_count}", fontsize=9)
        ax.set_xticks(x)
        ax.set_xlabel("objects in the scene")
        ax.set_ylabel(titles[metric])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        absent = dict(run.get("not_applicable", {}))
        if absent:
            names = ", ".join(_label(run, m) for m in absent)
            reasons = "; ".join(sorted(set(absent.values())))
            ax.text(
                0.0,
                -0.2,
                f"not run ({reasons}): {names}",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
    if metric == "pointing":
        handles["chance (random pixel)"] = chance_line
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncols=4, fontsize=8)
    fig.suptitle(f"{titles[metric]} against the number of objects per scene", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(handles) + 3) // 4), 1, 1))
    write_figure(path, fig, dpi=100)


def _made(config: Mapping[str, object]) -> str:
    """A run's model and where its weights come from, then (second line) the precision of its
    masked passes.
    """
    run = dict(config["run"])
    model = str(run.get("model", "?"))
    weights = run.get("weights") or describe_weights(model, run.get("pretrained"))
    return f"{model} ({weights})\n{config.get('precision') or 'fp32'} masked passes"


def _bars(
    ax: object,
    summary: Mapping[str, Mapping[str, object]],
    keys: Sequence[str],
    titles: Mapping[str, str],
    label: Callable[[str], str],
) -> None:
    """One group of bars per metric, one bar per method."""
    width = 0.8 / max(len(summary), 1)
    x = np.arange(len(keys))
    for i, (method, scores) in enumerate(summary.items()):
        heights = [scores.get(k) or 0.0 for k in keys]
        ax.bar(x + (i - (len(summary) - 1) / 2) * width, heights, width, label=label(method))
    ax.set_xticks(x, [titles[k] for k in keys], fontsize=8)


def main(argv: Sequence[str] | None = None) -> None:
    """Rewrite ``results.md`` and ``results.png`` of result folders from their stored
    ``results.json`` (or ``results.json.gz``), without computing anything.

    ``python -m captum_gscorecam.evaluation.report FOLDER...``
    """
    parser = argparse.ArgumentParser(
        prog="python -m captum_gscorecam.evaluation.report", description=main.__doc__
    )
    parser.add_argument("folders", nargs="+", type=Path)
    for folder in parser.parse_args(argv).folders:
        stored = [folder / "results.json", folder / "results.json.gz"]
        path = next((p for p in stored if p.is_file()), None)
        if path is None:
            parser.error(f"folders: no results.json or results.json.gz in {folder}")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as file:
            write_report(json.load(file), folder)
        print(f"wrote {folder / 'results.md'}, {folder / 'results.png'}")


if __name__ == "__main__":
    main()
