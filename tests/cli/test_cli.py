"""The ``gscorecam`` command end to end, on the shipped shapes models (offline)."""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import captum_gscorecam
import captum_gscorecam.loading as loading
import captum_gscorecam.visualization as visualization
from captum_gscorecam.cli import main
from captum_gscorecam.cli.options import (
    BUILTIN_FIGURE_FORMATS,
    UsageError,
    figure_formats,
    usage_errors,
)
from captum_gscorecam.clip import encode_text
from captum_gscorecam.images import expand_images, read_image
from captum_gscorecam.loading import load_clip
from captum_gscorecam.methods import explain_maps
from captum_gscorecam.registry import SPECS
from captum_gscorecam.shapes import render_scene

PNG_MAGIC = b"\x89PNG"
HEAVY = ("torch", "open_clip", "transformers", "captum", "matplotlib", "timm")


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    scene = render_scene(10_000_123, n_objects=2)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(scene.image).save(path)
    return path, scene


def one_line_error(capsys, command: str = "explain") -> str:
    """The command's stderr, checked to be one line ``gscorecam <command>: error: ...``."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gscorecam {command}: error: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_demo_writes_a_figure_and_a_table(tmp_path, capsys, monkeypatch, tower):
    drawn = []
    show_maps = visualization.show_maps

    def recorded(*args, **kwargs):
        drawn.append((args, kwargs))
        return show_maps(*args, **kwargs)

    monkeypatch.setattr(visualization, "show_maps", recorded)
    out = tmp_path / "demo.png"
    assert (
        main(["demo", "--tower", tower, "--scenes", "1", "--objects", "2", "--out", str(out)]) == 0
    )
    assert out.read_bytes()[:4] == PNG_MAGIC
    printed = capsys.readouterr().out
    for label in ("gScoreCAM", "ScoreCAM", "LayerGradCam", "peak inside the object"):
        assert label in printed
    assert ("HilaCAM" in printed) == (tower == "vit")
    assert f"wrote {out}" in printed
    # what made the figure: first on the terminal and on top of the figure, no warning
    line = printed.splitlines()[0]
    assert line.startswith("gScoreCAM, ScoreCAM, LayerGradCam")
    assert f" | shapes-{tower} (shapes world: knows only coloured shapes) | " in line
    ((_, maps, *_), kwargs) = drawn[0]
    assert kwargs["title"] == line
    assert kwargs["warnings"] == []
    # one colour scale for a scene's prompts, per method: the scene's largest value is 1
    assert (kwargs["vmin"], kwargs["vmax"]) == (0.0, 1.0)
    for column in zip(*maps, strict=True):
        assert max(float(m.max()) for m in column) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gscorecam", "scorecam", "gradcam"])
def test_explain_an_image_file(tmp_path, capsys, scene_png, method):
    path, scene = scene_png
    out = tmp_path / "out.png"
    argv = ["explain", str(path), "--model", "shapes-rn", "--out", str(out), "--method", method]
    for caption in scene.captions:
        argv += ["--prompt", caption]
    assert main(argv) == 0
    assert out.read_bytes()[:4] == PNG_MAGIC
    assert f"wrote {out}," in capsys.readouterr().out
    with (tmp_path / "scores.csv").open(newline="") as file:
        scores = list(csv.DictReader(file))
    # a row per (image, prompt): the text scored and the settings that made the score
    assert [row["text"] for row in scores] == scene.captions
    assert {row["image"] for row in scores} == {str(path)}
    assert {row["method"] for row in scores} == {SPECS[method].label}
    assert {row["weights"] for row in scores} == {"shapes world: knows only coloured shapes"}


def test_explain_with_hilacam_on_the_vit(tmp_path, scene_png):
    path, scene = scene_png
    out = tmp_path / "out.png"
    argv = ["explain", str(path), "--model", "shapes-vit", "--method", "hilacam", "--out", str(out)]
    assert main([*argv, "--prompt", scene.captions[0]]) == 0
    assert out.read_bytes()[:4] == PNG_MAGIC


def cropping(preprocess: transforms.Compose) -> transforms.Compose:
    """The shapes preprocess with open_clip's geometry: shortest side to S, centre crop S x S."""
    first, resize, *rest = preprocess.transforms
    side = resize.size[0]
    return transforms.Compose([first, transforms.Resize(side), transforms.CenterCrop(side), *rest])


def test_explain_a_folder_puts_maps_on_the_full_photo(tmp_path, capsys, loaded_model):
    """A wide photo, centre-cropped by the model: the saved map has the photo's own size, NaN on
    the cut sides, and peaks on the planted object (at its place in the photo, not the crop)."""
    model, preprocess, tokenizer = load_clip("shapes-rn")
    loaded_model(model, cropping(preprocess), tokenizer)
    scene = render_scene(10_000_007, n_objects=1)  # 224 x 224, a red circle right of centre
    pad = 112
    wide = np.zeros((224, 224 + 2 * pad, 3), np.uint8)
    wide[:, pad:-pad] = scene.image
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(scene.image).save(folder / "square.jpg")
    (folder / "notes.txt").write_text("not a photo")  # a folder contributes its photos only
    maps_dir = tmp_path / "maps"
    prompt = scene.captions[0]
    argv = ["explain", str(folder), "--prompt", prompt, "--prompt", "a photo"]
    argv += ["--out", str(tmp_path / "figures"), "--save-maps", str(maps_dir)]
    assert main(argv) == 0

    assert json.loads((maps_dir / "prompts.json").read_text()) == [prompt, "a photo"]
    maps = np.load(maps_dir / "wide.npy")
    assert maps.dtype == np.float32
    assert maps.shape == (2, 224, 224 + 2 * pad)
    assert np.isnan(maps[:, :, :pad]).all()
    assert np.isnan(maps[:, :, -pad:]).all()
    assert np.isfinite(maps[:, :, pad:-pad]).all()
    row, col = np.unravel_index(np.nanargmax(maps[0]), maps[0].shape)
    assert scene.masks[0][row, col - pad]
    assert np.load(maps_dir / "square.npy").shape == (2, 224, 224)
    for name in ("wide.png", "square.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:4] == PNG_MAGIC
    table = (tmp_path / "figures" / "scores.md").read_text()
    assert table.startswith(f"| image | {prompt} | a photo | seconds |")
    assert table.count(str(folder)) == 2
    printed = capsys.readouterr().out
    assert "image(s) x 2 prompt(s) in" in printed
    assert str(tmp_path / "figures" / "scores.csv") in printed


def test_no_crop_squashes_instead(tmp_path, loaded_model):
    model, preprocess, tokenizer = load_clip("shapes-rn")
    loaded_model(model, cropping(preprocess), tokenizer)
    Image.fromarray(np.full((64, 128, 3), 200, np.uint8)).save(tmp_path / "wide.png")
    argv = ["explain", str(tmp_path / "wide.png"), "--prompt", "a red circle", "--no-crop"]
    argv += ["--out", str(tmp_path / "out.png"), "--save-maps", str(tmp_path / "maps")]
    assert main(argv) == 0
    maps = np.load(tmp_path / "maps" / "wide.npy")
    assert maps.shape == (1, 64, 128)
    assert np.isfinite(maps).all()


def test_gradcam_on_vit_uses_the_block_before_the_last():
    model, preprocess, tokenizer = load_clip("shapes-vit")
    scene = render_scene(10_000_001, n_objects=2, size=model.visual.image_size[0])
    images = preprocess(scene.image)[None]
    text = encode_text(model, tokenizer, scene.captions)[None]
    maps = explain_maps(model, images, text, "gradcam", topk=0.1)
    assert maps.shape == (1, 2, *model.visual.grid_size)
    assert maps.sum() > 0  # the last block alone would give all zeros


# Refused at parse time or just after, before a model loads: (argv, the option, text in the line).
BAD = [
    (["--topk", "0"], "--topk", "got 0"),
    (["--topk", "-3"], "--topk", "got -3"),
    (["--topk", "1.5"], "--topk", "got 1.5"),
    (["--topk", "nan"], "--topk", "got nan"),
    (["--topk", "inf"], "--topk", "got inf"),
    (["--topk", "many"], "--topk", "got 'many'"),
    (["--perturbations-per-eval", "0"], "--perturbations-per-eval", "got 0"),
    (["--perturbations-per-eval", "2.5"], "--perturbations-per-eval", "got 2.5"),
    (["--out", "{tmp}/missing/out.png"], "--out", "does not exist"),
    (["--out", "{tmp}/out.xyz"], "--out", "cannot save a figure as .xyz"),
    (["--out", "{txt}"], "--out", "cannot save a figure as .txt"),
    (["--out", "{tmp}/figures.v2"], "--out", "cannot save a figure as .v2"),
    (["--save-maps", "{txt}"], "--save-maps", "is a file"),
    (["--save-maps", "{tmp}/missing/maps"], "--save-maps", "does not exist"),
    (["--device", "gpu"], "--device", "got 'gpu'"),
    (["--layer", "visual..layer3"], "--layer", "dotted module path"),
    (["--template", "a photo of a"], "--template", "exactly one {}"),
    (["--template", "{} and {}"], "--template", "exactly one {}"),
    (["--template", "a {name}"], "--template", "exactly one {}"),
    (["--prompt", "  "], "--prompt", "expected some text"),
    (["--method", "gradcm"], "--method", "invalid choice"),
    (["--method", "scorecam", "--topk", "10"], "--topk", "it applies to gscorecam"),
    (["--method", "hilacam", "--layer", "visual.layer3"], "--layer", "does not use it"),
    (["--method", "saliency", "--perturbations-per-eval", "8"], "--perturbations-per-eval", ""),
    (
        ["--model", "shapes-rn", "--pretrained", "openai"],
        "--pretrained",
        "shapes-rn brings its own weights",
    ),
    (["--model", "RN50", "--pretrained", "{tmp}/missing.pt"], "--pretrained", "no such"),
    (["--model", "RN50", "--pretrained", "nosuchtag"], "--pretrained", "its tags: openai"),
    (["--model", "RN5O"], "--model", "unknown model 'RN5O'"),
]


@pytest.mark.parametrize(("extra", "option", "text"), BAD)
def test_bad_arguments_are_refused_before_a_model_loads(
    tmp_path, capsys, no_model, scene_png, extra, option, text
):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{txt}", str(txt)) for a in extra]
    prompt = [] if "--prompt" in extra else ["--prompt", "a red circle"]
    with pytest.raises(SystemExit) as exit_:  # argparse exits; our checks return 2
        sys.exit(main(["explain", str(scene_png[0]), *prompt, *extra]))
    assert exit_.value.code == 2
    err = one_line_error(capsys)
    assert option in err
    assert text in err


@pytest.mark.parametrize(
    ("extra", "option", "text"),
    [
        (["--out", "{tmp}"], "--out", "is a folder"),
        (["--out", "{tmp}/demo"], "--out", "a file without extension"),
        (["--seed", "-1"], "--seed", "got '-1'"),
        (["--scenes", "0"], "--scenes", "got '0'"),
        (["--topk", "0.0"], "--topk", "got 0.0"),
    ],
)
def test_demo_refuses_bad_arguments(tmp_path, capsys, no_model, extra, option, text):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *[a.format(tmp=tmp_path) for a in extra]])
    assert exit_.value.code == 2
    err = one_line_error(capsys, "demo")
    assert option in err
    assert text in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_named(capsys, no_model, scene_png):
    assert main(["explain", str(scene_png[0]), "--prompt", "x", "--device", "cuda"]) == 2
    assert "argument --device: cuda is not available" in one_line_error(capsys)


def test_auto_device_is_cuda_when_there_is_one():
    assert loading.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("images", "text"),
    [
        (["{tmp}/missing.png"], "no such file or folder"),
        (["{tmp}/*.jpg"], "no photos match"),
        (["{tmp}/empty"], "no photos in folder"),
        (["{txt}"], "not an image file"),
        (["{png}", "{tmp}/a/scene.png"], "share the name 'scene'"),
    ],
)
def test_bad_images_are_refused_before_a_model_loads(
    tmp_path, capsys, no_model, scene_png, images, text
):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "scene.png")
    paths = [a.format(tmp=tmp_path, txt=txt, png=scene_png[0]) for a in images]
    assert main(["explain", *paths, "--prompt", "a red circle"]) == 2
    assert text in one_line_error(capsys)


def test_a_photo_damaged_past_its_header_is_named(tmp_path, capsys, scene_png):
    data = scene_png[0].read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    argv = ["explain", str(tmp_path / "cut.png"), "--prompt", "x", "--out", str(tmp_path / "o")]
    argv += ["--model", "shapes-rn"]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("gscorecam explain: error: image: cannot read")
    assert str(tmp_path / "cut.png") in last


def test_one_figure_file_is_for_one_photo(tmp_path, capsys, no_model, scene_png):
    Image.new("RGB", (8, 8)).save(tmp_path / "other.png")
    argv = ["explain", str(scene_png[0]), str(tmp_path / "other.png"), "--prompt", "x"]
    assert main([*argv, "--out", str(tmp_path / "out.png")]) == 2
    assert "argument --out" in one_line_error(capsys)


def test_a_decompression_bomb_is_refused(tmp_path, capsys, no_model, monkeypatch):
    Image.new("RGB", (40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: PIL warns (2x would raise)
    assert main(["explain", str(tmp_path / "bomb.png"), "--prompt", "x"]) == 2
    err = one_line_error(capsys)
    assert "bomb.png" in err
    assert "decompression bomb" in err


def test_layer_unknown_on_the_model_lists_close_names(tmp_path, capsys, scene_png):
    argv = ["explain", str(scene_png[0]), "--prompt", "x", "--layer", "visual.layr3"]
    argv += ["--model", "shapes-rn"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "argument --layer" in err
    assert "visual.layer3" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_checkpoint_that_does_not_fit_names_the_differences(tmp_path, capsys, monkeypatch):
    rn = load_clip("shapes-rn")
    state = rn[0].state_dict()
    state["visual.conv1.weight"] = state["visual.conv1.weight"][:, :2]
    del state["visual.bn1.weight"]
    state["visual.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pt")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    # RN50 stands in for an open_clip name with shapes-rn's architecture: no RN50 is built.
    monkeypatch.setattr("captum_gscorecam.loading.load_clip", lambda *a: rn)
    argv = ["explain", str(tmp_path / "x.png"), "--prompt", "x", "--model", "RN50"]
    assert main([*argv, "--pretrained", str(tmp_path / "other.pt")]) == 2
    err = " ".join(one_line_error(capsys).split())
    assert f"argument --pretrained: {tmp_path / 'other.pt'} does not fit RN50: " in err
    conv = tuple(state["visual.conv1.weight"].shape)
    assert f"1 shape(s) differ (checkpoint vs model): visual.conv1.weight {conv} vs" in err
    assert "1 key(s) missing from the checkpoint: visual.bn1.weight;" in err
    assert "1 unexpected key(s): visual.extra.weight" in err


def test_offline_fails_at_once_without_the_network(tmp_path, capsys, monkeypatch, scene_png):
    """With the Hub unreachable, hub weights load from the (empty) cache only: one line."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants

    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    assert not loading.hub_reachable()
    argv = ["explain", str(scene_png[0]), "--prompt", "x", "--model", "hf:nobody/no-such-clip"]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "argument --model" in err
    assert "cannot be reached (offline)" in err
    assert offline_before == huggingface_hub.constants.HF_HUB_OFFLINE  # restored after the load


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    photo = read_image(tmp_path / "deep.png")
    assert photo.mode == "RGB"
    assert photo.size == (64, 48)
    pixels = np.asarray(photo).astype(int)
    np.testing.assert_allclose(pixels[..., 0], ramp / 257, atol=0.51)
    assert (pixels[..., 0] == pixels[..., 2]).all()
    assert pixels.min() == 0
    assert pixels.max() == 255


def test_expand_images_keeps_order_and_drops_repeats(tmp_path):
    for name in ("b.png", "a.jpg", "c.txt"):
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    found = expand_images([str(tmp_path / "b.png"), str(tmp_path), str(tmp_path / "*.png")])
    assert found == [tmp_path / "b.png", tmp_path / "a.jpg"]


def test_help_shows_every_default_and_the_methods(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("(default: gscorecam)", "(default: auto)", "10% of the channels", "50%"):
        assert words in text
    for method in ("scorecam", "hilacam", "integrated_gradients", "uniform"):
        assert f" {method} " in text


def heavy_after(argvs: list[list[str]], code: int) -> subprocess.CompletedProcess:
    """``main`` on each of ``argvs`` in a fresh interpreter, each exiting with ``code``; the
    last line of its output lists the heavy modules then imported (``heavy: [...]``)."""
    script = (
        "import sys\n"
        "from captum_gscorecam.cli import main\n"
        f"for argv in {argvs!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        f"        assert exit.code == {code}, (argv, exit.code)\n"
        f"print('heavy:', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    command = [sys.executable, "-c", script]
    return subprocess.run(command, capture_output=True, text=True, check=True)


def test_help_does_not_import_torch():
    """``gscorecam --help`` and each command's ``--help`` need none of the heavy imports."""
    argvs = [["--help"], ["explain", "--help"], ["demo", "--help"], ["evaluate", "-h"]]
    argvs += [["evaluate", "--methods", "gscorecam,hilacam", "--help"], ["app", "-h"]]
    done = heavy_after(argvs, 0)
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"
    assert "explain your photos" in done.stdout


def test_refusals_before_the_model_import_nothing_heavy(tmp_path):
    """A bad argument is refused without torch or matplotlib: at parse time (a figure file
    named before it) and in evaluate's checks before the model loads."""
    missing = tmp_path / "missing"
    argvs = [
        ["demo", "--out", str(tmp_path / "a.png"), "--topk", "0"],
        ["evaluate", "--root", "x"],
        ["evaluate", "--dataset", "coco", "--root", str(missing)],
        ["evaluate", "--out", str(missing / "out")],
    ]
    done = heavy_after(argvs, 2)
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"
    assert done.stderr.count("error:") == 4, done.stderr


def test_figure_formats_taken_without_matplotlib_are_matplotlibs():
    assert BUILTIN_FIGURE_FORMATS.issubset(figure_formats())


def test_the_registry_and_the_report_import_no_torch():
    """The report draws with matplotlib but labels its bars from the registry, without torch."""
    torch_stack = [name for name in HEAVY if name != "matplotlib"]
    code = (
        "import sys\n"
        "import captum_gscorecam.registry, captum_gscorecam.evaluation.report\n"
        f"print('heavy:', [m for m in {torch_stack!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "heavy: []"


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "captum_gscorecam", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "demo" in done.stdout
    assert "explain" in done.stdout
    assert "evaluate" in done.stdout


@pytest.mark.slow
def test_the_package_exports_lazily():
    code = (
        "import sys, captum_gscorecam as g\n"
        "assert 'torch' not in sys.modules\n"
        "assert callable(g.GScoreCAM) and callable(g.gradcam_layer)\n"
        "assert set(g.__all__) <= set(dir(g))\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


# Library errors as usage errors


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("device: cuda is not available", "argument --device: cuda is not available"),
        ("layer: no module 'x'", "argument --layer: no module 'x'"),
        ("pretrained: no such file", "argument --pretrained: no such file"),
        ("model: unknown", "argument --model: unknown"),
        ("image: cannot read x.png", "image: cannot read x.png"),  # not an option: as it is
        ("no argument named", "no argument named"),
    ],
)
def test_usage_errors_name_the_option(message, line):
    with pytest.raises(UsageError) as error, usage_errors():
        raise ValueError(message)
    assert str(error.value) == line


def test_usage_errors_leave_other_exceptions_alone():
    with pytest.raises(TypeError, match="not a usage error"), usage_errors():
        raise TypeError("not a usage error")


# The package's layers


def test_nothing_below_the_command_line_imports_it():
    package = Path(captum_gscorecam.__file__).parent
    importers = []
    for path in package.rglob("*.py"):
        if (package / "cli") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(
                name == "captum_gscorecam.cli" or name.startswith("captum_gscorecam.cli.")
                for name in names
            ):
                importers.append(str(path.relative_to(package)))
    assert importers == ["__main__.py"]  # the entry point of ``python -m captum_gscorecam``


def test_the_held_out_seed_is_the_training_one():
    from captum_gscorecam.cli.options import FIRST_HELD_OUT_SEED
    from captum_gscorecam.shapes.train import HELD_OUT_SEED

    assert FIRST_HELD_OUT_SEED == HELD_OUT_SEED


# The default model of explain and app: a real CLIP


@pytest.mark.parametrize("command", [["explain", "{png}", "--prompt", "x"], ["app"]])
def test_the_default_model_is_openai_rn50_and_offline_it_says_what_to_do(
    capsys, monkeypatch, scene_png, command
):
    asked = []

    def offline(*args: object) -> None:
        asked.append(args)
        raise ValueError(
            "pretrained: the weights of RN50 (openai) are not in the local cache and the "
            "Hugging Face Hub cannot be reached (offline); fetch them once online"
        )

    monkeypatch.setattr(loading, "load_model", offline)
    argv = [a.format(png=scene_png[0]) for a in command]
    assert main([*argv, "--device", "cpu"]) == 2
    assert asked == [("RN50", "openai", "cpu")]
    err = one_line_error(capsys, argv[0])
    assert "argument --model: the default model, RN50 with --pretrained openai, did not load" in err
    assert "cannot be reached (offline)" in err
    assert err.rstrip().endswith("--model shapes-rn")
    # a model given by name keeps the error of its own option
    assert main([*argv, "--device", "cpu", "--model", "RN50", "--pretrained", "openai"]) == 2
    assert one_line_error(capsys, argv[0]).startswith(
        f"gscorecam {argv[0]}: error: argument --pretrained: the weights of RN50 (openai)"
    )


def test_the_default_model_offline_without_a_stub(tmp_path, capsys, monkeypatch, scene_png):
    """No stub: open_clip's own download of the default weights, the Hub unreachable."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    argv = ["explain", str(scene_png[0]), "--prompt", "x", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "argument --model: the default model, RN50 with --pretrained openai" in err
    assert "--model shapes-rn" in err
    assert not (tmp_path / "out").exists()


def test_version_and_help_say_what_each_command_is(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"gscorecam {captum_gscorecam.__version__}\n"
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Compare explainers on a localization benchmark" in text
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: RN50 with --pretrained openai: OpenAI's CLIP ResNet-50" in text


# What made each output, said on each output; runs that never replace each other


def test_every_output_says_what_made_it_and_runs_add_up(tmp_path, capsys, monkeypatch, scene_png):
    path, scene = scene_png
    drawn = []
    photo_figure = visualization.photo_figure

    def recorded(*args, **kwargs):
        drawn.append(kwargs)
        return photo_figure(*args, **kwargs)

    monkeypatch.setattr(visualization, "photo_figure", recorded)
    out, maps = tmp_path / "figures", tmp_path / "maps"
    argv = ["explain", str(path), "--model", "shapes-rn", "--out", str(out), "--device", "cpu"]
    argv += ["--template", "a photo of a {}", "--save-maps", str(maps), "--precision", "fp32"]
    for caption in scene.captions:
        argv += ["--prompt", caption]
    texts = [f"a photo of a {caption}" for caption in scene.captions]
    line = (
        "gScoreCAM | k=26/256 | layer visual.layer4 | shapes-rn (shapes world: knows only "
        f"coloured shapes) | template 'a photo of a {{}}' | fp32 on cpu | captum-gscorecam "
        f"{captum_gscorecam.__version__}"
    )
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0] == line  # the resolved choices, once, first
    warnings = said(printed.err)
    assert len(warnings) == 1
    assert "shapes-rn knows only coloured shapes" in warnings[0]
    assert drawn == [{"scale": "shared", "title": line, "warnings": warnings}]
    assert f"| image | {' | '.join(texts)} | seconds |" in printed.out  # the scored text

    assert main([*argv[:-2 * len(scene.captions)], "--prompt", "cat", "--method", "gradcam",
                 "--scale", "per-prompt"]) == 0  # fmt: skip
    assert drawn[-1]["scale"] == "per-prompt"
    with (out / "scores.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["text"] for row in rows] == [*texts, "a photo of a cat"]
    assert [row["method"] for row in rows] == ["gScoreCAM"] * 2 + ["LayerGradCam"]
    assert [row["k"] for row in rows] == ["26", "26", ""]
    assert {row["precision"] for row in rows} == {"fp32"}
    assert len({row["run"] for row in rows[:2]}) == 1
    tables = (out / "scores.md").read_text().split("\n\n| image |")
    assert len(tables) == 2  # the first run's table kept, the second added
    assert f"\n\n*{line} | run " in tables[0]
    assert "*LayerGradCam | layer visual.layer4 | shapes-rn" in tables[1]
    for table in tables:  # the warning under each run's table, as on the terminal
        assert table.rstrip().endswith(f"\n\n**{warnings[0]}**")
    record = json.loads((maps / f"{path.stem}.json").read_text())
    assert record["warnings"] == warnings
    assert record["texts"] == ["a photo of a cat"]
    assert record["provenance"]["method"] == "LayerGradCam"
    assert record["scale"] == "per-prompt"
    assert record["image"] == str(path)
    assert np.load(maps / f"{path.stem}.npy").shape[0] == len(record["scores"]) == 1


def test_random_weights_are_said_every_time(tmp_path, capsys, loaded_model, scene_png):
    # RN50 stands in for an open_clip name built without weights: no RN50 is built.
    loaded_model(*load_clip("shapes-rn"))
    argv = ["explain", str(scene_png[0]), "--prompt", "x", "--model", "RN50", "--out"]
    for run in range(2):
        assert main([*argv, str(tmp_path / f"o{run}"), "--method", "gradcam"]) == 0
        printed = capsys.readouterr()
        assert "| RN50 (RANDOM WEIGHTS) |" in printed.out.splitlines()[0]
        (warning,) = said(printed.err)
        assert warning.startswith("warning: RN50 has RANDOM WEIGHTS")
        assert f"**{warning}**" in (tmp_path / f"o{run}" / "scores.md").read_text()


def test_a_scores_file_of_other_columns_is_not_replaced(tmp_path, capsys, no_model, scene_png):
    (tmp_path / "scores.csv").write_text("image,a cat,seconds\nold.png,1.0,2.0\n")
    argv = ["explain", str(scene_png[0]), "--prompt", "x", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert f"argument --out: {tmp_path / 'scores.csv'} has other columns" in err
    assert (tmp_path / "scores.csv").read_text() == "image,a cat,seconds\nold.png,1.0,2.0\n"


def said(err: str) -> list[str]:
    """The warnings ``gscorecam explain`` printed on stderr, without its name."""
    prefix = "gscorecam explain: "
    return [line.removeprefix(prefix) for line in err.splitlines() if line.startswith(prefix)]


def test_a_precision_slower_than_fp32_here_is_said_once_before_the_work(
    tmp_path, capsys, scene_png
):
    import warnings

    import captum_gscorecam.precision as precision

    model = load_clip("shapes-rn")[0]
    with warnings.catch_warnings(record=True) as slow:
        warnings.simplefilter("always")
        precision.warn_if_slow(precision.resolve_precision("fp16", "cpu"), torch.device("cpu"),
                               model, 1)  # fmt: skip
    if not slow:
        pytest.skip("this CPU computes fp16 natively")
    argv = ["explain", str(scene_png[0]), "--prompt", "a red circle", "--model", "shapes-rn"]
    argv += ["--device", "cpu", "--precision", "fp16", "--out", str(tmp_path), "--topk", "4"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "slower than 'fp32'" in line]
    assert line == f"gscorecam explain: warning: {slow[0].message}"
    assert err.index(line) < err.index("images:")  # before the progress bar
