"""The breakdown by exact number of objects: counts on the command line, the pointing chance,
the per-count tables and figure of the report, CPU time per map, and the benchmark script that
merges runs."""

from __future__ import annotations

import argparse
import gzip
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam.cli.evaluate import _objects, _run_description
from captum_gscorecam.evaluation import report, shapes_examples
from captum_gscorecam.evaluation.metrics import pointing_chance, pointing_game
from captum_gscorecam.evaluation.report import (
    markdown,
    object_counts,
    summarize,
    write_count_chart,
)
from captum_gscorecam.evaluation.store import settings_digest
from captum_gscorecam.shapes import render_scene
from tests.helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"
PNG_MAGIC = b"\x89PNG"
THRESHOLDS = (0.5,)


def row(image_id, n_objects, method, pointing, energy, best_iou, cpu=None, prompts=1):
    """A handmade row; its IoU curve is ``best_iou`` at every map threshold."""
    extra = {} if cpu is None else {"cpu_seconds": cpu}
    return {
        "image_id": image_id,
        "prompt": "p",
        "n_objects": n_objects,
        "method": method,
        "seconds": 1.0,
        "pointing": pointing,
        "box_hit": False,
        "box_iou": 0.0,
        "energy": energy,
        "mask_iou": None,
        "iou_curve": [best_iou] * 100,
        **extra,
    }


ROWS = [
    # one scene with 1 object, two with 2 objects (two prompts each), one with 6 objects
    row("a", 1, "gscorecam", True, 0.5, 0.6),
    row("b", 2, "gscorecam", True, 0.2, 0.6),
    row("b", 2, "gscorecam", False, 0.4, 0.1),
    row("c", 2, "gscorecam", False, 0.3, 0.2),
    row("c", 2, "gscorecam", False, 0.1, 0.7),
    row("d", 6, "gscorecam", False, 0.0, 0.0),
    row("a", 1, "uniform", False, 0.1, 0.0),
    row("b", 2, "uniform", False, 0.1, 0.0),
    row("b", 2, "uniform", False, 0.1, 0.0),
    row("c", 2, "uniform", False, 0.1, 0.0),
    row("c", 2, "uniform", False, 0.1, 0.0),
    row("d", 6, "uniform", False, 0.2, 0.0),
]


def test_object_counts_summarize_each_exact_count():
    counts = object_counts(ROWS, ["gscorecam", "uniform"], THRESHOLDS)
    assert list(counts) == ["1", "2", "6"]
    two = counts["2"]["gscorecam"]
    assert two["examples"] == 4
    assert two["pointing"] == pytest.approx(1 / 4)
    assert two["energy"] == pytest.approx((0.2 + 0.4 + 0.3 + 0.1) / 4)
    assert two["max_box_acc_v2"] == pytest.approx(2 / 4)  # IoU 0.6 and 0.7 reach 0.5
    assert counts["1"]["gscorecam"]["pointing"] == 1.0
    assert counts["6"]["uniform"]["energy"] == pytest.approx(0.2)
    # each count's summary is summarize() of exactly its rows
    two_rows = [r for r in ROWS if r["n_objects"] == 2]
    assert counts["2"] == summarize(two_rows, ["gscorecam", "uniform"], THRESHOLDS)


def test_cpu_seconds_per_map_divide_each_image_by_its_prompts():
    rows = [
        row("a", 1, "m", True, 0.0, 0.0, cpu=3.0),
        row("b", 2, "m", True, 0.0, 0.0, cpu=4.0),
        row("b", 2, "m", True, 0.0, 0.0, cpu=4.0),
    ]
    scores = summarize(rows, ["m"], THRESHOLDS)["m"]
    assert scores["cpu_seconds_per_map"] == pytest.approx((3.0 + 4.0 / 2) / 2)
    assert summarize(ROWS, ["uniform"], THRESHOLDS)["uniform"]["cpu_seconds_per_map"] is None


@settings(max_examples=25, deadline=None)
@given(
    x0=st.integers(0, 11),
    y0=st.integers(0, 11),
    w=st.integers(1, 6),
    h=st.integers(1, 6),
    tolerance=st.integers(0, 4),
)
def test_pointing_chance_is_the_share_of_peaks_that_hit(x0, y0, w, h, tolerance):
    boxes = np.array([[x0, y0, min(x0 + w, 12), min(y0 + h, 12)], [0, 0, 1, 1]])
    hits = []
    for y in range(12):
        for x in range(12):
            saliency = np.zeros((12, 12))
            saliency[y, x] = 1.0
            hits.append(pointing_game(saliency, boxes, tolerance))
    assert pointing_chance(boxes, (12, 12), tolerance) == pytest.approx(np.mean(hits))


def test_objects_option_reads_ranges_counts_and_lists():
    assert _objects("3-6") == (3, 4, 5, 6)
    assert _objects("4") == (4,)
    assert _objects("6, 1,2,3,4") == (1, 2, 3, 4, 6)
    for bad in ("1,1", "0,2", "7", "2-1", "1,a", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected LOW-HIGH within 1-6"):
            _objects(bad)


def test_a_run_of_consecutive_counts_keeps_the_recorded_range():
    base = {"model": "m", "pretrained": None, "dataset": "shapes", "seed": 5}
    base |= {"root": None, "annotations": None, "images": None}
    args = argparse.Namespace(**base, objects=_objects("3-6"))
    assert _run_description(args)["objects"] == [3, 6]  # results of earlier runs resume
    args = argparse.Namespace(**base, objects=_objects("1,2,3,4,6"))
    setting = _run_description(args)
    assert setting["object_counts"] == [1, 2, 3, 4, 6]
    assert "objects" not in setting


def test_shapes_examples_cycle_through_the_counts():
    seeds = range(100, 110)
    examples = shapes_examples(seeds, size=64, counts=[1, 2, 3, 4, 6])
    per_scene = {e.image_id: e.n_objects for e in examples}
    assert [per_scene[str(s)] for s in seeds] == [[1, 2, 3, 4, 6][s % 5] for s in seeds]
    assert len(examples) == 2 * (1 + 2 + 3 + 4 + 6)  # one example per object
    ranged = shapes_examples(seeds, (3, 6), 64)
    assert [e.n_objects for e in ranged] == [
        e.n_objects for e in shapes_examples(seeds, size=64, counts=[3, 4, 5, 6])
    ]
    with pytest.raises(ValueError, match="counts"):
        shapes_examples(seeds, size=64, counts=[])


def results_with_counts(model="shapes-vit", not_applicable=None):
    methods = ["gscorecam", "uniform"]
    results = {
        "config": {"run": {"model": model, "dataset": "shapes"}, "metrics": {"tolerance": 15}},
        "images": 4,
        "examples": 6,
        "summary": summarize(ROWS, methods, THRESHOLDS),
        "by_objects": {},
        "by_count": object_counts(ROWS, methods, THRESHOLDS),
        "pointing_chance": {"all": 0.1, "1": 0.12, "2": 0.1, "6": 0.05},
        "labels": {"gscorecam": "gScoreCAM (k = 100% of channels)"},
    }
    if not_applicable:
        results["not_applicable"] = not_applicable
        results["labels"] |= {"hilacam": "HilaCAM"}
    return results


def test_markdown_has_one_table_per_metric_with_counts_as_columns():
    text = markdown(results_with_counts(not_applicable={"hilacam": "ViT towers only"}))
    lines = text.splitlines()
    start = lines.index("## By exact number of objects per image")
    section = lines[start:]
    assert "Examples per count: 1 object(s): 1, 2 object(s): 4, 6 object(s): 1." in section
    pointing = section.index("### pointing game")
    assert section[pointing + 2] == "| method | 1 object | 2 objects | 6 objects |"
    assert section[pointing + 4] == "| gScoreCAM (k = 100% of channels) | 1.000 | 0.250 | 0.000 |"
    assert section[pointing + 6] == "| chance (random pixel) | 0.120 | 0.100 | 0.050 |"
    assert "### MaxBoxAccV2" in section
    assert "### energy" in section
    assert "### deletion (lower)" not in section  # not run
    assert "| HilaCAM: ViT towers only | n/a |" in text
    assert "Pointing chance (a peak on a uniformly random pixel): 0.100." in lines


def test_count_chart_draws_every_run(tmp_path, monkeypatch):
    path = tmp_path / "counts.png"
    runs = [results_with_counts(), results_with_counts("shapes-rn", {"hilacam": "ViT only"})]
    write_count_chart(runs, path)
    assert path.read_bytes()[:4] == PNG_MAGIC
    drawn = []
    monkeypatch.setattr(report, "write_figure", lambda _, fig, **__: drawn.append(fig))
    runs[1]["config"] = {**runs[1]["config"], "precision": "bf16"}
    write_count_chart(runs, path)
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles[0].splitlines() == [
        "shapes-vit (shapes world: knows only coloured shapes)",
        "fp32 masked passes, scenes vary",
    ]
    assert titles[1].splitlines()[1].startswith("bf16 masked passes")
    with pytest.raises(ValueError, match="by_count"):
        write_count_chart([{**runs[0], "by_count": {}}], path)
    with pytest.raises(ValueError, match="metric"):
        write_count_chart(runs, path, metric="speed")


def stored_run(folder: Path, model: str, methods: list[str], topk: float, images: list[str]):
    """A finished evaluate folder, written by hand: results.json and its JSON lines."""
    config = {
        "run": {"model": model, "dataset": "shapes", "seed": 7, "object_counts": [1, 2, 6]},
        "methods": methods,
        "topk": topk,
        "precision": "fp32",
        "metrics": {"tolerance": 15, "iou_thresholds": [0.5], "faithfulness_steps": None},
    }
    folder.mkdir(parents=True)
    counts = {"7": 2, "8": 6, "9": 1}  # seed s holds [1, 2, 6][s % 3] objects
    rows = {
        i: [row(i, counts[i], m, m != "uniform", 0.3, 0.6, cpu=1.0) for m in methods]
        for i in images
    }
    lines = [{"settings": settings_digest(config), "image_id": i, "rows": rows[i]} for i in images]
    (folder / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    flat = [{k: v for k, v in r.items() if k != "iou_curve"} for i in images for r in rows[i]]
    (folder / "results.json").write_text(json.dumps({"config": config, "rows": flat}))


def test_the_script_merges_runs_per_model_and_draws_the_figure(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    cheap = ["gscorecam", "hilacam", "uniform"]
    stored_run(runs / "vit-cheap", "shapes-vit", cheap, 0.5, ["7", "8", "9"])
    stored_run(runs / "vit-k100", "shapes-vit", ["gscorecam"], 1.0, ["7", "8"])
    stored_run(runs / "rn-cheap", "shapes-rn", ["gscorecam", "uniform"], 0.1, ["7", "8", "9"])
    out = tmp_path / "merged"
    folders = [str(runs / name) for name in ("vit-cheap", "vit-k100", "rn-cheap")]
    argv = ["multi_object.py", *folders, "--out", str(out), "--size", "64", "--label", "uniform=U"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "multi_object.py"), run_name="__main__")
    assert (out / "pointing-by-objects.png").read_bytes()[:4] == PNG_MAGIC
    vit = json.loads(gzip.decompress((out / "shapes-vit" / "results.json.gz").read_bytes()))
    assert vit["config"]["methods"] == ["gscorecam@0.5", "hilacam", "uniform", "gscorecam@1.0"]
    assert vit["labels"]["gscorecam@1.0"] == "gScoreCAM (k = 100% of channels)"
    assert vit["images"] == 2  # only the scenes every run finished
    assert vit["labels"]["uniform"] == "U"
    assert list(vit["by_count"]) == ["2", "6"]
    assert vit["by_count"]["6"]["gscorecam@1.0"]["pointing"] == 1.0
    expected = shapes_examples([7, 8], size=64, counts=[1, 2, 6])
    chance = [pointing_chance(e.boxes, (64, 64), 15) for e in expected]
    assert vit["pointing_chance"]["all"] == pytest.approx(np.mean(chance))
    rn = json.loads(gzip.decompress((out / "shapes-rn" / "results.json.gz").read_bytes()))
    assert rn["not_applicable"] == {"hilacam": "ViT towers only"}
    assert rn["images"] == 3
    assert "| HilaCAM: ViT towers only |" in (out / "shapes-rn" / "results.md").read_text()


def test_crowded_vit_names_where_a_missed_peak_lands(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports report.py beside it
    script = runpy.run_path(str(BENCHMARKS / "crowded_vit.py"))
    scene = next(s for s in map(lambda seed: render_scene(seed, 6, 224), range(50)) if _twins(s))
    target, other = _twins(scene)
    x0, y0, x1, y1 = scene.boxes[other]
    kind = "same colour" if scene.objects[target][0] == scene.objects[other][0] else "same shape"
    assert script["where"](((x0 + x1) // 2, (y0 + y1) // 2), scene, target) == kind
    free = next(
        (x, y)
        for y in range(0, 224, 4)
        for x in range(0, 224, 4)
        if not any(pointing_game(_peak(x, y), box[None], 15) for box in scene.boxes)
    )
    assert script["where"](free, scene, target) == "background"
    weights_map, weights = script["weighted_map"](
        torch.tensor([0.0, 1.0, 5.0]), torch.ones(3, 2, 2), torch.tensor([True, True, False])
    )
    assert weights.tolist() == pytest.approx([1 / (1 + np.e), np.e / (1 + np.e), 0.0])
    assert weights_map.flatten().tolist() == pytest.approx([1.0] * 4)


def _twins(scene):
    """Two objects of a scene sharing a colour or a shape, if any (target, other)."""
    for i, (c, s) in enumerate(scene.objects):
        for j, (c2, s2) in enumerate(scene.objects):
            if i != j and (c == c2 or s == s2):
                return i, j
    return None


def _peak(x, y):
    peak = np.zeros((224, 224))
    peak[y, x] = 1.0
    return peak


def _merged(model, seed, pointing_by_scene, energy=0.5):
    """A ``multi_object.py`` results dict: per scene (from ``seed``), its examples' hits."""
    rows = [
        {
            "image_id": str(seed + s),
            "n_objects": len(hits),
            "method": "legrad",
            "pointing": hit,
            "energy": energy,
        }
        for s, hits in enumerate(pointing_by_scene)
        for hit in hits
    ]
    run = {"model": model, "dataset": "shapes", "seed": seed, "object_counts": [1, 2]}
    config = {"run": run, "methods": ["legrad"], "precision": "fp32", "metrics": {"tolerance": 15}}
    return {
        "config": config,
        "labels": {"legrad": "LeGrad"},
        "images": len(pointing_by_scene),
        "rows": rows,
    }


def test_replication_standard_errors_treat_scenes_as_clusters(tmp_path, monkeypatch):
    script = runpy.run_path(str(BENCHMARKS / "replication.py"))
    values = [("a", 1.0), ("a", 1.0), ("b", 0.0), ("b", 1.0), ("c", 0.0)]
    mean, se = script["mean_and_se"](values)
    sums = np.array([2 - 2 * 0.6, 1 - 2 * 0.6, 0 - 0.6])  # each scene's residual sum
    assert mean == pytest.approx(0.6)
    assert se == pytest.approx(np.sqrt(3 / 2 * (sums**2).sum() / 25))
    assert script["mean_and_se"]([("a", 1.0), ("a", 0.0)]) == (0.5, 0.0)
    assert script["z_score"]((0.5, 0.03), (0.4, 0.04)) == pytest.approx(-2.0)
    assert script["z_score"]((1.0, 0.0), (1.0, 0.0)) == 0.0

    published = _merged("shapes-vit", 100, [[1], [1, 1], [1], [1, 0]] * 5)
    same = _merged("shapes-vit", 900, [[1], [1, 1], [1], [1, 0]] * 5)
    worse = _merged("shapes-vit", 900, [[0], [0, 1], [1], [0, 0]] * 5)
    table = script["compare"](published, same)
    assert table["pointing"]["legrad"]["2"]["z"] == 0.0
    assert table["pointing"]["legrad"]["1"]["published"] == (1.0, 0.0)
    flagged = script["compare"](published, worse)
    assert flagged["pointing"]["legrad"]["all"]["z"] < -2
    with pytest.raises(ValueError, match="shares 20 scenes"):
        script["compare"](published, published)
    with pytest.raises(ValueError, match="model"):
        script["compare"](published, _merged("shapes-rn", 900, [[1]]))

    for name, results in (("pub", published), ("rep", worse)):
        (tmp_path / name / "shapes-vit").mkdir(parents=True)
        data = gzip.compress(json.dumps(results).encode())
        (tmp_path / name / "shapes-vit" / "results.json.gz").write_bytes(data)
    out = tmp_path / "replication.md"
    argv = ["replication.py", str(tmp_path / "pub"), str(tmp_path / "rep"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "replication.py"), run_name="__main__")
    text = out.read_text()
    assert "published (20 scenes from seed 100)" in text
    assert "## Pointing game at 2 objects and over all counts" in text
    assert "| shapes-vit | LeGrad | 0.750 ± 0.083 | 0.250 ± " in text
    assert "| LeGrad | **1.000 ± 0.000 / 0.500 ± 0.167 (z -3.0)** |" in text
    assert "Beyond 2 standard errors: 3 of 6 figures: LeGrad, pointing game, 1;" in text
