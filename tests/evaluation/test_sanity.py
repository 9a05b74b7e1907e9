"""benchmarks/sanity.py: the layer groups cover the image tower exactly, randomising a group
changes it and nothing else, and the script runs end to end (tiny settings)."""

from __future__ import annotations

import runpy
import sys

import pytest
import torch

from captum_gscorecam import ZeroShotClassifier
from captum_gscorecam.shapes import load_shapes_clip
from tests.helpers import ROOT

pytest.importorskip("quantus")
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def sanity(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return runpy.run_path(str(BENCHMARKS / "sanity.py"))


def group_parameters(clf, names):
    params = set()
    for name in names:
        try:
            params |= {id(p) for p in clf.get_submodule(name).parameters()}
        except AttributeError:
            params.add(id(clf.get_parameter(name)))
    return params


@pytest.mark.parametrize("tower", ["rn", "vit"])
def test_groups_cover_the_image_tower_and_randomise_only_their_own(sanity, tower):
    model, _, _ = load_shapes_clip(tower)
    clf = ZeroShotClassifier(model, torch.ones(3, 128))
    depth = len(model.visual.transformer.resblocks) if tower == "vit" else 0
    groups = sanity["image_tower_groups"](tower, depth)
    covered = [group_parameters(clf, names) for _, names in groups]
    visual = {id(p) for p in model.visual.parameters()}
    assert set().union(*covered) == visual
    assert sum(len(c) for c in covered) == len(visual)  # each parameter in one group
    label, names = groups[1]  # the second from the top
    before = {name: p.detach().clone() for name, p in clf.named_parameters()}
    sanity["randomise"](clf, names)
    mine = group_parameters(clf, names)
    for name, param in clf.named_parameters():
        changed = not torch.equal(param, before[name])
        is_layer_norm_default = bool(((param == 1) | (param == 0)).all())
        if id(param) in mine:
            assert changed or is_layer_norm_default, f"{label}: {name} not randomised"
        else:
            assert not changed, f"{label}: {name} changed"


@pytest.mark.slow
def test_script_runs(sanity, tmp_path, monkeypatch):
    out = tmp_path / "sanity.md"
    args = ["--models", "vit", "--methods", "gradcam,hilacam", "--scenes", "1"]
    monkeypatch.setattr(
        sys, "argv", ["sanity.py", *args, "--work", str(tmp_path), "--out", str(out)]
    )
    torch_threads = torch.get_num_threads()
    try:
        sanity["main"]()
    finally:
        torch.set_num_threads(torch_threads)
    table = out.read_text()
    assert "| original | - | - | 1.000 +- nan | 1.000 +- nan |" in table
    assert "HilaCAM (n = 1)" in table
    assert "ScoreCAM (n = 0)" in table
    assert out.with_suffix(".png").stat().st_size > 0
