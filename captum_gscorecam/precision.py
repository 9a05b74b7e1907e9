"""Reduced-precision masked passes: a copy of a CLIP model's image tower in bfloat16 or float16.

The masked passes of gScoreCAM and ScoreCAM only need scores good enough for a softmax over
channels, and they are the whole cost. A copy of the image tower cast once to a 16-bit dtype
(channels-last on CPU) runs them several times faster than float32 where the hardware has
native 16-bit arithmetic (README "Performance"); ``torch.autocast`` would re-cast the weights on
every pass. The capture pass, the ranking and the weighting keep the model's own precision.
"""

from __future__ import annotations

import copy
import logging
import time
from functools import cache
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gscorecam.checks import PRECISIONS
from captum_gscorecam.towers import image_tower

__all__ = [
    "PRECISIONS",
    "ReducedTower",
    "precision_name",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of x86 CPUs with bfloat16 arithmetic in hardware (dot products in AVX-512
# or AMX tiles). Without them bf16 matmuls are emulated and may be slower than float32.
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_precision(
    precision: str | torch.dtype | None, device: torch.device | str
) -> torch.dtype | None:
    """The dtype of the masked passes on ``device``; None means the model's own (exact) path.

    ``precision`` is None, ``torch.float32`` or ``"fp32"`` (the exact path), ``torch.bfloat16``
    / ``"bf16"``, ``torch.float16`` / ``"fp16"``, or ``"auto"``: bf16 on a CPU with native
    bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` and torch's AVX-512 kernels); on CUDA bf16
    where the device supports it (compute capability >= 8), else fp16 from compute capability
    7; everywhere else the exact path.
    """
    if isinstance(precision, torch.dtype):
        if precision == torch.float32:
            return None
        if precision in (torch.bfloat16, torch.float16):
            return precision
    elif precision is None:
        return None
    elif isinstance(precision, str) and precision in _DTYPES:
        return _DTYPES[precision]
    elif precision == "auto":
        return _auto(torch.device(device))
    raise ValueError(
        f"precision: expected None, one of {list(PRECISIONS)}, torch.float32, torch.bfloat16 "
        f"or torch.float16, got {precision!r}"
    )


def precision_name(dtype: torch.dtype | None) -> str:
    """A resolved precision by name: ``"fp32"`` (None, the exact path), ``"bf16"``, ``"fp16"``."""
    return next(name for name, value in _DTYPES.items() if value == dtype)


def _auto(device: torch.device) -> torch.dtype | None:
    if device.type == "cpu":
        return torch.bfloat16 if native_cpu_bf16() else None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16
        major, _ = torch.cuda.get_device_capability(device)
        return torch.float16 if major >= 7 else None
    return None


@cache
def native_cpu_bf16() -> bool:
    """True if this CPU computes bfloat16 in hardware and torch dispatches AVX-512 kernels."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return not _BF16_CPU_FLAGS.isdisjoint(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


class ReducedTower:
    """A copy of a CLIP model's image tower cast to ``dtype``; on CPU, channels-last.

    ``nbytes`` is the copy's memory (its parameters and buffers) and ``build_seconds`` what
    making it took. The copy is made from the model as it is now: :meth:`matches` tells whether
    the model's tower still has the same tensors (``_version`` counters and data pointers of
    its parameters and buffers; writes through ``.data`` are not counted).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        start = time.perf_counter()
        tower = image_tower(model)
        self.dtype = dtype
        self.fingerprint = _fingerprint(tower)
        self.tower = _cast_copy(tower, dtype)
        self.nbytes = sum(
            t.numel() * t.element_size()
            for t in chain(self.tower.parameters(), self.tower.buffers())
        )
        self.build_seconds = time.perf_counter() - start
        logger.debug(
            "image tower copy in %s: %.1f MiB, made in %.2f s",
            dtype,
            self.nbytes / 2**20,
            self.build_seconds,
        )

    def matches(self, model: nn.Module, dtype: torch.dtype) -> bool:
        """True if this copy is in ``dtype`` and ``model``'s tower is as it was when copied."""
        return dtype == self.dtype and _fingerprint(image_tower(model)) == self.fingerprint

    def embed_images(self, images: Tensor) -> Tensor:
        """L2-normalised float32 image embeddings ``(N, D)`` from the reduced copy."""
        images = images.to(self.dtype)
        if images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.tower(images).float(), dim=-1)


def _fingerprint(tower: nn.Module) -> tuple[tuple[int, int, int], ...]:
    return tuple(
        (id(t), t.data_ptr(), t._version) for t in chain(tower.parameters(), tower.buffers())
    )


def _cast_copy(tower: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``tower`` in eval mode with floating tensors in ``dtype``; the float32
    tensors are never duplicated (each is cast straight into the copy).
    """
    memo: dict[int, object] = {}
    for param in tower.parameters():
        cast = param.detach().to(dtype, copy=True) if param.is_floating_point() else param.clone()
        memo[id(param)] = nn.Parameter(cast, requires_grad=False)
    for buffer in tower.buffers():
        memo[id(buffer)] = (
            buffer.to(dtype, copy=True) if buffer.is_floating_point() else buffer.clone()
        )
    reduced = copy.deepcopy(tower, memo).eval()
    if next(reduced.parameters()).device.type == "cpu":
        reduced = reduced.to(memory_format=torch.channels_last)
    return reduced
