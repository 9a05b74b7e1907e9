"""Builders the tests share: tiny open_clip models with random weights, random images and
prompt embeddings, and the paper's algorithm written naively (imported as ``tests.helpers``)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from captum_gscorecam import default_layer
from captum_gscorecam.towers import input_size

ROOT = Path(__file__).resolve().parents[1]  # the repository

TEXT_CFG = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)


def tiny_rn(seed: int = 0) -> open_clip.CLIP:
    """A ModifiedResNet CLIP at 64 px: layer4 is (N, 256, 2, 2); layer3 is (N, 128, 4, 4)."""
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, head_width=8, image_size=64)
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=TEXT_CFG).eval()


def tiny_vit(seed: int = 0, **vision_kwargs: object) -> open_clip.CLIP:
    """A ViT CLIP at 32 px, 8 px patches: a 4 x 4 grid of 32-wide tokens and the class token."""
    torch.manual_seed(seed)
    cfg = {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32}
    cfg.update(vision_kwargs)
    return open_clip.CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(**cfg), text_cfg=TEXT_CFG).eval()


# the shapes scenes the evaluation tests run on
EVAL_SIZE = 64
EVAL_SEEDS = (10_000_000, 10_000_001, 10_000_002)


def tiny_eval_vit(seed: int = 0) -> open_clip.CLIP:
    """A tiny ViT at the shapes scenes' size ``EVAL_SIZE``, 16 px patches: a 4 x 4 grid."""
    return tiny_vit(seed, image_size=EVAL_SIZE, patch_size=16)


def without_time(rows: list[dict]) -> list[dict]:
    """Result rows without their timings (``seconds``, ``cpu_seconds``), to compare two runs."""
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


def images_for(model: nn.Module, n: int, seed: int = 0) -> torch.Tensor:
    height, width = input_size(model)
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def texts(n: int, t: int, seed: int = 1, width: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, t, width, generator=g), dim=-1)


def reference_gscorecam(
    model: nn.Module, image: torch.Tensor, text: torch.Tensor, topk: int | None
) -> torch.Tensor:
    """The algorithm as the paper states it, one image and one prompt at a time, no batching.

    ``image`` (3, H, W), ``text`` (D,); returns (h, w).
    """
    layer = default_layer(model)
    scale = model.logit_scale.exp()

    def score(x: torch.Tensor) -> torch.Tensor:
        return scale * F.cosine_similarity(model.encode_image(x), text[None], dim=-1)

    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.update(out=out))
    try:
        x = image[None].clone().requires_grad_(True)
        s = score(x)[0]
    finally:
        handle.remove()
    out = store["out"]
    (grad,) = torch.autograd.grad(s, out)
    if out.dim() == 4:
        acts, alpha = out[0].detach(), grad[0].mean(dim=(1, 2))
    else:  # open_clip ViT, batch first, class token pooled: gradient at the class token
        side = int((out.shape[1] - 1) ** 0.5)
        acts = out[0, 1:].detach().T.reshape(-1, side, side)
        alpha = grad[0, 0]
    channels = range(acts.shape[0]) if topk is None else alpha.argsort(descending=True)[:topk]
    masked, maps = [], []
    with torch.no_grad():
        for c in channels:
            up = F.interpolate(acts[c][None, None], size=image.shape[1:], mode="bilinear")
            mask = (up - up.min()) / (up.max() - up.min() + 1e-6)
            masked.append(image[None] * mask)
            maps.append(acts[c])
        weights = torch.softmax(score(torch.cat(masked)), dim=0)  # one batch: the formula as is
        return F.relu((weights[:, None, None] * torch.stack(maps)).sum(0))


NO_CHROMIUM = (
    "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; "
    "then python -m pytest -m browser)"
)
NO_SELENIUM = "needs selenium: pip install -e '.[test]'"


def chromium() -> tuple[str | None, str | None]:
    """The paths of Chromium and of its chromedriver (``None`` where missing)."""
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )
    return browser, shutil.which("chromedriver")


def on_threads(
    explain: Callable[[int], torch.Tensor], jobs: int, threads: int = 4
) -> tuple[dict[int, torch.Tensor], list[BaseException]]:
    """``explain(i)`` for every job ``i < jobs``, spread over ``threads`` threads released
    together; returns the results by job and the exceptions the threads met."""
    start = threading.Barrier(threads)
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        start.wait()
        try:
            for i in range(worker, jobs, threads):
                results[i] = explain(i)
        except BaseException as error:  # reported by the caller; the traceback is lost
            errors.append(error)

    running = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return results, errors
