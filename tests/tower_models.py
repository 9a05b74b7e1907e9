"""Tiny image towers of other frameworks, random weights, nothing downloaded: Hugging Face CLIP
and SigLIP, timm towers inside open_clip (imported as ``tests.tower_models``)."""

from __future__ import annotations

import string

import open_clip
import pytest
import torch
from open_clip.model import CLIPVisionCfg
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tests.helpers import TEXT_CFG, tiny_vit

# the towers' tests are skipped, not failed, where transformers is missing
transformers = pytest.importorskip("transformers")

WIDTH = 32
HF_VISION = {
    "hidden_size": WIDTH,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
    "image_size": 32,
}
WORDS = ["do", "dog</w>", "ca", "cat</w>"]
MERGES = ["d o", "do g</w>", "c a", "ca t</w>"]
VOCAB = ["<|startoftext|>", "<|endoftext|>"]
VOCAB += [*string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase), *WORDS]
HF_TEXT = {
    "hidden_size": WIDTH,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "vocab_size": len(VOCAB),
    "max_position_embeddings": 16,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}


def hf_clip(seed: int = 0, attention: str | None = None) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(
        text_config=HF_TEXT, vision_config=HF_VISION, projection_dim=WIDTH
    )
    if attention is not None:
        config._attn_implementation = attention  # "eager" returns the attention it uses
    return transformers.CLIPModel(config).eval()


def hf_siglip(seed: int = 0, **vision: object) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.SiglipConfig(text_config=HF_TEXT, vision_config={**HF_VISION, **vision})
    return transformers.SiglipModel(config).eval()


def timm_clip(trunk: nn.Module, image_size: int) -> open_clip.CLIP:
    """open_clip's CLIP with a timm tower (TimmModel) around a tiny timm ViT ``trunk``.

    open_clip builds timm trunks by registered name only (224 px configs), so the tower is
    built small (timm's own test ViT) and its trunk replaced, as open_clip's SigLIP configs
    use it: the trunk pools and projects (``timm_pool`` and ``timm_proj`` unset).
    """
    vision = CLIPVisionCfg(
        timm_model_name="test_vit", timm_pool="", timm_proj="none", image_size=image_size
    )
    model = open_clip.CLIP(embed_dim=WIDTH, vision_cfg=vision, text_cfg=TEXT_CFG)
    model.visual.trunk = trunk
    return model.eval()


def timm_vit(seed: int = 0, **kwargs: object) -> open_clip.CLIP:
    """A 32 px timm ViT trunk, 8 px patches: a 4 x 4 grid of 32-wide tokens."""
    torch.manual_seed(seed)
    trunk = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=WIDTH,
        depth=2,
        num_heads=2,
        num_classes=WIDTH,
        **kwargs,
    )
    return timm_clip(trunk, 32)


def timm_convnext(seed: int = 0) -> open_clip.CLIP:
    """open_clip's CLIP with timm's ConvNeXt-atto tower at 64 px: stages[-1] is (N, 320, 2, 2)."""
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(timm_model_name="convnext_atto", image_size=64)
    return open_clip.CLIP(embed_dim=WIDTH, vision_cfg=vision, text_cfg=TEXT_CFG).eval()


# name: (builder, image size, channels, grid, the default layer's path)
TOWERS = {
    "hf_clip": (hf_clip, 32, WIDTH, (4, 4), "vision_model.encoder.layers.1"),
    "hf_siglip": (hf_siglip, 32, WIDTH, (4, 4), "vision_model.encoder.layers.1"),
    "timm_convnext": (timm_convnext, 64, 320, (2, 2), "visual.trunk.stages.3"),
    "timm_vit_siglip": (
        lambda: timm_vit(class_token=False, global_pool="map"),
        32,
        WIDTH,
        (4, 4),
        "visual.trunk.blocks.1",
    ),
    "timm_vit_token": (
        lambda: timm_vit(global_pool="token"),
        32,
        WIDTH,
        (4, 4),
        "visual.trunk.blocks.1",
    ),
    "timm_vit_registers_avg": (
        lambda: timm_vit(reg_tokens=2, global_pool="avg"),
        32,
        WIDTH,
        (4, 4),
        "visual.trunk.blocks.1",
    ),
    "open_clip_attn_pool": (
        lambda: tiny_vit(attentional_pool=True, attn_pooler_queries=4, attn_pooler_heads=2),
        32,
        WIDTH,
        (4, 4),
        "visual.transformer.resblocks.1",
    ),
    "open_clip_avg_pool": (
        lambda: tiny_vit(pool_type="avg"),
        32,
        WIDTH,
        (4, 4),
        "visual.transformer.resblocks.1",
    ),
}


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
