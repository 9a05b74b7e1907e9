"""The precision of the masked passes: the names ``precision=`` takes, what ``"auto"`` picks on
this device, and the copy of the image tower each one runs on.

The masked passes of gScoreCAM and ScoreCAM only need scores good enough for a softmax over
channels, and they are the whole cost. They can run on a copy of the image tower made once
and kept (:class:`ReducedTower`); the capture pass, the ranking and the weighting keep the
model's own precision. The ways (``PRECISIONS``):

- ``"fp32"``: no copy, the model itself: exact.
- ``"fp32-fast"``: a float32 copy with each BatchNorm folded into the convolution before it
  and, on CPU, channels-last weights: the same function up to float rounding, faster on CNN
  towers (a ViT gains nothing).
- ``"fp32-compiled"``: that copy compiled by ``torch.compile`` (its weights frozen into the
  graph), once per batch size; the compilation costs far more than one call saves, so it
  pays only over many masked passes with one attribution object; a failure to compile falls
  back to the ``"fp32-fast"`` copy with one warning.
- ``"bf16"`` / ``"fp16"``: a copy cast to that dtype (channels-last on CPU): fast where the
  hardware computes in it (CPUs with AVX512-BF16 or AMX, CUDA GPUs), slower than float32 where
  it is emulated (a warning says so).
- ``"int8"``: on the CPU, fast where it has int8 dot products (VNNI). A transformer tower: a
  float32 copy whose Linear layers (those the tower calls as modules) compute in int8 with
  activations quantised per batch. A CNN tower: its convolutions (and the additions, ReLUs and
  poolings between them) in int8 with activation ranges calibrated at each call on that
  call's images, each image and three of its masked versions
  (:func:`~captum_gscorecam.engine.calibration_images`), so a map never depends on what was
  explained before.

``"auto"`` (:func:`resolve_precision`) picks by the device's capabilities and the tower's
kind from ``AUTO``; the picks for CPUs with and without bf16 arithmetic are measured
(``benchmarks/levers.py``), the others follow from what the hardware computes natively.
"""

from __future__ import annotations

import logging
import time
import warnings
from functools import cache
from itertools import chain
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gscorecam.checks import PRECISIONS
from captum_gscorecam.tower_copies import (
    CompiledTower,
    Int8ConvTower,
    cast_copy,
    fold_batch_norms,
    int8_available,
    pool_class_token,
    quantize_linears,
    weights_fingerprint,
)
from captum_gscorecam.towers import clip_model, image_tower, is_clip_model, token_blocks

__all__ = [
    "AUTO",
    "PRECISIONS",
    "Precision",
    "ReducedTower",
    "cpu_flags",
    "device_kind",
    "native_cpu_bf16",
    "precision_name",
    "resolve_precision",
    "warn_if_slow",
]

logger = logging.getLogger(__name__)

# The arithmetic of each way's masked passes; "fp32" (None) runs the model itself.
_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp32-fast": torch.float32,
    "fp32-compiled": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.qint8,
}
_BY_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# /proc/cpuinfo flags of x86 CPUs with bfloat16 arithmetic in hardware (dot products in AVX-512
# or AMX tiles). Without them bf16 matmuls are emulated and slower than float32.
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_FP16_CPU_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
# int8 dot products with 32-bit accumulation in AVX-512 registers, which torch's int8 Linear
# kernels (fbgemm) use
_INT8_CPU_FLAGS = frozenset({"avx512_vnni"})

# What "auto" runs on each kind of device (device_kind) for a CNN tower and for a transformer
# tower. cpu-vnni holds the fastest way measured on such a CPU whose maps stay within the
# documented tolerance of float32, cpu-bf16 the fastest but for int8 on CNN towers, which is
# faster there and moves the maps about five times as much as bf16
# (benchmarks/results/levers-cpu.md and levers-cpu-no-bf16.md); the other rows are not
# measured: the exact path, or the format the hardware computes natively.
AUTO: dict[str, tuple[str, str]] = {
    "cpu-bf16": ("bf16", "bf16"),
    "cpu-vnni": ("int8", "int8"),
    "cpu-avx2": ("fp32-fast", "fp32"),
    "cpu": ("fp32", "fp32"),
    "cuda-bf16": ("bf16", "bf16"),
    "cuda-fp16": ("fp16", "fp16"),
    "other": ("fp32", "fp32"),
}
_KINDS = {
    "cpu-bf16": "a CPU with bf16 arithmetic (AVX512-BF16 or AMX)",
    "cpu-vnni": "a CPU with int8 dot products (AVX-512 VNNI) but no bf16 arithmetic",
    "cpu-avx2": "an x86 CPU with AVX2, without bf16 arithmetic or AVX-512 VNNI",
    "cpu": "a CPU of a kind not measured",
    "cuda-bf16": "a CUDA GPU with bf16 (compute capability 8 or later)",
    "cuda-fp16": "a CUDA GPU with fp16 tensor cores (compute capability 7)",
    "other": "a device of a kind not measured",
}


class Precision(NamedTuple):
    """A resolved precision: ``name`` (one of ``PRECISIONS`` but ``"auto"``) and ``reason``,
    one sentence saying why (for ``"auto"``: the device and tower that decided it). It is
    itself a valid ``precision`` argument.
    """

    name: str
    reason: str


def resolve_precision(
    precision: str | torch.dtype | Precision | None,
    device: torch.device | str,
    model: nn.Module | None = None,
) -> Precision:
    """The precision the masked passes run in on ``device``, and why.

    Args:

        precision (str, torch.dtype or Precision, optional): None or ``torch.float32``
                    (``"fp32"``), ``torch.bfloat16`` (``"bf16"``), ``torch.float16``
                    (``"fp16"``), one of ``PRECISIONS``, or a :class:`Precision` already
                    resolved. ``"auto"`` picks from ``AUTO`` by :func:`device_kind` and the
                    kind of ``model``'s image tower: a transformer if it has token blocks,
                    else a CNN; without a CLIP model, ``"fp32"``.
        device (torch.device or str): The device of the masked passes.
        model (torch.nn.Module, optional): The CLIP model (or a wrapper of one) whose image
                    tower the masked passes use; None when they run on another forward
                    function (or a target that only the forward function can score).
                    Default: None

    Returns:
        *Precision* ``(name, reason)``.

    Raises:
        ValueError: ``precision`` is none of the above.
    """
    if isinstance(precision, Precision):
        if precision.name in _DTYPES:
            return precision
    elif isinstance(precision, torch.dtype) and precision in _BY_DTYPE:
        return Precision(_BY_DTYPE[precision], "asked for")
    elif precision is None or (isinstance(precision, str) and precision in _DTYPES):
        return Precision(precision or "fp32", "asked for")
    elif precision == "auto":
        return _auto(torch.device(device), model)
    raise ValueError(
        f"precision: expected None, one of {list(PRECISIONS)}, torch.float32, torch.bfloat16 "
        f"or torch.float16, got {precision!r}"
    )


def precision_name(precision: Precision | torch.dtype | None) -> str:
    """The name of a resolved precision (or of a dtype: None is ``"fp32"``, the exact path)."""
    if isinstance(precision, Precision):
        return precision.name
    return "fp32" if precision is None else _BY_DTYPE[precision]


def _auto(device: torch.device, model: nn.Module | None) -> Precision:
    kind = device_kind(device)
    if model is None or not is_clip_model(clip_model(model)):
        return Precision("fp32", "auto without a CLIP image tower to copy: the model itself")
    cnn, transformer = AUTO[kind]
    if token_blocks(model) is not None:
        return Precision(transformer, f"auto on {_KINDS[kind]}, a transformer tower")
    return Precision(cnn, f"auto on {_KINDS[kind]}, a CNN tower")


def device_kind(device: torch.device | str) -> str:
    """The row of ``AUTO`` for ``device``: ``"cpu-bf16"``, ``"cpu-vnni"``, ``"cpu-avx2"`` or
    ``"cpu"``; ``"cuda-bf16"``, ``"cuda-fp16"``; ``"other"`` (older GPUs, MPS, ...).
    """
    device = torch.device(device)
    if device.type == "cpu":
        if native_cpu_bf16():
            return "cpu-bf16"
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.startswith("AVX512") and cpu_flags() >= _INT8_CPU_FLAGS and int8_available():
            return "cpu-vnni"
        if capability.startswith(("AVX2", "AVX512")):
            return "cpu-avx2"
        return "cpu"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "cuda-bf16"
        major, _ = torch.cuda.get_device_capability(device)
        return "cuda-fp16" if major >= 7 else "other"
    return "other"


@cache
def cpu_flags() -> frozenset[str]:
    """The flags of this CPU as ``/proc/cpuinfo`` lists them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_cpu_bf16() -> bool:
    """True if this CPU computes bfloat16 in hardware and torch dispatches AVX-512 kernels."""
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return avx512 and not _BF16_CPU_FLAGS.isdisjoint(cpu_flags())


def warn_if_slow(
    precision: Precision, device: torch.device, model: nn.Module | None, stacklevel: int
) -> None:
    """Warn (``UserWarning``, once per call site) if ``precision`` runs slower than ``"fp32"``
    on ``device`` with ``model``'s tower, as measured: bf16 or fp16 on a CPU that emulates
    them, ``"fp32-compiled"`` on a transformer tower. The message gives the measured ratio
    class (``benchmarks/results/levers-cpu-no-bf16.md``).
    """
    slow = ""
    if device.type == "cpu" and precision.name == "bf16" and not native_cpu_bf16():
        slow = (
            "this CPU has no bf16 arithmetic (AVX512-BF16 or AMX): it is emulated, "
            "2-4.5x the time of fp32 where measured"
        )
    elif (
        device.type == "cpu"
        and precision.name == "fp16"
        and _FP16_CPU_FLAGS.isdisjoint(cpu_flags())
    ):
        slow = (
            "this CPU has no fp16 arithmetic (AVX512-FP16 or AMX-FP16): it is emulated, "
            "about 4-5x the time of fp32 where measured"
        )
    elif (
        precision.name == "fp32-compiled" and model is not None and token_blocks(model) is not None
    ):
        slow = "torch.compile slows transformer towers down where measured (about 1.1x)"
    if slow:
        warnings.warn(
            f"precision={precision.name!r} runs the masked passes slower than 'fp32' here: "
            f"{slow}; precision='auto' picks {resolve_precision('auto', device, model).name!r}",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


class ReducedTower:
    """A copy of a CLIP model's image tower that runs the masked passes in ``precision``.

    ``precision`` is a name of ``PRECISIONS`` other than ``"fp32"`` and ``"auto"`` (the module
    docstring says how each copy is made); ``dtype`` its arithmetic (``torch.qint8`` for
    int8). ``nbytes`` is the copy's memory (its parameters, buffers and packed int8 weights)
    and ``build_seconds`` what making it took. The copy is made from the model as it is now:
    :meth:`matches` compares a checksum of the tower's values, which also sees writes through
    ``.data``, and its modules.

    Raises:
        ValueError: ``"int8"`` for a model not on the CPU, a transformer tower that calls no
            Linear layer, a CNN tower ``torch.fx`` cannot trace, or without int8 support in
            this torch.
    """

    def __init__(self, model: nn.Module, precision: str, probe: Tensor) -> None:
        start = time.perf_counter()
        tower = image_tower(model)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.fingerprint = weights_fingerprint(tower)
        self.tower = _copy(tower, precision, probe, token_blocks(model) is not None)
        self.build_seconds = time.perf_counter() - start
        logger.debug(
            "image tower copy for %s: %.1f MiB, made in %.2f s",
            precision,
            self.nbytes / 2**20,
            self.build_seconds,
        )

    def matches(self, model: nn.Module, precision: str) -> bool:
        """True if this copy is for ``precision`` and ``model``'s tower is as it was when
        copied (same modules, same values).
        """
        if precision != self.precision:
            return False
        structure, (dots, sums) = weights_fingerprint(image_tower(model))
        fingerprint, (copied_dots, copied_sums) = self.fingerprint
        return (
            structure == fingerprint
            and torch.equal(dots, copied_dots)
            and torch.equal(sums, copied_sums)
        )

    @property
    def nbytes(self) -> int:
        """The copy's memory: its parameters, buffers and packed int8 weights (an int8 CNN
        copy's int8 tower once calibrated).
        """
        return sum(map(_nbytes, _modules(self.tower)))

    def calibrate(self, images: Tensor) -> None:
        """Set the int8 activation ranges of a CNN tower's copy to those ``images`` reach
        (masked images of the call about to be scored); nothing for the other copies.
        """
        if isinstance(self.tower, Int8ConvTower):
            self.tower.calibrate(self._cast(images))

    def embed_images(self, images: Tensor) -> Tensor:
        """L2-normalised float32 image embeddings ``(N, D)`` from the copy."""
        return F.normalize(self.tower(self._cast(images)).float(), dim=-1)

    def _cast(self, images: Tensor) -> Tensor:
        if self.dtype in (torch.bfloat16, torch.float16):
            images = images.to(self.dtype)
        else:
            images = images.float()
        if images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def _copy(
    tower: nn.Module, precision: str, probe: Tensor, transformer: bool
) -> nn.Module | CompiledTower | Int8ConvTower:
    device = next(chain(tower.parameters(), tower.buffers())).device
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError(
                f"precision: 'int8' runs on the CPU, and the model is on {device}; use 'auto'"
            )
        if transformer:
            return quantize_linears(cast_copy(tower, torch.float32), probe.float())
        return Int8ConvTower(
            pool_class_token(cast_copy(tower, torch.float32)),
            probe.float().contiguous(memory_format=torch.channels_last),
            reduce_range=not cpu_flags() >= _INT8_CPU_FLAGS,
        )
    copy = pool_class_token(cast_copy(tower, _DTYPES[precision]))
    if precision in ("fp32-fast", "fp32-compiled"):
        copy = fold_batch_norms(copy)
    if device.type == "cpu":
        copy = copy.to(memory_format=torch.channels_last)
    return CompiledTower(copy) if precision == "fp32-compiled" else copy


def _modules(copy: nn.Module | CompiledTower | Int8ConvTower) -> list[nn.Module]:
    """The modules holding a copy's tensors."""
    if isinstance(copy, CompiledTower):
        return [copy.eager]
    if isinstance(copy, Int8ConvTower):
        return [copy.observed] if copy.quantized is None else [copy.observed, copy.quantized]
    return [copy]


def _nbytes(tower: nn.Module) -> int:
    """Bytes of the copy's parameters and buffers and of its int8 layers' packed weights (which
    only its state dict shows).
    """
    tensors = [*tower.parameters(), *tower.buffers()]
    for value in tower.state_dict().values():
        if isinstance(value, tuple):
            tensors += [t for t in value if isinstance(t, Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)
