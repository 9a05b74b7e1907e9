"""LeGrad: the gradient of every layer's own image-text score with respect to its attention.

For blocks l = start_layer .. B-1 with tokens ``Z_l`` ``(L, D)``, attention ``A_l`` ``(H, L, S)``
and the score of the layer's embedding ``s_l = logit_scale * cos(readout(Z_l), t)``:

    ``E = sum_l mean_{h, query} relu(d s_l / d A_l)``  over the patch keys, then min-max.

Bousselham, Boggust, Chaybouti, Strobelt and Kuehne, "LeGrad: An Explainability Method for
Vision Transformers via Feature Formation Sensitivity", ICCV 2025.
https://arxiv.org/abs/2404.03214
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution
from torch import Tensor, nn

from captum_gscorecam.attention import recorded_attention
from captum_gscorecam.attribution import check_inputs
from captum_gscorecam.clip import CLIPSimilarity, ZeroShotClassifier
from captum_gscorecam.engine import exclusive, restored
from captum_gscorecam.scorers import make_scorer, model_images, model_of
from captum_gscorecam.vit_parts import block_tokens, check_start_layer, clip_forward, vit_parts

__all__ = ["LeGrad", "min_max"]


class LeGrad(GradientAttribution):
    r"""LeGrad (Bousselham et al., ICCV 2025): every layer's gradient on its own attention.

    Each block l from ``start_layer`` on gives an image embedding of its own: its tokens go
    through the tower's final norm and projection as the image embedding does (the token mean,
    then the final norm and projection, on towers that pool a class token or average;
    the attention-pooling head and projection on SigLIP-style towers). Its score against the
    text, ``s_l = logit_scale * cos(e_l, t)``, is differentiated with respect to the block's
    own post-softmax attention ``A_l`` (or, on attention-pooled towers, to the pooling head's
    attention when it pools block l's tokens):

        ``E = sum_l mean_{h, q} relu(d s_l / d A_l[h, q, :])``

    over the patch keys, on the patch grid, then ``(E - min E) / (max E - min E)`` per map (a
    constant map is 0). One forward pass and one short gradient (through one block and the
    head) per layer and prompt.

    Conventions, as the reference package ``legrad-torch`` (1.1) computes them (this class
    equals it, tested): a block's embedding is made from the mean of all its tokens (class
    token included), not from the class token the tower pools; relu and the mean over heads
    and query tokens come before the sum over blocks; on attention-pooled towers the pooling
    head sees the block's tokens without the tower's final norm, and the pooled query 0 is
    the embedding. The reference min-max normalises after upsampling by the patch size:
    ``min_max`` of this map upsampled is its map. Where this class differs, by choice: every
    block by default, as the paper aggregates them (the reference's default is the last two,
    ``start_layer=-2`` here), and no SigLIP "empty prompt" correction (the reference's option
    zeroes where the map of "a photo of a" exceeds 0.8). ``benchmarks/conventions.py``
    measures what each convention changes (every block against the last two, the token mean
    against the class token) and writes ``benchmarks/results/conventions-vit.md``.

    Towers: open_clip ViTs (class token, average or attentional pooling), timm ViT trunks
    inside open_clip (``global_pool`` ``token``, ``avg`` or ``map`` as SigLIP), Hugging Face
    CLIP and SigLIP. Calls on one model are serialised, run in eval mode, leave the model as
    found, and work under ``torch.no_grad()`` and ``torch.inference_mode()``.
    """

    def __init__(self, forward_func: Callable[..., Tensor] | nn.Module) -> None:
        r"""
        Args:

            forward_func (Callable or torch.nn.Module): A CLIP model with a ViT image tower
                        (open_clip, timm inside open_clip, or Hugging Face CLIP / SigLIP;
                        wrapped in :class:`CLIPSimilarity`), or a ``CLIPSimilarity`` or
                        ``ZeroShotClassifier`` of one.
        """
        forward_func = clip_forward(forward_func, "LeGrad")
        self.parts = vit_parts(forward_func.model, "LeGrad")
        super().__init__(forward_func)

    @classmethod
    def get_name(cls) -> str:
        """The method's name as the paper writes it."""
        return "LeGrad"

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
                        index into the output of ``forward_func`` (a ``ZeroShotClassifier``'s
                        prompt).
                        Default: None
            additional_forward_args (Any, optional): Extra arguments of ``forward_func``.
                        Default: None
            start_layer (int, optional): The first block whose gradient enters the map;
                        negative counts from the end (``-2``: the last two blocks, the
                        reference package's default).
                        Default: 0 (every block)

        Returns:
            *Tensor* of **attributions** ``(N, T, h, w)`` at the patch grid, in [0, 1],
            float32, on the inputs' device.
        """
        images = check_inputs(inputs)
        parts = self.parts
        start = check_start_layer(start_layer, len(parts.blocks))
        used = parts.blocks[start:]
        pooled = parts.pooling == "attention"
        n = images.shape[0]
        forward_func = self.forward_func
        with exclusive(model_of(forward_func)), torch.inference_mode(False):
            x = model_images(forward_func, images)
            scorer = make_scorer(forward_func, x, target, additional_forward_args)
            index = torch.arange(n, device=x.device)
            with restored(forward_func), torch.enable_grad():
                recorded = () if pooled else parts.attentions[start:]
                with (
                    recorded_attention(recorded) as records,
                    block_tokens(used, parts.batch_first) as tokens,
                ):
                    scores = scorer(x.detach().requires_grad_(True), index)
                _check_pass(tokens, records, used, pooled, scores)
                # one graph per layer: a layer's gradient then runs back through its block only
                layer_scores = []
                with recorded_attention([parts.pool_attention] if pooled else ()) as pools:
                    for z in tokens:
                        embeddings = F.normalize(parts.readout(z).float(), dim=-1)
                        with _scoring_embeddings(forward_func, embeddings):
                            layer_scores.append(scorer(x, index))
                attention = [r.attention for r in (pools if pooled else records)]
                relevance = _layer_relevance(layer_scores, attention).detach()
            if not bool(relevance.isfinite().all()):
                raise ValueError("forward_func: the attention gradient is NaN or infinite")
            n_prompts = relevance.shape[1]
            rows = relevance.reshape(n * n_prompts, -1, 1)
            grid = parts.grid.activations(rows, n * n_prompts)
            maps = min_max(grid.reshape(n, n_prompts, *grid.shape[-2:]))
            return maps.to(images.device)


def _check_pass(
    tokens: list[Tensor],
    records: list[Any],
    used: tuple[nn.Module, ...],
    pooled: bool,
    scores: Tensor,
) -> None:
    if len(tokens) != len(used) or (not pooled and len(records) != len(used)):
        raise ValueError(
            f"forward_func: {len(tokens)} of {len(used)} blocks ran in the forward pass; "
            "they must belong to forward_func's image tower"
        )
    if not bool(scores.isfinite().all()):
        raise ValueError("forward_func: the score of an input image is NaN or infinite")


def _layer_relevance(layer_scores: list[Tensor], attention: list[Tensor]) -> Tensor:
    """``sum_l mean_{h, q} relu(d s_l / d A_l)`` ``(N, T, S)`` from each layer's scores
    ``(N, T)`` and attention ``(N, H, Q, S)``.
    """
    n, n_prompts = layer_scores[0].shape
    relevance = layer_scores[0].new_zeros(n, n_prompts, attention[0].shape[-1])
    for scores, maps in zip(layer_scores, attention, strict=True):
        for t in range(n_prompts):
            (grad,) = torch.autograd.grad(scores[:, t].sum(), maps, retain_graph=True)
            relevance[:, t] += grad.clamp(min=0).mean(dim=(1, 2)).float()
    return relevance


def min_max(maps: Tensor) -> Tensor:
    """Each map ``(..., h, w)`` scaled to [0, 1]: ``(m - min m) / (max m - min m)``; 0 if flat."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    span = flat.max(dim=-1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp(min=torch.finfo(flat.dtype).tiny), 0)
    return scaled.reshape(maps.shape)


@contextmanager
def _scoring_embeddings(
    forward_func: CLIPSimilarity | ZeroShotClassifier, embeddings: Tensor
) -> Iterator[None]:
    """Inside, ``forward_func`` scores ``embeddings`` ``(N, E)`` in place of the image
    embeddings of the N images it is given, so every target form scores them as it scores
    images (text embeddings, Captum's index into the similarities or a classifier's prompts).
    """
    similarity = (
        forward_func if isinstance(forward_func, CLIPSimilarity) else forward_func.similarity
    )
    saved = similarity.__dict__.get("embed_images")
    similarity.embed_images = lambda _images: embeddings
    try:
        yield
    finally:
        if saved is None:
            del similarity.embed_images
        else:
            similarity.embed_images = saved
