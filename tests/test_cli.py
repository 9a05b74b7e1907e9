"""The ``gscorecam`` command end to end, on the shipped shapes models (offline)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from captum_gscorecam.cli import main
from captum_gscorecam.clip import encode_text, load_clip
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.shapes import render_scene

PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    scene = render_scene(10_000_123, n_objects=2)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(scene.image).save(path)
    return path, scene


@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_demo_writes_a_figure_and_a_table(tmp_path, capsys, tower):
    out = tmp_path / "demo.png"
    assert (
        main(["demo", "--tower", tower, "--scenes", "1", "--objects", "2", "--out", str(out)]) == 0
    )
    assert out.read_bytes()[:4] == PNG_MAGIC
    printed = capsys.readouterr().out
    for label in ("gScoreCAM", "ScoreCAM", "LayerGradCam", "peak inside the object"):
        assert label in printed


@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "gradcam"])
def test_explain_an_image_file(tmp_path, scene_png, method):
    path, scene = scene_png
    out = tmp_path / "out.png"
    argv = ["explain", str(path), "--out", str(out), "--method", method, "--topk", "0.1"]
    for caption in scene.captions:
        argv += ["--prompt", caption]
    assert main(argv) == 0
    assert out.read_bytes()[:4] == PNG_MAGIC


def test_explain_with_hilacam_on_the_vit(tmp_path, scene_png):
    path, scene = scene_png
    out = tmp_path / "out.png"
    argv = ["explain", str(path), "--model", "shapes-vit", "--method", "hilacam", "--out", str(out)]
    assert main([*argv, "--prompt", scene.captions[0]]) == 0
    assert out.read_bytes()[:4] == PNG_MAGIC


def test_gradcam_on_vit_uses_the_block_before_the_last():
    model, preprocess, tokenizer = load_clip("shapes-vit")
    scene = render_scene(10_000_001, n_objects=2, size=model.visual.image_size[0])
    images = preprocess(scene.image)[None]
    text = encode_text(model, tokenizer, scene.captions)[None]
    maps = explain_maps(model, images, text, "gradcam", topk=0.1)
    assert maps.shape == (1, 2, *model.visual.grid_size)
    assert maps.sum() > 0  # the last block alone would give all zeros


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "missing.png", "--prompt", "a red circle"], "image: no such file"),
        (["explain", "{png}"], "prompt: give at least one --prompt"),
        (["explain", "{txt}", "--prompt", "a red circle"], "image: not an image file"),
        (["explain", "{png}", "--prompt", "x", "--model", "NoSuchNet"], "model: unknown model"),
        (["explain", "{png}", "--prompt", "x", "--method", "hilacam"], "method: hilacam cannot"),
        (
            ["explain", "{png}", "--prompt", "x", "--pretrained", "missing.pt", "--model", "RN50"],
            "pretrained:",
        ),
    ],
)
def test_user_errors_print_one_line(tmp_path, capsys, scene_png, argv, message):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    argv = [a.format(png=scene_png[0], txt=txt) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("gscorecam explain: error:")


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "captum_gscorecam", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "demo" in done.stdout
    assert "explain" in done.stdout


def test_load_clip_shapes_is_eval_and_on_cpu():
    model, _, tokenizer = load_clip("shapes-rn")
    assert not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    assert tokenizer(["a red circle"]).dtype == torch.long
