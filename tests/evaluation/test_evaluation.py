"""The evaluation runner: datasets, the baselines in methods.py, resume, torch.distributed, CLI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pycocotools import mask as coco_mask

import captum_gscorecam.evaluation.distributed as distributed
import captum_gscorecam.evaluation.runner as runner
import captum_gscorecam.evaluation.scoring as scoring
from captum_gscorecam import CLIPSimilarity, HilaCAM, encode_text
from captum_gscorecam.cli.evaluate import add_parser as add_evaluate_parser
from captum_gscorecam.cli.options import UsageError
from captum_gscorecam.evaluation import (
    MetricParams,
    coco_examples,
    evaluate,
    max_box_acc_v2,
    shapes_examples,
)
from captum_gscorecam.evaluation.coco import rle_decode
from captum_gscorecam.methods import METHODS, applicable_methods, check_method, explain_maps
from captum_gscorecam.shapes import export_coco, render_scene
from captum_gscorecam.shapes.models import make_preprocess
from captum_gscorecam.visualization import upsample
from tests.helpers import (
    EVAL_SEEDS,
    EVAL_SIZE,
    ROOT,
    images_for,
    texts,
    tiny_eval_vit,
    tiny_rn,
    tiny_vit,
    without_time,
)

SIZE, SEEDS = EVAL_SIZE, EVAL_SEEDS
FAST = ["gscorecam", "gradcam", "occlusion", "uniform"]
NEW_METHODS = ["occlusion", "integrated_gradients", "saliency", "uniform"]
PNG_MAGIC = b"\x89PNG"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: the machine is shared, and thread counts must match across processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def examples():
    return shapes_examples(SEEDS[:2], (2, 3), SIZE)


# Datasets


def test_shapes_examples_are_the_scenes_objects():
    examples = shapes_examples(SEEDS, (2, 3), SIZE)
    for seed in SEEDS:
        scene = render_scene(seed, 2 + seed % 2, SIZE)
        mine = [e for e in examples if e.image_id == str(seed)]
        assert [e.prompt for e in mine] == scene.captions
        for example, box, mask in zip(mine, scene.boxes, scene.masks, strict=True):
            np.testing.assert_array_equal(example.boxes, box[None])
            np.testing.assert_array_equal(example.mask, mask)
            np.testing.assert_array_equal(example.load_image(), scene.image)
            assert example.n_objects == len(scene.objects)
    assert {e.n_objects for e in examples} == {2, 3}


def test_coco_round_trip_through_export_coco(tmp_path):
    export_coco(tmp_path, SEEDS[:2], n_objects=2, size=SIZE)
    examples = coco_examples(tmp_path, SIZE, template="a {}")
    scenes = [render_scene(seed, 2, SIZE) for seed in SEEDS[:2]]
    assert [e.prompt for e in examples] == [c for s in scenes for c in s.captions]
    objects = [(scene, i) for scene in scenes for i in range(2)]
    for example, (scene, i) in zip(examples, objects, strict=True):
        np.testing.assert_array_equal(example.boxes, scene.boxes[i][None])
        np.testing.assert_array_equal(example.mask, scene.masks[i])
        np.testing.assert_array_equal(example.load_image(), scene.image)
        assert example.n_objects == 2
    assert len(coco_examples(tmp_path, SIZE, limit=1)) == 2


def _coco_folder(tmp_path, annotations):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    Image.new("RGB", (100, 50), "white").save(tmp_path / "images" / "a.png")
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }
    (tmp_path / "annotations" / "instances.json").write_text(json.dumps(data))


SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]


def _right_half_compressed_rle():
    """The right half of the 100 x 50 image, as pycocotools' compressed RLE."""
    half = np.zeros((50, 100), dtype=np.uint8, order="F")
    half[:, 50:] = 1
    rle = coco_mask.encode(half)
    return {"counts": rle["counts"].decode(), "size": [50, 100]}


def test_coco_resize_scales_boxes_polygons_rle_and_skips_crowds(tmp_path):
    _coco_folder(
        tmp_path,
        [
            {"image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": [SQUARE]},
            {
                "image_id": 7,
                "category_id": 1,
                "bbox": [50, 0, 50, 50],
                "segmentation": _right_half_compressed_rle(),
            },
            {"image_id": 7, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
    )
    (example,) = coco_examples(tmp_path, 64, template="a photo of a {}")
    assert example.prompt == "a photo of a cat"
    assert example.image_id == "7"
    assert example.n_objects == 2
    # x scales by 0.64, y by 1.28; boxes grow outwards to whole pixels
    np.testing.assert_array_equal(example.boxes, [[6, 12, 20, 39], [32, 0, 64, 64]])
    assert example.load_image().shape == (64, 64, 3)
    # the square polygon filled in the scaled frame, and the right half (x >= 50 * 0.64)
    expected = np.zeros((64, 64), dtype=bool)
    expected[13:39, 7:20] = True
    expected[:, 32:] = True
    np.testing.assert_array_equal(example.mask, expected)


def test_compressed_and_uncompressed_rle_give_the_same_mask(tmp_path):
    compressed = _right_half_compressed_rle()
    uncompressed = {"counts": [2500, 2500], "size": [50, 100]}
    masks = []
    for segmentation in (compressed, uncompressed):
        annotation = {"image_id": 7, "category_id": 1, "bbox": [50, 0, 50, 50]}
        _coco_folder(tmp_path, [annotation | {"segmentation": segmentation}])
        (example,) = coco_examples(tmp_path, 64)
        masks.append(example.mask)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].sum() == 64 * 32


def test_compressed_rle_needs_no_pycocotools(tmp_path, monkeypatch):
    expected = _right_half_compressed_rle()  # made by pycocotools, before it goes
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import fails
    annotation = {"image_id": 7, "category_id": 1, "bbox": [50, 0, 50, 50]}
    _coco_folder(tmp_path, [annotation | {"segmentation": expected}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (example,) = coco_examples(tmp_path, 64)
    assert example.mask[:, 32:].all()
    assert not example.mask[:, :32].any()
    np.testing.assert_array_equal(example.boxes, [[32, 0, 64, 64]])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=st.integers(0, 1)
    )
)
def test_compressed_rle_decodes_as_pycocotools_encodes(mask):
    rle = coco_mask.encode(np.asfortranarray(mask))
    counts = rle["counts"].decode()
    np.testing.assert_array_equal(rle_decode({"counts": counts, "size": list(mask.shape)}), mask)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    hnp.arrays(np.uint8, (5, 7), elements=st.integers(0, 1)),
    st.integers(0, 100),
    st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=2),
)
def test_a_damaged_compressed_rle_is_refused_or_decoded_as_pycocotools(mask, at, replacement):
    """pycocotools decodes any text into some mask; ours refuses what is not a 5 x 7 RLE."""
    counts = coco_mask.encode(np.asfortranarray(mask))["counts"].decode()
    at %= len(counts)
    damaged = counts[:at] + replacement + counts[at + 1 :]
    try:
        decoded, refusal = rle_decode({"counts": damaged, "size": [5, 7]}), None
    except ValueError as error:
        decoded, refusal = None, str(error)
    if decoded is None:
        assert refusal == "rle: expected runs adding up to 5 x 7 pixels"
        return
    reference = coco_mask.decode({"counts": damaged.encode(), "size": [5, 7]})
    np.testing.assert_array_equal(decoded, reference.astype(bool))


# The baselines in methods.py


@pytest.mark.parametrize("make", [tiny_rn, tiny_vit])
@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_give_one_pixel_map_per_prompt(make, method):
    model = make()
    images, text = images_for(model, 2), texts(2, 3)
    maps = explain_maps(model, images, text, method, topk=0.1)
    assert maps.shape == (2, 3, *images.shape[-2:])
    assert not maps.requires_grad
    assert torch.isfinite(maps).all()
    if method == "uniform":
        assert (maps == 1).all()
    else:
        assert maps.abs().sum() > 0


def test_integrated_gradients_maps_add_up_to_the_score_difference(eval_model):
    images, text = images_for(eval_model, 1), texts(1, 2)
    maps = explain_maps(eval_model, images, text, "integrated_gradients", topk=0.1)
    with torch.no_grad():
        scores = CLIPSimilarity(eval_model)(images, text)
        baseline = CLIPSimilarity(eval_model)(torch.zeros_like(images), text)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), scores - baseline, atol=0.05, rtol=0.05)


def test_saliency_maps_are_absolute_gradients_summed_over_colours(eval_model):
    images, text = images_for(eval_model, 1), texts(1, 1)
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(CLIPSimilarity(eval_model)(x, text[:, 0]).sum(), x)
    maps = explain_maps(eval_model, images, text, "saliency", topk=0.1)
    torch.testing.assert_close(maps[:, 0], grad.abs().sum(dim=1))


def test_hilacam_runs_through_explain_maps(eval_model):
    images, text = images_for(eval_model, 2), texts(2, 3)
    maps = explain_maps(eval_model, images, text, "hilacam", topk=0.1)
    torch.testing.assert_close(maps, HilaCAM(eval_model).attribute(images, target=text))


def test_applicable_methods_leave_the_attention_methods_to_vits(eval_model):
    assert applicable_methods(eval_model) == list(METHODS)
    rn = tiny_rn()
    vit_only = ("hilacam", "legrad", "grad_eclip", "rollout")
    assert applicable_methods(rn) == [m for m in METHODS if m not in vit_only]
    for method in vit_only:
        with pytest.raises(ValueError, match=f"method: {method} cannot explain"):
            check_method(rn, method)
    with pytest.raises(ValueError, match="method: hilacam cannot explain"):
        explain_maps(rn, images_for(rn, 1), texts(1, 1), "hilacam", topk=0.1)


def test_unknown_method_names_the_argument(eval_model):
    with pytest.raises(ValueError, match="method: unknown method 'nope'"):
        explain_maps(eval_model, images_for(eval_model, 1), texts(1, 1), "nope", topk=0.1)


# The runner


@pytest.mark.slow
def test_evaluate_end_to_end(tmp_path, eval_model, run_evaluate, examples):
    params = MetricParams(faithfulness_steps=4)
    results = run_evaluate(eval_model, examples, tmp_path, list(METHODS), params=params)
    for name in ("results.json", "results.md", "results.png", "results.jsonl", "run.json"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "results.png").read_bytes()[:4] == PNG_MAGIC
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == results["summary"]
    assert len(saved["rows"]) == len(examples) * len(METHODS)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    for row in saved["rows"]:
        for key in ("box_iou", "energy", "mask_iou"):
            assert 0.0 <= row[key] <= 1.0
        assert np.isfinite([row["deletion"], row["insertion"]]).all()
        assert row["seconds"] >= 0
    table = (tmp_path / "results.md").read_text()
    assert all(label in table for label in METHODS.values())
    assert "1-3 objects" in table
    assert saved["by_objects"]["1-3"]["gscorecam"]["examples"] == len(examples)


def test_uniform_baseline_scores_what_a_constant_map_should(
    tmp_path, eval_model, run_evaluate, examples
):
    results = run_evaluate(eval_model, examples, tmp_path, ["uniform"])
    for row, example in zip(results["rows"], examples, strict=True):
        assert (row["pointing"], row["box_hit"], row["box_iou"], row["mask_iou"]) == (
            False,
            False,
            0.0,
            0.0,
        )
        (x0, y0, x1, y1), *_ = example.boxes
        assert row["energy"] == pytest.approx((x1 - x0) * (y1 - y0) / SIZE**2)
    assert results["summary"]["uniform"]["max_box_acc_v2"] == 0.0


def test_max_box_acc_v2_over_rows_equals_the_metric_on_the_maps(
    tmp_path, eval_model, tokenizer, examples, run_evaluate
):
    results = run_evaluate(eval_model, examples, tmp_path, ["gscorecam"])
    maps, boxes = [], []
    for image_id in dict.fromkeys(e.image_id for e in examples):
        group = [e for e in examples if e.image_id == image_id]
        image = make_preprocess(SIZE)(group[0].load_image())[None]
        text = encode_text(eval_model, tokenizer, [e.prompt for e in group])[None]
        maps += list(
            upsample(explain_maps(eval_model, image, text, "gscorecam", 0.1), (SIZE, SIZE))[0]
        )
        boxes += [e.boxes for e in group]
    expected = max_box_acc_v2(maps, boxes)
    assert results["summary"]["gscorecam"]["max_box_acc_v2"] == pytest.approx(expected)


@pytest.mark.slow
def test_resume_skips_finished_images(tmp_path, eval_model, run_evaluate, monkeypatch):
    examples = shapes_examples(SEEDS, (2, 3), SIZE)
    first = [e for e in examples if e.image_id == str(SEEDS[0])]
    run_evaluate(eval_model, first, tmp_path, FAST)
    calls = []

    def counting(eval_model, images, text, method, topk, **options):
        calls.append(method)
        return explain_maps(eval_model, images, text, method, topk, **options)

    monkeypatch.setattr(scoring, "explain_maps", counting)
    jsonl = tmp_path / "results.jsonl"
    text = jsonl.read_text()
    jsonl.write_text(text + text[: len(text) // 2])  # a second record cut short by a crash
    with pytest.warns(UserWarning, match=r"out: 1 damaged result line\(s\) dropped"):
        resumed = run_evaluate(eval_model, examples, tmp_path, FAST)
    assert calls == FAST * 2  # only the two new images
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 3  # the cut line is gone
    assert [json.loads(line)["image_id"] for line in lines] == [str(s) for s in SEEDS]
    calls.clear()
    again = run_evaluate(eval_model, examples, tmp_path, FAST)
    assert calls == []
    assert again["rows"] == resumed["rows"]
    monkeypatch.undo()
    fresh = run_evaluate(eval_model, examples, tmp_path / "fresh", FAST)
    assert without_time(fresh["rows"]) == without_time(resumed["rows"])
    assert len(resumed["rows"]) == len(examples) * len(FAST)


def test_resuming_with_other_settings_is_refused(tmp_path, eval_model, run_evaluate, examples):
    run_evaluate(eval_model, examples[:1], tmp_path, ["uniform"])
    with pytest.raises(ValueError, match=r"out: .* other settings"):
        run_evaluate(eval_model, examples, tmp_path, ["uniform", "saliency"])


def test_unknown_methods_are_refused_by_evaluate(tmp_path, eval_model, run_evaluate, examples):
    with pytest.raises(ValueError, match="methods: unknown"):
        run_evaluate(eval_model, examples, tmp_path, ["gscorecam", "nope"])


def test_examples_at_another_size_than_the_model_input_are_refused(
    tmp_path, eval_model, run_evaluate
):
    examples = shapes_examples(SEEDS[:1], (1, 1), 96)
    with pytest.raises(ValueError, match="examples: built at 96 px"):
        run_evaluate(eval_model, examples, tmp_path, ["uniform"])


# torch.distributed


def open_tokenizer():
    import open_clip

    return open_clip.get_tokenizer("RN50", context_length=16)


def distributed_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    assert distributed.init_distributed("cpu") == "cpu"
    try:
        examples = shapes_examples(SEEDS, (2, 3), SIZE)
        evaluate(tiny_eval_vit(), make_preprocess(SIZE), open_tokenizer(), examples, FAST, 0.1, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_single_process_results(tmp_path, eval_model, run_evaluate, free_port):
    single = run_evaluate(
        eval_model, shapes_examples(SEEDS, (2, 3), SIZE), tmp_path / "single", FAST
    )
    out = tmp_path / "dist"
    mp.spawn(distributed_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    shards = [(out / f"results.rank{r}.jsonl").read_text().splitlines() for r in range(2)]
    assert [len(s) for s in shards] == [2, 1]  # images 0, 2 on rank 0; image 1 on rank 1
    both = json.loads((out / "results.json").read_text())
    assert without_time(both["rows"]) == without_time(single["rows"])
    for method in FAST:
        for scores in (both["summary"][method], single["summary"][method]):
            scores.pop("seconds_per_image")
            scores.pop("cpu_seconds_per_map")
        assert both["summary"][method] == single["summary"][method]


# The command line


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gscorecam")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "coco"], "root: give --root DIR or --annotations FILE"),
        (["--dataset", "coco", "--root", "{tmp}"], "root: no annotations"),
    ],
)
def test_coco_without_a_dataset_is_a_usage_error(tmp_path, argv, message):
    args = evaluate_parser().parse_args(["evaluate", *[a.format(tmp=tmp_path) for a in argv]])
    with pytest.raises(UsageError, match=message):
        args.run(args)


def test_evaluate_command_on_a_coco_folder(tmp_path, capsys, loaded_model, eval_model, tokenizer):

    loaded_model(eval_model, make_preprocess(SIZE), tokenizer)
    export_coco(tmp_path / "coco", SEEDS, n_objects=2, size=SIZE)
    argv = ["evaluate", "--dataset", "coco", "--root", str(tmp_path / "coco"), "--limit", "1"]
    argv += ["--template", "a {}", "--methods", "gscorecam,uniform", "--out", str(tmp_path / "o")]
    args = evaluate_parser().parse_args(argv)
    args.run(args)
    assert "| gScoreCAM |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["config"]["run"]["template"] == "a {}"
    assert {row["prompt"] for row in saved["rows"]} == set(render_scene(SEEDS[0], 2, SIZE).captions)
    assert len(saved["rows"]) == 2 * 2
    assert saved["config"]["topk"] == 0.5  # the ViT default, resolved
    args.topk = 0.25
    with pytest.raises(UsageError, match=r"out: .* other settings"):
        args.run(args)


def val2017_layout(tmp_path):
    """A shapes COCO export rearranged as COCO ships val2017."""
    export_coco(tmp_path / "export", SEEDS[:2], n_objects=2, size=SIZE)
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (tmp_path / "export" / "annotations" / "instances.json").rename(
        root / "annotations" / "instances_val2017.json"
    )
    (tmp_path / "export" / "images").rename(root / "val2017")
    return root


@pytest.mark.parametrize("how", ["root", "files"])
def test_evaluate_command_on_the_coco_val2017_layout(
    tmp_path, capsys, loaded_model, eval_model, tokenizer, how
):
    loaded_model(eval_model, make_preprocess(SIZE), tokenizer)
    root = val2017_layout(tmp_path)
    annotations, images = root / "annotations" / "instances_val2017.json", root / "val2017"
    argv = ["evaluate", "--dataset", "coco", "--methods", "uniform", "--out", str(tmp_path / "o")]
    if how == "root":
        argv += ["--root", str(root)]
    else:
        argv += ["--annotations", str(annotations), "--images", str(images)]
    args = evaluate_parser().parse_args(argv)
    args.run(args)
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert saved["config"]["run"]["annotations"] == str(annotations)
    assert saved["config"]["run"]["images"] == str(images)
    assert (saved["images"], saved["examples"]) == (2, 4)
    table = (tmp_path / "o" / "results.md").read_text()
    assert table.startswith("# Localization benchmark: shapes-rn on COCO val2017, 2 images, 4 ex")


def test_annotations_alone_find_the_image_folder_beside_them(tmp_path):
    root = val2017_layout(tmp_path)
    examples = coco_examples(None, SIZE, annotations=root / "annotations/instances_val2017.json")
    assert {e.source.parent for e in examples} == {root / "val2017"}


def test_results_md_says_what_each_metric_measures(tmp_path, eval_model, run_evaluate, examples):
    params = MetricParams(faithfulness_steps=2)
    run_evaluate(eval_model, examples[:2], tmp_path, ["uniform"], params=params)
    lines = (tmp_path / "results.md").read_text().splitlines()
    meanings = [line for line in lines[:12] if line.startswith("- **")]
    titles = ["pointing game", "box accuracy", "mean IoU", "MaxBoxAccV2", "energy", "mask IoU"]
    titles += ["deletion", "insertion", "s / image", "CPU s / map"]
    assert [line.split("**")[1] for line in meanings] == titles
    assert "lower is better" in meanings[6]
    assert "higher is better" in meanings[7]
    assert all(any(w in line for w in ("better", "faster", "cheaper")) for line in meanings)
    assert "### Images with 1-3 objects (2 examples)" in lines


def test_report_is_rewritten_from_stored_results_alone(
    tmp_path, eval_model, run_evaluate, examples
):
    import gzip

    from captum_gscorecam.evaluation import report

    run_evaluate(eval_model, examples, tmp_path / "run", ["uniform", "gscorecam"])
    stored = tmp_path / "stored"
    stored.mkdir()
    data = (tmp_path / "run" / "results.json").read_bytes()
    (stored / "results.json.gz").write_bytes(gzip.compress(data))
    report.main([str(stored)])
    md = (tmp_path / "run" / "results.md").read_text()
    assert (stored / "results.md").read_text() == md
    assert (stored / "results.png").read_bytes()[:4] == PNG_MAGIC


def test_the_committed_reports_regenerate_unchanged_and_without_torch(tmp_path):
    import shutil
    import subprocess

    committed = ROOT / "benchmarks" / "results" / "localization"
    folders = []
    for name in ("shapes-rn", "shapes-vit-faithfulness"):
        shutil.copytree(committed / name, tmp_path / name)
        (tmp_path / name / "results.md").unlink()
        folders.append(str(tmp_path / name))
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['report', *{folders!r}]\n"
        "runpy.run_module('captum_gscorecam.evaluation.report', run_name='__main__')\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "torch loaded: False"
    for name in ("shapes-rn", "shapes-vit-faithfulness"):
        for file in ("results.md", "results.png"):
            assert (tmp_path / name / file).read_bytes() == (committed / name / file).read_bytes()


@pytest.mark.parametrize(
    ("text", "topk"), [("300", 300), ("1", 1), ("1.0", 1.0), ("0.1", 0.1), ("26.0", 26)]
)
def test_topk_flag_reads_integers_as_counts_and_decimals_as_fractions(text, topk):
    args = evaluate_parser().parse_args(["evaluate", "--topk", text])
    assert args.topk == topk
    assert type(args.topk) is type(topk)


def test_topk_defaults_to_the_towers_default(tmp_path, tokenizer):
    rn, vit = tiny_rn(), tiny_eval_vit()
    assert (runner.default_topk_share(rn), runner.default_topk_share(vit)) == (0.1, 0.5)
    assert evaluate_parser().parse_args(["evaluate"]).topk is None


@pytest.mark.parametrize("make", [tiny_rn, tiny_eval_vit])
def test_the_recorded_default_k_gives_the_maps_of_topk_none(make):
    model = make()
    images, text = images_for(model, 1), texts(1, 2)
    share = runner.default_topk_share(model)
    by_default = explain_maps(model, images, text, "gscorecam", None)
    torch.testing.assert_close(explain_maps(model, images, text, "gscorecam", share), by_default)


def test_a_further_setting_is_recorded_described_and_binding(tmp_path):
    from captum_gscorecam.evaluation.report import markdown
    from captum_gscorecam.evaluation.store import append_record, check_resumable

    plain = runner.run_config({"model": "m"}, ["uniform"], 0.1, MetricParams())
    config = runner.run_config({"model": "m"}, ["uniform"], 0.1, MetricParams(), precision="bf16")
    assert config == plain | {"precision": "bf16"}
    results = {"config": config, "images": 0, "examples": 0, "summary": {}, "by_objects": {}}
    assert "topk=0.1, precision=bf16" in markdown(results)
    append_record(tmp_path / "results.jsonl", config, "1", [])
    check_resumable(tmp_path, config)
    with pytest.raises(ValueError, match="other settings"):
        check_resumable(tmp_path, plain)


def test_the_weights_description_does_not_bind_a_folder(tmp_path):
    """``run.weights`` describes ``model`` and ``pretrained``: a folder from before it resumes."""
    from captum_gscorecam.evaluation.store import append_record, check_resumable

    run = {"model": "RN50", "pretrained": None}
    before = runner.run_config(run, ["uniform"], 0.1, MetricParams())
    now = runner.run_config(run | {"weights": "RANDOM WEIGHTS"}, ["uniform"], 0.1, MetricParams())
    append_record(tmp_path / "results.jsonl", before, "1", [])
    check_resumable(tmp_path, now)
    other = runner.run_config(run | {"pretrained": "openai", "weights": "openai"}, ["uniform"],
                              0.1, MetricParams())  # fmt: skip
    with pytest.raises(ValueError, match="other settings"):
        check_resumable(tmp_path, other)
