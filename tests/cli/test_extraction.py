"""Dataset extraction: inputs, prompts, standard files, resume, shards (``explain --dataset``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captum_gscorecam.cli import main
from captum_gscorecam.evaluation.store import locked
from captum_gscorecam.extraction import (
    coco_photos,
    extract,
    extraction_config,
    listed_photos,
    photo_names,
    read_prompt_file,
    tree_photos,
    with_prompts,
)
from captum_gscorecam.loading import load_model
from captum_gscorecam.provenance import Provenance
from captum_gscorecam.shapes import render_scene
from captum_gscorecam.shapes.coco import export_coco
from tests.helpers import ROOT

SEEDS = range(10_000_000, 10_000_003)
PROVENANCE = Provenance("shapes-rn", "shapes world", "LayerGradCam", "{}", "fp32", "cpu")


@pytest.fixture(scope="module")
def shapes_rn():
    return load_model("shapes-rn", None, "cpu")


def scene(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_scene(seed, 2, 64).image).resize(size).save(path)
    return path


def config(**changes: object) -> dict[str, object]:
    settings = {"method": "gradcam", "topk": None, "template": "a {}", "precision": "fp32"}
    settings.update(changes)
    return extraction_config({"model": "shapes-rn"}, **settings)


def run_extract(shapes_rn, photos, out, **changes):
    model, preprocess, tokenizer = shapes_rn
    return extract(model, preprocess, tokenizer, photos, out, config(**changes), PROVENANCE)


def index(out: Path) -> list[dict[str, object]]:
    lines = (out / "index.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


# ---------------------------------------------------------------- inputs and prompts


def test_names_are_relative_paths_that_never_collide(tmp_path):
    scene(tmp_path / "tree" / "a" / "img.png", SEEDS[0])
    scene(tmp_path / "tree" / "b" / "c" / "img.png", SEEDS[1])
    scene(tmp_path / "tree" / ".hidden" / "img.png", SEEDS[2])
    scene(tmp_path / "tree" / "out" / "fig.png", SEEDS[2])
    photos = tree_photos([tmp_path / "tree"], exclude=tmp_path / "tree" / "out")
    assert [p.name for p in photos] == ["a/img.png", "b/c/img.png"]
    assert photo_names([Path("x/a/1.png"), Path("x/a/2.png")]) == ["1.png", "2.png"]
    assert photo_names([Path("/r/a/1.png"), Path("/r/b/1.png")]) == ["a/1.png", "b/1.png"]


def test_a_list_file_names_photos_relative_to_itself(tmp_path):
    scene(tmp_path / "d" / "p" / "x.png", SEEDS[0])
    scene(tmp_path / "d" / "q" / "x.png", SEEDS[1])
    (tmp_path / "d" / "list.txt").write_text("# photos\np/x.png\n\nq/x.png\np/x.png\n")
    assert [p.name for p in listed_photos(tmp_path / "d" / "list.txt")] == ["p/x.png", "q/x.png"]
    (tmp_path / "d" / "list.txt").write_text("p/x.png\nnope.png\n")
    with pytest.raises(ValueError, match=r"list: .*list.txt:2: no such photo file"):
        listed_photos(tmp_path / "d" / "list.txt")


def test_prompt_files_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('photo,prompt\na/img.png,red circle\na/img.png,"a, b"\nb.png,x\n')
    assert read_prompt_file(csv_file) == {"a/img.png": ["red circle", "a, b"], "b.png": ["x"]}
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"photo": "a.png", "prompt": ["x", "y"]}\n{"photo": "a.png", "prompt": "x"}\n'
    )
    assert read_prompt_file(jsonl) == {"a.png": ["x", "y"]}
    jsonl.write_text('{"photo": "a.png"}\n')
    with pytest.raises(ValueError, match=r"prompts: .*p.jsonl:1: expected"):
        read_prompt_file(jsonl)
    csv_file.write_text("a.png,x,y\n")
    with pytest.raises(ValueError, match=r"p.csv:1: expected 2 columns"):
        read_prompt_file(csv_file)


def test_per_photo_prompts_are_matched_by_name_and_checked(tmp_path):
    photos = tree_photos([scene(tmp_path / "a" / "1.png", 1), scene(tmp_path / "b" / "1.png", 2)])
    given = with_prompts(photos, table={"a/1.png": ["red circle"], "b/1.png": ["x", "y"]})
    assert [p.prompts for p in given] == [("red circle",), ("x", "y")]
    with pytest.raises(ValueError, match=r"no row for photo b/1\.png"):
        with_prompts(photos, table={"a/1.png": ["x"]})
    with pytest.raises(ValueError, match=r"names 1 photo\(s\) not among the inputs, e.g. 'c.png'"):
        with_prompts(photos, table={"a/1.png": ["x"], "b/1.png": ["x"], "c.png": ["x"]})


# ---------------------------------------------------------------- the files


def test_maps_index_and_boxes_per_photo(tmp_path, shapes_rn):
    scene(tmp_path / "t" / "a" / "img.png", SEEDS[0], (96, 64))  # the crop cuts the sides
    scene(tmp_path / "t" / "b" / "img.png", SEEDS[1])
    photos = with_prompts(tree_photos([tmp_path / "t"]), ["red circle", "blue square"])
    summary = run_extract(shapes_rn, photos, tmp_path / "o", dtype="float16", boxes=2, points=2)
    assert (summary.photos, summary.computed, summary.failed) == (2, 2, 0)
    a = np.load(tmp_path / "o" / "maps" / "a" / "img.png.npy")
    b = np.load(tmp_path / "o" / "maps" / "b" / "img.png.npy")
    assert a.dtype == np.float16
    assert (a.shape, b.shape) == ((2, 64, 96), (2, 64, 64))  # each photo's resolution
    assert np.isfinite(a).all()  # the shapes preprocess resizes whole: nothing cropped
    lines = index(tmp_path / "o")
    assert [line["photo"] for line in lines] == ["a/img.png", "b/img.png"]
    assert lines[0]["texts"] == ["a red circle", "a blue square"]
    assert lines[0]["provenance"] == PROVENANCE.as_dict()
    for line in lines:
        assert all(1 <= len(boxes) <= 2 for boxes in line["boxes"])
        assert all(len(points) <= 2 for points in line["points"])
    detections = json.loads((tmp_path / "o" / "boxes.json").read_text())
    assert {d["image_id"] for d in detections} == {"a/img.png", "b/img.png"}
    assert {d["category_id"] for d in detections} <= {"red circle", "blue square"}
    first = lines[0]["boxes"][0][0]
    assert detections[0]["bbox"] == first[:4]
    probability = np.exp(lines[0]["scores"]) / np.exp(lines[0]["scores"]).sum()
    assert detections[0]["score"] == pytest.approx(first[4] * probability[0], abs=1e-6)
    assert (tmp_path / "o" / "failed.jsonl").read_text() == ""


def test_boxes_at_a_given_threshold_are_the_saved_maps_boxes_at_it(tmp_path, shapes_rn):
    from captum_gscorecam.localize import boxes_from_map

    scene(tmp_path / "t" / "img.png", SEEDS[0])
    photos = with_prompts(tree_photos([tmp_path / "t"]), ["red circle"])
    found = {}
    for name, threshold in (("otsu", None), ("fixed", 0.8)):
        run_extract(shapes_rn, photos, tmp_path / name, box_threshold=threshold)
        saved = np.load(tmp_path / name / "maps" / "img.png.npy")[0]  # float32: as boxed
        found[name] = index(tmp_path / name)[0]["boxes"][0]
        expected = boxes_from_map(saved, threshold)[:5]
        np.testing.assert_allclose(found[name], expected, atol=1e-5)
    assert found["otsu"] != found["fixed"]
    assert "box_threshold" not in config()  # the digests of earlier folders stay valid
    with pytest.raises(ValueError, match="box_threshold: expected a number in"):
        run_extract(shapes_rn, photos, tmp_path / "bad", box_threshold=1.5)
    assert not (tmp_path / "bad").exists()


def test_an_unreadable_photo_is_recorded_and_the_run_goes_on(tmp_path, shapes_rn):
    scene(tmp_path / "t" / "good.png", SEEDS[0])
    (tmp_path / "t" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    photos = with_prompts(tree_photos([tmp_path / "t"]), ["red circle"])
    assert run_extract(shapes_rn, photos, tmp_path / "o").failed == 1
    failed = [json.loads(x) for x in (tmp_path / "o" / "failed.jsonl").read_text().splitlines()]
    assert [f["photo"] for f in failed] == ["bad.png"]
    assert "bad.png" in failed[0]["reason"]
    assert [line["photo"] for line in index(tmp_path / "o")] == ["good.png"]


def test_damaged_maps_are_recomputed_and_other_settings_refused(tmp_path, shapes_rn):
    for i, seed in enumerate(SEEDS):
        scene(tmp_path / "t" / f"{i}.png", seed)
    photos = with_prompts(tree_photos([tmp_path / "t"]), ["red circle"])
    out = tmp_path / "o"
    run_extract(shapes_rn, photos, out)
    before = {p.name: p.read_bytes() for p in (out / "maps").iterdir()}
    truncated, damaged = out / "maps" / "0.png.npy", out / "maps" / "1.png.npy"
    truncated.write_bytes(before["0.png.npy"][:-7])
    data = bytearray(before["1.png.npy"])
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with (out / "parts" / "index.rank0.jsonl").open("ab") as shard:
        shard.write(b'{"settings": "cut by a kil')
    with pytest.warns(UserWarning, match=r"3 damaged result line"):
        summary = run_extract(shapes_rn, photos, out)
    assert (summary.computed, summary.reused) == (2, 1)
    assert {p.name: p.read_bytes() for p in (out / "maps").iterdir()} == before
    with pytest.raises(ValueError, match=r"out: .* other settings"):
        run_extract(shapes_rn, photos, out, boxes=3)
    with locked(out, "explain"), pytest.raises(ValueError, match="in use by another explain run"):
        run_extract(shapes_rn, photos, out)


def test_coco_categories_are_the_prompts_and_cocoeval_scores_the_boxes(tmp_path, shapes_rn):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = export_coco(tmp_path / "coco", SEEDS[:2], n_objects=2, size=64)
    photos = coco_photos(annotations, tmp_path / "coco" / "images")
    names = [c["name"] for c in json.loads(annotations.read_text())["categories"]]
    assert all(list(p.prompts) == names for p in photos)
    assert [p.image_id for p in photos] == [1, 2]
    present = coco_photos(annotations, tmp_path / "coco" / "images", "present")
    assert all(1 <= len(p.prompts) <= 2 for p in present)
    run_extract(shapes_rn, present, tmp_path / "o")
    truth = COCO(str(annotations))
    found = truth.loadRes(str(tmp_path / "o" / "boxes.json"))
    evaluation = COCOeval(truth, found, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert 0 <= evaluation.stats[0] <= evaluation.stats[1] <= 1  # AP, AP50


# ---------------------------------------------------------------- the command


def test_dataset_options_need_dataset_mode(capsys):
    assert main(["explain", "x.png", "--prompt", "a", "--figures"]) == 2
    assert "argument --figures: only for dataset extraction" in capsys.readouterr().err
    assert main(["explain", "--list", "l.txt", "--prompt", "a", "--prompt-file", "p.csv"]) == 2
    assert "give --prompt or --prompt-file, not both" in capsys.readouterr().err
    assert main(["explain", "--dataset", "--prompt", "a"]) == 2
    assert "give photos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse exits; our checks return 2
        main(["explain", "x.png", "--dataset", "--prompt", "a", "--box-threshold", "2"])
    assert exited.value.code == 2
    assert "argument --box-threshold: expected a number in [0, 1]" in capsys.readouterr().err


def command(tree: Path, out: Path) -> list[str]:
    return [
        "explain", str(tree), "--dataset", "--model", "shapes-rn", "--method", "gradcam",
        "--prompt", "red circle", "--prompt", "blue square", "--out", str(out),
        "--threads", "1", "--workers", "1", "--precision", "fp32", "--dtype", "float16",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    root = str(ROOT)
    return {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}


def same_files(a: Path, b: Path) -> None:
    maps = sorted(p.relative_to(a) for p in (a / "maps").rglob("*.npy"))
    assert maps == sorted(p.relative_to(b) for p in (b / "maps").rglob("*.npy"))
    for name in [*maps, Path("boxes.json"), Path("failed.jsonl")]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert index(a) == index(b)


@pytest.fixture(scope="module")
def cli_tree(tmp_path_factory):
    """Eight photos in two folders, one unreadable, and an uninterrupted run over them.

    The last photo is large (its maps are written at its resolution), so that a run killed
    after any of the first photos is still at work, however fast the machine.
    """
    root = tmp_path_factory.mktemp("cli")
    for i in range(7):
        size = (1536, 1536) if i == 6 else (64, 64)
        scene(root / "tree" / ("a" if i % 2 else "b") / f"{i}.png", 10_000_000 + i, size)
    (root / "tree" / "a" / "broken.png").write_bytes(b"not a png")
    subprocess.run(
        [sys.executable, "-m", "captum_gscorecam", *command(root / "tree", root / "whole")],
        check=True, env=environment(), capture_output=True,
    )  # fmt: skip
    return root


@pytest.mark.slow
def test_killed_then_resumed_equals_an_uninterrupted_run(cli_tree, tmp_path):
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "captum_gscorecam", *command(cli_tree / "tree", out)]
    process = subprocess.Popen(
        argv, env=environment(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shard = out / "parts" / "index.rank0.jsonl"
    done = random.randint(1, 4)  # killed after a random number of finished photos
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if shard.exists() and shard.read_bytes().count(b"\n") >= done:
            break
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "boxes.json").exists()  # killed before the end
    subprocess.run(argv, check=True, env=environment(), capture_output=True)
    same_files(out, cli_tree / "whole")


@pytest.mark.slow
def test_two_ranks_write_the_files_of_one(cli_tree, tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "o"
    argv = ["torchrun", "--nproc-per-node", "2", "-m", "captum_gscorecam"]
    done = subprocess.run(
        [*argv, *command(cli_tree / "tree", out)], env=environment(), capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    shards = [
        len((out / "parts" / f"index.rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)
    ]
    assert shards == [4, 3]  # 7 readable photos of 8, dealt in turn
    same_files(out, cli_tree / "whole")
