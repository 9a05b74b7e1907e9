"""Reduced-precision masked passes: a bf16 / fp16 copy of the image tower (``precision=``)."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer
from captum_gscorecam.cli import parser
from captum_gscorecam.clip import image_features
from captum_gscorecam.evaluation import shapes_examples
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.precision import native_cpu_bf16, resolve_precision
from captum_gscorecam.towers import image_tower
from tests.helpers import EVAL_SEEDS, EVAL_SIZE, images_for, texts, tiny_rn, tiny_vit
from tests.tower_models import TOWERS, images

BUILDERS = {"rn": tiny_rn, "vit": tiny_vit}
# map = relu(sum_c w_c A_c) with w a softmax, so |map' - map| <= ||w' - w||_1 max|A|: the
# tolerance bounds the L1 change of the channel weights. Measured on these towers: <= 0.004.
WEIGHT_L1_TOLERANCE = 0.02


def activation_scale(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``max |A|`` of each image's default-layer activations, shaped ``(N, 1, 1, 1)``."""
    outputs = []
    handle = default_layer(model).register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        with torch.no_grad():
            image_features(model, x)
    finally:
        handle.remove()
    grid = LayerGrid.for_model(model).activations(outputs[0], x.shape[0])
    return grid.abs().flatten(1).amax(1)[:, None, None, None]


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(
    name=st.sampled_from(sorted(BUILDERS)),
    seed=st.integers(0, 5),
    topk=st.sampled_from([1, 3, 0.25, 1.0]),
    chunk=st.integers(1, 40),
    prompts=st.integers(1, 3),
    method=st.sampled_from(["gscorecam", "scorecam"]),
)
def test_bf16_maps_equal_fp32_maps_within_tolerance(
    name, seed, topk, chunk, prompts, method, model_state
):
    model = BUILDERS[name](seed)
    x = images_for(model, 2, seed=seed)
    text = texts(2, prompts, seed=seed + 1)
    before = model_state(model)
    if method == "gscorecam":
        cam = GScoreCAM(model, default_layer(model))

        def run(**kwargs):
            return cam.attribute(x, target=text, topk=topk, perturbations_per_eval=chunk, **kwargs)
    else:
        cam = ScoreCAM(model, default_layer(model))

        def run(**kwargs):
            return cam.attribute(x, target=text, perturbations_per_eval=chunk, **kwargs)

    full = run()
    reduced = run(precision=torch.bfloat16)
    assert reduced.dtype == torch.float32
    assert reduced.shape == full.shape
    error = (reduced - full).abs() / activation_scale(model, x)
    assert float(error.max()) <= WEIGHT_L1_TOLERANCE
    assert model_state(model) == before
    assert cam.reduced_tower.dtype == torch.bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_copy_holds_the_tower_in_its_dtype_and_is_cached(name):
    """What the copy holds; test_levers remakes it after every kind of weight change."""
    model = BUILDERS[name](0)
    x = images_for(model, 1)
    text = texts(1, 1)
    cam = GScoreCAM(model, default_layer(model))
    first = cam.attribute(x, target=text, topk=0.5, precision="bf16")
    copy = cam.reduced_tower
    tensors = [*image_tower(model).parameters(), *image_tower(model).buffers()]
    sizes = [t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in tensors]
    assert copy.nbytes == sum(sizes)  # bf16 floating tensors, integer buffers as they are
    assert all(p.dtype == torch.bfloat16 for p in copy.tower.parameters())
    assert not any(p.requires_grad for p in copy.tower.parameters())
    assert torch.equal(cam.attribute(x, target=text, topk=0.5, precision="bf16"), first)
    assert cam.reduced_tower is copy  # reused
    cam.attribute(x, target=text, topk=0.5, precision=torch.float16)
    assert cam.reduced_tower is not copy
    assert cam.reduced_tower.dtype == torch.float16


def test_the_copy_goes_with_the_attribution_object(rn):
    cam = GScoreCAM(rn, default_layer(rn))
    cam.attribute(images_for(rn, 1), target=texts(1, 1), topk=2, precision="bf16")
    copy = weakref.ref(cam.reduced_tower.tower)
    del cam
    gc.collect()
    assert copy() is None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOWERS))
def test_every_tower_has_a_reduced_copy(name, model_state):
    build, size, *_ = TOWERS[name]
    model = build()
    x = images(2, size)
    text = texts(2, 2)
    before = model_state(model)
    cam = ScoreCAM(model, default_layer(model))
    full = cam.attribute(x, target=text)
    reduced = cam.attribute(x, target=text, precision="bf16")
    assert reduced.dtype == torch.float32
    error = (reduced - full).abs() / activation_scale(model, x)
    assert float(error.max()) <= WEIGHT_L1_TOLERANCE
    assert model_state(model) == before


def test_fp32_is_the_exact_path(rn):
    x = images_for(rn, 1)
    text = texts(1, 2)
    cam = GScoreCAM(rn, default_layer(rn))
    exact = cam.attribute(x, target=text, topk=3)
    for precision in ("fp32", torch.float32):
        assert torch.equal(cam.attribute(x, target=text, topk=3, precision=precision), exact)
    assert cam.reduced_tower is None


@pytest.mark.parametrize("cam_class", [GScoreCAM, ScoreCAM])
def test_autocast_was_removed(rn, cam_class):
    cam = cam_class(rn, default_layer(rn))
    with pytest.raises(TypeError, match="autocast"):
        cam.attribute(images_for(rn, 1), target=texts(1, 1), autocast=torch.bfloat16)
    assert cam.reduced_tower is None


def test_precision_needs_a_clip_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cam = ScoreCAM(model, model[0])
    with pytest.raises(ValueError, match="precision: a reduced-precision image tower needs a CLIP"):
        cam.attribute(x, target=1, precision="bf16")
    assert cam.reduced_tower is None


@pytest.mark.parametrize("precision", ["int4", "half", torch.int8, torch.float64, 16])
def test_bad_precision(rn, precision):
    cam = GScoreCAM(rn, default_layer(rn))
    with pytest.raises(ValueError, match=r"precision: expected None, one of \['auto'"):
        cam.attribute(images_for(rn, 1), target=texts(1, 1), topk=2, precision=precision)
    assert cam.reduced_tower is None


def test_a_model_without_an_image_tower_is_a_clear_error():
    with pytest.raises(ValueError, match="precision: a reduced-precision copy needs a CLIP"):
        image_tower(nn.Linear(2, 2))


def test_resolve_precision(monkeypatch, rn):
    assert resolve_precision(None, "cpu") == ("fp32", "asked for")
    assert resolve_precision("fp32", "cpu").name == "fp32"
    assert resolve_precision(torch.float32, "cpu").name == "fp32"
    assert resolve_precision("bf16", "cuda").name == "bf16"
    assert resolve_precision(torch.float16, "cpu").name == "fp16"
    resolved = resolve_precision("auto", "cpu", rn)
    assert resolve_precision(resolved, "cpu") is resolved  # a resolved precision is one
    assert resolved.name == ("bf16" if native_cpu_bf16() else resolved.name)
    assert resolve_precision("auto", "cpu").name == "fp32"  # no CLIP tower to copy
    assert resolve_precision("auto", "meta", rn).name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: False)
    for capability, expected in [((6, 1), "fp32"), ((7, 5), "fp16")]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d, c=capability: c)
        assert resolve_precision("auto", "cuda", rn).name == expected
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: True)
    assert resolve_precision("auto", "cuda:0", rn).name == "bf16"


def test_native_cpu_bf16_reads_the_cpu_flags():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(line for line in cpuinfo if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    expected = avx512 and bool({"avx512_bf16", "amx_bf16"} & set(flags))
    assert native_cpu_bf16() is expected


def test_evaluate_records_the_precision_and_a_resume_must_match(tmp_path, eval_model, run_evaluate):
    examples = shapes_examples(EVAL_SEEDS[:1], (2, 2), EVAL_SIZE)
    run_evaluate(eval_model, examples, tmp_path, ["gscorecam"], precision="bf16")
    assert json.loads((tmp_path / "run.json").read_text())["precision"] == "bf16"
    with pytest.raises(ValueError, match=r"out: .* other settings"):
        run_evaluate(eval_model, examples, tmp_path, ["gscorecam"])  # fp32


@pytest.mark.parametrize("command", [["demo"], ["explain", "x.png", "--prompt", "a"], ["evaluate"]])
def test_the_commands_take_precision_auto_by_default(command, capsys):
    assert parser().parse_args(command).precision == "auto"
    assert parser().parse_args([*command, "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser().parse_args([*command, "--precision", "int4"])
    assert "--precision" in capsys.readouterr().err
