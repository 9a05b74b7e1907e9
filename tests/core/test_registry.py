"""The method registry: one spec per method, read by every caller; a new method is one entry."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest
import torch
from PIL import Image

import captum_gscorecam.registry as registry
from captum_gscorecam import GScoreCAM, default_layer, gradcam_layer
from captum_gscorecam.cli import main
from captum_gscorecam.methods import METHODS, applicable_methods, check_method, explain_maps
from captum_gscorecam.registry import OPTIONS, SPECS, MethodSpec, check_methods, method_spec
from tests.helpers import images_for, texts, tiny_rn, tiny_vit


def _imported(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_spec_names_a_class_and_a_default_layer_that_exist(spec):
    assert callable(_imported(spec.explainer))
    assert hasattr(_imported(spec.explainer), "attribute")
    if spec.takes("layer"):
        assert callable(_imported(spec.default_layer))
    assert all((spec.key, spec.label, spec.help))


def test_the_labels_and_the_order_are_the_registrys():
    assert list(METHODS) == list(SPECS)
    assert {key: spec.label for key, spec in SPECS.items()} == METHODS
    assert list(SPECS)[:4] == ["gscorecam", "scorecam", "gradcam", "hilacam"]


def test_what_each_method_uses():
    uses = {option: [k for k, s in SPECS.items() if s.takes(option)] for option in OPTIONS}
    assert uses["topk"] == ["gscorecam"]
    assert uses["layer"] == ["gscorecam", "scorecam", "gradcam"]
    assert uses["precision"] == ["gscorecam", "scorecam"]
    assert uses["perturbations_per_eval"] == ["gscorecam", "scorecam", "occlusion"]
    assert [k for k, s in SPECS.items() if s.resolution == "pixel"] == [
        "occlusion",
        "integrated_gradients",
        "saliency",
    ]
    vit_only = ["hilacam", "legrad", "grad_eclip", "rollout"]
    assert [k for k, s in SPECS.items() if s.towers == {"vit"}] == vit_only
    demo = ["gscorecam", "scorecam", "gradcam", "hilacam"]
    assert [k for k, s in SPECS.items() if s.demo] == demo


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"options": frozenset({"tokp"})}, "options: unknown \\['tokp'\\]"),
        ({"options": frozenset({"layer"})}, "default_layer: expected one exactly"),
        ({"default_layer": "captum_gscorecam:default_layer"}, "default_layer: expected one"),
        ({"resolution": "patch"}, "resolution: expected layer, pixel or constant"),
        ({"towers": frozenset({"swin"})}, "towers: expected some of"),
        ({"towers": frozenset()}, "towers: expected some of"),
    ],
)
def test_a_spec_that_contradicts_itself_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SPECS["uniform"], **change)


def test_the_method_name_is_checked_in_one_place():
    assert method_spec("scorecam") is SPECS["scorecam"]
    for bad in ("nope", "GScoreCAM", None, 3):
        with pytest.raises(ValueError, match=f"method: unknown method {bad!r}; expected one of"):
            method_spec(bad)
    assert check_methods(iter(["uniform", "gscorecam"])) == ["uniform", "gscorecam"]
    with pytest.raises(ValueError, match=r"methods: unknown method\(s\) \['nope'\]"):
        check_methods(["gscorecam", "nope"])
    with pytest.raises(ValueError, match="methods: expected each method once, got uniform twice"):
        check_methods(["uniform", "saliency", "uniform"])
    with pytest.raises(ValueError, match="methods: expected at least one method"):
        check_methods([])


def test_explain_maps_gives_each_method_only_the_options_it_takes(monkeypatch):
    seen = {}

    class Spy:
        def __init__(self, model, layer=None):
            seen["layer"] = layer

        def attribute(self, inputs, target, **options):
            seen["options"] = options
            return inputs.new_zeros(inputs.shape[0], target.shape[1], 2, 2)

    model = tiny_rn()
    monkeypatch.setattr(registry, "__spy__", Spy, raising=False)
    given = {"topk": 5, "show_progress": True, "perturbations_per_eval": 3, "precision": "fp32"}
    for key, spec in SPECS.items():
        spy = dataclasses.replace(spec, explainer="captum_gscorecam.registry:__spy__")
        monkeypatch.setitem(SPECS, key, spy)
        if spec.towers != registry.TOWERS:
            continue  # built on the model to check it: a spy accepts every model
        seen.clear()
        explain_maps(model, images_for(model, 1), texts(1, 2), key, **given)
        assert seen["options"] == {k: v for k, v in given.items() if k in spec.options}
        expected = {"gscorecam": default_layer(model), "gradcam": gradcam_layer(model)}
        if spec.takes("layer"):
            assert seen["layer"] is expected.get(key, default_layer(model))


class Constant:
    """A new method for the test: the map is the constant 2 on a 3 x 3 grid."""

    def __init__(self, model):
        self.model = model

    def attribute(self, inputs, target, show_progress=False):
        return inputs.new_full((inputs.shape[0], target.shape[1], 3, 3), 2.0)


def test_a_new_method_is_one_entry_plus_its_class(monkeypatch, tmp_path, capsys):
    spec = MethodSpec("constant", "Constant", "two everywhere", f"{__name__}:Constant")
    monkeypatch.setitem(SPECS, "constant", spec)
    model = tiny_vit()
    assert applicable_methods(model)[-1] == "constant"
    check_method(model, "constant")
    maps = explain_maps(model, images_for(model, 2), texts(2, 3), "constant", topk=None)
    assert torch.equal(maps, torch.full((2, 3, 3, 3), 2.0))
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert re.search(r"\n +constant +two everywhere\n", capsys.readouterr().out)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    argv = ["explain", str(photo), "--prompt", "a", "--method", "constant", "--topk", "3"]
    assert main(argv) == 2  # a method that takes no --topk is refused it
    assert "argument --topk: --method constant does not use it" in capsys.readouterr().err


def test_the_registry_gscorecam_is_the_library_gscorecam():
    model = tiny_rn()
    images, text = images_for(model, 1), texts(1, 2)
    expected = GScoreCAM(model, default_layer(model)).attribute(images, target=text, topk=8)
    torch.testing.assert_close(explain_maps(model, images, text, "gscorecam", topk=8), expected)
