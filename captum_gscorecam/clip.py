"""The CLIP adapter: a CLIP model as a per-example score and as a zero-shot classifier, and
text encoding, for open_clip and Hugging Face ``transformers`` models (CLIPModel,
SiglipModel). What a tower is built of is :mod:`captum_gscorecam.towers`' business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_gscorecam.checks import check_not_meta, describe
from captum_gscorecam.towers import is_clip_model, tower_images

__all__ = [
    "MIN_TEXT_NORM",
    "CLIPSimilarity",
    "ZeroShotClassifier",
    "encode_text",
    "image_features",
]


# F.normalize's eps: a text embedding no longer than this has no direction (its cosine with
# every image is 0, a constant score), so every path that takes text embeddings refuses it.
MIN_TEXT_NORM = 1e-12


def image_features(model: nn.Module, images: Tensor) -> Tensor:
    """The (unnormalised) image embeddings ``(N, D)`` of an open_clip or Hugging Face model."""
    encode = getattr(model, "encode_image", None)
    if callable(encode):
        return encode(images)
    return _pooled(model.get_image_features(pixel_values=images), "image")


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

        On CPU the images enter the tower channels-last, which convolutional towers run
        faster: same values up to float rounding. Not when the images need a gradient: it
        would come back channels-last, whose strides break Captum's ``.view`` calls
        (``sensitivity_max``).
        """
        needs_grad = images.requires_grad and torch.is_grad_enabled()
        if images.device.type == "cpu" and images.dim() == 4 and not needs_grad:
            images = images.contiguous(memory_format=torch.channels_last)
        return F.normalize(image_features(self.model, images).float(), dim=-1)

    def forward(self, images: Tensor, text_emb: Tensor) -> Tensor:
        """``logit_scale * cos(encode_image(images), text_emb)``, ``(N,)`` or ``(N, T)``.

        ``images`` are checked against what the tower takes
        (:func:`~captum_gscorecam.towers.image_input`) and converted to its dtype and device.
        """
        return self.score_embeddings(self.embed_images(tower_images(self.model, images)), text_emb)

    def score_embeddings(
        self, image_emb: Tensor, text_emb: Tensor, name: str = "text_emb"
    ) -> Tensor:
        """``logit_scale * cos`` of normalised image embeddings ``(N, D)`` with text embeddings
        (the argument ``name`` in error messages).
        """
        n, width = image_emb.shape
        if not (isinstance(text_emb, Tensor) and text_emb.is_floating_point()):
            raise TypeError(f"{name}: expected a float tensor, got {describe(text_emb)}")
        check_not_meta(text_emb, name)
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
    if device.type == "meta":
        raise ValueError(
            "model: its parameters are on the meta device (no values); load the weights first"
        )
    with torch.no_grad():
        if callable(getattr(model, "encode_text", None)):
            tokens = _tokenized(tokenizer, list(prompts))
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
    encoded = _tokenized(
        tokenizer, text=list(prompts), padding=padding, truncation=True, return_tensors="pt"
    )
    if not isinstance(encoded, Mapping):
        raise TypeError(
            "tokenizer: a Hugging Face model needs its tokenizer or processor (which returns a "
            f"mapping such as input_ids and attention_mask), got {type(encoded).__name__}"
        )
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in encoded.items()}


def _tokenized(tokenizer: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``tokenizer(*args, **kwargs)``; whatever it raises becomes a TypeError naming it."""
    try:
        return tokenizer(*args, **kwargs)
    except Exception as error:  # a user's callable may raise anything
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TypeError(
            "tokenizer: expected the model's tokenizer (open_clip's, or a Hugging Face "
            f"tokenizer or processor), but calling it on the prompts raised "
            f"{type(error).__name__}{f': {first}' if first else ''}"
        ) from error


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
        check_not_meta(text_emb, "text_emb")
        if not bool(torch.isfinite(text_emb).all()):
            raise ValueError("text_emb: contains NaN or infinite values")
        if not bool((text_emb.norm(dim=-1) > MIN_TEXT_NORM).all()):
            raise ValueError(
                f"text_emb: an embedding of norm 0 (or at most {MIN_TEXT_NORM:g}) has no "
                "direction to compare"
            )
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
