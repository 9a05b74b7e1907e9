"""Fixtures every test folder shares; the plain builders they use live in ``tests.helpers``."""

from __future__ import annotations

import socket
from collections.abc import Callable

import open_clip
import pytest
import torch
from torch import nn

import captum_gscorecam.loading as loading
from captum_gscorecam.evaluation import evaluate, shapes_examples
from captum_gscorecam.shapes.models import make_preprocess
from tests.helpers import (
    EVAL_SEEDS,
    EVAL_SIZE,
    NO_CHROMIUM,
    NO_SELENIUM,
    chromium,
    tiny_eval_vit,
    tiny_rn,
    tiny_vit,
)

# The test models are tiny: one thread is as fast, and immune to a busy second core (OpenMP
# threads spin-waiting on a descheduled peer made the suite 50x slower on a loaded machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def rn() -> open_clip.CLIP:
    return tiny_rn()


@pytest.fixture(scope="session")
def vit() -> open_clip.CLIP:
    return tiny_vit()


@pytest.fixture(scope="session")
def tokenizer():
    return open_clip.get_tokenizer("RN50", context_length=16)


# evaluate on shapes scenes: a tiny ViT at the scenes' size, their examples, one call


@pytest.fixture(scope="session")
def eval_model() -> open_clip.CLIP:
    """A tiny ViT at the shapes scenes' size (``EVAL_SIZE``), 16 px patches."""
    return tiny_eval_vit()


@pytest.fixture(scope="session")
def eval_examples() -> list:
    """The examples of three held-out shapes scenes with one or two objects."""
    return shapes_examples(EVAL_SEEDS, (1, 2), EVAL_SIZE)


@pytest.fixture
def run_evaluate(tokenizer) -> Callable[..., dict]:
    """``evaluate`` with the shapes preprocess and the shared tokenizer bound:
    ``run(model, examples, out, methods, topk=0.1, **kwargs)``."""

    def run(model, examples, out, methods, topk=0.1, **kwargs) -> dict:
        preprocess = make_preprocess(EVAL_SIZE)
        return evaluate(model, preprocess, tokenizer, examples, list(methods), topk, out, **kwargs)

    return run


# the model as a call must leave it


@pytest.fixture(scope="session")
def model_state() -> Callable[[nn.Module], dict[str, tuple]]:
    """``model_state(model)``: everything a call must leave as it was, compared with ``==``.

    Modes, requires_grad, gradients (which tensor, if any), hooks, patched ``forward`` /
    ``embed_images``, parameters (dtype and storage), buffers (dtype and values) and Hugging
    Face's attention implementation.
    """

    def snapshot(model: nn.Module) -> dict[str, tuple]:
        config = getattr(model, "config", None)
        return {
            "training": tuple(m.training for m in model.modules()),
            "requires_grad": tuple(p.requires_grad for p in model.parameters()),
            "grads": tuple(None if p.grad is None else id(p.grad) for p in model.parameters()),
            "hooks": tuple(
                (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                for m in model.modules()
            ),
            "patched": tuple(
                tuple(k for k in ("forward", "embed_images") if k in m.__dict__)
                for m in model.modules()
            ),
            "parameters": tuple(
                (name, p.dtype, p.data_ptr()) for name, p in model.named_parameters()
            ),
            "buffers": tuple(
                (name, b.dtype, b.detach().cpu().numpy().tobytes())
                for name, b in model.named_buffers()
            ),
            "attention": getattr(config, "_attn_implementation", None),
        }

    return snapshot


# the commands' model loading, patched where the commands look it up: loading.load_model


@pytest.fixture
def no_model(monkeypatch) -> None:
    """Fail the test if a command gets as far as loading a model."""

    def refuse(*args: object) -> None:
        pytest.fail(f"a model was loaded for a command that should have been refused: {args}")

    monkeypatch.setattr(loading, "load_model", refuse)


@pytest.fixture
def loaded_model(monkeypatch) -> Callable[[nn.Module, Callable, Callable], None]:
    """``loaded_model(model, preprocess, tokenizer)``: what the commands load, whatever the name."""

    def use(model: nn.Module, preprocess: Callable, tokenizer: Callable) -> None:
        monkeypatch.setattr(loading, "load_model", lambda *_: (model, preprocess, tokenizer))

    return use


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port on 127.0.0.1 that nothing listens on now."""

    def port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    return port


@pytest.fixture
def chrome(tmp_path, monkeypatch):
    """A headless Chromium driven by selenium, quit after the test (skip where none is found)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason=NO_SELENIUM)
    browser, driver_path = chromium()
    if None in (browser, driver_path):
        pytest.skip(NO_CHROMIUM)
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
