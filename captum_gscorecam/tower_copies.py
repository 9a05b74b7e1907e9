"""How each precision's copy of an image tower is made, and how a copy knows it is stale.

- :func:`cast_copy`: every floating tensor cast into the copy (bf16, fp16, or a float32 copy);
- :func:`pool_class_token`: open_clip's ResNet attention pool replaced by
  :class:`ClassTokenPool`, which computes only the token the pool returns (the same function up
  to float rounding, its query and output projections on one token instead of ``h * w + 1``)
  and calls its projections as modules;
- :func:`fold_batch_norms`: each BatchNorm that only reads a convolution's output folded into
  that convolution's weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``), through the
  ``torch.fx`` graph of the tower: same function up to float rounding, one pass less over
  every activation of a CNN;
- :func:`quantize_linears`: the Linear layers the tower calls as modules quantised to int8
  with dynamically quantised activations (``torch.ao.quantization.quantize_dynamic``); layers
  whose weights the tower reads directly (open_clip's ResNet attention pool,
  ``nn.MultiheadAttention``'s projections) stay float32;
- :class:`Int8ConvTower`: a CNN tower's convolutions, and the additions, ReLUs and poolings
  between them, in int8 (``torch.ao.quantization``'s FX graph mode, x86 engine), activation
  ranges calibrated on images the caller gives; the Linear layers of modules that read their
  own weights (the class-token pool) in int8 with activations quantised per batch;
- :class:`CompiledTower`: ``torch.compile`` of a copy, compiled once per batch size, smaller
  batches padded up to a compiled size; a failure to compile falls back to the eager copy;
- :func:`weights_fingerprint`: a checksum of every parameter and buffer, which sees writes
  through ``.data`` that the tensors' version counters miss.
"""

from __future__ import annotations

import copy
import warnings
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "ClassTokenPool",
    "CompiledTower",
    "Int8ConvTower",
    "cast_copy",
    "fold_batch_norms",
    "int8_available",
    "pool_class_token",
    "quantize_linears",
    "weights_fingerprint",
]

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def cast_copy(tower: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``tower`` in eval mode with floating tensors in ``dtype``, none needing a
    gradient; the model's tensors are never duplicated on the way (each is cast straight into
    the copy).
    """
    memo: dict[int, object] = {}
    for param in tower.parameters():
        cast = param.detach().to(dtype, copy=True) if param.is_floating_point() else param.clone()
        memo[id(param)] = nn.Parameter(cast, requires_grad=False)
    for buffer in tower.buffers():
        memo[id(buffer)] = (
            buffer.to(dtype, copy=True) if buffer.is_floating_point() else buffer.clone()
        )
    return copy.deepcopy(tower, memo).eval()


class ClassTokenPool(nn.Module):
    """open_clip's ResNet attention pool (``AttentionPool2d``) computing only what it returns.

    The pool attends over the tokens ``z = [mean(x), x_1 .. x_hw] + positional embedding`` with
    every token as a query and returns the first token's output; here only that query is
    made: ``out = c_proj(attention(q_proj(z_0), k_proj(z), v_proj(z)))``, heads as in
    ``nn.MultiheadAttention`` (scores scaled by ``1 / sqrt(head dim)``). It shares the pool's
    parameters and calls its projections as modules.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.q_proj, self.k_proj, self.v_proj = pool.q_proj, pool.k_proj, pool.v_proj
        self.c_proj = pool.c_proj
        self.num_heads: int = pool.num_heads

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(N, D)`` of a feature map ``(N, C, h, w)``."""
        n, c = x.shape[0], x.shape[1]
        tokens = x.flatten(2).transpose(1, 2)  # (N, hw, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self.positional_embedding.to(x.dtype)
        heads = self.num_heads
        query = self.q_proj(tokens[:, :1]).reshape(n, 1, heads, c // heads).transpose(1, 2)
        key = self.k_proj(tokens).reshape(n, -1, heads, c // heads).transpose(1, 2)
        value = self.v_proj(tokens).reshape(n, -1, heads, c // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value)  # (N, heads, 1, C / heads)
        return self.c_proj(out.transpose(1, 2).reshape(n, c))


def pool_class_token(tower: nn.Module) -> nn.Module:
    """``tower`` (a copy) with each open_clip ``AttentionPool2d`` replaced by a
    :class:`ClassTokenPool` on the same parameters.
    """
    for name, module in list(tower.named_modules()):
        kind = type(module)
        if name and kind.__name__ == "AttentionPool2d" and kind.__module__.startswith("open_clip"):
            _replace(tower, name, ClassTokenPool(module))
    return tower


def fold_batch_norms(tower: nn.Module) -> nn.Module:
    """``tower`` (a copy in eval mode) with each BatchNorm that only reads a convolution's
    output folded into that convolution; ``tower`` itself where nothing folds or ``torch.fx``
    cannot trace it (data-dependent control flow).
    """
    if not any(isinstance(m, _BATCH_NORMS) for m in tower.modules()):
        return tower
    try:
        traced = fx.symbolic_trace(tower)
    except Exception:  # any tracing failure means: leave the tower as it is
        return tower
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = False
    for node in list(traced.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, _BATCH_NORMS) or norm.running_mean is None or not node.args:
            continue
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, fx.Node) else None
        if (
            source.op != "call_module"
            or not isinstance(conv, _CONVOLUTIONS)
            or len(source.users) != 1  # another reader needs the unnormalised output
            or calls[source.target] != 1  # a convolution called twice serves another path
            or calls[node.target] != 1
        ):
            continue
        _replace(traced, source.target, fuse_conv_bn_eval(conv, norm))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
        folded = True
    if not folded:
        return tower
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def _replace(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def int8_available() -> bool:
    """True if this torch has dynamic int8 quantisation of Linear layers for the CPU."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return torch.backends.quantized.engine != "none"


def _require_int8() -> None:
    if not int8_available():
        raise ValueError(
            "precision: 'int8' needs torch.ao.quantization and a quantized engine, which "
            f"torch {torch.__version__} lacks here; use 'fp32-fast' or 'bf16'"
        )


def quantize_linears(tower: nn.Module, probe: Tensor) -> nn.Module:
    """``tower`` (a float32 copy on the CPU) with every ``nn.Linear`` that its forward pass on
    ``probe`` calls as a module quantised to int8 (weights per tensor, activations per batch).

    Raises:
        ValueError: No Linear layer is called as a module (a CNN tower), or this torch has
            no dynamic int8 quantisation.
    """
    _require_int8()
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = {id(m): name for name, m in tower.named_modules() if type(m) is nn.Linear}
    called: set[str] = set()
    handles = [
        m.register_forward_hook(lambda m, _args, _out: called.add(names[id(m)]))
        for m in tower.modules()
        if id(m) in names
    ]
    try:
        with torch.inference_mode():
            tower(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not called:
        raise ValueError(
            f"precision: 'int8' quantises the Linear layers of a transformer tower, and this "
            f"one ({type(tower).__name__}) calls none as a module; use 'fp32-fast' or 'bf16'"
        )
    with warnings.catch_warnings():  # torch's deprecation notices are not the caller's to act on
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            tower, dict.fromkeys(called, default_dynamic_qconfig), dtype=torch.qint8, inplace=True
        )


class Int8ConvTower:
    """A CNN tower copy (float32, on the CPU) computing in int8 with static quantisation.

    Weights are quantised per output channel (symmetric), activations per tensor (asymmetric,
    ``quint8``) with the ranges (min and max) that the images given to :meth:`calibrate` reach
    at each layer: ``q = clamp(round(x / scale) + zero_point, 0, 255)``, ``scale = (max - min)
    / 255`` (127 with ``reduce_range``, which CPUs without VNNI need: their int8 kernels sum
    pairs of products in 16 bits). BatchNorms are folded into their convolutions and each
    ReLU fused into the one before it. A module whose forward pass reads its own weights (the
    :class:`ClassTokenPool`, which adds its positional embedding) is left out of this static
    pass; the Linear layers it calls then compute in int8 with activations quantised per batch.
    ``probe`` is only traced; until :meth:`calibrate` is called, the first batch the copy runs
    calibrates it.

    Raises:
        ValueError: ``torch.fx`` cannot trace the tower, or this torch has no int8
            quantisation.
    """

    def __init__(self, tower: nn.Module, probe: Tensor, reduce_range: bool = False) -> None:
        _require_int8()
        from torch.ao.quantization import QConfig, get_default_qconfig_mapping
        from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
        from torch.ao.quantization.quantize_fx import prepare_fx

        try:
            traced = fx.symbolic_trace(tower)
        except Exception as error:  # any tracing failure: say so by name
            raise ValueError(
                f"precision: 'int8' on a CNN tower needs torch.fx to trace it, and "
                f"{type(tower).__name__} does not trace ({type(error).__name__}); use "
                "'fp32-fast' or 'bf16'"
            ) from error
        observers = QConfig(
            activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=reduce_range),
            weight=PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric
            ),
        )
        mapping = get_default_qconfig_mapping("x86").set_global(observers)
        for name in _weight_readers(traced):
            mapping.set_module_name(name, None)
        with warnings.catch_warnings():  # torch's deprecation notices are not the caller's
            warnings.simplefilter("ignore")
            self.observed = prepare_fx(tower.eval(), mapping, example_inputs=(probe,))
        self.quantized: nn.Module | None = None

    def calibrate(self, images: Tensor) -> nn.Module:
        """Quantise the activations with the ranges that ``images`` reach (replacing the
        last calibration) and return the int8 tower.
        """
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
        from torch.ao.quantization.quantize_fx import convert_fx

        observed = copy.deepcopy(self.observed)  # fresh observers: the ranges of these images
        with torch.no_grad():
            observed(images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = convert_fx(observed)
            linears = {
                node.target
                for node in quantized.graph.nodes
                if node.op == "call_module"
                and type(quantized.get_submodule(node.target)) is nn.Linear
            }  # left float by the static pass: the pool's projections
            self.quantized = quantize_dynamic(
                quantized, dict.fromkeys(linears, default_dynamic_qconfig), inplace=True
            )
        return self.quantized

    def __call__(self, images: Tensor) -> Tensor:
        """The int8 tower's float32 output for ``images`` ``(B, ...)``."""
        quantized = self.quantized if self.quantized is not None else self.calibrate(images)
        return quantized(images)


def _weight_readers(traced: fx.GraphModule) -> set[str]:
    """Names of the modules whose forward pass reads a parameter or buffer itself (a
    ``get_attr`` node in their scope) rather than calling a module that owns it.
    """
    readers = set()
    for node in traced.graph.nodes:
        stack = node.meta.get("nn_module_stack") if node.op == "get_attr" else None
        if stack:
            readers.add(next(reversed(stack.values()))[0])
    return readers


class CompiledTower:
    """``torch.compile`` of a tower copy, compiled for each batch size it first meets.

    A batch smaller than a size already compiled is padded up to it with zero images (their
    embeddings are dropped), so a run's last, partial chunk costs no new compilation. If
    compiling or running the compiled tower fails, one ``RuntimeWarning`` says so and every
    later batch runs on the eager copy.
    """

    def __init__(self, tower: nn.Module) -> None:
        self.eager = tower
        # freezing: the weights become constants of the graph, so convolutions get their
        # weights prepacked for the CPU's kernels once (the copy's weights never change)
        self.compiled: nn.Module | None = torch.compile(
            tower, dynamic=False, options={"freezing": True}
        )
        self.sizes: list[int] = []

    def __call__(self, images: Tensor) -> Tensor:
        """The tower's output for ``images`` ``(B, ...)``."""
        if self.compiled is None:
            return self.eager(images)
        n = images.shape[0]
        size = min((s for s in self.sizes if s >= n), default=n)
        padded = images
        if size > n:
            padded = torch.cat([images, images.new_zeros((size - n, *images.shape[1:]))])
            padded = padded.contiguous(memory_format=_memory_format(images))
        try:
            out = self.compiled(padded)
        except Exception as error:  # any compiler failure: run eagerly
            self.compiled = None
            warnings.warn(
                f"precision: torch.compile failed ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}); "
                "the masked passes run on the uncompiled float32 copy",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.eager(images)
        if size not in self.sizes:
            self.sizes.append(size)
        return out[:n]


def _memory_format(images: Tensor) -> torch.memory_format:
    channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


_PROBES: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def weights_fingerprint(tower: nn.Module) -> tuple[tuple[object, ...], tuple[Tensor, Tensor]]:
    """What a copy of ``tower`` depends on: its modules (identity and type) and the tensors'
    shapes, dtypes and devices; and checksums of their values, on the CPU.

    Each floating tensor contributes its dot product with a fixed sequence (which moves when
    values move or trade places) and the integer sum of its bits (which moves with any single
    changed value, however small); other tensors their sum and a position-weighted sum.
    Computed from the values, they see writes through ``.data``, which version counters do
    not; each list is moved off the device once.
    """
    tensors = [t.detach() for t in chain(tower.parameters(), tower.buffers())]
    structure = (
        tuple((id(m), type(m)) for m in tower.modules()),
        tuple((tuple(t.shape), t.dtype, t.device) for t in tensors),
    )
    dots: list[Tensor] = []
    sums: list[Tensor] = []
    for tensor in tensors:
        flat = tensor.reshape(-1)
        if flat.numel() == 0:
            continue
        if flat.is_floating_point():
            bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[flat.element_size()]
            dots.append(torch.dot(flat, _probe(flat.device, flat.dtype, flat.numel())).float())
            sums.append(flat.view(bits).sum(dtype=torch.int64))
        else:
            values = flat.to(torch.int64)
            weights = _probe(flat.device, torch.float32, flat.numel()).mul(1024).to(torch.int64)
            sums += [values.sum(), (values * weights).sum()]
    return structure, (_stacked(dots, torch.float32), _stacked(sums, torch.int64))


def _stacked(values: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.stack(values).cpu() if values else torch.zeros(0, dtype=dtype)


def _probe(device: torch.device, dtype: torch.dtype, n: int) -> Tensor:
    """``frac(0.618... * i) - 0.5`` for i < ``n`` (a fixed, evenly spread sequence) on ``device``
    in ``dtype``; the longest asked for is kept, and its first ``n`` values returned.
    """
    key = (device, dtype)
    probe = _PROBES.get(key)
    if probe is None or probe.numel() < n:
        positions = torch.arange(max(n, 1 << 16), dtype=torch.float64)
        probe = positions.mul_(0.6180339887498949).frac_().sub_(0.5).to(device, dtype)
        _PROBES[key] = probe
    return probe[:n]
