"""Quantus interop: our metrics agree with Quantus's on the same maps; the explain_func adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_gscorecam import GScoreCAM, HilaCAM, ZeroShotClassifier, default_layer
from captum_gscorecam.checks import default_topk
from captum_gscorecam.evaluation import energy_pointing, pointing_game
from captum_gscorecam.visualization import upsample
from tests.helpers import images_for, texts

quantus = pytest.importorskip("quantus")
from captum_gscorecam.evaluation.quantus import explain_func  # noqa: E402


def random_boxes(rng: np.random.Generator, n: int, size: int) -> list[np.ndarray]:
    boxes = []
    for _ in range(n):
        count = rng.integers(1, 4)
        corners = rng.integers(0, size, (count, 2, 2))
        lo, hi = corners.min(axis=1), corners.max(axis=1) + 1
        boxes.append(np.concatenate([lo, hi], axis=1))  # x0, y0, x1, y1 (exclusive)
    return boxes


def box_masks(boxes: list[np.ndarray], size: int) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((len(boxes), 1, size, size), dtype=bool)
    for i, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes:
            masks[i, 0] |= (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    return masks


def quantus_scores(metric: object, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    n = len(maps)
    return np.asarray(
        metric(
            model=None,
            x_batch=np.zeros_like(maps),
            y_batch=np.zeros(n, dtype=int),
            a_batch=maps,
            s_batch=masks,
        ),
        dtype=float,
    )


def assert_metrics_agree(maps: np.ndarray, boxes: list[np.ndarray]) -> None:
    """Energy pointing equals RelevanceMassAccuracy; the pointing game (tolerance 0) equals
    PointingGame where the maximum is unique. At a tied maximum (the plateaus of upsampled
    CAMs at the border) ours takes the first in row-major order, Quantus's hits if any does."""
    masks = box_masks(boxes, maps.shape[-1])
    hits = quantus_scores(quantus.PointingGame(disable_warnings=True), maps, masks).astype(bool)
    mass = quantus_scores(
        quantus.RelevanceMassAccuracy(normalise=False, abs=False, disable_warnings=True),
        maps,
        masks,
    )
    ours_hits = [pointing_game(m[0], b, tolerance=0) for m, b in zip(maps, boxes, strict=True)]
    ours_mass = [energy_pointing(m[0], b) for m, b in zip(maps, boxes, strict=True)]
    np.testing.assert_allclose(ours_mass, mass, rtol=1e-6, atol=1e-9)
    for saliency, mask, ours, theirs in zip(maps[:, 0], masks[:, 0], ours_hits, hits, strict=True):
        at_max = saliency == saliency.max()
        if at_max.sum() == 1:
            assert ours == theirs
        else:
            assert theirs == bool((at_max & mask).any())
            assert ours == bool(mask.flat[np.argmax(saliency)])


def test_our_metrics_equal_quantus_on_random_maps():
    rng = np.random.default_rng(0)
    n, size = 200, 24
    maps = rng.random((n, 1, size, size))  # non-negative, one maximum each
    boxes = random_boxes(rng, n, size)
    assert_metrics_agree(maps, boxes)


def test_our_metrics_and_quantus_on_cam_maps(vit):
    x = images_for(vit, 8, seed=3)
    clf = ZeroShotClassifier(vit, texts(1, 2)[0])
    maps = explain_func(clf, x.numpy(), np.arange(8) % 2, method="gscorecam", topk=12)
    boxes = random_boxes(np.random.default_rng(1), 8, x.shape[-1])
    assert_metrics_agree(maps, boxes)


def test_explain_func_is_the_upsampled_cam(rn):
    x = images_for(rn, 2)
    prompts = texts(1, 3)[0]
    clf = ZeroShotClassifier(rn, prompts)
    got = explain_func(clf, x.numpy(), np.array([2, 0]), method="gscorecam", topk=10)
    layer_maps = GScoreCAM(rn, default_layer(rn)).attribute(x, target=prompts[[2, 0]], topk=10)
    assert got.shape == (2, 1, 64, 64)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, upsample(layer_maps, (64, 64)), rtol=1e-5, atol=1e-6)
    one_target = explain_func(clf, x, 1, method="gscorecam", topk=10, device="cpu")
    two_targets = explain_func(clf, x, [1, 1], method="gscorecam", topk=10)
    np.testing.assert_array_equal(one_target, two_targets)


def test_explain_func_hilacam(vit):
    x = images_for(vit, 2)
    prompts = texts(1, 2)[0]
    got = explain_func(ZeroShotClassifier(vit, prompts), x.numpy(), np.array([1, 0]), "hilacam")
    expected = upsample(HilaCAM(vit).attribute(x, target=prompts[[1, 0]]), (32, 32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "method", ["scorecam", "gradcam", "integrated_gradients", "saliency", "occlusion"]
)
def test_explain_func_methods_give_input_sized_maps(rn, method):
    x = images_for(rn, 2)
    maps = explain_func(ZeroShotClassifier(rn, texts(1, 2)[0]), x.numpy(), [0, 1], method)
    assert maps.shape == (2, 1, 64, 64)
    assert np.isfinite(maps).all()
    assert maps.std() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "rn"}, TypeError, "model: expected a ZeroShotClassifier"),
        ({"method": "lime"}, ValueError, "method: unknown method 'lime'"),
        ({"targets": np.array([0.5, 1.0])}, TypeError, "targets: expected integer"),
        ({"targets": [0, 1, 1]}, ValueError, "targets: expected 1 or 2 prompt indices"),
        ({"targets": [0, 2]}, ValueError, r"targets: prompt indices must lie in \[0, 1\]"),
        ({"inputs": np.zeros((2, 64, 64))}, ValueError, "inputs: expected float images"),
        ({"inputs": "photo.png"}, TypeError, "inputs: expected float images .* got 'photo.png'"),
        ({"inputs": np.array([["a"]])}, TypeError, "inputs: expected float images"),
        ({"targets": None}, TypeError, "targets: expected integer .* got None"),
        ({"targets": "a"}, TypeError, "targets: expected integer .* got 'a'"),
        ({"targets": ["a", "b"]}, TypeError, "targets: expected integer .* <U1 ndarray"),
        ({"targets": [True, False]}, TypeError, "targets: expected integer .* bool"),
        ({"targets": torch.tensor([True, False])}, TypeError, "targets: expected integer"),
        ({"targets": [0.9, 1.0]}, TypeError, "targets: expected integer .* float64"),
        ({"targets": [None, 1]}, TypeError, "targets: expected integer .* object"),
        ({"targets": [[0], [1, 0]]}, TypeError, "targets: expected integer .* ragged list"),
        ({"topk": 0}, ValueError, "topk: expected a channel count"),
        ({"device": "gpu0"}, ValueError, "device: expected auto, cpu, cuda, cuda:N or mps"),
        ({"device": 0}, TypeError, "device: expected auto, cpu, cuda, cuda:N or mps, got 0"),
        ({"device": "cpu:1"}, ValueError, "device: expected auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_explain_func_bad_arguments(rn, kwargs, error, match):
    call = {
        "model": ZeroShotClassifier(rn, texts(1, 2)[0]),
        "inputs": images_for(rn, 2).numpy(),
        "targets": [0, 1],
        "method": "gradcam",
    }
    call.update(kwargs)
    if call["model"] == "rn":
        call["model"] = rn
    with pytest.raises(error, match=match):
        explain_func(**call)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_explain_func_names_a_missing_gpu(rn):
    clf = ZeroShotClassifier(rn, texts(1, 2)[0])
    with pytest.raises(ValueError, match="device: cuda is not available"):
        explain_func(clf, images_for(rn, 2).numpy(), [0, 1], device="cuda")


@pytest.mark.parametrize("method", ["gscorecam", "gradcam", "saliency", "occlusion", "uniform"])
def test_explain_func_refuses_non_finite_inputs_for_every_method(rn, method):
    x = images_for(rn, 2).numpy()
    x[1, 2, 30, 40] = np.nan
    clf = ZeroShotClassifier(rn, texts(1, 2)[0])
    with pytest.raises(ValueError, match="inputs: contains NaN or infinite values"):
        explain_func(clf, x, [0, 1], method)
    x[1, 2, 30, 40] = np.inf
    with pytest.raises(ValueError, match="inputs: contains NaN or infinite values"):
        explain_func(clf, torch.from_numpy(x), [0, 1], method)


def test_explain_func_default_k_is_the_librarys(rn):
    x = images_for(rn, 2)
    prompts = texts(1, 3)[0]
    clf = ZeroShotClassifier(rn, prompts)
    got = explain_func(clf, x.numpy(), [2, 0], device="cpu:0")
    library = GScoreCAM(rn, default_layer(rn)).attribute(x, target=prompts[[2, 0]])
    np.testing.assert_allclose(got, upsample(library, (64, 64)), rtol=1e-5, atol=1e-6)
    assert default_topk(256, tokens=False) == 26  # layer4 of tiny_rn: 256 channels, not 300
    old = explain_func(clf, x.numpy(), [2, 0], topk=300, device=torch.device("cpu"))
    assert not np.allclose(got, old)


def test_quantus_metric_end_to_end(rn):
    # Quantus calls the adapter itself, then scores; equal to our metric on the adapter's maps
    x = images_for(rn, 4, seed=5).numpy()
    y = np.array([0, 1, 1, 0])
    clf = ZeroShotClassifier(rn, texts(1, 2)[0])
    boxes = random_boxes(np.random.default_rng(2), 4, 64)
    kwargs = {"method": "gscorecam", "topk": 12}
    scores = quantus.PointingGame(disable_warnings=True)(
        model=clf,
        x_batch=x,
        y_batch=y,
        s_batch=box_masks(boxes, 64),
        explain_func=explain_func,
        explain_func_kwargs=kwargs,
        device="cpu",
    )
    maps = explain_func(clf, x, y, **kwargs)
    expected = [pointing_game(m[0], b, tolerance=0) for m, b in zip(maps, boxes, strict=True)]
    assert [bool(s) for s in scores] == expected


def test_quantus_randomisation_runs_on_the_classifier(vit):
    # Quantus randomises its deep copy, passes it to the adapter; our model is left as found
    x = images_for(vit, 2).numpy()
    clf = ZeroShotClassifier(vit, texts(1, 2)[0])
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    metric = quantus.MPRT(disable_warnings=True, return_last_correlation=True)
    scores = metric(
        model=clf,
        x_batch=x,
        y_batch=np.array([0, 1]),
        explain_func=explain_func,
        explain_func_kwargs={"method": "hilacam"},
    )
    assert len(scores) == 2
    assert all(np.isfinite(scores))
    for key, value in clf.state_dict().items():
        torch.testing.assert_close(value, before[key])
