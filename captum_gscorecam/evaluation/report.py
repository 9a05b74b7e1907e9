"""Aggregate per-example rows into per-method scores; write them as Markdown and a bar chart.

A row is one (image, prompt, method): ``pointing`` and ``box_hit`` (bool), ``box_iou``,
``energy``, ``mask_iou`` (None without a mask), ``deletion`` / ``insertion`` (only with
faithfulness), ``seconds`` (the method's wall time on the whole image), ``n_objects`` and
``iou_curve``, the best box IoU at each MaxBoxAccV2 map threshold 0.00, ..., 0.99.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from captum_gscorecam.methods import METHODS

__all__ = ["markdown", "object_buckets", "summarize", "write_chart"]

Row = Mapping[str, object]

# (title, key, format); deletion is better when lower.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pointing game", "pointing", ".3f"),
    ("box accuracy", "box_accuracy", ".3f"),
    ("mean IoU", "mean_iou", ".3f"),
    ("MaxBoxAccV2", "max_box_acc_v2", ".3f"),
    ("energy", "energy", ".3f"),
    ("mask IoU", "mask_iou", ".3f"),
    ("deletion (lower)", "deletion", ".3f"),
    ("insertion", "insertion", ".3f"),
    ("s / image", "seconds_per_image", ".3f"),
)
CHART_METRICS = ("pointing", "box_accuracy", "mean_iou", "max_box_acc_v2", "energy", "mask_iou")
# The paper's breakdown by objects per image, with a bucket for crowded (COCO) images.
BUCKETS: tuple[tuple[str, int, int | None], ...] = (("1-3", 1, 3), ("4-6", 4, 6), ("7+", 7, None))


def summarize(
    rows: Sequence[Row], methods: Sequence[str], iou_thresholds: Sequence[float]
) -> dict[str, dict[str, float | int | None]]:
    """Per method: the mean of each metric over its rows, and MaxBoxAccV2 over all of them.

    ``max_box_acc_v2 = mean_delta max_tau mean_i [iou_curve_i(tau) >= delta]``;
    ``seconds_per_image`` averages over images, not prompts; ``mask_iou`` over the rows that
    have a mask (None if none do), and likewise ``deletion`` / ``insertion``.
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


def _scores(rows: Sequence[Row], iou_thresholds: Sequence[float]) -> dict[str, float | int | None]:
    """The metrics of one method's rows."""
    seconds = {r["image_id"]: r["seconds"] for r in rows}
    scores: dict[str, float | int | None] = {
        "examples": len(rows),
        "pointing": _mean(r["pointing"] for r in rows),
        "box_accuracy": _mean(r["box_hit"] for r in rows),
        "mean_iou": _mean(r["box_iou"] for r in rows),
        "max_box_acc_v2": _max_box_acc_v2([r["iou_curve"] for r in rows], iou_thresholds),
        "energy": _mean(r["energy"] for r in rows),
        "seconds_per_image": _mean(seconds.values()),
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
    """The summary table (methods x metrics) and the breakdown by objects per image."""
    summary: Mapping[str, Mapping[str, object]] = results["summary"]
    columns = [c for c in COLUMNS if any(s[c[1]] is not None for s in summary.values())]
    config = results["config"]
    lines = [
        "# Localization benchmark",
        "",
        f"{results['images']} images, {results['examples']} (image, class) examples; "
        f"run: {_describe(config)}.",
        "",
        _table(
            ["method", *(title for title, _, _ in columns)],
            [
                [METHODS[m], *(_cell(scores[key], fmt) for _, key, fmt in columns)]
                for m, scores in summary.items()
            ],
        ),
    ]
    buckets: Mapping[str, Mapping[str, Mapping[str, object]]] = results["by_objects"]
    if buckets:
        keys = (
            ("pointing", "pointing"),
            ("box acc", "box_accuracy"),
            ("MaxBoxAccV2", "max_box_acc_v2"),
        )
        header = ["method"] + [
            f"{title} ({name} objects, n={next(iter(per.values()))['examples']})"
            for name, per in buckets.items()
            for title, _ in keys
        ]
        body = [
            [METHODS[m]]
            + [_cell(per[m][key], ".3f") for per in buckets.values() for _, key in keys]
            for m in summary
        ]
        lines += ["", "## By number of objects per image", "", _table(header, body)]
    return "\n".join(lines) + "\n"


def _describe(config: Mapping[str, object]) -> str:
    """One line naming the run's settings."""
    parts = [f"{k}={v}" for k, v in dict(config["run"]).items()]
    parts += [f"topk={config['topk']}"]
    parts += [f"{k}={v}" for k, v in dict(config["metrics"]).items()]
    return ", ".join(parts)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    rows = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _cell(value: object, fmt: str) -> str:
    """A formatted number, or a dash when it does not apply."""
    return "-" if value is None else format(value, fmt)


def write_chart(summary: Mapping[str, Mapping[str, object]], path: str | Path) -> None:
    """A grouped bar chart of the main localization metrics, one bar per method."""
    metrics = [k for k in CHART_METRICS if any(s[k] is not None for s in summary.values())]
    fig = Figure(figsize=(1.6 + 1.4 * len(metrics), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(len(summary), 1)
    x = np.arange(len(metrics))
    for i, (method, scores) in enumerate(summary.items()):
        heights = [scores[k] or 0.0 for k in metrics]
        ax.bar(x + (i - (len(summary) - 1) / 2) * width, heights, width, label=METHODS[method])
    titles = dict((key, title) for title, key, _ in COLUMNS)
    ax.set_xticks(x, [titles[k] for k in metrics], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
