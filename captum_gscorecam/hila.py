"""HilaCAM: gradient-weighted attention relevance through the blocks of a CLIP ViT tower.

For blocks b = start_layer .. B-1 with post-softmax attention ``A_b`` ``(H, L, L)`` and the
gradient of the score ``s`` with respect to it:

    ``Abar_b = mean_heads clamp(dA_b * A_b, min=0)``;  ``R <- R + Abar_b R``, from ``R = I``

The map is the class token's row of R over the patch tokens, on the patch grid.

Chefer, Gur and Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers", ICCV 2021. https://arxiv.org/abs/2103.15679
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gscorecam.attention import attention_of, explicit_attention
from captum_gscorecam.attribution import check_inputs
from captum_gscorecam.checks import describe
from captum_gscorecam.clip import CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.grids import LayerGrid
from captum_gscorecam.scorers import make_scorer, model_images, model_of
from captum_gscorecam.towers import is_clip_model, token_blocks

__all__ = ["HilaCAM", "explicit_attention"]


class HilaCAM(GradientAttribution):
    r"""HilaCAM (Chefer et al., ICCV 2021): relevance propagated through the attention maps.

    ``Abar_b = mean_h clamp(grad(A_b) * A_b, min=0)``, ``R <- R + Abar_b R`` over the blocks
    from ``R = I``; the map is ``R[cls, patches]`` on the patch grid. Works on ViT towers that
    pool the class token: open_clip's (blocks with an ``nn.MultiheadAttention`` ``attn``),
    timm ViT trunks inside open_clip (blocks with a timm ``Attention``) and Hugging Face's
    ``CLIPModel`` (blocks with a ``self_attn`` of ``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``).
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor] | nn.Module,
        blocks: Sequence[nn.Module] | None = None,
    ) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model with a ViT image tower
                        (open_clip or Hugging Face; wrapped in :class:`CLIPSimilarity`), or
                        a ``CLIPSimilarity`` or ``ZeroShotClassifier`` of one.
            blocks (sequence of torch.nn.Module, optional): The attention blocks, first to
                        last, each with an ``attn`` ``nn.MultiheadAttention`` (open_clip),
                        a timm ``attn`` or a Hugging Face ``self_attn``.
                        Default: the tower's blocks (``visual.transformer.resblocks`` or
                        ``vision_model.encoder.layers``)
        """
        if is_clip_model(forward_func):
            forward_func = CLIPSimilarity(forward_func)
        if not isinstance(forward_func, CLIPSimilarity | ZeroShotClassifier):
            raise TypeError(
                "forward_func: expected a CLIP model with a ViT image tower (or its "
                f"CLIPSimilarity or ZeroShotClassifier), got {type(forward_func).__name__}"
            )
        model = forward_func.model
        if blocks is None:
            blocks = token_blocks(model)
            if blocks is None:
                raise ValueError(
                    "forward_func: HilaCAM needs a ViT image tower; this model has no "
                    "transformer blocks (a ResNet or ConvNeXt tower?)"
                )
        try:
            blocks = list(blocks)
        except TypeError:
            raise TypeError(
                f"blocks: expected a sequence of attention blocks, got {describe(blocks)}"
            ) from None
        if not blocks:
            raise ValueError("blocks: expected at least one attention block")
        for i, block in enumerate(blocks):
            if attention_of(block) is None:
                raise TypeError(
                    f"blocks: block {i} ({type(block).__name__}) has no `attn` "
                    "nn.MultiheadAttention or timm attention, nor a Hugging Face `self_attn` "
                    "(q_proj, k_proj, v_proj, out_proj) whose attention map HilaCAM can capture"
                )
        grid = LayerGrid.for_model(model)
        if grid.pools_class_token is False:
            raise ValueError(
                "forward_func: HilaCAM reads the class token's relevance, but this ViT tower "
                "pools its tokens another way (attention pooling or average)"
            )
        super().__init__(forward_func)
        self.blocks = blocks
        self.grid = dataclasses.replace(grid, batch_first=True)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the gScoreCAM paper writes it."""
        return "HilaCAM"

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object = None,
        additional_forward_args: Any = None,
        start_layer: int = 0,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)`` at the tower's size; they
                        are converted to the model's dtype and device.
            target (Tensor, int, tuple, list, optional): As in :meth:`GScoreCAM.attribute`:
                        a text embedding ``(D,)``, ``(N, D)`` or ``(N, T, D)``, or Captum's
                        index into the output of ``forward_func``.
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``.
                        Default: None
            start_layer (int, optional): The first block whose attention enters R; negative
                        counts from the end (``-1``: the last block only, the authors' later
                        default).
                        Default: 0 (all blocks, as the gScoreCAM paper compared)

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)`` at the patch grid, non-negative,
            float32, on the inputs' device.
        """
        images = check_inputs(inputs)
        depth = len(self.blocks)
        if isinstance(start_layer, bool) or not isinstance(start_layer, int):
            raise TypeError(f"start_layer: expected an int, got {type(start_layer).__name__}")
        if not -depth <= start_layer < depth:
            raise ValueError(
                f"start_layer: expected a block index in [{-depth}, {depth - 1}], got {start_layer}"
            )
        used = self.blocks[start_layer % depth :]
        n = images.shape[0]
        with exclusive(model_of(self.forward_func)), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            with (
                restored(self.forward_func),
                explicit_attention(used) as maps,
                torch.enable_grad(),
            ):
                scores = scorer(x.detach().requires_grad_(True), torch.arange(n, device=x.device))
            if len(maps) != len(used):
                raise ValueError(
                    f"blocks: {len(maps)} of {len(used)} blocks ran in the forward pass; "
                    "they must belong to forward_func's image tower"
                )
            if not bool(scores.isfinite().all()):
                raise ValueError("forward_func: the score of an input image is NaN or infinite")
            relevance = []
            with torch.enable_grad():
                for t in range(scores.shape[1]):
                    grads = torch.autograd.grad(
                        scores[:, t].sum(), maps, retain_graph=t + 1 < scores.shape[1]
                    )
                    relevance.append(_class_relevance(maps, grads))
            rows = torch.stack(relevance, dim=1).detach().float()  # (N, T, L)
        if not bool(rows.isfinite().all()):
            raise ValueError("forward_func: the attention relevance is NaN or infinite")
        n_prompts = rows.shape[1]
        tokens = rows.reshape(n * n_prompts, -1, 1)
        grid = self.grid.activations(tokens, n * n_prompts)
        return grid.reshape(n, n_prompts, *grid.shape[-2:]).to(images.device)


def _class_relevance(maps: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Row 0 of ``R`` ``(N, L)``: ``R = I``, then ``R <- R + mean_h relu(dA * A) R`` per block."""
    n, _, length, _ = maps[0].shape
    relevance = torch.eye(length, dtype=maps[0].dtype, device=maps[0].device).expand(n, -1, -1)
    for attention, grad in zip(maps, grads, strict=True):
        weighted = (grad * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance[:, 0]
