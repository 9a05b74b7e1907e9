"""Argument checks shared by the Python API and the command line.

Each check returns the normalised value or raises a ``ValueError`` (a value out of range) or
a ``TypeError`` (a value of the wrong kind) whose message starts with the argument's name and
says what was expected. The module imports nothing heavy (no torch), so the command line can
check its arguments at parse time, before a model is loaded.
"""

from __future__ import annotations

import math
import re
import string
from numbers import Integral, Real

__all__ = [
    "DEVICE_NAMES",
    "PRECISIONS",
    "check_device_name",
    "check_flag",
    "check_int",
    "check_not_meta",
    "check_perturbations_per_eval",
    "check_template",
    "check_tolerance",
    "check_topk",
    "default_topk",
    "describe",
    "topk_from_text",
]

# gScoreCAM's default k, a share of the target layer's C channels (rounded up). Convolutional
# layers: 10%, the paper's choice (300 of RN50x16's 3,072 channels). ViT token layers: 50%,
# because there the class token's gradient ranks channels barely better than chance and every
# added channel helps (benchmarks/results/topk-vit.md: pointing game 0.59 at 10%, 0.81 at 50%,
# 0.85 for all channels, on the shapes ViT; topk-rn.md: the ResNet peaks at 10%).
CONV_TOPK_SHARE = 0.1
TOKEN_TOPK_SHARE = 0.5
# The names `precision` takes (precision.resolve_precision); "fp32" is the model's own precision.
PRECISIONS = ("auto", "fp32", "fp32-fast", "fp32-compiled", "bf16", "fp16", "int8")
# The device names the API and the command line take (whether one exists is loading's
# resolve_device): auto, cpu, cpu:0, mps, mps:0, cuda, cuda:N, xpu, xpu:N.
DEVICE_NAMES = re.compile(r"auto|(cpu|mps)(:0)?|(cuda|xpu)(:\d+)?")


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def describe(value: object) -> str:
    """A value as an error message shows it: ``None``, bools, numbers and short strings as
    written, tensors and arrays by dtype and shape, anything else by its type.
    """
    if value is None or isinstance(value, bool) or _is_real(value):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {dtype} {type(value).__name__} of shape {tuple(shape)}"
    return type(value).__name__


def check_topk(value: object, name: str = "topk") -> int | float | None:
    """The channel count of gScoreCAM: an int >= 1, or a fraction of the channels in (0, 1].

    A float with an integer value above 1 (``300.0``) is the count ``300``; ``1.0`` is the
    fraction "all channels". ``None`` is passed through: the caller's default.
    """
    if value is None:
        return None
    expected = (
        f"{name}: expected a channel count (an int >= 1) or a fraction of the channels "
        f"in (0, 1], got {describe(value)}"
    )
    if _is_int(value):
        if value < 1:
            raise ValueError(expected)
        return int(value)
    if not _is_real(value):
        raise TypeError(expected)
    value = float(value)
    if 0.0 < value <= 1.0:
        return value
    if value > 1.0 and value.is_integer():
        return int(value)
    raise ValueError(expected)


def topk_from_text(text: str, name: str = "topk") -> int | float | None:
    """The k of gScoreCAM as typed: ``"300"`` is a count, ``"0.1"`` a fraction, and empty
    text is None (the caller's default); then :func:`check_topk`.
    """
    text = text.strip()
    if not text:
        return None
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{name}: expected a channel count (300) or a fraction of the channels (0.1), "
                f"got {text!r}"
            ) from None
    return check_topk(value, name)


def check_template(template: object, name: str = "template") -> str:
    """A prompt template with exactly one ``{}`` field, for the name: ``"a photo of a {}"``."""
    expected = (
        f'{name}: expected text with exactly one {{}} for the name, e.g. "a photo of a {{}}", '
        f"got {describe(template)}"
    )
    if not isinstance(template, str):
        raise TypeError(expected)
    try:
        parsed = string.Formatter().parse(template)
        fields = [field for _, field, _, _ in parsed if field is not None]
        template.format("x")
    except (ValueError, IndexError, KeyError):
        raise ValueError(expected) from None
    if fields != [""]:
        raise ValueError(expected)
    return template


def default_topk(n_channels: int, tokens: bool) -> int:
    """The k of gScoreCAM when ``topk`` is None: ``ceil(share * C)``, at least 1 and at most C.

    ``share`` is ``CONV_TOPK_SHARE`` (10%) for layers giving ``(N, C, h, w)`` feature maps and
    ``TOKEN_TOPK_SHARE`` (50%) for ViT layers giving tokens (C = the token width), where
    the gradient ranking is weak (measured in ``benchmarks/results/topk-vit.md``).
    """
    n_channels = check_int(n_channels, "n_channels", minimum=1)
    share = TOKEN_TOPK_SHARE if tokens else CONV_TOPK_SHARE
    return min(n_channels, max(1, math.ceil(share * n_channels)))


def resolve_topk(topk: int | float | None, n_channels: int, tokens: bool) -> int:
    """The channels gScoreCAM keeps of ``n_channels``: ``topk`` as :func:`check_topk` returns
    it, a count clipped to C, a fraction of C rounded up, or None for :func:`default_topk`.
    """
    if topk is None:
        return default_topk(n_channels, tokens)
    return min(topk, n_channels) if isinstance(topk, int) else math.ceil(topk * n_channels)


def check_perturbations_per_eval(value: object, name: str = "perturbations_per_eval") -> int | None:
    """Masked images per forward pass: None (the device's default) or an int >= 1."""
    if value is None:
        return None
    return check_int(value, name, minimum=1, none_allowed=True)


def check_int(
    value: object, name: str, minimum: int | None = None, none_allowed: bool = False
) -> int:
    """An int (not a bool, not a float) of at least ``minimum``."""
    bound = "" if minimum is None else f" >= {minimum}"
    expected = f"{name}: expected {'None or ' if none_allowed else ''}an int{bound}"
    if not _is_int(value):
        raise TypeError(f"{expected}, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{expected}, got {value!r}")
    return int(value)


def check_tolerance(value: object, name: str, none_allowed: bool = False) -> float | None:
    """A finite number >= 0 (a tolerance, a margin); ``None`` too if ``none_allowed``."""
    if value is None and none_allowed:
        return None
    expected = f"{name}: expected {'None or ' if none_allowed else ''}a finite number >= 0"
    if not _is_real(value):
        raise TypeError(f"{expected}, got {describe(value)}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{expected}, got {value!r}")
    return value


def check_not_meta(value: object, name: str) -> None:
    """Refuse a tensor on PyTorch's ``meta`` device: it has a shape and a dtype but no values.

    Args:

        value (object): Anything; only a tensor (or array) on the meta device is refused.
        name (str): The argument named in the error.
    """
    if getattr(getattr(value, "device", None), "type", None) == "meta":
        raise ValueError(
            f"{name}: a tensor on the meta device has no values; load it or move it to a "
            "device such as cpu or cuda first"
        )


def check_flag(value: object, name: str) -> bool:
    """A bool (``True`` / ``False``; not a truthy string or number)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {describe(value)}")
    return value


def check_device_name(value: object, name: str = "device") -> str:
    """A device name as written: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (``xpu[:N]``;
    ``cpu:0`` and ``mps:0`` too). Whether the device exists on this machine is for
    ``loading.resolve_device``.
    """
    expected = f"{name}: expected auto, cpu, cuda, cuda:N or mps"
    if not isinstance(value, str):
        raise TypeError(f"{expected}, got {describe(value)}")
    if not DEVICE_NAMES.fullmatch(value):
        raise ValueError(f"{expected}, got {value!r}")
    return value
