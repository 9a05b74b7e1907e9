"""Faults around ``evaluate``: bad flags, damaged result folders, two runs at once, bad COCO."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from captum_gscorecam.cli import main
from captum_gscorecam.evaluation import coco_examples, evaluate, shapes_examples
from captum_gscorecam.evaluation.store import LOCK_FILE, locked
from captum_gscorecam.shapes import export_coco
from captum_gscorecam.shapes.models import make_preprocess
from tests.helpers import EVAL_SEEDS, EVAL_SIZE, without_time

SIZE, SEEDS = EVAL_SIZE, EVAL_SEEDS
METHODS = ["uniform", "saliency"]


def refused(argv, capsys):
    """Run the command; it must exit with status 2 and one line on stderr, which is returned."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in lines[0]
    return lines[-1]


# Flags refused at parse time, before a model loads or anything is written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--tolerance", "-2"], "argument --tolerance: expected an integer >= 0, got '-2'"),
        (["--objects", "3-"], "argument --objects: expected LOW-HIGH within 1-6"),
        (["--objects", "-3"], "argument --objects: expected LOW-HIGH within 1-6"),
        (["--methods", "uniform,uniform"], "argument --methods: expected each method once"),
        (["--topk", "0"], "argument --topk: expected a channel count"),
        (["--topk", "-3"], "argument --topk: expected a channel count"),
        (["--topk", "1.5"], "argument --topk: expected a channel count"),
        (["--topk", "nan"], "argument --topk: expected a channel count"),
        (["--topk", "inf"], "argument --topk: expected a channel count"),
        (["--template", "a photo"], "argument --template: expected text with exactly one {}"),
        (["--template", "{} and {}"], "argument --template: expected text with exactly one {}"),
        (["--template", "{name}"], "argument --template: expected text with exactly one {}"),
        (["--device", "tpu"], "argument --device: expected auto, cpu, cuda, cuda:N or mps"),
        (["--limit", "0"], "argument --limit: expected an integer >= 1"),
        (["--objects", "0-9"], "argument --objects: expected LOW-HIGH within 1-6"),
        (["--methods", "gscorecam,nope"], "argument --methods: unknown method(s) ['nope']"),
        (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["--out", "{tmp}/missing/out"], "argument --out: {tmp}/missing/out: the folder"),
    ],
)
def test_bad_flags_are_refused_at_parse_time(tmp_path, capsys, no_model, argv, message):
    out = tmp_path / "out"
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in ["evaluate", "--out", str(out), *argv]]
    line = refused(argv, capsys)
    assert message.replace("{tmp}", str(tmp_path)) in line
    assert not out.exists()
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_at_parse_time(tmp_path, capsys, no_model):
    line = refused(["evaluate", "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert "argument --device: cuda is not available" in line
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys, no_model):
    (tmp_path / "file").write_text("x")
    line = refused(["evaluate", "--out", str(tmp_path / "file")], capsys)
    assert "argument --out: " in line
    assert "is a file; expected a folder" in line


def test_pretrained_with_a_shapes_model_is_refused_before_loading(tmp_path, capsys, no_model):
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "shapes-rn", "--pretrained", "openai", "--out", str(out)]
    assert "argument --pretrained: shapes-rn brings its own weights" in refused(argv, capsys)
    assert not out.exists()


# A refused or crashed run leaves its folder usable


def test_a_crashed_run_does_not_poison_its_folder(
    tmp_path, eval_model, run_evaluate, eval_examples
):
    wrong_size = shapes_examples(SEEDS[:1], (1, 1), 96)
    with pytest.raises(ValueError, match="examples: built at 96 px"):
        run_evaluate(eval_model, wrong_size, tmp_path, METHODS, topk=0.25)
    assert (tmp_path / "run.json").is_file()  # written, but it binds nothing without results
    assert not (tmp_path / LOCK_FILE).exists()
    results = run_evaluate(eval_model, eval_examples, tmp_path, METHODS)  # other settings: accepted
    assert results["config"]["topk"] == 0.1
    assert json.loads((tmp_path / "run.json").read_text()) == results["config"]


def test_bad_settings_write_nothing(tmp_path, eval_model, tokenizer, eval_examples, run_evaluate):
    out = tmp_path / "out"
    for topk in (0, math.nan, -1):
        with pytest.raises(ValueError, match="topk: expected a channel count"):
            run_evaluate(eval_model, eval_examples, out, METHODS, topk=topk)
    with pytest.raises(ValueError, match="methods: expected each method once"):
        evaluate(
            eval_model, make_preprocess(SIZE), tokenizer, eval_examples, ["uniform"] * 2, 0.1, out
        )
    with pytest.raises(ValueError, match="examples: expected at least one"):
        run_evaluate(eval_model, [], out, METHODS)
    assert not out.exists()


# Resume: damaged lines are recomputed, never silently dropped or mixed


def _empty_rows(lines):
    lines[1] = json.dumps(json.loads(lines[1]) | {"rows": []}).encode()


def _not_an_object(lines):
    lines[1] = b"[1, 2, 3]"


def _missing_key(lines):
    record = json.loads(lines[1])
    del record["rows"][0]["box_iou"]
    lines[1] = json.dumps(record).encode()


def _wrong_kind(lines):
    record = json.loads(lines[1])
    record["rows"][-1]["pointing"] = "yes"
    lines[1] = json.dumps(record).encode()


def _not_utf8(lines):
    lines[1] = lines[1][:40] + b"\xff\xfe" + lines[1][42:]


def _truncated_last(lines):
    lines[-1] = lines[-1][: len(lines[-1]) // 2]


@pytest.mark.parametrize(
    "damage",
    [_empty_rows, _not_an_object, _missing_key, _wrong_kind, _not_utf8, _truncated_last],
)
def test_a_damaged_line_is_recomputed_with_one_warning(
    tmp_path, eval_model, run_evaluate, eval_examples, damage
):
    fresh = run_evaluate(eval_model, eval_examples, tmp_path / "fresh", METHODS)
    out = tmp_path / "out"
    run_evaluate(eval_model, eval_examples, out, METHODS)
    shard = out / "results.jsonl"
    lines = shard.read_bytes().splitlines()
    damage(lines)
    shard.write_bytes(b"\n".join(lines) + (b"" if damage is _truncated_last else b"\n"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_evaluate(eval_model, eval_examples, out, METHODS)
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert messages == [
        "out: 1 damaged result line(s) dropped (1 in results.jsonl); "
        "their images are computed again"
    ]
    assert resumed["examples"] == len(eval_examples)
    assert len(resumed["rows"]) == len(eval_examples) * len(METHODS)
    assert without_time(resumed["rows"]) == without_time(fresh["rows"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folder is clean again: no second warning
        run_evaluate(eval_model, eval_examples, out, METHODS)
    assert len(shard.read_bytes().splitlines()) == len(SEEDS)


def test_deleting_run_json_does_not_let_other_settings_mix_in(
    tmp_path, eval_model, run_evaluate, eval_examples
):
    first = [e for e in eval_examples if e.image_id == str(SEEDS[0])]
    run_evaluate(eval_model, first, tmp_path, METHODS)
    (tmp_path / "run.json").unlink()
    with pytest.raises(ValueError, match=r"out: .* other settings"):
        run_evaluate(eval_model, eval_examples, tmp_path, METHODS, topk=0.5)
    assert without_time(
        run_evaluate(eval_model, eval_examples, tmp_path, METHODS)["rows"]
    )  # same settings: fine


def test_a_second_run_on_a_folder_in_use_is_refused(
    tmp_path, eval_model, run_evaluate, eval_examples
):
    in_use = r"out: .* in use by another evaluate run \(pid"
    with locked(tmp_path), pytest.raises(ValueError, match=in_use):
        run_evaluate(eval_model, eval_examples, tmp_path, METHODS)
    assert not (tmp_path / LOCK_FILE).exists()
    assert run_evaluate(eval_model, eval_examples, tmp_path, METHODS)["examples"] == len(
        eval_examples
    )


def test_the_lock_of_a_killed_run_does_not_block(tmp_path, eval_model, run_evaluate, eval_examples):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from captum_gscorecam.evaluation.store import locked\n"
            "with locked(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"pid {holder.pid} on "):
            run_evaluate(eval_model, eval_examples, tmp_path, METHODS)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # left behind by the killed run
    assert run_evaluate(eval_model, eval_examples, tmp_path, METHODS)["examples"] == len(
        eval_examples
    )


# COCO files: every fault named by file and field, or skipped with a count


@pytest.fixture
def coco(tmp_path):
    """A two-image COCO folder; returns (root, the instances data)."""
    export_coco(tmp_path, SEEDS[:2], n_objects=2, size=SIZE)
    path = tmp_path / "annotations" / "instances.json"
    return tmp_path, json.loads(path.read_text())


def write(root, data):
    path = root / "annotations" / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _edit(key, index, field, value):
    def edit(data):
        data[key][index][field] = value
        return data

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: d["images"], "expected a JSON object with 'images', 'annotations' and"),
        (lambda d: {k: v for k, v in d.items() if k != "categories"}, "missing 'categories'"),
        (lambda d: {k: v for k, v in d.items() if k != "annotations"}, "missing 'annotations'"),
        (_edit("annotations", 1, "image_id", 99), "annotations[1].image_id: expected the id of"),
        (_edit("annotations", 0, "category_id", 999), "annotations[0].category_id: expected a"),
        (_edit("images", 1, "width", 0), "images[1].width: expected a positive integer, got 0"),
        (_edit("annotations", 2, "bbox", [1, 2, float("nan"), 3]), "annotations[2].bbox: expected"),
        (_edit("annotations", 2, "bbox", [1, 2, -4, 3]), "annotations[2].bbox: expected [x, y,"),
        (_edit("annotations", 0, "bbox", [1, 2, 3]), "annotations[0].bbox: expected [x, y,"),
        (
            _edit("annotations", 0, "segmentation", {"counts": [SIZE * SIZE], "size": [8, 8]}),
            "annotations[0].segmentation.size: expected the image's [height, width] = [64, 64]",
        ),
        (
            _edit("annotations", 0, "segmentation", {"counts": [5, 5], "size": [SIZE, SIZE]}),
            "annotations[0].segmentation.counts: expected runs adding up to 4096 pixels",
        ),
        (
            _edit("annotations", 1, "segmentation", [[1.0, 2.0, 3.0]]),
            "annotations[1].segmentation[0]: expected a polygon of x, y pairs, got [1.0, 2.0, 3.0]",
        ),
        (
            lambda d: d | {"categories": [*d["categories"], dict(d["categories"][4], name="x")]},
            "categories[36].id: expected a new id (categories[4] has it), got 5",
        ),
        (
            _edit("annotations", 0, "iscrowd", "no"),
            'annotations[0].iscrowd: expected 0 or 1, got "no"',
        ),
        (_edit("annotations", 3, "iscrowd", 2), "annotations[3].iscrowd: expected 0 or 1, got 2"),
        (
            _edit("images", 1, "file_name", "../../x.png"),
            "images[1].file_name: expected a file inside the image folder {images}, "
            'got "../../x.png"',
        ),
        (
            _edit("images", 0, "file_name", "/etc/passwd"),
            "images[0].file_name: expected a file inside the image folder {images}, "
            'got "/etc/passwd"',
        ),
        (_edit("images", 0, "file_name", "."), "images[0].file_name: expected a file inside"),
        (
            _edit("annotations", 0, "segmentation", {"counts": "garbage!", "size": [SIZE, SIZE]}),
            "annotations[0].segmentation.counts: expected a compressed RLE (characters 0 to o, "
            'the last run complete), got "garbage!"',
        ),
        (
            _edit("annotations", 0, "segmentation", {"counts": "0PPYo", "size": [SIZE, SIZE]}),
            "annotations[0].segmentation.counts: expected a compressed RLE (characters 0 to o, "
            'the last run complete), got "0PPYo"',
        ),
        (
            _edit("annotations", 2, "segmentation", {"counts": "PPYo0", "size": [SIZE, SIZE]}),
            "annotations[2].segmentation.counts: expected runs adding up to 4096 pixels, "
            'got "PPYo0"',
        ),
        (
            _edit("annotations", 1, "segmentation", {"counts": [4096], "size": [64.0, 64]}),
            "annotations[1].segmentation.size: expected the image's [height, width] = [64, 64]",
        ),
        (
            lambda d: "[" * 200_000 + "]" * 200_000,
            "not a COCO file (JSON nested deeper than Python's recursion limit",
        ),
        (
            lambda d: d | {"info": json.loads("[" * 500 + "]" * 500)},
            None,  # deep, but within the limit and unused: read
        ),
    ],
)
def test_a_malformed_coco_file_names_the_file_and_the_field(coco, edit, message):
    root, data = coco
    path = write(root, edit(data))
    if message is None:
        assert len(coco_examples(root, SIZE)) == 4
        return
    with pytest.raises(ValueError, match=r"^annotations: ") as error:
        coco_examples(root, SIZE)
    assert str(error.value).startswith(f"annotations: {path}: ")
    assert message.format(images=root / "images") in str(error.value)
    assert "\n" not in str(error.value)


def test_boxes_beyond_the_image_or_of_zero_area_are_skipped_with_one_warning(coco):
    root, data = coco
    data["annotations"][0]["bbox"] = [1e9, 1e9, 10, 10]
    data["annotations"][1]["bbox"] = [5, 5, 0, 3]
    data["annotations"][2]["bbox"] = [-3, 0, 5, 5]  # 3 px to the left of the image
    write(root, data)
    with pytest.warns(UserWarning, match=r"^annotations: ") as caught:
        examples = coco_examples(root, SIZE)
    (message,) = [str(w.message) for w in caught]
    assert message == (
        f"annotations: {root / 'annotations' / 'instances.json'}: skipped the boxes 2 reaching "
        "more than 1 px beyond their image (annotations[0], annotations[2]); 1 of zero width or "
        "height (annotations[1]); those objects are not scored"
    )
    kept = data["annotations"][3]
    assert [(e.image_id, e.n_objects) for e in examples] == [(str(kept["image_id"]), 1)]


def test_boxes_within_a_pixel_of_the_image_are_kept(coco):
    root, data = coco
    data["annotations"][0]["bbox"] = [-1.0, -0.5, SIZE + 2.0, 10]  # 1 px over on each side
    data["annotations"][1]["bbox"] = [0.5, 0.5, 0.25, 0.25]  # tiny, not empty
    write(root, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        examples = coco_examples(root, SIZE)
    assert len(examples) == 4
    np.testing.assert_array_equal(examples[0].boxes, [[0, 0, SIZE, 10]])


def test_file_names_inside_the_image_folder_are_read(coco):
    root, data = coco
    name = data["images"][0]["file_name"]
    (root / "images" / "sub").mkdir()
    data["images"][0]["file_name"] = str((root / "images" / name).absolute())
    data["images"][1]["file_name"] = f"sub/../{data['images'][1]['file_name']}"
    write(root, data)
    assert {e.source for e in coco_examples(root, SIZE)} == {
        root / "images" / name,
        root / "images" / "sub" / ".." / data["images"][1]["file_name"].split("/")[-1],
    }


def test_a_malformed_coco_file_is_one_line_from_the_command(coco, capsys, no_model):
    root, data = coco
    path = write(root, _edit("images", 0, "width", 0)(data))
    argv = ["evaluate", "--dataset", "coco", "--root", str(root), "--out", str(root / "o")]
    assert refused(argv, capsys).endswith(
        f"annotations: {path}: images[0].width: expected a positive integer, got 0"
    )
    assert not (root / "o").exists()


def test_missing_and_unreadable_images_are_skipped_with_a_count(coco):
    root, data = coco
    (root / "images" / data["images"][0]["file_name"]).unlink()
    (root / "images" / "notes.png").write_text("not an image")
    data["images"].append({"id": 50, "file_name": "notes.png", "width": SIZE, "height": SIZE})
    annotation = dict(data["annotations"][0], id=500, image_id=50)
    data["annotations"].append(annotation)
    write(root, data)
    with pytest.warns(UserWarning, match=r"^images: skipped ") as caught:
        examples = coco_examples(root, SIZE)
    (message,) = [str(w.message) for w in caught]
    missing = data["images"][0]["file_name"]
    assert message == (
        f"images: skipped 1 missing ({missing}); 1 not image files (notes.png) in {root / 'images'}"
    )
    assert {e.image_id for e in examples} == {str(data["images"][1]["id"])}


def test_an_image_listed_twice_counts_once(coco):
    root, data = coco
    data["images"].append(dict(data["images"][0]))
    write(root, data)
    with pytest.warns(UserWarning, match="1 image id"):
        examples = coco_examples(root, SIZE)
    assert len({e.image_id for e in examples}) == 2
    assert len(examples) == 4


def test_no_images_left_is_an_error(coco, capsys, no_model):
    root, data = coco
    for image in data["images"]:
        (root / "images" / image["file_name"]).unlink()
    argv = ["evaluate", "--dataset", "coco", "--root", str(root), "--out", str(root / "o")]
    with pytest.warns(UserWarning, match="skipped 2 missing"):
        line = refused(argv, capsys)
    assert "no images to evaluate (2 listed, 2 skipped)" in line


def test_an_image_of_another_size_than_annotated_is_an_error(coco):
    root, data = coco
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(
        root / "images" / data["images"][1]["file_name"]
    )
    with pytest.raises(ValueError, match=r"is 20 x 10 on disk, the annotation says 64 x 64"):
        coco_examples(root, SIZE)


def test_a_folder_in_use_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    with locked(tmp_path):
        line = refused(["evaluate", "--device", "cpu", "--out", str(tmp_path)], capsys)
    assert "out: " in line
    assert "in use by another evaluate run (pid" in line
