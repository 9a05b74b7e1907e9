"""The CLIP adapter: a CLIP model as a per-example score, text encoding, layers and token grids.

This is the only module that knows how CLIP models are built: open_clip's (ModifiedResNet,
VisionTransformer and timm towers) and Hugging Face ``transformers``' (CLIPModel, SiglipModel).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gscorecam.checks import describe

__all__ = [
    "CLIPSimilarity",
    "ImageInput",
    "LayerGrid",
    "ZeroShotClassifier",
    "default_layer",
    "encode_text",
    "gradcam_layer",
    "grid_tap",
    "image_features",
    "image_input",
    "is_clip_model",
    "model_images",
    "token_blocks",
]


def is_clip_model(obj: object) -> bool:
    """True for anything CLIP-like: a (log) ``logit_scale`` and an image encoder, open_clip's
    ``encode_image`` or Hugging Face's ``get_image_features``.
    """
    encoder = getattr(obj, "encode_image", None) or getattr(obj, "get_image_features", None)
    return callable(encoder) and hasattr(obj, "logit_scale")


def image_features(model: nn.Module, images: Tensor) -> Tensor:
    """The (unnormalised) image embeddings ``(N, D)`` of an open_clip or Hugging Face model."""
    encode = getattr(model, "encode_image", None)
    if callable(encode):
        return encode(images)
    return _pooled(model.get_image_features(pixel_values=images), "image")


@dataclass(frozen=True)
class ImageInput:
    """What a CLIP image tower takes: ``channels`` x ``size`` images of ``dtype`` on ``device``.

    A field is None where the model does not say (``size``: the tower takes any size, with
    sides of at least ``min_side`` pixels when that is known).
    """

    channels: int | None
    size: tuple[int, int] | None
    dtype: torch.dtype | None
    device: torch.device | None
    min_side: int | None = None


def image_input(model: nn.Module) -> ImageInput:
    """The images a CLIP model's tower takes (a :class:`CLIPSimilarity` is unwrapped).

    open_clip ResNet and ViT towers need exactly ``visual.image_size`` (their positional
    embeddings fix the grid); a timm ViT trunk needs its ``patch_embed.img_size`` unless built
    with ``dynamic_img_size``, other timm trunks take any size down to their total stride
    (``min_side``); Hugging Face towers need
    ``config.image_size``. The dtype and device are those of the tower's first parameter.
    Other CLIP-like models (``encode_image`` and ``logit_scale`` only) leave what they cannot
    say None.
    """
    if isinstance(model, CLIPSimilarity):
        model = model.model
    if not is_clip_model(model):
        raise TypeError(
            f"model: expected a CLIP model (open_clip or Hugging Face), got {type(model).__name__}"
        )
    visual = getattr(model, "visual", None)
    vision_model = getattr(model, "vision_model", None)
    tower = next((m for m in (visual, vision_model, model) if isinstance(m, nn.Module)), None)
    first = next(tower.parameters(), None) if tower is not None else None
    channels, size, min_side = None, None, None
    config = getattr(vision_model, "config", None)
    trunk = getattr(visual, "trunk", None)
    if isinstance(visual, nn.Module) and trunk is None:
        channels = getattr(getattr(visual, "conv1", None), "in_channels", 3)
        size = getattr(visual, "image_size", None)
    elif _is_timm_vit(trunk) and not getattr(trunk, "dynamic_img_size", False):
        channels = getattr(getattr(trunk.patch_embed, "proj", None), "in_channels", 3)
        size = getattr(trunk.patch_embed, "img_size", None)
    elif trunk is not None:  # a timm CNN: any size down to its total stride
        channels = 3
        info = getattr(trunk, "feature_info", None)
        last = info[-1] if isinstance(info, list) and info else {}
        min_side = last.get("reduction") if isinstance(last, dict) else None
    elif config is not None:
        channels = getattr(config, "num_channels", 3)
        size = getattr(config, "image_size", None)
    return ImageInput(
        channels=int(channels) if channels is not None else None,
        size=_pair(size) if size is not None else None,
        dtype=first.dtype if first is not None else None,
        device=first.device if first is not None else None,
        min_side=int(min_side) if min_side else None,
    )


def _pooled(features: Any, tower: str) -> Tensor:
    """A ``get_*_features`` result as a tensor: transformers 5 returns an output object with
    the projected embedding as ``pooler_output``; older versions return the tensor.
    """
    if not isinstance(features, Tensor):
        features = getattr(features, "pooler_output", None)
    if not isinstance(features, Tensor):
        raise ValueError(
            f"model: its {tower} tower returned no pooled embedding (a SigLIP vision tower "
            "without its attention-pooling head has none)"
        )
    return features


class CLIPSimilarity(nn.Module):
    r"""A CLIP model as a scalar score per example.

    ``forward(images, text_emb) = logit_scale.exp() * cos(encode_image(images), text_emb)``

    ``model`` is open_clip's CLIP or a Hugging Face ``CLIPModel`` / ``SiglipModel`` (image
    embeddings from ``get_image_features``). SigLIP's ``logit_bias`` is left out: a constant
    added to every score changes no map, so the score is ``logit_scale * cos`` for all models.

    ``text_emb`` may be ``(D,)`` (one text for every image), ``(N, D)`` (one per image, the
    output is ``(N,)``) or ``(N, T, D)`` (T texts per image, the output is ``(N, T)``). The
    module can be passed to Captum's own methods, with the text embedding as
    ``additional_forward_args``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not is_clip_model(model):
            raise TypeError(
                "model: expected a CLIP model with `logit_scale` and `encode_image` or "
                "`get_image_features` (open_clip's CLIP, transformers' CLIPModel or SiglipModel), "
                f"got {type(model).__name__}"
            )
        self.model = model

    @property
    def logit_scale(self) -> Tensor:
        """The multiplier of the cosine, ``exp(model.logit_scale)``."""
        return self.model.logit_scale.exp().reshape(())

    def embed_images(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings, ``(N, D)``.

        On CPU the images enter the tower channels-last: same values up to float rounding,
        and about 0.75x the time of an RN50's forward pass (no change for ViTs; README). Not
        when the images need a gradient: it would come back channels-last, whose strides
        break Captum's ``.view`` calls (``sensitivity_max``).
        """
        needs_grad = images.requires_grad and torch.is_grad_enabled()
        if images.device.type == "cpu" and images.dim() == 4 and not needs_grad:
            images = images.contiguous(memory_format=torch.channels_last)
        return F.normalize(image_features(self.model, images).float(), dim=-1)

    def forward(self, images: Tensor, text_emb: Tensor) -> Tensor:
        """``logit_scale * cos(encode_image(images), text_emb)``, ``(N,)`` or ``(N, T)``.

        ``images`` are checked against :func:`image_input` and converted to the model's
        dtype and device.
        """
        return self.score_embeddings(self.embed_images(model_images(self.model, images)), text_emb)

    def score_embeddings(
        self, image_emb: Tensor, text_emb: Tensor, name: str = "text_emb"
    ) -> Tensor:
        """``logit_scale * cos`` of normalised image embeddings ``(N, D)`` with text embeddings
        (the argument ``name`` in error messages).
        """
        n, width = image_emb.shape
        if not (isinstance(text_emb, Tensor) and text_emb.is_floating_point()):
            raise TypeError(f"{name}: expected a float tensor, got {describe(text_emb)}")
        if text_emb.dim() not in (1, 2, 3):
            raise ValueError(
                f"{name}: expected text embeddings (D,), (N, D) or (N, T, D), "
                f"got shape {tuple(text_emb.shape)}"
            )
        if text_emb.shape[-1] != width:
            raise ValueError(
                f"{name}: text embedding width {text_emb.shape[-1]} does not match the "
                f"image embedding width {width}"
            )
        if text_emb.dim() > 1 and text_emb.shape[0] != n:
            raise ValueError(
                f"{name}: text embeddings for {text_emb.shape[0]} images, expected {n} "
                "(or one embedding of shape (D,) for all)"
            )
        text = F.normalize(text_emb.to(image_emb.device, image_emb.dtype), dim=-1)
        if text.dim() == 3:
            cos = torch.einsum("nd,ntd->nt", image_emb, text)
        else:
            cos = (image_emb * text).sum(-1)
        return self.logit_scale.to(cos.dtype) * cos


def model_images(model: nn.Module, images: Tensor, name: str = "images") -> Tensor:
    """``images`` checked against what the tower takes (:func:`image_input`; errors name the
    argument ``name``) and converted to its dtype and device.
    """
    if not (isinstance(images, Tensor) and images.dim() == 4 and images.is_floating_point()):
        raise ValueError(
            f"{name}: expected a 4-D float tensor (N, 3, H, W), got {describe(images)}"
        )
    spec = image_input(model)
    height, width = images.shape[2:]
    if spec.channels is not None and images.shape[1] != spec.channels:
        raise ValueError(
            f"{name}: the model takes {spec.channels}-channel images (N, {spec.channels}, "
            f"H, W), got shape {tuple(images.shape)}"
        )
    if spec.size is not None and (height, width) != spec.size:
        raise ValueError(
            f"{name}: the model takes {spec.size[0]} x {spec.size[1]} images (its "
            f"preprocess resizes to that), got {height} x {width}"
        )
    if spec.min_side is not None and min(height, width) < spec.min_side:
        raise ValueError(
            f"{name}: the model takes images of at least {spec.min_side} x {spec.min_side} "
            f"pixels, got {height} x {width}"
        )
    return images.to(spec.device or images.device, spec.dtype or images.dtype)


def encode_text(model: nn.Module, tokenizer: Callable[..., Any], prompts: Sequence[str]) -> Tensor:
    """Encode prompts to L2-normalised text embeddings ``(T, D)`` on the model's device.

    For open_clip models ``tokenizer`` is open_clip's (prompts -> token tensor). For Hugging
    Face models it is the model's tokenizer or processor, called with ``text=prompts``,
    padding (to the maximum length for SigLIP, as it was trained) and truncation; the mapping
    it returns is passed to ``get_text_features``.
    """
    if not is_clip_model(model):
        raise TypeError(
            f"model: expected a CLIP model (open_clip or Hugging Face), got {type(model).__name__}"
        )
    if not (callable(getattr(model, "encode_text", None)) or hasattr(model, "get_text_features")):
        raise TypeError(f"model: {type(model).__name__} has no text tower to encode prompts with")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer: expected a callable, got {type(tokenizer).__name__}")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not (isinstance(prompts, Sequence) and all(isinstance(p, str) for p in prompts)):
        raise TypeError(
            f"prompts: expected a string or a sequence of strings, got {describe(prompts)}"
        )
    if len(prompts) == 0:
        raise ValueError("prompts: expected at least one prompt")
    device = next(model.parameters()).device
    with torch.no_grad():
        if callable(getattr(model, "encode_text", None)):
            tokens = tokenizer(list(prompts))
            if not (
                isinstance(tokens, Tensor) and tokens.dim() == 2 and not tokens.is_floating_point()
            ):
                raise TypeError(
                    "tokenizer: expected the model's tokenizer, which returns token ids "
                    f"(T, length), got {describe(tokens)}"
                )
            features = model.encode_text(tokens.to(device))
        else:
            features = _pooled(
                model.get_text_features(**_hf_tokens(model, tokenizer, prompts)), "text"
            )
        return F.normalize(features.float(), dim=-1)


def _hf_tokens(model: nn.Module, tokenizer: Callable[..., Any], prompts: Sequence[str]) -> dict:
    """The keyword arguments of ``get_text_features`` for prompts, on the model's device."""
    siglip = getattr(getattr(model, "config", None), "model_type", None) == "siglip"
    padding = "max_length" if siglip else True
    encoded = tokenizer(text=list(prompts), padding=padding, truncation=True, return_tensors="pt")
    if not isinstance(encoded, Mapping):
        raise TypeError(
            "tokenizer: a Hugging Face model needs its tokenizer or processor (which returns a "
            f"mapping such as input_ids and attention_mask), got {type(encoded).__name__}"
        )
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in encoded.items()}


def token_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential | None:
    """The transformer blocks of a ViT image tower in order; None for other towers.

    open_clip's ``visual.transformer.resblocks``, a timm ViT trunk's ``visual.trunk.blocks``
    and Hugging Face's ``vision_model.encoder.layers``.
    """
    if isinstance(model, CLIPSimilarity):
        model = model.model
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    encoder = getattr(getattr(model, "vision_model", None), "encoder", None)
    for blocks in (
        getattr(getattr(visual, "transformer", None), "resblocks", None),
        trunk.blocks if _is_timm_vit(trunk) else None,
        getattr(encoder, "layers", None),
    ):
        if isinstance(blocks, nn.ModuleList | nn.Sequential) and len(blocks) > 0:
            return blocks
    return None


def default_layer(model: nn.Module) -> nn.Module:
    """The target layer gScoreCAM uses by default: the last spatial layer of the image tower.

    ``visual.layer4`` for open_clip ResNet towers; the last block of a ViT tower (open_clip's
    ``visual.transformer.resblocks[-1]``, timm's ``visual.trunk.blocks[-1]``, Hugging Face's
    ``vision_model.encoder.layers[-1]``); for other timm towers (ConvNeXt and other CNNs with
    ``(N, C, h, w)`` features) the last stage timm lists in ``feature_info``, e.g.
    ``visual.trunk.stages[-1]``.
    """
    if isinstance(model, CLIPSimilarity):
        model = model.model
    visual = getattr(model, "visual", None)
    if visual is None and getattr(model, "vision_model", None) is None:
        raise TypeError(
            "model: expected a CLIP model with a `visual` tower (open_clip) or a `vision_model` "
            f"(Hugging Face), got {type(model).__name__}"
        )
    if hasattr(visual, "layer4"):
        return visual.layer4
    blocks = token_blocks(model)
    if blocks is not None:
        return blocks[-1]
    trunk = getattr(visual, "trunk", None)
    if isinstance(trunk, nn.Module):
        return _timm_feature_layer(trunk)
    tower = visual if visual is not None else model.vision_model
    raise ValueError(
        f"model: no default layer for a {type(tower).__name__} image tower; pass the layer "
        "(a module whose output is (N, C, h, w) or tokens) explicitly"
    )


def gradcam_layer(model: nn.Module) -> nn.Module:
    """The layer Captum's gradient methods (``LayerGradCam``, ...) should use on ``model``.

    On a ViT tower that pools its class token, the block before the last; elsewhere
    ``default_layer(model)``. Why: only the class token of the last block reaches the image
    embedding, so the gradient at that block's patch tokens is zero and a gradient-weighted map
    there is zero everywhere; one block earlier the patch tokens feed the last block's
    attention, so they get gradient. Towers that pool patch tokens (average or attention
    pooling) and CNNs keep their last layer. Wrap the layer with :func:`grid_tap` to give
    Captum ``(N, C, h, w)`` maps on a ViT.
    """
    blocks = token_blocks(model)
    pools_class_token = LayerGrid.for_model(_unwrapped(model)).pools_class_token is not False
    if blocks is not None and len(blocks) > 1 and pools_class_token:
        return blocks[-2]
    return default_layer(model)


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, CLIPSimilarity) else model


def _is_timm_vit(trunk: object) -> bool:
    return all(hasattr(trunk, name) for name in ("patch_embed", "blocks", "num_prefix_tokens"))


def _timm_feature_layer(trunk: nn.Module) -> nn.Module:
    """The last feature stage of a timm CNN trunk, which must give ``(N, C, h, w)`` maps."""
    name = type(trunk).__name__
    output_fmt = str(getattr(trunk, "output_fmt", "NCHW"))
    if output_fmt != "NCHW":
        raise ValueError(
            f"model: the timm {name} trunk gives {output_fmt} (channels-last) features; pass "
            "a layer and a reshape_transform to (N, C, h, w) explicitly"
        )
    info = getattr(trunk, "feature_info", None)
    last = info[-1] if isinstance(info, list) and info else {}
    module = last.get("module") if isinstance(last, dict) else None
    if not module:
        raise ValueError(
            f"model: no default layer for a timm {name} trunk (it lists no feature stages); "
            "pass the layer explicitly"
        )
    return trunk.get_submodule(module)


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
        """The token layout of a ViT image tower; a generic layout for anything else.

        open_clip's VisionTransformer (a class token, pooled unless ``pool_type`` is ``avg``
        or an attentional pooler is used), a timm ViT trunk (``num_prefix_tokens`` prefix
        tokens, possibly none, the first pooled only with ``global_pool='token'``) and Hugging
        Face's vision transformers (CLIP: a pooled class token; SigLIP: none, attention
        pooling), all batch first.
        """
        visual = getattr(model, "visual", None)
        transformer = getattr(visual, "transformer", None)
        trunk = getattr(visual, "trunk", None)
        vision_model = getattr(model, "vision_model", None)
        if transformer is not None:
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
        if _is_timm_vit(trunk):
            prefix = int(trunk.num_prefix_tokens)
            grid = getattr(trunk.patch_embed, "grid_size", None)
            dynamic = getattr(trunk, "dynamic_img_size", False)
            return cls(
                batch_first=True,
                prefix_tokens=prefix,
                grid=tuple(grid) if grid is not None and not dynamic else None,
                pools_class_token=prefix > 0 and getattr(trunk, "global_pool", None) == "token",
            )
        config = getattr(vision_model, "config", None)
        if hasattr(config, "image_size") and hasattr(config, "patch_size"):
            has_class_token = hasattr(getattr(vision_model, "embeddings", None), "class_embedding")
            height, width = _pair(config.image_size)
            patch_height, patch_width = _pair(config.patch_size)
            return cls(
                batch_first=True,
                prefix_tokens=int(has_class_token),
                grid=(height // patch_height, width // patch_width),
                pools_class_token=has_class_token,
            )
        return cls()

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


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


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


@contextmanager
def grid_tap(model: nn.Module, layer: nn.Module) -> Iterator[nn.Module]:
    """A module whose output is ``layer``'s output as a ``(N, C, h, w)`` grid, for Captum.

    Captum's layer methods read dim 1 as channels; ViT tokens have them last. For a ViT tower,
    inside the context, ``layer``'s tokens pass through an identity module on the patch grid
    (the values do not change), which Captum can hook. For other towers it is the layer itself.
    A layer returning a tuple (Hugging Face layers before transformers 5) has its first item
    rerouted.

    Examples::

        >>> with grid_tap(model, gradcam_layer(model)) as tap:
        ...     maps = LayerGradCam(CLIPSimilarity(model), tap).attribute(
        ...         images, additional_forward_args=(text,))  # (N, 1, h, w)
    """
    grid = LayerGrid.for_model(_unwrapped(model))
    if grid.grid is None:
        yield layer
        return
    tap = nn.Identity()

    def reroute_tokens(output: Tensor) -> Tensor:
        batch_first = grid.batch_first is not False
        tokens = output if batch_first else output.transpose(0, 1)
        patches = tap(grid.activations(tokens, tokens.shape[0])).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens[:, : grid.prefix_tokens], patches], dim=1)
        return tokens if batch_first else tokens.transpose(0, 1)

    def reroute(_module: nn.Module, _args: tuple[object, ...], output: object) -> object:
        if isinstance(output, tuple):
            return (reroute_tokens(output[0]), *output[1:])
        return reroute_tokens(output)

    handle = layer.register_forward_hook(reroute)
    try:
        yield tap
    finally:
        handle.remove()


class ZeroShotClassifier(nn.Module):
    r"""A CLIP model as a zero-shot classifier over K prompts: ``(N, K)`` logits.

    ``forward(images)[n, k] = logit_scale * cos(encode_image(images)[n], text_emb[k])``

    Integer targets pick a prompt, so the module works unchanged wherever a classifier is
    expected: our methods (``GScoreCAM(clf, layer).attribute(images, target=k)``), Captum's
    methods and metrics, Quantus, and pytorch-grad-cam with ``ClassifierOutputTarget(k)``.
    Prefer it to a text-embedding ``additional_forward_args`` inside Captum: Captum expands
    per-example arguments (IntegratedGradients' steps, perturbation batches), which a ``(D,)``
    embedding shared by all images does not survive unambiguously.

    Example::

        >>> clf = ZeroShotClassifier(model, encode_text(model, tokenizer, ["a dog", "a cat"]))
    """

    def __init__(self, model: nn.Module, text_emb: Tensor) -> None:
        r"""
        Args:

            model (torch.nn.Module): A CLIP model (open_clip's CLIP, transformers'
                        ``CLIPModel`` or ``SiglipModel``) or its :class:`CLIPSimilarity`.
            text_emb (Tensor): The prompts' text embeddings ``(K, D)``, K >= 1, e.g. from
                        :func:`encode_text`; ``(D,)`` is one prompt (K = 1). They are
                        normalised here and kept as a buffer (fixed, not trained).
        """
        super().__init__()
        similarity = model if isinstance(model, CLIPSimilarity) else CLIPSimilarity(model)
        if not isinstance(text_emb, Tensor) or not text_emb.is_floating_point():
            got = f"a {text_emb.dtype} tensor" if isinstance(text_emb, Tensor) else type(text_emb)
            raise TypeError(f"text_emb: expected a floating-point tensor (K, D), got {got}")
        if text_emb.dim() == 1:
            text_emb = text_emb[None]
        if text_emb.dim() != 2 or text_emb.shape[0] == 0 or text_emb.shape[1] == 0:
            raise ValueError(
                f"text_emb: expected K >= 1 text embeddings (K, D) or one (D,), "
                f"got shape {tuple(text_emb.shape)}"
            )
        if not bool(torch.isfinite(text_emb).all()):
            raise ValueError("text_emb: contains NaN or infinite values")
        if not bool((text_emb.norm(dim=-1) > 0).all()):
            raise ValueError("text_emb: an embedding of norm 0 has no direction to compare")
        self.similarity = similarity
        self.register_buffer("text_emb", F.normalize(text_emb.detach().float(), dim=-1))

    @property
    def model(self) -> nn.Module:
        """The CLIP model (its image tower holds the layers to explain)."""
        return self.similarity.model

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(N, K)``: ``logit_scale * cos(image embedding, text_emb[k])``."""
        image_emb = self.similarity.embed_images(images)
        if image_emb.shape[-1] != self.text_emb.shape[-1]:
            raise ValueError(
                f"text_emb: width {self.text_emb.shape[-1]} does not match the image "
                f"embedding width {image_emb.shape[-1]}"
            )
        text = self.text_emb.to(image_emb.device, image_emb.dtype)
        return self.similarity.logit_scale.to(image_emb.dtype) * image_emb @ text.T
