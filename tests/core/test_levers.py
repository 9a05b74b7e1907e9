"""The tower copies behind ``precision=`` beyond bf16 / fp16 (fp32-fast, fp32-compiled, int8 on
transformer and CNN towers), what ``auto`` picks per device, the warning for a precision slower
than fp32, and copies remade whenever the weights change (also through ``.data``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from open_clip.modified_resnet import AttentionPool2d
from torch import fx, nn

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer, engine, tower_copies
from captum_gscorecam import precision as precision_module
from captum_gscorecam.precision import (
    AUTO,
    PRECISIONS,
    Precision,
    device_kind,
    resolve_precision,
)
from captum_gscorecam.tower_copies import (
    CompiledTower,
    cast_copy,
    fold_batch_norms,
    quantize_linears,
    weights_fingerprint,
)
from captum_gscorecam.towers import image_tower, token_blocks
from tests.core.test_precision import activation_scale
from tests.helpers import images_for, texts, tiny_rn, tiny_vit
from tests.tower_models import TOWERS, images

BUILDERS = {"rn": tiny_rn, "vit": tiny_vit}
# Largest |map - fp32 map| / max|A| (which bounds the L1 change of the channel weights, as in
# test_precision): fp32-fast differs from fp32 by float rounding only; int8 by its quantised
# Linear layers (ViT) or convolutions (ResNet), held to bf16's bound (measured on these towers:
# int8 <= 0.0025 on the ViT, <= 0.0019 on the ResNet; bf16 <= 0.0022).
TOLERANCE = {"fp32-fast": 1e-4, "int8": 0.02}
LEVERS = [("rn", "fp32-fast"), ("vit", "fp32-fast"), ("vit", "int8"), ("rn", "int8")]


def with_batch_norm_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so folding them is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


def is_int8_linear(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")


def cam_run(method: str, model: nn.Module, x: torch.Tensor, text: torch.Tensor, **kwargs):
    if method == "gscorecam":
        cam = GScoreCAM(model, default_layer(model))
    else:
        kwargs.pop("topk", None)
        cam = ScoreCAM(model, default_layer(model))
    return cam, lambda **more: cam.attribute(x, target=text, **kwargs, **more)


@settings(max_examples=10, deadline=None)
@given(
    lever=st.sampled_from(LEVERS),
    seed=st.integers(0, 5),
    topk=st.sampled_from([1, 3, 0.25, 1.0]),
    chunk=st.integers(1, 40),
    prompts=st.integers(1, 3),
    method=st.sampled_from(["gscorecam", "scorecam"]),
)
def test_each_lever_stays_within_its_tolerance_of_fp32(
    lever, seed, topk, chunk, prompts, method, model_state
):
    name, precision = lever
    model = with_batch_norm_statistics(BUILDERS[name](seed), seed)
    x = images_for(model, 2, seed=seed)
    text = texts(2, prompts, seed=seed + 1)
    before = model_state(model)
    cam, run = cam_run(method, model, x, text, topk=topk, perturbations_per_eval=chunk)
    full = run()
    fast = run(precision=precision)
    assert fast.dtype == torch.float32
    assert fast.shape == full.shape
    error = (fast - full).abs() / activation_scale(model, x)
    assert float(error.max()) <= TOLERANCE[precision]
    assert model_state(model) == before
    assert cam.reduced_tower.precision == precision


def test_fp32_fast_folds_the_batch_norms_of_a_cnn_and_channels_last(rn):
    cam = GScoreCAM(rn, default_layer(rn))
    cam.attribute(images_for(rn, 1), target=texts(1, 1), topk=2, precision="fp32-fast")
    copy = cam.reduced_tower.tower
    assert cam.reduced_tower.dtype == torch.float32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in rn.visual.modules())
    convs = [m for m in copy.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize("name", sorted(name for name in TOWERS if name != "timm_convnext"))
def test_int8_on_every_transformer_tower(name, model_state):
    build, size, *_ = TOWERS[name]
    model = build()
    x = images(2, size)
    text = texts(2, 2)
    before = model_state(model)
    cam = ScoreCAM(model, default_layer(model))
    full = cam.attribute(x, target=text)
    int8 = cam.attribute(x, target=text, precision="int8")
    error = (int8 - full).abs() / activation_scale(model, x)
    assert float(error.max()) <= TOLERANCE["int8"]
    assert model_state(model) == before
    quantized = [m for m in cam.reduced_tower.tower.modules() if is_int8_linear(m)]
    assert quantized  # the Linear layers really compute in int8
    assert not any(m._forward_hooks for m in cam.reduced_tower.tower.modules())


def is_int8_conv(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__module__.startswith("torch.ao.nn.") and "Conv" in kind.__name__


def test_int8_on_a_resnet_quantises_its_convolutions_and_the_pool_s_projections():
    """Every convolution computes in int8 with calibrated ranges; the class-token pool adds its
    positional embedding in float32, and its projections quantise their inputs per batch."""
    model = tiny_rn()
    cam = GScoreCAM(model, default_layer(model))
    cam.attribute(images_for(model, 1), target=texts(1, 1), topk=2, precision="int8")
    copy = cam.reduced_tower.tower
    assert isinstance(copy, tower_copies.Int8ConvTower)
    convs = [m for m in model.visual.modules() if isinstance(m, nn.Conv2d)]
    quantized = [m for m in copy.quantized.modules() if is_int8_conv(m)]
    assert len(quantized) == len(convs)
    assert not any(isinstance(m, nn.Conv2d) for m in copy.quantized.modules())
    pool = copy.quantized.get_submodule("attnpool")  # the class-token pool, traced
    assert torch.equal(pool.positional_embedding, model.visual.attnpool.positional_embedding)
    assert all(is_int8_linear(m) for m in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj))
    graph = copy.quantized.graph
    (embedding,) = [n for n in graph.nodes if n.target == "attnpool.positional_embedding"]
    downstream, frontier = set(), [embedding]
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user not in downstream:
                downstream.add(user)
                frontier.append(user)
    assert downstream  # the pool's input and everything after it is never requantised
    assert not any(n.target is torch.quantize_per_tensor for n in downstream)
    assert cam.reduced_tower.nbytes > sum(p.numel() * 4 for p in model.visual.parameters())


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    width=st.sampled_from([4, 8]),
    side=st.integers(1, 4),
    out=st.sampled_from([None, 6]),
    seed=st.integers(0, 1000),
)
def test_the_class_token_pool_is_open_clip_s_attention_pool(n, heads, width, side, out, seed):
    """Only the first token's query and output are made; the result is the same up to float
    rounding, for any batch, head count, width and grid."""
    torch.manual_seed(seed)
    pool = AttentionPool2d(side, heads * width, heads, out).eval()
    x = torch.randn(n, heads * width, side, side)
    with torch.no_grad():
        expected = pool(x)
        got = tower_copies.ClassTokenPool(pool)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_every_copy_of_a_resnet_tower_pools_the_class_token_only(rn):
    before = {name: type(m) for name, m in rn.named_modules()}
    for precision in ("fp32-fast", "bf16", "int8"):
        cam = GScoreCAM(rn, default_layer(rn))
        cam.attribute(images_for(rn, 1), target=texts(1, 1), topk=2, precision=precision)
        copy = cam.reduced_tower.tower
        copy = copy.quantized if precision == "int8" else copy
        if isinstance(copy, fx.GraphModule):  # traced: its graph calls the class-token pool's ops
            targets = {node.target for node in copy.graph.nodes}
            assert F.scaled_dot_product_attention in targets
            assert F.multi_head_attention_forward not in targets
        else:
            assert isinstance(copy.get_submodule("attnpool"), tower_copies.ClassTokenPool)
    assert {name: type(m) for name, m in rn.named_modules()} == before  # the model's own


def test_int8_on_a_resnet_takes_its_activation_ranges_from_each_call():
    """The ranges come from the images of the call (each image and three of its masks), so a
    map does not depend on what the same object explained before."""
    model = tiny_rn(2)
    cam = GScoreCAM(model, default_layer(model))
    x = images_for(model, 2, seed=5)
    dim = x * 0.2  # the same content in a fifth of the range
    text = texts(1, 2)

    def run(images):
        """The maps, and the scale of the int8 images the copy's first convolution reads."""
        maps = cam.attribute(images, target=text, topk=4, precision="int8")
        quantized = cam.reduced_tower.tower.quantized
        first = next(n for n in quantized.graph.nodes if n.target is torch.quantize_per_tensor)
        return maps, float(getattr(quantized, first.args[1].target))

    first, scale = run(x[:1])
    _, dim_scale = run(dim[:1])
    assert dim_scale == pytest.approx(0.2 * scale, rel=1e-3)
    run(x[1:])
    again, _ = run(x[:1])
    assert torch.equal(again, first)
    exact = cam.attribute(x[:1], target=text, topk=4)
    assert float(((first - exact).abs() / activation_scale(model, x[:1])).max()) <= 0.02


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_int8_on_a_resnet_calibrates_the_same_inside_no_grad_and_inference_mode(context):
    """The copy is made and recalibrated inside the caller's context on the first call and
    outside it on the next ones (and the other way round)."""
    model = tiny_rn(4)
    x, text = images_for(model, 2, seed=4), texts(2, 2, seed=5)
    inside_first = GScoreCAM(model, default_layer(model))
    outside_first = GScoreCAM(model, default_layer(model))
    with context():
        made_inside = inside_first.attribute(x.clone(), target=text, topk=3, precision="int8")
    outside = outside_first.attribute(x, target=text, topk=3, precision="int8")
    with context():
        again_inside = outside_first.attribute(x.clone(), target=text, topk=3, precision="int8")
    again_outside = inside_first.attribute(x, target=text, topk=3, precision="int8")
    for maps in (made_inside, again_inside, again_outside):
        torch.testing.assert_close(maps, outside, atol=0, rtol=0)


def test_int8_on_a_cnn_tower_that_fx_cannot_trace_is_refused_by_name():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3)) if x.sum() > 0 else x.mean((2, 3))

    with pytest.raises(ValueError, match=r"precision: 'int8' on a CNN tower needs torch\.fx"):
        tower_copies.Int8ConvTower(Branchy().eval(), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(("flags", "levels"), [({"avx512_vnni"}, 255), (set(), 127)])
def test_int8_activations_use_seven_bits_on_cpus_without_vnni(monkeypatch, flags, levels):
    """Without VNNI the int8 kernels add pairs of products in 16 bits, which 8-bit activations
    can overflow."""
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    model = tiny_rn()
    cam = GScoreCAM(model, default_layer(model))
    cam.attribute(images_for(model, 1), target=texts(1, 1), topk=2, precision="int8")
    observers = [
        m
        for m in cam.reduced_tower.tower.observed.modules()
        if type(m).__name__ == "MinMaxObserver"
    ]
    assert observers
    assert {m.quant_max - m.quant_min for m in observers} == {levels}


def test_the_calibration_images_are_each_image_and_three_of_its_masks():
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 8, 8)
    activations = torch.rand(2, 6, 2, 2)
    selected = torch.zeros(2, 2, 6, dtype=torch.bool)
    selected[0, 0, [0, 2, 3]] = True
    selected[0, 1, [5]] = True  # the union over prompts: 0, 2, 3, 5
    selected[1, 1, [4]] = True  # one channel: no repeats
    images = engine.calibration_images(inputs, activations, selected)
    size = (8, 8)
    expected = [
        inputs[:1],
        inputs[:1] * engine.channel_masks(activations[0, [0, 3, 5]], size),
        inputs[1:],
        inputs[1:] * engine.channel_masks(activations[1, [4]], size),
    ]
    assert torch.equal(images, torch.cat(expected))


def test_int8_leaves_the_linear_layers_a_transformer_tower_reads_directly():
    """Layers whose weights a tower reads itself (as open_clip's ResNet attention pool does)
    stay float32: quantising them would break the reader."""

    class Pool(nn.Module):  # calls one Linear, reads the other's weights as the pool does
        def __init__(self) -> None:
            super().__init__()
            self.called, self.read = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.called(x) @ self.read.weight.T + self.read.bias

    pool = Pool()
    x = torch.randn(3, 4)
    copy = quantize_linears(cast_copy(pool, torch.float32), x[:1])
    with torch.no_grad():
        assert torch.allclose(copy(x), pool(x), rtol=0.05, atol=0.05)
    assert type(copy.read) is nn.Linear
    assert is_int8_linear(copy.called)


@pytest.mark.parametrize(("name", "precision"), [*LEVERS, ("rn", "bf16"), ("vit", "bf16")])
def test_the_copy_is_remade_after_every_kind_of_weight_change(name, precision):
    model = BUILDERS[name](0)
    x = images_for(model, 1)
    text = texts(1, 2)
    cam = GScoreCAM(model, default_layer(model))

    def maps(precision=precision):
        return cam.attribute(x, target=text, topk=8, precision=precision)

    first = maps()
    copy = cam.reduced_tower
    assert torch.equal(maps(), first)
    assert cam.reduced_tower is copy  # reused while nothing changed

    def tolerance():
        return TOLERANCE.get(precision, 0.02) * activation_scale(model, x)

    changes = [
        lambda p: p.data.mul_(1.5),  # through .data: no version counter moves
        lambda p: p.mul_(-1.0),  # in place under no_grad
        lambda p: p.data.copy_(p.data.flip(0)),  # values trade places, the sum stays
    ]
    for change in changes:
        with torch.no_grad():
            for p in model.visual.parameters():
                change(p)
        changed = maps()
        assert cam.reduced_tower is not copy
        assert not torch.allclose(changed, first)
        assert bool(((changed - maps("fp32")).abs() <= tolerance()).all())
        copy = cam.reduced_tower
    model.load_state_dict(BUILDERS[name](1).state_dict())
    assert torch.allclose(maps(), maps("fp32"), atol=float(tolerance().max()))
    assert cam.reduced_tower is not copy


def test_a_data_write_between_two_bf16_calls_changes_the_map_as_fp32_does(rn):
    """Issue 19 item 5: ``p.data.mul_(1.5)`` reused the stale copy (a map 56% off)."""
    model = tiny_rn(3)
    x = images_for(model, 1)
    text = texts(1, 1)
    cam = GScoreCAM(model, default_layer(model))
    before = cam.attribute(x, target=text, topk=0.5, precision="bf16")
    for p in model.visual.parameters():
        p.data.mul_(1.5)
    after = cam.attribute(x, target=text, topk=0.5, precision="bf16")
    exact = cam.attribute(x, target=text, topk=0.5)
    scale = activation_scale(model, x)
    assert float(((after - exact).abs() / scale).max()) <= 0.02
    assert float(((before - exact).abs() / scale).max()) > 0.02


def test_the_fingerprint_sees_any_change_of_any_value():
    tower = tiny_vit().visual
    structure, (dots, sums) = weights_fingerprint(tower)
    again = weights_fingerprint(tower)[1]
    assert torch.equal(again[0], dots)  # deterministic
    assert torch.equal(again[1], sums)
    assert dots.device.type == sums.device.type == "cpu"
    p = tower.transformer.resblocks[0].mlp.c_fc.weight
    one = p.data.view(-1)[7:8]
    edits = {  # which checksum each edit must move: (the dot products, the bit sums)
        "one value by one ulp": (lambda: one.copy_(torch.nextafter(one, one + 1)), (False, True)),
        "two values trade places": (
            lambda: p.data.view(-1)[:2].copy_(p.data.view(-1)[:2].flip(0).clone()),
            (True, False),
        ),
        "every value": (lambda: p.data.mul_(1.5), (True, True)),
    }
    for name, (edit, moves) in edits.items():
        saved = p.data.clone()
        edit()
        changed_structure, (new_dots, new_sums) = weights_fingerprint(tower)
        assert changed_structure == structure, name
        if moves[0]:
            assert not torch.equal(new_dots, dots), name
        if moves[1]:
            assert not torch.equal(new_sums, sums), name
        p.data.copy_(saved)
        restored = weights_fingerprint(tower)[1]
        assert torch.equal(restored[0], dots), name
        assert torch.equal(restored[1], sums), name
    tower.transformer.resblocks[0].mlp.gelu = nn.ReLU()  # no weights, another function
    assert weights_fingerprint(tower)[0] != structure


def test_fold_batch_norms_folds_only_what_nothing_else_reads():
    torch.manual_seed(0)

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
            self.shared, self.norm2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.conv3, self.norm3 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            y = self.norm(y) + y  # the convolution's output is read twice: not folded
            y = self.norm2(self.shared(y)) + self.shared(x)  # a convolution called twice
            return self.norm3(self.conv3(y)).relu()  # folded

    module = with_batch_norm_statistics(Skip(), 1).eval()
    folded = fold_batch_norms(cast_copy(module, torch.float32))
    assert isinstance(folded, fx.GraphModule)
    norms = {name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert norms == {"norm", "norm2"}
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), module(x), atol=1e-5)

    class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x)) if x.sum() > 0 else x

    branchy = Branchy().eval()
    assert fold_batch_norms(branchy) is branchy


def test_a_failed_compile_falls_back_with_one_warning(rn, monkeypatch):
    def broken(module, **_kwargs):
        def run(_images):
            raise RuntimeError("no C++ compiler\nmore detail")

        return run

    monkeypatch.setattr(tower_copies.torch, "compile", broken)
    x = images_for(rn, 1)
    text = texts(1, 1)
    cam = GScoreCAM(rn, default_layer(rn))
    with pytest.warns(RuntimeWarning, match="torch.compile failed .RuntimeError: no C.. compiler"):
        maps = cam.attribute(x, target=text, topk=3, precision="fp32-compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cam.attribute(x, target=text, topk=3, precision="fp32-compiled")
    exact = cam.attribute(x, target=text, topk=3)
    assert torch.allclose(maps, exact, atol=1e-5)
    assert torch.equal(again, maps)


@pytest.mark.slow
def test_a_compiled_tower_compiles_once_per_batch_size_and_pads_smaller_batches():
    """A real torch.compile (minutes on a busy machine, hence small); attribute's use of it is
    tested above with the compiler replaced."""
    torch.manual_seed(0)
    tower = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    compiled = CompiledTower(tower.eval().requires_grad_(False))
    x = torch.randn(6, 3, 8, 8)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the eager copy
        for n, sizes in [(4, [4]), (3, [4]), (1, [4]), (6, [4, 6]), (5, [4, 6])]:
            assert torch.allclose(compiled(x[:n]), tower(x[:n]), atol=1e-5)
            assert compiled.sizes == sizes
    assert compiled.compiled is not None


def kinds(monkeypatch, flags: set[str], capability: str = "AVX512", int8: bool = True) -> None:
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision_module, "int8_available", lambda: int8)


@pytest.mark.parametrize(
    ("flags", "capability", "int8", "kind"),
    [
        ({"avx512f", "avx512_vnni", "avx512_bf16"}, "AVX512", True, "cpu-bf16"),
        ({"avx512f", "amx_bf16"}, "AVX512", True, "cpu-bf16"),
        ({"avx512f", "avx512_bf16"}, "AVX2", True, "cpu-avx2"),  # torch without AVX-512 kernels
        ({"avx512f", "avx512_vnni"}, "AVX512", True, "cpu-vnni"),
        ({"avx512f", "avx512_vnni"}, "AVX512", False, "cpu-avx2"),  # no int8 in this torch
        ({"avx2", "avx_vnni"}, "AVX2", True, "cpu-avx2"),
        (set(), "DEFAULT", True, "cpu"),
    ],
)
def test_auto_follows_the_table_on_each_kind_of_cpu(monkeypatch, flags, capability, int8, kind):
    kinds(monkeypatch, flags, capability, int8)
    assert device_kind("cpu") == kind
    cnn, transformer = AUTO[kind]
    for model, expected in [(tiny_rn(), cnn), (tiny_vit(), transformer)]:
        picked = resolve_precision("auto", "cpu", model)
        assert picked.name == expected
        assert picked.reason.startswith("auto on a")
    assert resolve_precision("auto", "cpu").name == "fp32"  # no CLIP tower to copy


def test_auto_on_cuda_and_other_devices(monkeypatch, rn):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: False)
    for capability, expected in [((6, 1), "fp32"), ((7, 5), "fp16")]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d, c=capability: c)
        assert resolve_precision("auto", "cuda", rn).name == expected
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: True)
    assert resolve_precision("auto", "cuda:0", rn) == Precision(
        "bf16", "auto on a CUDA GPU with bf16 (compute capability 8 or later), a CNN tower"
    )
    assert resolve_precision("auto", "meta", rn).name == "fp32"
    assert resolve_precision("auto", "mps", rn).name == "fp32"


def test_the_table_names_only_real_precisions():
    assert set(AUTO) == {
        "cpu-bf16",
        "cpu-vnni",
        "cpu-avx2",
        "cpu",
        "cuda-bf16",
        "cuda-fp16",
        "other",
    }
    assert {name for pair in AUTO.values() for name in pair} <= set(PRECISIONS) - {"auto"}


@pytest.mark.parametrize("build", [tiny_vit, tiny_rn])
def test_auto_runs_what_it_resolves_to(monkeypatch, build):
    kinds(monkeypatch, {"avx512f", "avx512_vnni"})  # no bf16: int8 on either tower
    model = build()
    x = images_for(model, 1)
    cam = GScoreCAM(model, default_layer(model))
    auto = cam.attribute(x, target=texts(1, 1), topk=3, precision="auto")
    assert cam.reduced_tower.precision == "int8"
    assert torch.equal(auto, cam.attribute(x, target=texts(1, 1), topk=3, precision="int8"))


def test_auto_with_a_forward_function_that_is_not_clip_runs_it_exactly(monkeypatch):
    kinds(monkeypatch, {"avx512f", "avx512_bf16"})
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cam = ScoreCAM(model, model[0])
    assert torch.equal(cam.attribute(x, target=1, precision="auto"), cam.attribute(x, target=1))
    assert cam.reduced_tower is None


def test_a_precision_slower_than_fp32_here_warns_once_per_call_site(monkeypatch, rn):
    kinds(monkeypatch, {"avx512f", "avx512_vnni"})  # no bf16 or fp16 arithmetic
    x = images_for(rn, 1)
    text = texts(1, 1)
    cam = GScoreCAM(rn, default_layer(rn))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            cam.attribute(x, target=text, topk=2, precision="bf16")
        cam.attribute(x, target=text, topk=2, precision="fp16")
        cam.attribute(x, target=text, topk=2, precision="auto")
        cam.attribute(x, target=text, topk=2, precision="fp32-fast")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 2, messages
    assert "precision='bf16' runs the masked passes slower than 'fp32' here" in messages[0]
    assert "no bf16 arithmetic" in messages[0]
    assert "2-4.5x the time of fp32 where measured" in messages[0]  # the ratio class
    assert "precision='auto' picks 'int8'" in messages[0]
    assert "precision='fp16'" in messages[1]
    assert "4-5x the time of fp32" in messages[1]
    assert all(w.filename == __file__ for w in caught)  # the caller's line, not ours
    kinds(monkeypatch, {"avx512f", "avx512_bf16", "avx512_fp16"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam.attribute(x, target=text, topk=2, precision="bf16")
        cam.attribute(x, target=text, topk=2, precision="fp16")


def test_compiling_a_transformer_tower_warns(vit, monkeypatch):
    monkeypatch.setattr(tower_copies.torch, "compile", lambda module, **_kwargs: module)
    cam = GScoreCAM(vit, default_layer(vit))
    with pytest.warns(UserWarning, match="torch.compile slows transformer towers"):
        cam.attribute(images_for(vit, 1), target=texts(1, 1), topk=2, precision="fp32-compiled")
    assert token_blocks(vit) is not None


def test_the_copies_report_their_memory(vit):
    cam = GScoreCAM(vit, default_layer(vit))
    sizes = {}
    for precision in ("fp32-fast", "bf16", "int8"):
        cam.attribute(images_for(vit, 1), target=texts(1, 1), topk=2, precision=precision)
        sizes[precision] = cam.reduced_tower.nbytes
    tensors = [*image_tower(vit).parameters(), *image_tower(vit).buffers()]
    assert sizes["fp32-fast"] == sum(t.numel() * t.element_size() for t in tensors)
    assert sizes["bf16"] < sizes["fp32-fast"]
    assert sizes["int8"] < sizes["fp32-fast"]
