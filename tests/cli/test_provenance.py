"""Provenance: what made an output, as a line, a dict and table columns; the warnings."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import captum_gscorecam
from captum_gscorecam.loading import describe_weights
from captum_gscorecam.provenance import RANDOM_WEIGHTS, SHAPES_WEIGHTS, Provenance

FIELDS = [f.name for f in dataclasses.fields(Provenance)]


def made(**changes):
    settings = {
        "model": "RN50",
        "weights": "pretrained openai",
        "method": "gScoreCAM",
        "template": "a photo of a {}",
        "precision": "fp32",
        "device": "cpu",
        "k": 205,
        "channels": 2048,
        "layer": "visual.layer4",
    }
    return Provenance(**{**settings, **changes})


def test_weights_as_loading_decides(tmp_path):
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"")
    assert describe_weights("shapes-rn", None) == SHAPES_WEIGHTS
    assert describe_weights("shapes-vit", None) == SHAPES_WEIGHTS
    assert describe_weights("RN50", None) == RANDOM_WEIGHTS
    assert describe_weights("RN50", "openai") == "pretrained openai"
    assert describe_weights("RN50", str(checkpoint)) == f"checkpoint {checkpoint}"
    assert describe_weights("hf:openai/clip-vit-base-patch16", None) == "Hugging Face Hub"
    assert describe_weights(f"hf:{tmp_path}", None) == "local folder"


def test_line_names_every_setting():
    line = made().line()
    assert line == (
        "gScoreCAM | k=205/2048 | layer visual.layer4 | RN50 (pretrained openai) | "
        "template 'a photo of a {}' | fp32 on cpu | "
        f"captum-gscorecam {captum_gscorecam.__version__}"
    )
    # a method without k or layer (Occlusion) says nothing about them
    assert (
        made(method="Occlusion", k=None, channels=None, layer=None)
        .line()
        .startswith("Occlusion | RN50 (pretrained openai) | ")
    )


@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1),
    st.text(min_size=0),
    st.none() | st.integers(1, 10_000),
)
def test_line_dict_and_columns_say_the_same(model, template, k):
    provenance = made(model=model, template=template, k=k)
    line = provenance.line()
    assert "\n" not in line
    assert model in line
    assert f"template {template!r}" in line
    record = provenance.as_dict()
    assert list(record) == FIELDS
    assert json.loads(json.dumps(record)) == record
    assert Provenance(**record) == provenance
    columns = provenance.columns()
    assert list(columns) == FIELDS
    assert columns == {key: "" if value is None else str(value) for key, value in record.items()}


@pytest.mark.parametrize(
    ("weights", "shapes_scene", "expected"),
    [
        (RANDOM_WEIGHTS, False, ["RANDOM WEIGHTS"]),
        (RANDOM_WEIGHTS, True, ["RANDOM WEIGHTS"]),
        (SHAPES_WEIGHTS, False, ["knows only coloured shapes"]),
        (SHAPES_WEIGHTS, True, []),
        ("pretrained openai", False, []),
        ("checkpoint /tmp/mine.pt", False, []),
    ],
)
def test_warnings(weights, shapes_scene, expected):
    model = "shapes-rn" if weights == SHAPES_WEIGHTS else "RN50"
    warnings = made(model=model, weights=weights).warnings(shapes_scene)
    assert len(warnings) == len(expected)
    for warning, words in zip(warnings, expected, strict=True):
        assert warning.startswith(f"warning: {model} ")
        assert words in warning
        assert "\n" not in warning


def test_imports_no_torch():
    code = (
        "import sys\nimport captum_gscorecam.provenance, captum_gscorecam.loading\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# gscorecam evaluate: the weights in run.json, what made the maps on every output, the warnings


@pytest.mark.parametrize(
    ("name", "weights", "warned"),
    [("RN50", RANDOM_WEIGHTS, "RN50 has RANDOM WEIGHTS"), ("shapes-rn", SHAPES_WEIGHTS, None)],
)
def test_evaluate_says_what_made_its_maps(
    tmp_path, capsys, monkeypatch, loaded_model, name, weights, warned
):
    # RN50 stands in for an open_clip name built without weights: no RN50 is built.
    from captum_gscorecam.cli import main
    from captum_gscorecam.evaluation import report
    from captum_gscorecam.loading import load_clip

    loaded_model(*load_clip("shapes-rn"))
    charts = []
    write_figure = report.write_figure
    monkeypatch.setattr(
        report,
        "write_figure",
        lambda path, fig, **kw: charts.append(fig) or write_figure(path, fig, **kw),
    )
    argv = ["evaluate", "--model", name, "--methods", "gscorecam,gradcam", "--topk", "4"]
    assert main([*argv, "--limit", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    line = printed.out.splitlines()[0]
    assert line.startswith(f"gScoreCAM, LayerGradCam | k=4/256 | layer visual.layer4 | {name} ")
    assert f"| {name} ({weights}) | template '{{}}' |" in line
    assert line.endswith(f"on cpu | captum-gscorecam {captum_gscorecam.__version__}")
    warnings = [w.partition(": ")[2] for w in printed.err.splitlines() if ": warning: " in w]
    assert [w.startswith(f"warning: {warned} ") for w in warnings] == [True] * bool(warned)

    assert json.loads((tmp_path / "run.json").read_text())["run"]["weights"] == weights
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["provenance"]["line"] == line
    assert saved["provenance"]["weights"] == weights
    assert saved["provenance"]["warnings"] == warnings
    table = (tmp_path / "results.md").read_text()
    assert f"weights={weights}" in table
    assert f"\nMade by: {line}.\n" in table
    assert all(f"\n**{warning}**\n" in table for warning in warnings)
    (chart,) = charts
    drawn = [(text.get_text(), text.get_color()) for text in chart.texts]
    assert drawn[0] == (f"{name} on shapes, 1 images, 3 examples", "black")  # the title
    assert drawn[1:] == [(w, "red") for w in reversed(warnings)] + [(line, "black")]


def test_dataset_extraction_says_what_made_its_maps(tmp_path, capsys, monkeypatch, loaded_model):
    # RN50 stands in for an open_clip name built without weights: no RN50 is built.
    import numpy as np
    from PIL import Image

    import captum_gscorecam.visualization as visualization
    from captum_gscorecam.cli import main
    from captum_gscorecam.loading import load_clip

    loaded_model(*load_clip("shapes-rn"))
    drawn = []
    photo_figure = visualization.photo_figure

    def recorded(*args, **kwargs):
        drawn.append((args[2:4], kwargs))
        return photo_figure(*args, **kwargs)

    monkeypatch.setattr(visualization, "photo_figure", recorded)
    (tmp_path / "photos").mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photos" / "p.png")
    argv = ["explain", str(tmp_path / "photos"), "--dataset", "--model", "RN50", "--figures"]
    argv += ["--method", "gradcam", "--prompt", "x", "--template", "a {}", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    line = printed.out.splitlines()[0]
    assert line.startswith("LayerGradCam | layer visual.layer4 | RN50 (RANDOM WEIGHTS) |")
    warnings = [w.partition(": ")[2] for w in printed.err.splitlines() if ": warning: " in w]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: RN50 has RANDOM WEIGHTS")
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["provenance"]["weights"] == RANDOM_WEIGHTS
    assert run["warnings"] == warnings
    (((texts, scores), kwargs),) = drawn  # the figure: explain's, with its title block
    assert texts == ["a x"]
    indexed = json.loads((tmp_path / "o" / "index.jsonl").read_text())["scores"]
    assert scores == pytest.approx(indexed, abs=1e-5)
    assert kwargs == {"title": line, "warnings": warnings}
    assert (tmp_path / "o" / "figures" / "p.png.png").is_file()


def test_a_comparison_names_every_method_and_each_layer_explained():
    import torch

    from captum_gscorecam.loading import load_clip
    from captum_gscorecam.methods import comparison_provenance, explained_layer, layer_path

    model = load_clip("shapes-vit")[0]
    probe = torch.zeros(1, 3, 224, 224)
    made = comparison_provenance(model, probe, ["gscorecam", "gradcam", "hilacam"], name="v")
    assert made.method == "gScoreCAM, LayerGradCam, HilaCAM"
    lead, before = (layer_path(model, explained_layer(model, m)) for m in ("gscorecam", "gradcam"))
    assert lead != before  # LayerGradCam explains the block before on class-token ViTs
    assert made.layer == f"{lead} (LayerGradCam: {before})"
    assert (made.k, made.channels) == (64, 128)
    alone = comparison_provenance(model, probe, ["gradcam", "uniform"], name="v")
    assert (alone.method, alone.layer, alone.k) == ("LayerGradCam, Uniform", before, None)
    with pytest.raises(ValueError, match="methods: expected at least one"):
        comparison_provenance(model, probe, [], name="v")
