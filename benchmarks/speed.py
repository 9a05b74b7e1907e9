"""Speed and memory of gScoreCAM beside its peers and the bare cost of its forward passes.

Side by side in one process (timings) and one fresh process per case (peak memory):

- ours gScoreCAM (k = 10% of the channels) and ours ScoreCAM;
- pytorch-grad-cam's ScoreCAM (package ``grad-cam``) through the same similarity score;
- Captum's LayerGradCam through CLIPSimilarity (1 forward + 1 backward: the capture pass);
- the floor: k (or C) forward passes of the image tower in batches of perturbations_per_eval;
- the precision table: gScoreCAM and ScoreCAM end to end with float32 masked passes against a
  bfloat16 (or float16) copy of the image tower, side by side in one process, and the cost of
  making the copy;
- the attention table (ViT towers): HilaCAM, LeGrad, Grad-ECLIP and attention rollout, their
  forward passes and gradient calls per call as counted, and CPU seconds per image-prompt.

    python benchmarks/speed.py --models ViT-B-32 --tables attention \
        --out benchmarks/results/speed-attention-cpu.md

    python benchmarks/speed.py --out benchmarks/results/speed-cpu.md

Random weights: speed does not depend on them. Prints Markdown tables of wall time, peak memory
and ratios; ``--out`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import open_clip
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from report import emit, layer_channels
from torch import Tensor, nn

from captum_gscorecam import (
    AttentionRollout,
    CLIPSimilarity,
    GradECLIP,
    GScoreCAM,
    HilaCAM,
    LeGrad,
    ScoreCAM,
    default_layer,
)

CASES = ("floor_k", "floor_all", "gradcam", "gscorecam", "scorecam", "pgc_scorecam")
ATTENTION = {
    "HilaCAM": HilaCAM,
    "LeGrad": LeGrad,
    "Grad-ECLIP": GradECLIP,
    "Attention rollout": AttentionRollout,
}
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TextScore(nn.Module):
    """One text's score per image, the form pytorch-grad-cam expects (``model(batch)``)."""

    def __init__(self, similarity: CLIPSimilarity, text: Tensor) -> None:
        super().__init__()
        self.similarity = similarity
        self.text = text

    def forward(self, images: Tensor) -> Tensor:
        return self.similarity(images, self.text)


class Setup:
    """A random-weight open_clip model, one image and prompt texts on a device."""

    def __init__(self, name: str, size: int, device: str, ppe: int, prompts: int = 1) -> None:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None, force_image_size=size)
        self.model = model.to(device).eval().requires_grad_(False)
        self.layer = default_layer(self.model)
        self.similarity = CLIPSimilarity(self.model)
        self.image = torch.randn(1, 3, size, size, device=device)
        width = self.model.text_projection.shape[1]
        g = torch.Generator().manual_seed(1)
        self.texts = F.normalize(torch.randn(prompts, width, generator=g), dim=-1).to(device)
        self.ppe = ppe
        self.device = device
        self.channels = layer_channels(self.model, self.layer, self.image)
        self.k = math.ceil(0.1 * self.channels)

    def run(
        self, case: str, prompts: int = 1, precision: str | None = None, cam: object = None
    ) -> None:
        """One run of ``case``; ``cam`` reuses a GScoreCAM / ScoreCAM object (and so its
        reduced-precision tower copy)."""
        text = self.texts[:prompts]
        target = text[None] if prompts > 1 else text[0]
        if case == "gscorecam":
            (cam or GScoreCAM(self.model, self.layer)).attribute(
                self.image, target=target, topk=0.1, perturbations_per_eval=self.ppe,
                precision=precision,
            )  # fmt: skip
        elif case == "scorecam":
            (cam or ScoreCAM(self.model, self.layer)).attribute(
                self.image, target=target, perturbations_per_eval=self.ppe, precision=precision
            )
        elif case == "gradcam":
            LayerGradCam(self.similarity, self.layer).attribute(
                self.image, additional_forward_args=(text[0],)
            )
        elif case in ("floor_k", "floor_all"):
            self.floor(self.k if case == "floor_k" else self.channels)
        elif case == "pgc_scorecam":
            self.pytorch_grad_cam(text[0])
        else:
            raise ValueError(f"case: unknown {case!r}; expected one of {CASES}")
        if self.device == "cuda":
            torch.cuda.synchronize()

    def floor(self, n_images: int) -> None:
        """``n_images`` forward passes of the image tower, ``ppe`` at a time, entered as the
        masked passes enter it (``CLIPSimilarity.embed_images``: channels-last on CPU)."""
        with torch.inference_mode():
            for start in range(0, n_images, self.ppe):
                b = min(self.ppe, n_images - start)
                self.similarity.embed_images(self.image.expand(b, -1, -1, -1) * 0.5)

    def pytorch_grad_cam(self, text: Tensor) -> None:
        from pytorch_grad_cam import ScoreCAM as PGCScoreCAM

        reshape = None
        if not hasattr(self.model.visual, "layer4"):
            side = math.isqrt(self.model.visual.grid_size[0] * self.model.visual.grid_size[1])

            def reshape(tokens: Tensor) -> Tensor:
                return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

        cam = PGCScoreCAM(TextScore(self.similarity, text), [self.layer], reshape_transform=reshape)
        cam.batch_size = self.ppe
        try:
            cam(self.image, targets=[lambda score: score])
        finally:
            cam.activations_and_grads.release()


def timed(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``repeats`` runs, after one warm-up run when repeats > 1."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh_process(
    args: argparse.Namespace, model: str, case: str, precision: str | None = None
) -> dict[str, float]:
    """Peak extra memory (MiB, beyond the loaded model) and wall time of one case, run once in
    a fresh process (with ``precision``, the tower copy included)."""
    cmd = [
        sys.executable,
        __file__,
        "--memory-case",
        case,
        "--models",
        model,
        "--size",
        str(args.size),
        "--device",
        args.device,
        "--ppe",
        str(args.ppe),
        *(["--memory-precision", precision] if precision else []),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_case(args: argparse.Namespace) -> None:
    setup = Setup(args.models, args.size, args.device, args.ppe)
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        setup.run(args.memory_case, precision=args.memory_precision)
        seconds = time.perf_counter() - start
        extra = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as refs:  # reset the peak (VmHWM) to now
            refs.write("5")
        start = time.perf_counter()
        setup.run(args.memory_case, precision=args.memory_precision)
        seconds = time.perf_counter() - start
        extra = _rss_kib("VmHWM") * 1024 - base
    print(json.dumps({"case": args.memory_case, "extra_mib": extra / 2**20, "seconds": seconds}))


def methods_table(args: argparse.Namespace, name: str) -> list[str]:
    setup = Setup(name, args.size, args.device, args.ppe)
    cases = [c for c in CASES if not (args.skip_peers and c == "pgc_scorecam")]
    seconds, memory = {}, {}
    for case in cases:
        fresh = fresh_process(args, name, case)
        memory[case] = fresh["extra_mib"]
        # the cases over all channels run minutes: their one run in the fresh process is timed;
        # the short ones are timed here, side by side, as the median of repeats
        heavy = case in ("scorecam", "pgc_scorecam", "floor_all")
        seconds[case] = (
            fresh["seconds"] if heavy else timed(lambda c=case: setup.run(c), args.repeats)
        )
        print(f"  {name} {case}: {seconds[case]:.2f} s, {memory[case]:.0f} MiB", file=sys.stderr)
    floor_g = seconds["floor_k"] + seconds["gradcam"]
    rows = [
        f"### {name} at {args.size} px, 1 image, C = {setup.channels}, k = {setup.k}, "
        f"perturbations_per_eval = {args.ppe}",
        "",
        "| case | wall time (s) | peak extra memory (MiB) |",
        "|---|---:|---:|",
    ]
    labels = {
        "floor_k": f"floor: {setup.k} forwards",
        "floor_all": f"floor: {setup.channels} forwards",
        "gradcam": "Captum LayerGradCam (1 fwd + 1 bwd)",
        "gscorecam": "ours gScoreCAM (k = 10%)",
        "scorecam": "ours ScoreCAM",
        "pgc_scorecam": "pytorch-grad-cam ScoreCAM",
    }
    rows += [f"| {labels[c]} | {seconds[c]:.2f} | {memory[c]:.0f} |" for c in cases]
    rows += [
        "",
        f"- ours gScoreCAM / floor (k forwards + capture pass): "
        f"{seconds['gscorecam'] / floor_g:.3f}",
        f"- ours ScoreCAM / floor (C forwards): {seconds['scorecam'] / seconds['floor_all']:.3f}",
        f"- ours ScoreCAM / ours gScoreCAM: {seconds['scorecam'] / seconds['gscorecam']:.1f}",
    ]
    if "pgc_scorecam" in seconds:
        rows.append(
            f"- pytorch-grad-cam ScoreCAM / ours ScoreCAM: "
            f"{seconds['pgc_scorecam'] / seconds['scorecam']:.2f} (time), "
            f"{memory['pgc_scorecam'] / max(memory['scorecam'], 1):.1f} (memory)"
        )
    return [*rows, ""]


def prompts_table(args: argparse.Namespace, name: str) -> list[str]:
    setup = Setup(name, args.size, args.device, args.ppe, prompts=max(args.prompts))
    one = timed(lambda: setup.run("gscorecam", prompts=1), args.repeats)
    rows = [
        f"### {name}: T prompts for one image (gScoreCAM, k = 10%, random text directions)",
        "",
        "| T | one call (s) | T separate calls (s, T x one call) | one call / 1 prompt |",
        "|---:|---:|---:|---:|",
    ]
    for t in args.prompts:
        together = one if t == 1 else timed(lambda t=t: setup.run("gscorecam", prompts=t), 1)
        rows.append(f"| {t} | {together:.2f} | {t * one:.2f} | {together / one:.2f} |")
    return [*rows, ""]


def sweep_table(args: argparse.Namespace, name: str) -> list[str]:
    rows = [
        f"### {name}: perturbations_per_eval sweep (gScoreCAM, k = 10%)",
        "",
        "| perturbations_per_eval | wall time (s) | peak extra memory (MiB) |",
        "|---:|---:|---:|",
    ]
    for ppe in args.sweep:
        setup = Setup(name, args.size, args.device, ppe)
        seconds = timed(lambda setup=setup: setup.run("gscorecam"), args.repeats)
        sub = argparse.Namespace(**{**vars(args), "ppe": ppe})
        memory = fresh_process(sub, name, "gscorecam")["extra_mib"]
        rows.append(f"| {ppe} | {seconds:.2f} | {memory:.0f} |")
    return [*rows, ""]


def precision_table(args: argparse.Namespace, name: str) -> list[str]:
    """fp32 against a reduced-precision tower copy, end to end, interleaved in one process.

    Timed as CPU time of the process (one thread), which a busy machine does not inflate, and
    as wall time beside it.
    """
    setup = Setup(name, args.size, args.device, args.ppe)
    reduced = args.precision
    cams = {
        (case, precision): (GScoreCAM if case == "gscorecam" else ScoreCAM)(
            setup.model, setup.layer
        )
        for case in ("gscorecam", "scorecam")
        for precision in (None, reduced)
    }

    def run(case: str, precision: str | None) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        setup.run(case, precision=precision, cam=cams.get((case, precision)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"  {name} {case} {precision}: {cpu:.2f} s CPU, {wall:.2f} s", file=sys.stderr)
        return cpu, wall

    first = run("gscorecam", reduced)  # the first reduced call makes the copy
    copy = cams["gscorecam", reduced].reduced_tower
    times: dict[tuple[str, str | None], list[tuple[float, float]]] = {}
    plan = [("gscorecam", None), ("gscorecam", reduced)] * args.repeats
    plan += [("scorecam", None), ("scorecam", reduced)]
    for case, precision in plan:
        times.setdefault((case, precision), []).append(run(case, precision))
    cpu = {key: statistics.median(t[0] for t in value) for key, value in times.items()}
    wall = {key: statistics.median(t[1] for t in value) for key, value in times.items()}
    memory = {
        precision: fresh_process(args, name, "gscorecam", precision)["extra_mib"]
        for precision in (None, reduced)
    }

    def row(
        label: str,
        fp32: tuple[str, None],
        other: tuple[str, str],
        seconds: tuple[float, float] | None = None,
    ) -> str:
        base, value = cpu[fp32], cpu[other] if seconds is None else seconds[0]
        walls = wall[fp32], wall[other] if seconds is None else seconds[1]
        return (
            f"| {label} | {base:.2f} | {value:.2f} | **{value / base:.3f}** | "
            f"{walls[0]:.1f} / {walls[1]:.1f} ({walls[1] / walls[0]:.2f}) |"
        )

    gscorecam = ("gscorecam", None)
    return [
        f"### {name}: masked passes in fp32 against a {reduced} copy of the image tower "
        f"({args.size} px, 1 image, C = {setup.channels}, k = {setup.k}, "
        f"perturbations_per_eval = {args.ppe})",
        "",
        f"| case | fp32 CPU s | {reduced} CPU s | {reduced} / fp32 | wall s fp32 / "
        f"{reduced} (ratio) |",
        "|---|---:|---:|---:|---:|",
        row(f"gScoreCAM (k = 10%), median of {args.repeats}", gscorecam, ("gscorecam", reduced)),
        row("gScoreCAM, first call (makes the copy)", gscorecam, ("gscorecam", reduced), first),
        row(
            f"ScoreCAM (the {reduced} run makes its copy)",
            ("scorecam", None),
            ("scorecam", reduced),
        ),
        "",
        f"- the {reduced} copy of the image tower: {copy.nbytes / 2**20:.1f} MiB, made in "
        f"{copy.build_seconds:.2f} s (once per attribution object; later calls reuse it)",
        f"- gScoreCAM peak extra memory (fresh process, the copy included): fp32 "
        f"{memory[None]:.0f} MiB, {reduced} {memory[reduced]:.0f} MiB",
        "",
    ]


@contextmanager
def counted_passes(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts, inside the context, the image tower's forward passes and the gradient calls
    (``torch.autograd.grad``, each one backward through part of the graph)."""
    counts = {"forward": 0, "grad": 0}
    handle = model.visual.register_forward_hook(
        lambda *_: counts.__setitem__("forward", counts["forward"] + 1)
    )
    original = torch.autograd.grad

    def grad(*args: object, **kwargs: object) -> object:
        counts["grad"] += 1
        return original(*args, **kwargs)

    torch.autograd.grad = grad
    try:
        yield counts
    finally:
        torch.autograd.grad = original
        handle.remove()


def attention_table(args: argparse.Namespace, name: str) -> list[str]:
    """The attention methods on one image with 1 and T prompts: passes and CPU seconds.

    CPU time of the process (one thread: a busy machine does not inflate it), median of
    ``--repeats`` (after a warm-up when more than one); the counts come from one more,
    untimed call.
    """
    setup = Setup(name, args.size, args.device, args.ppe, prompts=max(args.prompts))
    blocks = len(setup.model.visual.transformer.resblocks)
    prompts = sorted({1, max(args.prompts)})
    rows = [
        f"### {name}: attention methods ({args.size} px, 1 image, {blocks} blocks, every block "
        "used)",
        "",
        "| method | prompts T | tower forwards | gradient calls | CPU s per call | "
        "CPU s per image-prompt |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, cls in ATTENTION.items():
        explainer = cls(setup.model)
        for t in prompts:
            target = setup.texts[:t][None]

            def call(explainer: object = explainer, target: Tensor = target) -> None:
                explainer.attribute(setup.image, target=target)

            cpu = timed_cpu(call, args.repeats)
            with counted_passes(setup.model) as counts:
                call()
            print(f"  {name} {label} T={t}: {cpu:.3f} s CPU", file=sys.stderr)
            rows.append(
                f"| {label} | {t} | {counts['forward']} | {counts['grad']} | {cpu:.3f} | "
                f"{cpu / t:.3f} |"
            )
    rows += [
        "",
        "- a gradient call is one `torch.autograd.grad`: HilaCAM's runs back through every "
        "block, LeGrad's (one per block and prompt) through one block and the head, "
        "Grad-ECLIP's through the last attention and the head; rollout has none",
        "",
    ]
    return rows


def timed_cpu(fn: Callable[[], None], repeats: int) -> float:
    """Median CPU time of the process over ``repeats`` runs, after one warm-up run when
    repeats > 1."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="RN50,ViT-B-32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ppe", type=int, default=64, help="perturbations_per_eval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sweep", type=int, nargs="+", default=[8, 32, 64, 128])
    parser.add_argument("--skip-peers", action="store_true", help="no pytorch-grad-cam")
    parser.add_argument("--tables", default="methods,prompts,sweep,precision",
                        help="of methods, prompts, sweep, precision, attention (ViTs)")  # fmt: skip
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"],
                        help="the reduced precision of the precision table")  # fmt: skip
    parser.add_argument("--out", default=None)
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-precision", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        memory_case(args)
        return
    tables = {
        "methods": methods_table,
        "prompts": prompts_table,
        "sweep": sweep_table,
        "precision": precision_table,
        "attention": attention_table,
    }
    lines = [
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        "",
    ]
    for name in args.models.split(","):
        for table in args.tables.split(","):
            lines += tables[table](args, name)
    text = "\n".join(lines)
    emit(text, args.out)


if __name__ == "__main__":
    main()
