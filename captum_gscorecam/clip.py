"""The CLIP adapter: a CLIP model as a per-example score, text encoding, layers and token grids.

This is the only module that knows how open_clip models are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CLIPSimilarity",
    "LayerGrid",
    "default_layer",
    "encode_text",
    "is_clip_model",
]


def is_clip_model(obj: object) -> bool:
    """True for anything CLIP-like: it has ``encode_image`` and a (log) ``logit_scale``."""
    return callable(getattr(obj, "encode_image", None)) and hasattr(obj, "logit_scale")


class CLIPSimilarity(nn.Module):
    r"""A CLIP model as a scalar score per example.

    ``forward(images, text_emb) = logit_scale.exp() * cos(encode_image(images), text_emb)``

    ``text_emb`` may be ``(D,)`` (one text for every image), ``(N, D)`` (one per image, the
    output is ``(N,)``) or ``(N, T, D)`` (T texts per image, the output is ``(N, T)``). The
    module can be passed to Captum's own methods, with the text embedding as
    ``additional_forward_args``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not is_clip_model(model):
            raise TypeError(
                "model: expected a CLIP model with `encode_image` and `logit_scale` "
                f"(e.g. open_clip's CLIP), got {type(model).__name__}"
            )
        self.model = model

    @property
    def logit_scale(self) -> Tensor:
        """The multiplier of the cosine, ``exp(model.logit_scale)``."""
        return self.model.logit_scale.exp()

    def embed_images(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings, ``(N, D)``."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    def forward(self, images: Tensor, text_emb: Tensor) -> Tensor:
        """``logit_scale * cos(encode_image(images), text_emb)``, ``(N,)`` or ``(N, T)``."""
        return self.score_embeddings(self.embed_images(images), text_emb)

    def score_embeddings(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        """``logit_scale * cos`` of normalised image embeddings ``(N, D)`` with text embeddings."""
        n, width = image_emb.shape
        if text_emb.shape[-1] != width:
            raise ValueError(
                f"target: text embedding width {text_emb.shape[-1]} does not match the "
                f"image embedding width {width}"
            )
        if text_emb.dim() > 1 and text_emb.shape[0] != n:
            raise ValueError(
                f"target: text embeddings for {text_emb.shape[0]} images, expected {n} "
                "(or one embedding of shape (D,) for all)"
            )
        text = F.normalize(text_emb.to(image_emb.dtype), dim=-1)
        if text.dim() == 3:
            cos = torch.einsum("nd,ntd->nt", image_emb, text)
        else:
            cos = (image_emb * text).sum(-1)
        return self.logit_scale.to(cos.dtype) * cos


def encode_text(
    model: nn.Module, tokenizer: Callable[[Sequence[str]], Tensor], prompts: Sequence[str]
) -> Tensor:
    """Encode prompts to L2-normalised text embeddings ``(T, D)`` on the model's device."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("prompts: expected at least one prompt")
    device = next(model.parameters()).device
    tokens = tokenizer(list(prompts)).to(device)
    with torch.no_grad():
        return F.normalize(model.encode_text(tokens).float(), dim=-1)


def default_layer(model: nn.Module) -> nn.Module:
    """The target layer gScoreCAM uses by default.

    ``visual.layer4`` for open_clip ResNet towers (the last convolutional stage), and
    ``visual.transformer.resblocks[-1]`` for open_clip ViT towers (the last block).
    """
    if isinstance(model, CLIPSimilarity):
        model = model.model
    visual = getattr(model, "visual", None)
    if visual is None:
        raise TypeError(
            f"model: expected a CLIP model with a `visual` tower, got {type(model).__name__}"
        )
    if hasattr(visual, "layer4"):
        return visual.layer4
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks) > 0:
        return blocks[-1]
    raise ValueError(
        f"model: no default layer for a {type(visual).__name__} image tower; pass the layer "
        "(a module whose output is (N, C, h, w) or tokens) explicitly"
    )


@dataclass(frozen=True)
class LayerGrid:
    """How a layer's output becomes a channel grid ``(N, C, h, w)`` and channel importances.

    Convolutional outputs ``(N, C, h, w)`` are used as they are, with
    ``alpha_c = mean_{h,w} G_c``. Token outputs ``(N, L, D)`` or ``(L, N, D)`` lose their
    ``prefix_tokens`` (class token first) and the rest is reshaped to the patch grid,
    channels = D. Their importance is the gradient at the class token when the tower pools
    that token, else the mean patch-token gradient; ``pools_class_token=None`` decides from
    the gradient itself (patch tokens with no gradient at all mean the class token is pooled).
    """

    batch_first: bool | None = None
    prefix_tokens: int = 1
    grid: tuple[int, int] | None = None
    pools_class_token: bool | None = None

    @classmethod
    def for_model(cls, model: nn.Module | None) -> LayerGrid:
        """The token layout of an open_clip ViT tower; a generic layout for anything else."""
        visual = getattr(model, "visual", None)
        transformer = getattr(visual, "transformer", None)
        if transformer is None:
            return cls()
        grid = getattr(visual, "grid_size", None)
        pool_type = getattr(visual, "pool_type", None)
        pools = None
        if pool_type is not None:
            pools = pool_type == "tok" and getattr(visual, "attn_pool", None) is None
        return cls(
            batch_first=getattr(transformer, "batch_first", None),
            prefix_tokens=1,
            grid=tuple(grid) if grid is not None else None,
            pools_class_token=pools,
        )

    def activations(self, output: Tensor, n: int) -> Tensor:
        """The layer output as ``(N, C, h, w)``."""
        if output.dim() == 4:
            return output
        patches = self._tokens(output, n)[:, self.prefix_tokens :]
        h, w = self._grid(patches.shape[1])
        return patches.transpose(1, 2).reshape(n, patches.shape[2], h, w)

    def importance(self, grad: Tensor, n: int) -> Tensor:
        """Channel importance ``alpha`` ``(N, C)`` from the gradient of the layer output."""
        if grad.dim() == 4:
            return grad.mean(dim=(2, 3))
        tokens = self._tokens(grad, n)
        patch_grad = tokens[:, self.prefix_tokens :]
        pools = self.pools_class_token
        if pools is None:
            pools = self.prefix_tokens > 0 and not bool(patch_grad.any())
        return tokens[:, 0] if pools else patch_grad.mean(dim=1)

    def _tokens(self, output: Tensor, n: int) -> Tensor:
        if output.dim() != 3:
            raise ValueError(
                "layer: expected its output to be (N, C, h, w) feature maps or (N, L, D) / "
                f"(L, N, D) tokens, got shape {tuple(output.shape)}"
            )
        batch_first = self.batch_first
        if batch_first is None:
            batch_first = output.shape[0] == n
        tokens = output if batch_first else output.transpose(0, 1)
        if tokens.shape[0] != n:
            raise ValueError(
                f"layer: token output of shape {tuple(output.shape)} has no batch dimension of {n}"
            )
        return tokens

    def _grid(self, n_patches: int) -> tuple[int, int]:
        if self.grid is not None:
            h, w = self.grid
            if h * w != n_patches:
                raise ValueError(
                    f"layer: {n_patches} patch tokens do not fill the model's {h} x {w} grid"
                )
            return h, w
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(
                f"layer: {n_patches} patch tokens (after {self.prefix_tokens} prefix token(s)) "
                "do not form a square grid; pass reshape_transform to map them to (N, C, h, w)"
            )
        return side, side


@dataclass(frozen=True)
class CustomGrid:
    """A user's ``reshape_transform`` (layer output -> ``(N, C, h, w)``), as in pytorch-grad-cam.

    Gradients go through the same transform, and ``alpha_c`` is their spatial mean.
    """

    reshape_transform: Callable[[Tensor], Tensor]

    def activations(self, output: Tensor, n: int) -> Tensor:
        return self._grid(output, n)

    def importance(self, grad: Tensor, n: int) -> Tensor:
        return self._grid(grad, n).mean(dim=(2, 3))

    def _grid(self, output: Tensor, n: int) -> Tensor:
        grid = self.reshape_transform(output)
        if not isinstance(grid, Tensor) or grid.dim() != 4 or grid.shape[0] != n:
            shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
            raise ValueError(
                f"reshape_transform: expected it to return a ({n}, C, h, w) tensor, got {shape}"
            )
        return grid


class TextScorer:
    """Scores images against the text embeddings of the input image they belong to.

    ``text`` is ``(N, T, D)``; a masked image of input n gets ``(T,)`` scores, one per prompt,
    from a single pass through the image tower.
    """

    def __init__(self, similarity: CLIPSimilarity, text: Tensor) -> None:
        self.similarity = similarity
        self.text = text

    def __call__(self, images: Tensor, image_index: Tensor) -> Tensor:
        return self.similarity(images, self.text[image_index])


def load_clip(
    name: str, pretrained: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Callable[..., Tensor], Callable[[Sequence[str]], Tensor]]:
    """``(model, preprocess, tokenizer)`` for a shipped shapes model or any open_clip model.

    ``name`` is ``shapes-rn`` / ``shapes-vit`` (bundled, offline) or an open_clip model name
    (e.g. ``RN50``, ``ViT-B-16``) with ``pretrained`` a tag (``openai``) or a checkpoint path.
    """
    if name.startswith("shapes-"):
        from captum_gscorecam.shapes import load_shapes_clip

        return load_shapes_clip(name.removeprefix("shapes-"), device=device)
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(
            f"model: unknown model {name!r}; expected shapes-rn, shapes-vit or an open_clip "
            "model name such as RN50 or ViT-B-16"
        )
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@contextmanager
def grid_tap(model: nn.Module, layer: nn.Module) -> Iterator[nn.Module]:
    """A module whose output is ``layer``'s output as a ``(N, C, h, w)`` grid, for Captum.

    Captum's layer methods read dim 1 as channels; ViT tokens have them last. For a ViT tower,
    inside the context, ``layer``'s tokens pass through an identity module on the patch grid
    (the values do not change), which Captum can hook. For other towers it is the layer itself.
    """
    grid = LayerGrid.for_model(model)
    if grid.grid is None:
        yield layer
        return
    tap = nn.Identity()

    def reroute(_module: nn.Module, _args: tuple[object, ...], output: Tensor) -> Tensor:
        batch_first = grid.batch_first is not False
        tokens = output if batch_first else output.transpose(0, 1)
        patches = tap(grid.activations(tokens, tokens.shape[0])).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens[:, : grid.prefix_tokens], patches], dim=1)
        return tokens if batch_first else tokens.transpose(0, 1)

    handle = layer.register_forward_hook(reroute)
    try:
        yield tap
    finally:
        handle.remove()
