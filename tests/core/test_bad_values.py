"""Bad values of every public argument: a ValueError / TypeError naming the argument, or success."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from collections.abc import Callable

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_gscorecam import (
    AttentionRollout,
    CLIPSimilarity,
    GradECLIP,
    GScoreCAM,
    HilaCAM,
    LeGrad,
    ScoreCAM,
    ZeroShotClassifier,
    checks,
    default_layer,
    encode_text,
    gradcam_layer,
)
from captum_gscorecam.checks import (
    check_flag,
    check_int,
    check_perturbations_per_eval,
    check_template,
    check_tolerance,
    check_topk,
    topk_from_text,
)
from captum_gscorecam.towers import image_input
from tests.helpers import images_for, texts, tiny_vit

CHECK_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.complex_numbers(),
)


def test_checks_import_no_torch():
    # the module alone (the package's __init__ is the command line's business)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('checks', {checks.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (1, 1), (300, 300), (300.0, 300), (0.1, 0.1), (1.0, 1.0), (1e-9, 1e-9)],
)
def test_topk_valid_values_normalised(value, expected):
    result = check_topk(value)
    assert result == expected
    assert type(result) is type(expected)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@CHECK_SETTINGS
@given(ANYTHING)
def test_topk_accepts_exactly_counts_and_fractions(value):
    count = is_int(value) and value >= 1
    fraction = isinstance(value, float) and 0 < value <= 1
    whole = isinstance(value, float) and value > 1 and value.is_integer()
    if value is None or count or fraction or whole:
        result = check_topk(value)
        assert result == value
        assert type(result) is (float if fraction else type(None) if value is None else int)
    else:
        expected = r"topk: expected a channel count \(an int >= 1\) or a fraction of the"
        with pytest.raises((TypeError, ValueError), match=expected):
            check_topk(value)


@CHECK_SETTINGS
@given(st.text(max_size=8))
def test_topk_as_typed_is_the_number_it_spells(text):
    """Integers are counts, decimals fractions, empty text the default; then check_topk."""
    stripped = text.strip()
    if not stripped:
        assert topk_from_text(text) is None
        return
    try:
        value = int(stripped)
    except ValueError:
        try:
            value = float(stripped)
        except ValueError:
            with pytest.raises(ValueError, match=r"k: expected a channel count \(300\) or a"):
                topk_from_text(text, "k")
            return
    try:
        expected = check_topk(value, "k")
    except (TypeError, ValueError) as error:
        with pytest.raises(type(error), match=re.escape(str(error))):
            topk_from_text(text, "k")
        return
    result = topk_from_text(text, "k")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "topk"), [("1", 1), ("1.0", 1.0), (" 300 ", 300), ("26.0", 26), ("0.5", 0.5)]
)
def test_topk_as_typed_reads_one_as_one_channel(text, topk):
    result = topk_from_text(text)
    assert result == topk
    assert type(result) is type(topk)


@pytest.mark.parametrize("template", ["{}", "a photo of a {}", "{} on grass", "a {:>3}"])
def test_a_template_with_one_field_is_kept(template):
    assert check_template(template) == template


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "{name}", "{0}", "{", "}{", "{!x}"])
def test_a_template_without_exactly_one_empty_field_is_refused(template):
    with pytest.raises(ValueError, match=r"template: expected text with exactly one \{\}"):
        check_template(template)
    with pytest.raises(TypeError, match="template: expected text"):
        check_template(3)


@CHECK_SETTINGS
@given(ANYTHING)
def test_counts_tolerances_and_flags(value):
    if value is None or (is_int(value) and value >= 1):
        assert check_perturbations_per_eval(value) == value
    else:
        with pytest.raises(
            (TypeError, ValueError),
            match=r"^perturbations_per_eval: expected None or an int >= 1, got",
        ):
            check_perturbations_per_eval(value)
    if is_int(value) and value >= 0:
        assert check_int(value, "seed", minimum=0) == value
    else:
        with pytest.raises((TypeError, ValueError), match=r"^seed: expected an int >= 0, got"):
            check_int(value, "seed", minimum=0)
    if value is None or (is_number(value) and math.isfinite(value) and value >= 0):
        assert check_tolerance(value, "early_stop", none_allowed=True) == value
    else:
        with pytest.raises(
            (TypeError, ValueError),
            match=r"^early_stop: expected None or a finite number >= 0, got",
        ):
            check_tolerance(value, "early_stop", none_allowed=True)
    if isinstance(value, bool):
        assert check_flag(value, "show_progress") is value
    else:
        with pytest.raises(TypeError, match=r"^show_progress: expected True or False, got"):
            check_flag(value, "show_progress")


# --- Every public argument of the explainers and the CLIP adapter -------------------------

MODEL = tiny_vit(seed=3)
LAYER = default_layer(MODEL)
IMAGES = images_for(MODEL, 1, seed=3)
TEXT = texts(1, 1, seed=4)[0, 0]
TOKENIZER = open_clip.get_tokenizer("RN50", context_length=16)


def tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: str) -> torch.Tensor:
    values = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape)))
    values = {"nan": values * float("nan"), "inf": values / 0, "zeros": values * 0}.get(
        fill, values
    )
    return values.to(dtype)


TENSORS = st.builds(
    tensor,
    st.lists(st.integers(0, 3), max_size=5).map(tuple),
    st.sampled_from(
        [torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool]
    ),
    st.sampled_from(["randn", "zeros", "nan", "inf"]),
)
# values that are almost right for some argument of these calls
NEAR_MISSES = st.sampled_from(
    [
        torch.randn(1, 3, 31, 32),
        torch.randn(1, 3, 64, 64),
        torch.randn(1, 1, 32, 32),
        torch.randn(1, 4, 32, 32),
        torch.randn(2, 3, 32, 32),
        torch.randn(1, 3, 32, 32, dtype=torch.float64),
        torch.full((1, 3, 32, 32), float("nan")),
        torch.randn(2, 32),
        torch.randn(1, 3, 32),
        torch.randn(1, 0, 32),
        torch.randn(16),
        torch.zeros(32),
        torch.full((32,), float("inf")),
        torch.ones(32, dtype=torch.long),
        torch.tensor([0]),
        torch.tensor(5),
        nn.Linear(3, 3),
        nn.Identity(),
        MODEL.transformer.resblocks[0],  # the text tower: not in the image pass
        MODEL.visual,
        [MODEL.visual.transformer.resblocks[0], nn.Linear(2, 2)],
        torch.float16,
        torch.bfloat16,
        torch.int8,
        torch.complex64,
        lambda *_: "not a tensor",
        lambda *_: torch.zeros(1),
        lambda tokens: tokens.flatten(1),
        object(),
        {"a": 1},
        ("a cat", 3),
        ["a cat", "a dog"],
        "",
        b"bytes",
        10**30,
        -(10**30),
        # integer targets that are not integers, and tensors without values
        [0.9, 2.7],
        [True],
        [[0]],
        [None],
        [torch.tensor([0, 1])],
        (),
        (0.5,),
        torch.empty(1, 3, 32, 32, device="meta"),
        torch.empty(32, device="meta"),
        torch.empty(1, 2, device="meta", dtype=torch.long),
        str.upper,  # a callable that fails on the prompts
    ]
)
BAD = st.one_of(ANYTHING, TENSORS, NEAR_MISSES)
EXAMPLES = 20  # per argument; the README counts them

# (label, the call, the valid arguments it starts from)
EXPLAINERS = {
    "GScoreCAM": (GScoreCAM, {"forward_func": MODEL, "layer": LAYER}, {"topk": 4}),
    "ScoreCAM": (ScoreCAM, {"forward_func": MODEL, "layer": LAYER}, {}),
    "HilaCAM": (HilaCAM, {"forward_func": MODEL}, {}),
    "LeGrad": (LeGrad, {"forward_func": MODEL}, {}),
    "GradECLIP": (GradECLIP, {"forward_func": MODEL}, {}),
    "AttentionRollout": (AttentionRollout, {"forward_func": MODEL}, {}),
    # integer targets through a classifier over two prompts
    "GScoreCAM(ZeroShotClassifier)": (
        GScoreCAM,
        {"forward_func": ZeroShotClassifier(MODEL, texts(1, 2, seed=5)[0]), "layer": LAYER},
        {"topk": 4, "target": 1},
    ),
}
FUNCTIONS = {
    "CLIPSimilarity": (CLIPSimilarity, {"model": MODEL}),
    "CLIPSimilarity.forward": (CLIPSimilarity(MODEL).forward, {"images": IMAGES, "text_emb": TEXT}),
    "encode_text": (encode_text, {"model": MODEL, "tokenizer": TOKENIZER, "prompts": ["a cat"]}),
    "ZeroShotClassifier": (ZeroShotClassifier, {"model": MODEL, "text_emb": TEXT}),
    "default_layer": (default_layer, {"model": MODEL}),
    "gradcam_layer": (gradcam_layer, {"model": MODEL}),
    "image_input": (image_input, {"model": MODEL}),
}


def arguments(function: object) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


CASES = [
    *(
        (label, part, name)
        for label, (cls, *_) in EXPLAINERS.items()
        for part, method in (("__init__", cls.__init__), ("attribute", cls.attribute))
        for name in arguments(method)
    ),
    *(
        (label, "call", name)
        for label, (function, _) in FUNCTIONS.items()
        for name in arguments(function)
    ),
]


def call_with(label: str, part: str, name: str, value: object) -> None:
    if label in FUNCTIONS:
        function, valid = FUNCTIONS[label]
        function(**{**valid, name: value})
        return
    cls, init, attribute = EXPLAINERS[label]
    init = {**init, name: value} if part == "__init__" else init
    attribute = {"inputs": IMAGES, "target": TEXT, **attribute}
    attribute = {**attribute, name: value} if part == "attribute" else attribute
    cls(**init).attribute(**attribute)


def raised(function: Callable[[], None]) -> Exception | None:
    try:
        function()
    except Exception as error:  # the property is about which types escape
        return error
    return None


@pytest.mark.parametrize(("label", "part", "name"), CASES)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(value=BAD)
def test_bad_values_raise_an_error_naming_the_argument(label, part, name, value, model_state):
    before = model_state(MODEL)
    error = raised(lambda: call_with(label, part, name, value))
    assert model_state(MODEL) == before
    if error is not None:
        assert isinstance(error, TypeError | ValueError), f"{type(error).__name__}: {error}"
        # "argument: what was expected", naming this argument (first, or as the culprit of
        # a mismatch: a text target with a forward_func that is no CLIP model)
        assert re.match(r"^\w+: ", str(error)), str(error)
        assert re.search(rf"\b{name}\b", str(error)), str(error)


def test_every_public_argument_is_drawn():
    drawn = {(label, part): set() for label, part, _ in CASES}
    for label, part, name in CASES:
        drawn[label, part].add(name)
    assert drawn["GScoreCAM", "attribute"] >= {"inputs", "target", "topk", "early_stop"}
    assert drawn["HilaCAM", "__init__"] == {"forward_func", "blocks"}
    assert len(CASES) >= 40
