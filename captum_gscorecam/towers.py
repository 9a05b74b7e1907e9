"""The image towers of CLIP models: the one module that reads how a tower is built.

open_clip's towers (ModifiedResNet, VisionTransformer, timm trunks) and Hugging Face
``transformers``' vision models (CLIPModel, SiglipModel): the images a tower takes, its
transformer blocks and token layout, the default target layers, the module that maps images
to embeddings, and how a ViT tower pools its tokens into the embedding (what the attention
methods read). Every function takes the CLIP model or a wrapper that holds it as ``model``
(:class:`~captum_gscorecam.clip.CLIPSimilarity`,
:class:`~captum_gscorecam.clip.ZeroShotClassifier`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from captum_gscorecam.checks import check_not_meta, describe

__all__ = [
    "ImageInput",
    "Pooling",
    "TokenLayout",
    "ViTTower",
    "clip_model",
    "default_layer",
    "gradcam_layer",
    "image_input",
    "image_tower",
    "input_size",
    "is_clip_model",
    "token_blocks",
    "token_layout",
    "tower_images",
    "vit_tower",
]


def is_clip_model(obj: object) -> bool:
    """True for anything CLIP-like: a (log) ``logit_scale`` and an image encoder, open_clip's
    ``encode_image`` or Hugging Face's ``get_image_features``.

    Args:

        obj (object): Anything.
    """
    encoder = getattr(obj, "encode_image", None) or getattr(obj, "get_image_features", None)
    return callable(encoder) and hasattr(obj, "logit_scale")


def clip_model(model: object) -> object:
    """The CLIP model itself: ``model``, or the CLIP model that a wrapper holds as ``model``.

    Args:

        model (object): A CLIP model, or a wrapper such as
                    :class:`~captum_gscorecam.clip.CLIPSimilarity` or
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`.

    Returns:
        The wrapped CLIP model for a wrapper; ``model`` itself otherwise.
    """
    inner = getattr(model, "model", None)
    if not is_clip_model(model) and is_clip_model(inner):
        return inner
    return model


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
    """The images a CLIP model's tower takes.

    open_clip ResNet and ViT towers need exactly ``visual.image_size`` (their positional
    embeddings fix the grid); a timm ViT trunk needs its ``patch_embed.img_size`` unless built
    with ``dynamic_img_size``, other timm trunks take any size down to their total stride
    (``min_side``); Hugging Face towers need
    ``config.image_size``. The dtype and device are those of the tower's first parameter.
    Other CLIP-like models (``encode_image`` and ``logit_scale`` only) leave what they cannot
    say None.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        The tower's :class:`ImageInput`.
    """
    model = clip_model(model)
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


def input_size(model: nn.Module) -> tuple[int, int]:
    """The ``(height, width)`` of the images a CLIP model's tower takes (:func:`image_input`).

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        The input size its preprocess resizes to.

    Raises:
        ValueError: The tower takes images of any size (a timm CNN trunk), or does not say.
    """
    size = image_input(model).size
    if size is None:
        raise ValueError(
            f"model: the image tower of {type(clip_model(model)).__name__} fixes no input size "
            "(it takes any size); choose one for its images"
        )
    return size


def tower_images(model: nn.Module, images: Tensor, name: str = "images") -> Tensor:
    """``images`` checked against what the tower takes (:func:`image_input`) and converted to
    its dtype and device.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).
        images (Tensor): Images ``(N, C, H, W)``, float.
        name (str, optional): The argument the images came from, named in errors.
                    Default: ``"images"``

    Returns:
        The images on the tower's device, in its dtype.
    """
    if not (isinstance(images, Tensor) and images.dim() == 4 and images.is_floating_point()):
        raise ValueError(
            f"{name}: expected a 4-D float tensor (N, 3, H, W), got {describe(images)}"
        )
    check_not_meta(images, name)
    spec = image_input(model)
    if spec.device is not None and spec.device.type == "meta":
        raise ValueError(
            "model: its parameters are on the meta device (no values); load the weights first"
        )
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


def token_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential | None:
    """The transformer blocks of a ViT image tower in order; None for other towers.

    open_clip's ``visual.transformer.resblocks``, a timm ViT trunk's ``visual.trunk.blocks``
    and Hugging Face's ``vision_model.encoder.layers``.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        The blocks (a ``ModuleList`` or ``Sequential``), or None.
    """
    model = clip_model(model)
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

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        The layer (a module of the image tower).
    """
    model = clip_model(model)
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
    pooling) and CNNs keep their last layer. Wrap the layer with
    :func:`~captum_gscorecam.grids.grid_tap` to give Captum ``(N, C, h, w)`` maps on a ViT.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        The layer (a module of the image tower).
    """
    blocks = token_blocks(model)
    pools_class_token = token_layout(model).pools_class_token is not False
    if blocks is not None and len(blocks) > 1 and pools_class_token:
        return blocks[-2]
    return default_layer(model)


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


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


@dataclass(frozen=True)
class TokenLayout:
    """Where a ViT tower's layer outputs keep their tokens.

    ``batch_first``: tokens ``(N, L, D)`` rather than ``(L, N, D)`` (None: decided from the
    output's shape); ``prefix_tokens``: tokens before the patches (the class token first);
    ``grid``: the patch grid ``(h, w)`` (None: a square one); ``pools_class_token``: the
    embedding comes from the class token alone (None: decided from the gradient, see
    :class:`~captum_gscorecam.grids.LayerGrid`).
    """

    batch_first: bool | None = None
    prefix_tokens: int = 1
    grid: tuple[int, int] | None = None
    pools_class_token: bool | None = None


def token_layout(model: nn.Module | None) -> TokenLayout:
    """The token layout of a ViT image tower; a generic layout for anything else.

    open_clip's VisionTransformer (a class token, pooled unless ``pool_type`` is ``avg``
    or an attentional pooler is used), a timm ViT trunk (``num_prefix_tokens`` prefix
    tokens, possibly none, the first pooled only with ``global_pool='token'``) and Hugging
    Face's vision transformers (CLIP: a pooled class token; SigLIP: none, attention
    pooling), all batch first.

    Args:

        model (torch.nn.Module, optional): A CLIP model or a wrapper of one; None (or any
                    other model) has the generic layout.

    Returns:
        The :class:`TokenLayout`.
    """
    model = clip_model(model)
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
        return TokenLayout(
            batch_first=getattr(transformer, "batch_first", None),
            prefix_tokens=1,
            grid=tuple(grid) if grid is not None else None,
            pools_class_token=pools,
        )
    if _is_timm_vit(trunk):
        prefix = int(trunk.num_prefix_tokens)
        grid = getattr(trunk.patch_embed, "grid_size", None)
        dynamic = getattr(trunk, "dynamic_img_size", False)
        return TokenLayout(
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
        return TokenLayout(
            batch_first=True,
            prefix_tokens=int(has_class_token),
            grid=(height // patch_height, width // patch_width),
            pools_class_token=has_class_token,
        )
    return TokenLayout()


def image_tower(model: nn.Module) -> nn.Module:
    """The module that maps images to (unnormalised) image embeddings, as the model has it.

    open_clip: ``visual`` (ModifiedResNet, VisionTransformer, timm towers); Hugging Face
    CLIP / SigLIP: ``vision_model`` (and CLIP's ``visual_projection``), wrapped.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).

    Returns:
        A module from images ``(N, C, H, W)`` to image embeddings ``(N, D)``.
    """
    model = clip_model(model)
    visual = getattr(model, "visual", None)
    if isinstance(visual, nn.Module) and callable(getattr(model, "encode_image", None)):
        return visual
    vision_model = getattr(model, "vision_model", None)
    if isinstance(vision_model, nn.Module) and callable(getattr(model, "get_image_features", None)):
        return _HFImageTower(vision_model, getattr(model, "visual_projection", None))
    raise ValueError(
        "precision: a reduced-precision copy needs a CLIP model with an open_clip `visual` or a "
        f"Hugging Face `vision_model` image tower, got {type(model).__name__}; use precision=None"
    )


class _HFImageTower(nn.Module):
    """A Hugging Face vision model and projection as one module: ``get_image_features``."""

    def __init__(self, vision_model: nn.Module, projection: nn.Module | None) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.projection = projection

    def forward(self, pixel_values: Tensor) -> Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return pooled if self.projection is None else self.projection(pooled)


Pooling = Literal["class", "mean", "attention"]


@dataclass(frozen=True)
class ViTTower:
    """How a ViT image tower turns its tokens into the image embedding.

    ``blocks`` first to last, whose outputs are batch first when ``batch_first``. ``pooling``
    says what the image embedding is made from: the class token, the mean of the patch tokens,
    or an attention-pooling head whose attention module is ``pool_attention``. ``readout``
    maps a block's tokens ``(N, L, D)`` to an image embedding ``(N, E)`` as LeGrad does: the
    tower's final norm and projection of the token mean (class-token and mean-pooled towers),
    or its attention-pooling head and projection (attention-pooled towers).
    """

    blocks: tuple[nn.Module, ...]
    batch_first: bool
    pooling: Pooling
    pool_attention: nn.Module | None
    readout: Callable[[Tensor], Tensor]


def vit_tower(model: nn.Module, method: str) -> ViTTower:
    """The :class:`ViTTower` of a CLIP model's image tower, for the attention method ``method``.

    open_clip's VisionTransformer (a class token; pooled, averaged or attention-pooled), timm
    ViT trunks inside open_clip (``global_pool`` ``token``, ``avg`` or ``map``, SigLIP's
    attention pooling) and Hugging Face's CLIP and SigLIP vision transformers.

    Args:

        model (torch.nn.Module): A CLIP model (open_clip or Hugging Face) or a wrapper of
                    one (:class:`~captum_gscorecam.clip.CLIPSimilarity`,
                    :class:`~captum_gscorecam.clip.ZeroShotClassifier`).
        method (str): The method that reads the tower, named in errors; the errors name
                    ``forward_func``, the argument the attention methods take the model as.

    Returns:
        The :class:`ViTTower`.

    Raises:
        ValueError: The tower has no transformer blocks (ResNet, ConvNeXt), or pools its
                    tokens in a way no attention method here reads.
    """
    model = clip_model(model)
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    vision_model = getattr(model, "vision_model", None)
    if getattr(getattr(visual, "transformer", None), "resblocks", None) is not None:
        parts = _open_clip_parts(visual, method)
    elif _is_timm_vit(trunk):
        parts = _timm_parts(visual, method)
    elif getattr(getattr(vision_model, "encoder", None), "layers", None) is not None:
        parts = _hf_parts(model, method)
    else:
        raise ValueError(
            f"forward_func: {method} needs a ViT image tower; this model has no transformer "
            "blocks (a ResNet or ConvNeXt tower?)"
        )
    blocks, pooling, pool_attention, readout = parts
    if len(blocks) == 0:
        raise ValueError(f"forward_func: {method} needs a ViT tower with at least one block")
    return ViTTower(
        blocks=tuple(blocks),
        batch_first=_batch_first(visual),
        pooling=pooling,
        pool_attention=pool_attention,
        readout=readout,
    )


Parts = tuple[Sequence[nn.Module], Pooling, nn.Module | None, Callable[[Tensor], Tensor]]


def _open_clip_parts(visual: nn.Module, method: str) -> Parts:
    blocks = visual.transformer.resblocks

    def project(pooled: Tensor) -> Tensor:
        return pooled @ visual.proj if visual.proj is not None else pooled

    attn_pool = getattr(visual, "attn_pool", None)
    if attn_pool is None:
        pooling = "class" if getattr(visual, "pool_type", "tok") == "tok" else "mean"
        return blocks, pooling, None, lambda tokens: project(visual.ln_post(tokens.mean(dim=1)))
    if getattr(visual, "attn_pool_contrastive", None) is not None:
        raise ValueError(
            f"forward_func: {method} does not read open_clip's two-stage attention pooling "
            "(attn_pool_contrastive)"
        )
    # the pooled query 0, the only one trained with the contrastive loss
    return blocks, "attention", attn_pool.attn, lambda tokens: project(attn_pool(tokens)[:, 0])


def _timm_parts(visual: nn.Module, method: str) -> Parts:
    trunk = visual.trunk

    def project(pooled: Tensor) -> Tensor:
        return visual.head(trunk.head(trunk.head_drop(trunk.fc_norm(pooled))))

    pool = getattr(trunk, "global_pool", None)
    if pool == "map":
        return trunk.blocks, "attention", trunk.attn_pool, lambda t: project(trunk.attn_pool(t))
    if pool in ("token", "avg"):
        pooling = "class" if pool == "token" else "mean"
        return trunk.blocks, pooling, None, lambda t: project(trunk.norm(t.mean(dim=1)))
    raise ValueError(
        f"forward_func: {method} reads timm ViTs with global_pool 'token', 'avg' or 'map', "
        f"got {pool!r}"
    )


def _hf_parts(model: nn.Module, method: str) -> Parts:
    vision_model = model.vision_model
    layers = vision_model.encoder.layers
    head = getattr(vision_model, "head", None)
    if head is not None and getattr(vision_model, "use_head", True):
        return layers, "attention", head.attention, head
    projection = getattr(model, "visual_projection", None)
    if projection is None or not hasattr(vision_model, "post_layernorm"):
        raise ValueError(
            f"forward_func: {method} reads Hugging Face CLIP towers (a class token, "
            "post_layernorm, visual_projection) and SigLIP towers with their pooling head"
        )
    return layers, "class", None, lambda t: projection(vision_model.post_layernorm(t.mean(dim=1)))


def _batch_first(visual: nn.Module | None) -> bool:
    """open_clip towers before batch-first transformers ran their blocks sequence first."""
    transformer = getattr(visual, "transformer", None)
    if transformer is None:
        return True
    return bool(getattr(transformer, "batch_first", False))
