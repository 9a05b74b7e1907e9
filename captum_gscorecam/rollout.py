"""Attention rollout: the attention of the blocks multiplied through, with the residual as identity.

For blocks b = start_layer .. B-1 with post-softmax attention ``A_b`` ``(H, L, L)``:

    ``Ahat_b = rownorm(mean_h A_b + I)``;  ``R = Ahat_{B-1} ... Ahat_{start_layer}``

The map is the class token's row of R over the patch tokens (the mean of R's rows on towers
that do not pool a class token), on the patch grid.

Abnar and Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
https://arxiv.org/abs/2005.00928
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from captum_gscorecam.attention import recorded_attention
from captum_gscorecam.attribution import check_inputs
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.scorers import make_scorer, model_images, model_of
from captum_gscorecam.vit_parts import check_start_layer, clip_forward, vit_parts

__all__ = ["AttentionRollout", "rollout"]


class AttentionRollout(Attribution):
    r"""Attention rollout (Abnar and Zuidema, ACL 2020): how much of each patch flows into the
    pooled token through the attention of every block, the residual counted as identity.

        ``Ahat_b = rownorm(mean_h A_b + I)``,  ``R = Ahat_{B-1} ... Ahat_{start_layer}``

    The map is ``R[cls, patches]`` on towers that pool the class token, else the mean of R's
    rows over the patches, on the patch grid. (The paper's ``0.5 A + 0.5 I`` is the same
    matrix once the rows are normalised.) One forward pass, no gradient.

    The map does not depend on the text: every prompt of an image gets the same map. The
    target is still checked and gives the number of prompts, so the call and the output shape
    are those of the other explainers.

    Towers: open_clip ViTs, timm ViT trunks inside open_clip, Hugging Face CLIP and SigLIP.
    Calls on one model are serialised, run in eval mode, leave the model as found, and work
    under ``torch.no_grad()`` and ``torch.inference_mode()``.
    """

    def __init__(self, forward_func: Callable[..., Tensor] | nn.Module) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model with a ViT image tower
                        (open_clip, timm inside open_clip, Hugging Face CLIP / SigLIP;
                        wrapped in :class:`CLIPSimilarity`), or a ``CLIPSimilarity`` or
                        ``ZeroShotClassifier`` of one.
        """
        forward_func = clip_forward(forward_func, "AttentionRollout")
        self.parts = vit_parts(forward_func.model, "AttentionRollout")
        super().__init__(forward_func)

    @classmethod
    def get_name(cls) -> str:
        """The method's name."""
        return "Attention rollout"

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
                        index into the output of ``forward_func``. It sets the number of
                        prompts T; the map is the same for every prompt.
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``.
                        Default: None
            start_layer (int, optional): The first block whose attention enters R; negative
                        counts from the end.
                        Default: 0 (every block)

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)`` at the patch grid, non-negative,
            float32, on the inputs' device.
        """
        images = check_inputs(inputs)
        parts = self.parts
        start = check_start_layer(start_layer, len(parts.blocks))
        n = images.shape[0]
        with exclusive(model_of(self.forward_func)), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            with (
                restored(self.forward_func),
                recorded_attention(parts.attentions[start:]) as records,
                torch.no_grad(),
            ):
                scores = scorer(x, torch.arange(n, device=x.device))
            if len(records) != len(parts.blocks) - start:
                raise ValueError(
                    f"forward_func: {len(records)} of {len(parts.blocks) - start} blocks ran "
                    "in the forward pass"
                )
            rows = rollout([r.attention for r in records], parts.pooling == "class")
            if not bool(rows.isfinite().all()):
                raise ValueError("forward_func: the attention rollout is NaN or infinite")
            grid = parts.grid.activations(rows[..., None], n)  # (N, 1, h, w)
            maps = grid.expand(n, scores.shape[1], *grid.shape[-2:]).clone()
            return maps.to(images.device)


def rollout(attention: list[Tensor], class_row: bool) -> Tensor:
    """Row 0 of ``R = prod_b rownorm(mean_h A_b + I)`` ``(N, L)`` (later blocks on the left),
    or the mean of R's rows when ``class_row`` is False.
    """
    n, _, length, _ = attention[0].shape
    eye = torch.eye(length, device=attention[0].device)
    joint = eye.expand(n, length, length)
    for maps in attention:
        mixed = maps.float().mean(dim=1) + eye
        joint = (mixed / mixed.sum(dim=-1, keepdim=True)) @ joint
    return joint[:, 0] if class_row else joint.mean(dim=1)
