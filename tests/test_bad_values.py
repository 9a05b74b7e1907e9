"""Bad values of every public argument: a ValueError / TypeError naming the argument, or success."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam import checks
from captum_gscorecam.checks import (
    check_flag,
    check_int,
    check_perturbations_per_eval,
    check_tolerance,
    check_topk,
)

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
