"""Grad-ECLIP: gradient channel weights on the last attention's values, loosened spatial weights.

With the last attention of the image tower (the last block's, or the attention-pooling head's)
computing ``o = sum_i softmax_i(q_cls k_i^T / sqrt(d)) v_i`` for the class query, per head h
and patch i:

    ``w_c = d s / d o_c``;  ``lambda_hi = minmax_i cos(q_cls^h, k_i^h)``;
    ``map_i = relu(sum_h lambda_hi sum_{c in h} w_c v_ic)``

Zhao, Wang, Zeng, Zhao and Chan, "Gradient-based Visual Explanation for CLIP", ICML 2024.
https://proceedings.mlr.press/v235/zhao24p.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gscorecam.attention import AttentionRecord, recorded_attention
from captum_gscorecam.attribution import check_inputs
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.scorers import make_scorer, model_images, model_of
from captum_gscorecam.vit_parts import clip_forward, vit_parts

__all__ = ["GradECLIP", "loosened_weights"]


class GradECLIP(GradientAttribution):
    r"""Grad-ECLIP (Zhao et al., ICML 2024): the values of the tower's last attention, weighted
    by the score's gradient per channel and by "loosened" query-key similarities per patch.

    The last attention that shapes the image embedding is the last block's self-attention
    on towers that pool the class token (its class-token query) or the attention-pooling
    head's on SigLIP-style towers (its latent queries). With ``o`` the heads' output of that
    attention before its output projection, ``v_i`` the values of patch i and ``q``, ``k_i``
    the query and keys, per head h:

        ``w_c = d s / d o_c`` (channel weights, the gradient at the class query's output)

        ``lambda_hi = minmax_i cos(q^h, k_i^h)`` (the softmax attention "loosened" to the
        min-max normalised cosine of query and key, over the patches)

        ``map_i = relu(sum_h lambda_hi sum_{c in head h} w_c v_ic)``

    on the patch grid (summed over the queries of an attention pool). One forward pass and
    one backward through the tower's head per prompt.

    Conventions: the paper writes one head; the authors' code recomputes the last block with
    its heads merged into one (the query-key cosine taken over the full width, and the
    model's output changed to that single-head block's). Here the model runs as it is and the
    cosine is taken per head, the attention each channel's value actually passed through;
    the two agree on one-head attention (tested against a transcription of the authors'
    notebook). ``benchmarks/conventions.py`` measures what the choice changes on a
    multi-head tower and writes ``benchmarks/results/conventions-vit.md``.

    Towers: open_clip ViTs that pool the class token or use an attentional pooler, timm ViT
    trunks (``global_pool`` ``token`` or ``map``), Hugging Face CLIP and SigLIP; towers that
    average their patch tokens have no class query and are refused. Calls on one model are
    serialised, run in eval mode, leave the model as found, and work under
    ``torch.no_grad()`` and ``torch.inference_mode()``.
    """

    def __init__(self, forward_func: Callable[..., Tensor] | nn.Module) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model with a ViT image tower
                        that pools its class token or has an attention-pooling head
                        (open_clip, timm inside open_clip, Hugging Face CLIP / SigLIP;
                        wrapped in :class:`CLIPSimilarity`), or a ``CLIPSimilarity`` or
                        ``ZeroShotClassifier`` of one.
        """
        forward_func = clip_forward(forward_func, "GradECLIP")
        parts = vit_parts(forward_func.model, "GradECLIP")
        if parts.pooling == "mean":
            raise ValueError(
                "forward_func: GradECLIP weighs the class token's (or a pooling head's) "
                "attention, but this ViT tower averages its patch tokens"
            )
        self.parts = parts
        super().__init__(forward_func)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the paper writes it."""
        return "Grad-ECLIP"

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: object = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): Preprocessed images ``(N, 3, H, W)`` at the tower's size; they
                        are converted to the model's dtype and device.
            target (Tensor, int, tuple, list, optional): As in :meth:`GScoreCAM.attribute`:
                        a text embedding ``(D,)``, ``(N, D)`` or ``(N, T, D)``, or Captum's
                        index into the output of ``forward_func`` (a ``ZeroShotClassifier``'s
                        prompt).
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``.
                        Default: None

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)`` at the patch grid, non-negative,
            float32, on the inputs' device.
        """
        images = check_inputs(inputs)
        parts = self.parts
        pooled = parts.pooling == "attention"
        last = parts.pool_attention if pooled else parts.attentions[-1]
        n = images.shape[0]
        with exclusive(model_of(self.forward_func)), torch.inference_mode(False):
            x = model_images(self.forward_func, images)
            scorer = make_scorer(self.forward_func, x, target, additional_forward_args)
            index = torch.arange(n, device=x.device)
            with restored(self.forward_func), torch.enable_grad():
                with recorded_attention([last]) as records:
                    scores = scorer(x.detach().requires_grad_(True), index)
                if len(records) != 1:
                    raise ValueError(
                        f"forward_func: the tower's last attention ran {len(records)} times "
                        "in one forward pass, expected once"
                    )
                if not bool(scores.isfinite().all()):
                    raise ValueError("forward_func: the score of an input image is NaN or infinite")
                record = records[0]
                queries = slice(None) if pooled else slice(0, 1)
                loosened = loosened_weights(record, queries, parts.prefix_tokens)
                maps = []
                for t in range(scores.shape[1]):
                    (grad,) = torch.autograd.grad(
                        scores[:, t].sum(), record.heads, retain_graph=t + 1 < scores.shape[1]
                    )
                    maps.append(
                        _weighted_values(grad[:, queries], record, loosened, parts.prefix_tokens)
                    )
            rows = torch.stack(maps, dim=1).detach()  # (N, T, P)
            if not bool(rows.isfinite().all()):
                raise ValueError("forward_func: the Grad-ECLIP map is NaN or infinite")
            n_prompts = rows.shape[1]
            patches = rows.reshape(n * n_prompts, -1, 1)
            prefix = patches.new_zeros(n * n_prompts, parts.prefix_tokens, 1)
            grid = parts.grid.activations(torch.cat([prefix, patches], dim=1), n * n_prompts)
            return grid.reshape(n, n_prompts, *grid.shape[-2:]).to(images.device)


def loosened_weights(record: AttentionRecord, queries: slice, prefix_tokens: int) -> Tensor:
    """``minmax_i cos(q^h, k_i^h)`` over the patch keys i, ``(N, H, Q, P)``.

    A query whose cosines are all equal weighs every patch 1.
    """
    q = F.normalize(record.query[:, :, queries].float(), dim=-1)
    k = F.normalize(record.key[:, :, prefix_tokens:].float(), dim=-1)
    cosine = q @ k.transpose(-2, -1)
    low = cosine.min(dim=-1, keepdim=True).values
    span = cosine.max(dim=-1, keepdim=True).values - low
    return torch.where(span > 0, (cosine - low) / span.clamp(min=torch.finfo(span.dtype).tiny), 1)


def _weighted_values(
    grad: Tensor, record: AttentionRecord, loosened: Tensor, prefix_tokens: int
) -> Tensor:
    """``relu(sum_{q, h} lambda_qhi sum_{c in h} w_qc v_ic)`` ``(N, P)`` from the gradient at
    the heads' output ``(N, Q, H * d)``.
    """
    n, n_queries, _ = grad.shape
    heads, head_dim = record.value.shape[1], record.value.shape[-1]
    weights = grad.float().reshape(n, n_queries, heads, head_dim).transpose(1, 2)  # (N, H, Q, d)
    values = record.value[:, :, prefix_tokens:].float()  # (N, H, P, d)
    channels = weights @ values.transpose(-2, -1)  # (N, H, Q, P): sum_c w_c v_ic per head
    return (loosened * channels).sum(dim=(1, 2)).clamp(min=0)
