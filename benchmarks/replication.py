"""The multi-object benchmark replicated on scenes of other seeds: does every published figure
hold within sampling error?

Reads two ``benchmarks/multi_object.py`` output folders, the published tables and a
replication (the same commands with another ``--seed``), and compares, per model, method and
exact number of objects, the pointing game and the energy. The examples of one scene share its
map and its distractors, so they are not independent: each figure's standard error is the
cluster-robust one over scenes,

    ``SE(p)^2 = S / (S - 1) * sum_s (sum_{i in s} (x_i - p))^2 / n^2``

(S scenes, n examples, ``x_i`` the example's score), and a difference is flagged when
``|z| = |p_rep - p_pub| / sqrt(SE_pub^2 + SE_rep^2)`` exceeds 2.

    python benchmarks/replication.py PUBLISHED REPLICATION --out FILE.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

METRICS = {"pointing": "pointing game", "energy": "energy"}
FLAG_Z = 2.0


def mean_and_se(values: Sequence[tuple[str, float]]) -> tuple[float, float]:
    """The mean of ``(scene, value)`` pairs and its cluster-robust standard error over scenes
    (0 with one scene).
    """
    n = len(values)
    mean = sum(v for _, v in values) / n
    residuals: dict[str, float] = {}
    for scene, value in values:
        residuals[scene] = residuals.get(scene, 0.0) + value - mean
    scenes = len(residuals)
    if scenes < 2:
        return mean, 0.0
    spread = sum(r * r for r in residuals.values()) / n**2
    return mean, math.sqrt(scenes / (scenes - 1) * spread)


def z_score(published: tuple[float, float], replicated: tuple[float, float]) -> float:
    """The difference in standard errors of the difference (0 when both are exact and equal)."""
    difference = replicated[0] - published[0]
    se = math.hypot(published[1], replicated[1])
    if se == 0.0:
        return 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    return difference / se


def figures(results: Mapping[str, object], metric: str) -> dict[str, dict[str, tuple]]:
    """Per method, per exact count (and ``"all"``): the metric's mean and standard error."""
    values: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for row in results["rows"]:
        per = values.setdefault(row["method"], {})
        value = float(row[metric])
        for group in (str(row["n_objects"]), "all"):
            per.setdefault(group, []).append((str(row["image_id"]), value))
    return {
        method: {group: mean_and_se(v) for group, v in groups.items()}
        for method, groups in values.items()
    }


def compare(published: Mapping[str, object], replicated: Mapping[str, object]) -> dict:
    """Per metric, method and group: the published and replicated (mean, SE) and the z score,
    for the methods and groups both have.

    Raises:
        ValueError: Different models, object counts or metric settings, or shared scenes.
    """
    for part in ("metrics", "precision"):
        if published["config"].get(part) != replicated["config"].get(part):
            raise ValueError(f"folders: the two differ in {part}")
    run_pub, run_rep = published["config"]["run"], replicated["config"]["run"]
    for part in ("model", "dataset", "object_counts"):
        if run_pub.get(part) != run_rep.get(part):
            raise ValueError(f"folders: the two differ in {part}")
    shared = {r["image_id"] for r in published["rows"]} & {
        r["image_id"] for r in replicated["rows"]
    }
    if shared:
        raise ValueError(f"folders: the replication shares {len(shared)} scenes with the tables")
    out: dict[str, dict[str, dict[str, dict[str, object]]]] = {}
    for metric in METRICS:
        pub, rep = figures(published, metric), figures(replicated, metric)
        out[metric] = {
            method: {
                group: {
                    "published": pub[method][group],
                    "replication": rep[method][group],
                    "z": z_score(pub[method][group], rep[method][group]),
                }
                for group in pub[method]
                if group in rep[method]
            }
            for method in pub
            if method in rep
        }
    return out


def markdown(model: str, published: Mapping, replicated: Mapping, table: Mapping) -> str:
    """One model's comparison as markdown: a table per metric, cells ``published / replication``
    with their standard errors, a flagged cell in bold with its z."""
    seeds = [min(int(r["image_id"]) for r in x["rows"]) for x in (published, replicated)]
    lines = [
        f"### {model}: published ({published['images']} scenes from seed {seeds[0]}) against "
        f"the replication ({replicated['images']} scenes from seed {seeds[1]})",
        "",
        "Cells: published / replication, each ± its standard error (scenes as clusters); "
        f"**bold** with z where the difference exceeds {FLAG_Z:g} standard errors of the "
        "difference.",
    ]
    flagged = []
    for metric, name in METRICS.items():
        rows = table[metric]
        groups = sorted({g for per in rows.values() for g in per if g != "all"}, key=int)
        groups.append("all")
        heads = [f"{g} object{'s' if g != '1' else ''}" if g != "all" else "all" for g in groups]
        lines += ["", f"#### {name}", "", "| method | " + " | ".join(heads) + " |"]
        lines.append("| --- |" + " --- |" * len(groups))
        for method, per in rows.items():
            cells = []
            for group in groups:
                if group not in per:
                    cells.append("n/a")
                    continue
                (p, se), (r, rse), z = (
                    per[group]["published"],
                    per[group]["replication"],
                    per[group]["z"],
                )
                cell = f"{p:.3f} ± {se:.3f} / {r:.3f} ± {rse:.3f}"
                if abs(z) > FLAG_Z:
                    cell = f"**{cell} (z {z:+.1f})**"
                    flagged.append(f"{published['labels'][method]}, {name}, {group}")
                cells.append(cell)
            lines.append(f"| {published['labels'][method]} | " + " | ".join(cells) + " |")
    total = sum(len(per) for rows in table.values() for per in rows.values())
    lines += ["", f"Beyond {FLAG_Z:g} standard errors: {len(flagged)} of {total} figures"]
    lines[-1] += (": " + "; ".join(flagged) + ".") if flagged else "."
    return "\n".join(lines) + "\n"


def summary(tables: Mapping[str, tuple[Mapping, Mapping]], group: str) -> str:
    """The pointing game at the largest number of objects (``group``) and over all counts, per
    model and method: published, replication and z, as a markdown table."""
    lines = [
        f"| model | method | published, {group} objects | replication | z "
        "| published, all | replication | z |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, (labels, table) in tables.items():
        for method, per in table["pointing"].items():
            cells = []
            for part in (group, "all"):
                (p, se), (r, rse), z = (per[part][k] for k in ("published", "replication", "z"))
                cells += [f"{p:.3f} ± {se:.3f}", f"{r:.3f} ± {rse:.3f}", f"{z:+.1f}"]
            lines.append(f"| {model} | {labels[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read(folder: Path, model: str) -> dict[str, object]:
    """A model's merged results as ``benchmarks/multi_object.py`` stored them."""
    path = folder / model / "results.json.gz"
    if not path.is_file():
        raise ValueError(f"folders: no {path}")
    return json.loads(gzip.decompress(path.read_bytes()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("published", type=Path, help="multi_object.py output: the tables")
    parser.add_argument("replication", type=Path, help="multi_object.py output: other seeds")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = parser.parse_args(argv)
    models = sorted(p.name for p in args.replication.iterdir() if (p / "results.json.gz").is_file())
    if not models:
        raise SystemExit(f"replication: no model folder with results.json.gz in {args.replication}")
    parts = [
        "# Multi-object benchmark: the published figures against a replication on other seeds",
        "",
        f"Flag: |z| > {FLAG_Z:g}. With many figures compared, about 1 in 20 is flagged by chance "
        "alone; constant figures (a method at 1.000 or 0.000 in both) have no spread and z 0.",
    ]
    sections, tables = [], {}
    for model in models:
        published, replicated = read(args.published, model), read(args.replication, model)
        table = compare(published, replicated)
        tables[model] = (published["labels"], table)
        sections += ["", markdown(model, published, replicated, table)]
    largest = str(max(published["config"]["run"]["object_counts"]))
    parts += ["", f"## Pointing game at {largest} objects and over all counts", ""]
    parts += [summary(tables, largest), "## Per number of objects", *sections]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}: {', '.join(models)}")


if __name__ == "__main__":
    main()
