"""The two small CLIP models of the shapes world: configs, loading, and zero-shot retrieval."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from PIL import Image
from torch import nn

from captum_gscorecam.shapes.scenes import DEFAULT_SIZE, all_prompts, render_scene, to_tensor

TOWERS: tuple[str, ...] = ("rn", "vit")
CONTEXT_LENGTH = 16
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"

Preprocess = Callable[[Image.Image | np.ndarray], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]

# Both towers see DEFAULT_SIZE (224) pixels and end on a 7 x 7 grid: ModifiedResNet's layer4
# downsamples 32x, and the ViT's patch embedding has stride 32. A ViT whose patch embedding is
# the usual linear patchify learned colours but guessed shapes at chance after 40 minutes on a
# CPU core (held-out recall 0.35), so the shapes ViT patchifies with a small convolutional stem
# (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021); its
# transformer, class token and pooling are open_clip's own.
_VISION_CFGS: dict[str, dict[str, Any]] = {
    "rn": {"layers": (1, 1, 1, 1), "width": 8, "head_width": 32, "image_size": DEFAULT_SIZE},
    "vit": {
        "layers": 4,
        "width": 128,
        "head_width": 32,
        "patch_size": 32,
        "image_size": DEFAULT_SIZE,
        "conv_stem": (16, 32, 64, 128),
    },
}
_TEXT_CFG: dict[str, Any] = {
    "context_length": CONTEXT_LENGTH,
    "vocab_size": 49408,
    "width": 64,
    "heads": 4,
    "layers": 2,
}
_EMBED_DIM = 128
_EVAL_BATCH = 32


def _check_tower(tower: str) -> None:
    if tower not in TOWERS:
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")


def model_config(tower: str) -> dict[str, Any]:
    """The constructor arguments of the ``shapes-{tower}`` CLIP, as plain data."""
    _check_tower(tower)
    return {
        "embed_dim": _EMBED_DIM,
        "vision_cfg": dict(_VISION_CFGS[tower]),
        "text_cfg": dict(_TEXT_CFG),
    }


def build_model(config: dict[str, Any]) -> open_clip.CLIP:
    """An open_clip ``CLIP`` with random weights from a ``model_config`` dict.

    A ``conv_stem`` entry of the vision config (channel widths) replaces the ViT's patchify
    convolution by a convolutional stem of the same stride (see :func:`conv_stem`).
    """
    vision = dict(config["vision_cfg"])
    stem = vision.pop("conv_stem", None)
    model = open_clip.CLIP(
        config["embed_dim"],
        vision_cfg=CLIPVisionCfg(**vision),
        text_cfg=CLIPTextCfg(**config["text_cfg"]),
    )
    if stem is not None:
        model.visual.conv1 = conv_stem(stem, vision["width"], vision["patch_size"])
    return model


def conv_stem(channels: Sequence[int], width: int, patch_size: int) -> nn.Sequential:
    """3 x 3 stride-2 convolutions (BatchNorm, ReLU) through ``channels``, then a
    ``patch_size / 2**len(channels)`` patchify convolution to ``width``: overall stride
    ``patch_size``, so tokens keep the ViT's grid.
    """
    last = patch_size // 2 ** len(channels)
    if last < 1 or last * 2 ** len(channels) != patch_size:
        raise ValueError(
            f"conv_stem: {len(channels)} stride-2 convolutions do not divide patch {patch_size}"
        )
    layers: list[nn.Module] = []
    inputs = 3
    for out in channels:
        layers += [
            nn.Conv2d(inputs, out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        ]
        inputs = out
    layers.append(nn.Conv2d(inputs, width, last, stride=last, bias=False))
    return nn.Sequential(*layers)


def checkpoint_path(tower: str) -> Path:
    """Where the shipped ``shapes-{tower}`` checkpoint lives."""
    _check_tower(tower)
    return CHECKPOINT_DIR / f"shapes-{tower}.pt"


def make_tokenizer() -> Tokenizer:
    """open_clip's BPE tokenizer with the shapes models' 16-token context."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT_LENGTH)


def normalize(images: torch.Tensor, mean: Iterable[float], std: Iterable[float]) -> torch.Tensor:
    """CLIP normalisation of (..., 3, H, W) images in [0, 1]."""
    mean_t = torch.tensor(list(mean), dtype=images.dtype, device=images.device)[:, None, None]
    std_t = torch.tensor(list(std), dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean_t) / std_t


def make_preprocess(
    size: int,
    mean: Iterable[float] = open_clip.OPENAI_DATASET_MEAN,
    std: Iterable[float] = open_clip.OPENAI_DATASET_STD,
) -> Preprocess:
    """A torchvision ``Compose`` mapping a PIL image or (H, W, 3) uint8 array to a normalised
    (3, S, S) tensor.

    Images of another size are resized to S x S with bicubic interpolation (no crop), a step
    ``visualization.to_photo`` can undo.
    """
    from torchvision import transforms

    resize = transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC)
    return transforms.Compose([_rgb_image, resize, _Normalized(tuple(mean), tuple(std))])


def _rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


class _Normalized:
    """A PIL image to a CLIP-normalised (3, H, W) tensor."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(np.array(image)), self.mean, self.std)


def load_shapes_clip(
    tower: str = "rn", device: str | torch.device = "cpu"
) -> tuple[open_clip.CLIP, Preprocess, Tokenizer]:
    """Load a shipped shapes-world CLIP, like ``open_clip.create_model_and_transforms``.

    Args:
        tower: "rn" for the ModifiedResNet image tower, "vit" for the ViT.
        device: Device of the returned model.

    Returns:
        The float32 model in eval mode, its image preprocess, and its tokenizer.
    """
    _check_tower(tower)
    checkpoint = torch.load(checkpoint_path(tower), map_location="cpu", weights_only=True)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    model = model.float().to(device).eval()
    preprocess = make_preprocess(checkpoint["image_size"], checkpoint["mean"], checkpoint["std"])
    return model, preprocess, make_tokenizer()


@torch.no_grad()
def zero_shot_recall(
    model: open_clip.CLIP,
    tokenizer: Tokenizer,
    preprocess: Preprocess,
    seeds: Iterable[int],
    n_objects: int = 3,
) -> float:
    """Fraction of present objects whose prompt ranks among the top ``n_objects`` of all prompts.

    Each seed renders a scene with ``n_objects`` objects; every (colour, shape) prompt is scored
    by cosine similarity with the image.
    """
    device = next(model.parameters()).device
    prompts = all_prompts()
    text = model.encode_text(tokenizer(prompts).to(device), normalize=True)
    scenes = [render_scene(seed, n_objects) for seed in seeds]
    found = 0
    for start in range(0, len(scenes), _EVAL_BATCH):
        chunk = scenes[start : start + _EVAL_BATCH]
        images = torch.stack([preprocess(scene.image) for scene in chunk]).to(device)
        scores = model.encode_image(images, normalize=True) @ text.T
        for scene, top in zip(chunk, scores.topk(n_objects, dim=1).indices.tolist(), strict=True):
            found += len({prompts[i] for i in top} & set(scene.captions))
    return found / (n_objects * len(scenes))
