"""Fixtures every test folder shares; the plain builders they use live in ``tests.helpers``."""

from __future__ import annotations

from collections.abc import Callable

import open_clip
import pytest
import torch

from captum_gscorecam.evaluation import evaluate, shapes_examples
from captum_gscorecam.shapes.models import make_preprocess
from tests.helpers import EVAL_SEEDS, EVAL_SIZE, tiny_eval_vit, tiny_rn, tiny_vit

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
